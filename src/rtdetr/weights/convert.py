"""``convert_checkpoint``: rewrite weights between our (reference) layout and transformers'.

Targets:

- ``"reference"``: a torch file ``{"model": state_dict}`` (plus ``class_names`` when
  known) that the authors' code, this package and ``torch.load`` all read.
- ``"safetensors"``: our naming in a safetensors file; metadata ``model_name`` and
  ``class_names`` (JSON).
- ``"hf"``: transformers' ``RTDetrForObjectDetection`` weights. ``dst`` is a folder
  (``config.json`` + ``model.safetensors``, loadable with ``from_pretrained``), or a
  single ``.safetensors`` / ``.bin`` file. ``hf_naming="v4"`` (default) writes the file spelling
  (published PekingU checkpoints, transformers 5 ``save_pretrained``), which transformers
  4.x and 5.x ``from_pretrained`` load; ``"v5"`` matches transformers 5 module names
  exactly (for ``model.load_state_dict(sd, strict=True)``).
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ..config import get_config
from .errors import WeightsFormatError, WeightsMismatchError
from .formats import read_checkpoint
from .hf_config import hf_config_dict
from .hf_naming import HFNaming, to_hf_state_dict
from .infer import infer_model_names, infer_num_classes
from .loading import resolve_weights
from .registry import WeightsEntry

__all__ = ["convert_checkpoint", "ConvertTarget"]

log = logging.getLogger(__name__)

ConvertTarget = Literal["reference", "hf", "safetensors"]


def convert_checkpoint(
    src: str | os.PathLike | WeightsEntry,
    dst: str | os.PathLike,
    *,
    to: ConvertTarget,
    model_name: str | None = None,
    hf_naming: HFNaming = "v4",
    trusted: bool = False,
    progress: bool = True,
) -> Path:
    """Read ``src`` in any layout :func:`rtdetr.weights.load_weights` accepts and write it to ``dst``.

    Args:
        src: file, folder, URL, ``hf:ORG/NAME``, or a tag (needs ``model_name``).
        dst: output file (or folder for ``to="hf"``).
        to: ``"reference"``, ``"hf"`` or ``"safetensors"`` (see the module docstring).
        model_name: the preset; by default read from the checkpoint or inferred from its
            shapes. When known, the weights are checked against that preset (same keys
            and shapes) and written in its key order.
        hf_naming: ``"v4"`` or ``"v5"`` key spelling for ``to="hf"``.
        trusted: allow torch files holding arbitrary Python objects.
        progress: show a download progress bar.

    Returns:
        The path written.
    """
    if to not in ("reference", "hf", "safetensors"):
        raise ValueError(f"to must be 'reference', 'hf' or 'safetensors', got {to!r}")
    path, entry = resolve_weights(src, model_name, progress=progress)
    ckpt = read_checkpoint(path, trusted=trusted)
    if ckpt.unmapped_keys:
        raise WeightsFormatError(
            f"{len(ckpt.unmapped_keys)} key(s) of {path} have no equivalent in our naming, "
            f"e.g. {', '.join(ckpt.unmapped_keys[:5])}"
        )
    sd = ckpt.state_dict
    names = ckpt.class_names or (list(entry.class_names) if entry is not None else None)
    name = model_name or ckpt.model_name or (entry.model_name if entry is not None else None)
    if name is None:
        guesses = infer_model_names(sd)
        name = guesses[0] if len(guesses) == 1 else None
        if name is not None:
            log.info("%s looks like %s", path, name)
    if name is not None:
        sd = _conform(sd, name)
    elif to == "hf" and Path(dst).suffix not in (".safetensors", ".bin", ".pt", ".pth"):
        raise ValueError(f"cannot tell which preset {path} is for; pass model_name to write a HF config")
    else:
        log.warning("could not identify the preset of %s; writing its tensors unchecked", path)

    dst = Path(dst).expanduser()
    if to == "reference":
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": sd, **({"class_names": names} if names else {})}, dst)
    elif to == "safetensors":
        meta = {"format": "pt", "naming": "reference"}
        if name:
            meta["model_name"] = name
        if names:
            meta["class_names"] = json.dumps(names)
        _save_safetensors(sd, dst, meta)
    else:
        hf_sd = to_hf_state_dict(sd, naming=hf_naming)
        if dst.suffix == ".safetensors":
            _save_safetensors(hf_sd, dst, {"format": "pt"})
        elif dst.suffix in (".bin", ".pt", ".pth"):
            dst.parent.mkdir(parents=True, exist_ok=True)
            torch.save(hf_sd, dst)
        else:
            cfg = get_config(name, num_classes=infer_num_classes(sd) or 80)  # type: ignore[arg-type]
            config = hf_config_dict(cfg, names)
            dst.mkdir(parents=True, exist_ok=True)
            (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            _save_safetensors(hf_sd, dst / "model.safetensors", {"format": "pt"})
    log.info("wrote %s (%s, %d tensors) from %s (%s)", dst, to, len(sd), path, ckpt.format)
    return dst


def _conform(sd: dict[str, Tensor], model_name: str) -> dict[str, Tensor]:
    """Check ``sd`` against the preset's state dict and return it in the preset's key order
    (step counters that HF files drop are restored as zeros)."""
    num_classes = infer_num_classes(sd) or 80
    target = _layout(model_name, num_classes)
    out: dict[str, Tensor] = {}
    missing, mismatched = [], []
    for key, (shape, dtype) in target.items():
        if key in sd:
            if tuple(sd[key].shape) != shape:
                mismatched.append(f"{key} {list(sd[key].shape)} vs {list(shape)}")
            out[key] = sd[key]
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=dtype)
        else:
            missing.append(key)
    unexpected = [k for k in sd if k not in target and not k.endswith("num_batches_tracked")]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(
            f"weights do not match {model_name} ({num_classes} classes): {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} with other shapes; e.g. "
            + ", ".join((missing + unexpected + mismatched)[:5]),
            missing,
            unexpected,
            mismatched,
        )
    return out


@lru_cache(maxsize=8)
def _layout(model_name: str, num_classes: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{key: (shape, dtype)} of a preset's state dict, in order (builds the model once)."""
    from ..builder import build_detector  # deferred: only conversion needs a model

    state = build_detector(get_config(model_name, num_classes=num_classes)).state_dict()
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


def _save_safetensors(sd: dict[str, Tensor], dst: Path, metadata: dict[str, str]) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ImportError("writing safetensors needs the safetensors package: pip install safetensors") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(dst), metadata=metadata)
