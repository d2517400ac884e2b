"""Reading checkpoint files of every supported layout into one state dict in our naming.

Layouts, detected from the file and its keys:

- ``"reference"``: the authors' checkpoints, ``{"ema": {"module": sd}, "model": sd, ...}``;
  ``ema.module`` is preferred, then ``model``.
- ``"rtdetr"``: this package's training checkpoints: the same layout plus ``class_names``,
  ``category_ids``, ``config`` ... (or a safetensors file written by ``convert_checkpoint``,
  whose metadata holds the class names).
- ``"state_dict"``: a bare state dict in our naming (a ``module.`` DDP prefix is removed).
- ``"hf"``: transformers' ``RTDetrForObjectDetection`` weights (4.x or 5.x spelling), as a
  ``save_pretrained`` folder or its ``model.safetensors`` / ``pytorch_model.bin`` (sharded
  ``*.index.json`` too); class names come from ``config.json``'s ``id2label``.

Torch files are read with ``torch.load(weights_only=True)`` (numpy arrays, as in saved RNG
states, are allowed); anything else needs ``trusted=True``.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import UnsafeCheckpointError, WeightsFormatError
from .hf_naming import from_hf_state_dict, hf_naming_of, is_hf_state_dict

if TYPE_CHECKING:
    from .registry import WeightsEntry

__all__ = ["Checkpoint", "read_checkpoint", "torch_load", "find_state_dict", "class_names_from_hf_config"]

log = logging.getLogger(__name__)

_HF_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_OUR_PREFIXES = ("backbone.", "encoder.", "decoder.")


@dataclass
class Checkpoint:
    """A checkpoint read from disk, its weights renamed to our naming.

    Attributes:
        state_dict: tensors under our (reference) key names.
        format: ``"reference"``, ``"rtdetr"``, ``"state_dict"`` or ``"hf"``.
        path: the file read (for a folder, its weights file).
        container: ``"torch"`` or ``"safetensors"``.
        state_key: where the weights sat in a torch file (``"ema.module"``, ``"model"``...).
        class_names: names stored with the weights, if any.
        model_name: the preset recorded in the file, if any.
        hf_config: a Hugging Face ``config.json`` found with the weights.
        hf_naming: ``"v4"`` / ``"v5"`` for HF weights.
        unmapped_keys: HF keys without an equivalent in our naming.
        entry: the registry entry of published weights (set by ``read_weights``).
        source: what the user named (tag, path, URL, ``hf:`` repo; set by ``read_weights``).
    """

    state_dict: dict[str, Tensor]
    format: str
    path: Path
    container: str = "torch"
    state_key: str | None = None
    class_names: list[str] | None = None
    model_name: str | None = None
    hf_config: dict[str, Any] | None = None
    hf_naming: str | None = None
    unmapped_keys: list[str] = field(default_factory=list)
    entry: WeightsEntry | None = None
    source: str | None = None


_NUMPY_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int32, np.uint32, np.uint8, np.bool_)


def _numpy_safe_globals() -> list[Any]:
    """The numpy pieces our training checkpoints hold, and nothing more.

    RNG states are numpy arrays (``np.random.get_state()``); metrics may be numpy
    scalars. Both pickle as a reconstruct function plus a dtype class.
    """
    arr = np.zeros(1, dtype=np.uint32)
    scalar_fn = np.float64(0).__reduce__()[0]  # numpy.(_)core.multiarray.scalar
    dtype_types = [type(np.dtype(t)) for t in _NUMPY_DTYPES]
    return [arr.__reduce__()[0], scalar_fn, np.ndarray, np.dtype, *dtype_types]


def torch_load(path: str | Path, *, map_location: Any = "cpu", trusted: bool = False) -> Any:
    """``torch.load`` that runs no code unless ``trusted``: tensors, containers, numbers,
    strings and the numpy arrays/scalars of RNG states and metrics load; any other
    Python object is refused with a :class:`WeightsFormatError` naming it and ``trusted``.
    """
    path = Path(path)
    try:
        if trusted:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise _not_a_checkpoint(path, e) from None
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint: a legacy torch file, or not a torch file at all
            unsafe = []
        if not unsafe and "unsupported global" not in str(e).lower():
            # bytes the unpickler cannot read, not objects; torch's text would only talk of weights_only
            raise WeightsFormatError(f"not a PyTorch checkpoint or safetensors file: {path}") from None
        what = f" ({', '.join(unsafe[:5])})" if unsafe else ""
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds Python objects beyond tensors{what}, and unpickling "
            "them can run arbitrary code. Load it only if you trust its source: trusted=True "
            "(command line: --trusted)."
        ) from None
    except Exception as e:  # the unpickler fails in many ways on foreign bytes (KeyError, EOFError ...)
        raise _not_a_checkpoint(path, e) from None


def _not_a_checkpoint(path: Path, e: BaseException) -> WeightsFormatError:
    return WeightsFormatError(f"not a PyTorch checkpoint or safetensors file: {path} ({_first_line(e)})")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _safetensors_load(path: Path, device: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise ImportError(f"reading {path.name} needs the safetensors package: pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:  # SafetensorError and header parse errors
        raise WeightsFormatError(f"not a valid safetensors file: {path} ({_first_line(e)})") from None


def _load_sharded(index: Path, map_location: Any, trusted: bool) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError) as e:
        raise WeightsFormatError(f"not a valid shard index: {index} ({_first_line(e)})") from None
    out: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        part, _ = _load_tensors(index.parent / shard, map_location, trusted)
        out.update(part)
    return out, {}


def _load_tensors(path: Path, map_location: Any, trusted: bool) -> tuple[Any, dict[str, str]]:
    if path.name.endswith(".index.json"):
        return _load_sharded(path, map_location, trusted)
    if path.suffix == ".safetensors":
        device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
        return _safetensors_load(path, device)
    return torch_load(path, map_location=map_location, trusted=trusted), {}


def find_state_dict(obj: Any) -> tuple[dict[str, Tensor], str | None]:
    """(state dict, where it was) inside a loaded checkpoint object.

    Prefers ``ema.module``, then ``model``, ``state_dict``, ``module``; a mapping of
    tensors is itself the state dict. Raises WeightsFormatError otherwise.
    """

    def as_sd(v: Any) -> dict[str, Tensor] | None:
        if isinstance(v, nn.Module):
            return v.state_dict()
        if isinstance(v, Mapping) and v and all(isinstance(t, Tensor) for t in v.values()):
            return dict(v)
        return None

    if not isinstance(obj, Mapping):
        raise WeightsFormatError(f"expected a dict-like checkpoint, found {type(obj).__name__}")
    sd = as_sd(obj)
    if sd is not None:
        return sd, None
    ema = obj.get("ema")
    if isinstance(ema, Mapping) and as_sd(ema.get("module")) is not None:
        return as_sd(ema["module"]), "ema.module"  # type: ignore[return-value]
    for key in ("model", "state_dict", "module"):
        sd = as_sd(obj.get(key))
        if sd is not None:
            return sd, key
    keys = ", ".join(map(str, list(obj)[:8]))
    raise WeightsFormatError(f"no state dict found in the checkpoint (top-level keys: {keys})")


def class_names_from_hf_config(config: Mapping[str, Any] | None) -> list[str] | None:
    """``id2label`` as a list ordered by label, or None (absent, gappy or generic ``LABEL_i``)."""
    if not config or not isinstance(config.get("id2label"), Mapping):
        return None
    try:
        id2label = {int(k): str(v) for k, v in config["id2label"].items()}
    except (TypeError, ValueError):
        return None
    names = [id2label.get(i) for i in range(len(id2label))]
    if any(n is None for n in names) or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names  # type: ignore[return-value]


def _resolve_files(path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) for a file or a save_pretrained-style folder."""
    if path.is_dir():
        for name in _HF_FILES:
            if (path / name).is_file():
                cfg = path / "config.json"
                return path / name, cfg if cfg.is_file() else None
        found = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
        raise WeightsFormatError(f"no weights in folder {path}: expected one of {', '.join(_HF_FILES)} (found {found})")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    cfg = path.parent / "config.json"
    return path, cfg if cfg.is_file() else None


def read_checkpoint(
    path: str | Path, *, map_location: Any = "cpu", trusted: bool = False, loaded: Any = None
) -> Checkpoint:
    """Read any supported checkpoint layout (see the module docstring) from a file or folder.

    ``loaded``: what :func:`torch_load` already returned for the torch file ``path`` (it is
    not read again; the caller had to look inside first, e.g. for a training config).
    """
    weights_path, config_path = _resolve_files(Path(path).expanduser())
    obj, meta = (loaded, {}) if loaded is not None else _load_tensors(weights_path, map_location, trusted)
    sd, state_key = find_state_dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    container = "safetensors" if "safetensors" in weights_path.name else "torch"

    if is_hf_state_dict(sd):
        hf_config = None
        if config_path is not None:
            try:
                hf_config = json.loads(config_path.read_text())
            except ValueError as e:
                log.warning("ignoring unreadable %s (%s)", config_path, _first_line(e))
        ours, unmapped = from_hf_state_dict(sd)
        return Checkpoint(
            ours,
            "hf",
            weights_path,
            container,
            state_key,
            class_names_from_hf_config(hf_config),
            hf_config=hf_config,
            hf_naming=hf_naming_of(sd),
            unmapped_keys=unmapped,
        )

    ours_share = sum(k.startswith(_OUR_PREFIXES) for k in sd)
    if ours_share <= len(sd) // 2:
        sample = ", ".join(list(sd)[:5])
        raise WeightsFormatError(
            f"{weights_path} is not an RT-DETR checkpoint: its keys use neither the reference naming "
            f"(backbone./encoder./decoder.) nor transformers' (model.backbone. ...); first keys: {sample}"
        )
    class_names, model_name = None, None
    if isinstance(obj, Mapping) and state_key is not None:
        class_names = _str_list(obj.get("class_names"))
        cfg = obj.get("config")
        if isinstance(cfg, Mapping) and isinstance(cfg.get("name"), str):
            model_name = cfg["name"]
    if meta:
        try:
            class_names = _str_list(json.loads(meta["class_names"])) if "class_names" in meta else class_names
        except ValueError:
            log.warning("ignoring unreadable class_names metadata in %s", weights_path)
        model_name = meta.get("model_name") or model_name
    has_meta = class_names is not None or model_name is not None
    fmt = "rtdetr" if has_meta else ("reference" if state_key is not None else "state_dict")
    return Checkpoint(sd, fmt, weights_path, container, state_key, class_names, model_name)


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None
