"""``load_weights``: put released, Hugging Face or fine-tuned weights into a built model."""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .download import fetch_hf, fetch_url
from .errors import WeightsMismatchError
from .formats import Checkpoint, read_checkpoint
from .hf_config import hf_config_differences
from .infer import infer_model_names, infer_num_classes
from .registry import TAGS, WeightsEntry, get_weights, list_weights, normalize_tag

__all__ = ["load_weights", "LoadReport", "resolve_weights", "read_weights", "HEAD_KEY_PATTERN"]

log = logging.getLogger(__name__)

# Tensors whose shape depends on the class count: re-initialized by allow_head_mismatch.
HEAD_KEY_PATTERN = re.compile(
    r"^decoder\.(enc_score_head\.(weight|bias)|dec_score_head\.\d+\.(weight|bias)|denoising_class_embed\.weight)$"
)
_PRIOR_PROB = 0.01  # score-head bias init, as when the model is built


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        source: the ``weights`` argument as given (tag, path, URL or ``hf:`` repo).
        path: the local file read.
        format: ``"reference"``, ``"rtdetr"``, ``"state_dict"`` or ``"hf"``
            (see :mod:`rtdetr.weights.formats`).
        container: ``"torch"`` or ``"safetensors"``.
        state_key: where the weights sat in the file (``"ema.module"``, ``"model"`` or None).
        missing_keys / unexpected_keys: only non-empty with ``strict=False``.
        reinitialized_keys: class-dependent head tensors re-initialized
            (``allow_head_mismatch=True``).
        class_names: the names now on ``model.class_names`` (None when unknown).
        weights: the registry entry, when the weights are a published checkpoint.
    """

    source: str
    path: Path
    format: str
    container: str
    state_key: str | None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    reinitialized_keys: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    weights: WeightsEntry | None = None

    def __str__(self) -> str:
        where = f"[{self.state_key}]" if self.state_key else ""
        parts = [f"{self.format} weights ({self.container}) from {self.source}{where}"]
        for label, keys in (
            ("missing", self.missing_keys),
            ("unexpected", self.unexpected_keys),
            ("re-initialized", self.reinitialized_keys),
        ):
            if keys:
                parts.append(f"{label}: {_sample(keys)}")
        return "; ".join(parts)


def _sample(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def resolve_weights(
    weights: str | os.PathLike | WeightsEntry, model_name: str | None = None, *, progress: bool = True
) -> tuple[Path, WeightsEntry | None]:
    """(local file or folder, registry entry or None) for any accepted ``weights`` value.

    Accepted: a :class:`WeightsEntry`; a tag (``"coco"``, ``"coco+o365"``) of ``model_name``;
    ``"hf:ORG/NAME"`` (optionally ``@revision``); an http(s) URL; a local file or folder.
    Tags win over same-named local paths (write ``./coco`` for a folder called coco).
    Downloads land in the torch hub / Hugging Face caches; see :mod:`rtdetr.weights.download`.
    """
    entry: WeightsEntry | None = None
    if isinstance(weights, WeightsEntry):
        entry = weights
    elif isinstance(weights, str):
        text = weights.strip()
        if text.startswith("hf:"):
            repo, _, revision = text[3:].partition("@")
            if repo.count("/") != 1:
                raise ValueError(f"expected 'hf:ORG/NAME[@revision]', got {weights!r}")
            entry = next((e for e in list_weights() if e.hub_repo == repo), None)
            return fetch_hf(repo, revision=revision or None)[0], entry
        if text.startswith(("http://", "https://")):
            entry = next((e for e in list_weights() if e.url == text), None)
            return fetch_url(text, progress=progress), entry
        tag = normalize_tag(text)
        if tag in TAGS or (model_name is not None and any(e.tag == tag for e in list_weights(model_name))):
            if model_name is None:
                raise ValueError(f"weights tag {weights!r} needs a model name to resolve against")
            entry = get_weights(model_name, tag)
    if entry is not None:
        hint = f"the same weights are on the Hugging Face Hub: weights='hf:{entry.hub_repo}'"
        return fetch_url(entry.url, progress=progress, hint=hint), entry

    path = Path(weights).expanduser()
    if not path.exists():
        tags = ", ".join(repr(e.tag) for e in list_weights(model_name)) if model_name else ""
        raise FileNotFoundError(
            f"weights {str(weights)!r} not found: not a file or folder, URL, 'hf:ORG/NAME' or a known tag"
            + (f" (tags for {model_name}: {tags})" if tags else "")
        )
    entry = next((e for e in list_weights() if e.file_name == path.name), None)
    return path, entry


def read_weights(
    weights: str | os.PathLike | WeightsEntry,
    model_name: str | None = None,
    *,
    map_location: Any = "cpu",
    progress: bool = True,
    trusted: bool = False,
    loaded: Any = None,
) -> Checkpoint:
    """Resolve (download if needed) and read ``weights`` without a model.

    What :func:`load_weights` reads, exposed so a caller can look at the tensors first
    (e.g. take the class count from the score heads) and then pass the result to
    :func:`load_weights` without reading the file twice. ``entry`` and ``source`` on
    the result say where it came from. ``loaded``: see :func:`read_checkpoint`.
    """
    path, entry = resolve_weights(weights, model_name, progress=progress)
    ckpt = read_checkpoint(path, map_location=map_location, trusted=trusted, loaded=loaded)
    ckpt.entry, ckpt.source = entry, str(weights)
    return ckpt


def load_weights(
    model: nn.Module,
    weights: str | os.PathLike | WeightsEntry | Checkpoint,
    *,
    strict: bool = True,
    map_location: Any = "cpu",
    allow_head_mismatch: bool = False,
    progress: bool = True,
    trusted: bool = False,
) -> LoadReport:
    """Load weights into ``model`` in place (its dtype and device are kept).

    Args:
        model: a built detector; tags resolve against ``model.config.name``. Load into a
            ``.double()`` model to keep float64 weights exact.
        weights: a :class:`Checkpoint` from :func:`read_weights`, or a tag (``"coco"``, ``"coco+o365"``), a local file or ``save_pretrained``
            folder, an http(s) URL, ``"hf:ORG/NAME"`` or a :class:`WeightsEntry`.
            Reference, Hugging Face and this package's own checkpoints are recognized
            from their keys.
        strict: every model tensor must be loaded and every checkpoint tensor used.
            Shape mismatches always raise.
        map_location: passed to ``torch.load``.
        allow_head_mismatch: when the class count differs (fine-tuning), re-initialize
            the class-dependent heads (score heads, denoising class embedding) instead
            of raising; they are listed in the report and logged.
        progress: show a download progress bar.
        trusted: allow torch files holding arbitrary Python objects (unpickling can run code).

    Returns:
        A :class:`LoadReport`. ``model.class_names`` is set from the weights (COCO names
        for published COCO weights, ``id2label`` of a HF config, a checkpoint's own
        ``class_names``) when they match the model's class count and the heads were loaded.

    Raises:
        WeightsDownloadError: offline or failed download (names the URL and the cache path).
        WeightsFormatError: not a readable checkpoint.
        WeightsMismatchError: the weights do not fit the model.
        FileNotFoundError / ValueError: unknown path, tag or malformed argument.
    """
    cfg = getattr(model, "config", None)
    model_name = getattr(cfg, "name", None)
    if isinstance(weights, Checkpoint):
        ckpt = weights
    else:
        ckpt = read_weights(weights, model_name, map_location=map_location, progress=progress, trusted=trusted)
    entry = ckpt.entry
    weights = ckpt.source or str(ckpt.path)
    target = model.state_dict()
    sd = dict(ckpt.state_dict)  # a plain dict: BatchNorm then fills absent step counters itself

    # Same-named tensors with other shapes cannot load; the class heads may be re-initialized.
    mismatched = [k for k in sd if k in target and sd[k].shape != target[k].shape]
    reinit = [k for k in mismatched if HEAD_KEY_PATTERN.match(k)] if allow_head_mismatch else []
    mismatched = [k for k in mismatched if k not in reinit]
    if mismatched or (strict and ckpt.unmapped_keys):
        missing = [k for k in target if k not in sd and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in sd if k not in target and not k.endswith("num_batches_tracked")]
        raise WeightsMismatchError(
            _mismatch_message(
                model_name,
                str(weights),
                ckpt.state_dict,
                target,
                missing,
                unexpected + ckpt.unmapped_keys,
                mismatched,
                saved_from=ckpt.model_name,
            ),
            missing,
            unexpected + ckpt.unmapped_keys,
            mismatched,
        )
    for key in reinit:
        del sd[key]

    # Keys can differ legitimately (the model's load hooks rename another checkpoint layout);
    # then keep a copy so that a failed strict load leaves the model untouched.
    same_keys = _counted(sd) == _counted(target)
    backup = None if same_keys else {k: v.detach().clone() for k, v in target.items()}
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        _restore(model, backup)
        raise WeightsMismatchError(f"weights {str(weights)!r} do not fit {model_name or 'the model'}: {e}") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")] + ckpt.unmapped_keys
    if allow_head_mismatch:
        reinit += [k for k in missing if HEAD_KEY_PATTERN.match(k)]
        missing = [k for k in missing if k not in reinit]
    if strict and (missing or unexpected):
        _restore(model, backup)
        raise WeightsMismatchError(
            _mismatch_message(
                model_name, str(weights), ckpt.state_dict, target, missing, unexpected, [], saved_from=ckpt.model_name
            ),
            missing,
            unexpected,
            [],
        )

    if ckpt.model_name and model_name and ckpt.model_name != model_name:
        log.warning("weights were saved from %s, loading them into %s", ckpt.model_name, model_name)
    if ckpt.hf_config and cfg is not None:
        for diff in hf_config_differences(ckpt.hf_config, cfg):
            log.warning("HF config differs from %s: %s", model_name, diff)

    if reinit:
        _reinitialize_heads(model, reinit)
        log.warning("re-initialized %d class-dependent head tensors: %s", len(reinit), _sample(reinit))

    num_classes = getattr(cfg, "num_classes", None) or infer_num_classes(target)
    names = ckpt.class_names or (list(entry.class_names) if entry is not None else None)
    if names is not None and len(names) == num_classes and not reinit:
        model.class_names = list(names)
    elif not hasattr(model, "class_names"):
        model.class_names = None
    report = LoadReport(
        str(weights),
        ckpt.path,
        ckpt.format,
        ckpt.container,
        ckpt.state_key,
        missing,
        unexpected,
        reinit,
        getattr(model, "class_names", None),
        entry,
    )
    log.info("loaded %s into %s", report, model_name or type(model).__name__)
    return report


def _counted(sd: dict[str, Tensor]) -> set[str]:
    return {k for k in sd if not k.endswith("num_batches_tracked")}


@torch.no_grad()
def _restore(model: nn.Module, backup: dict[str, Tensor] | None) -> None:
    if backup is not None:
        for key, tensor in model.state_dict().items():
            tensor.copy_(backup[key])


def _reinitialize_heads(model: nn.Module, keys: list[str]) -> None:
    """Fresh init of the modules owning ``keys``, as when the model is built."""
    modules = dict(model.named_modules())
    for name in dict.fromkeys(k.rsplit(".", 1)[0] for k in keys):
        module = modules[name]
        module.reset_parameters()
        if isinstance(module, nn.Linear) and "score_head" in name and module.bias is not None:
            nn.init.constant_(module.bias, -math.log((1 - _PRIOR_PROB) / _PRIOR_PROB))


def _mismatch_message(
    model_name: str | None,
    source: str,
    ckpt_sd: dict[str, Tensor],
    target: dict[str, Tensor],
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
    saved_from: str | None = None,
) -> str:
    if saved_from and model_name and saved_from != model_name:
        # The common mistake: one preset's training checkpoint given as weights of another.
        # Say that first; the key lists only confirm it.
        lines = [
            f"weights {source!r} were trained as {saved_from}, not {model_name}: load the file itself as the "
            f"model (--model {source}, or rtdetr.load_model({source!r})), or use --model {saved_from}"
        ]
    else:
        lines = []
    lines.append(
        f"weights {source!r} do not fit {model_name or 'the model'}: "
        f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} with other shapes"
    )
    if missing:
        lines.append(f"  missing:    {_sample(missing, 5)}")
    if unexpected:
        lines.append(f"  unexpected: {_sample(unexpected, 5)}")
    if mismatched:
        shapes = [f"{k} {list(ckpt_sd[k].shape)} vs {list(target[k].shape)}" for k in mismatched]
        lines.append(f"  shapes (checkpoint vs model): {_sample(shapes, 3)}")
    guesses = infer_model_names(ckpt_sd)
    if guesses and model_name not in guesses:
        lines.append(f"  the checkpoint looks like {' or '.join(guesses)}; build that model instead")
    if mismatched and all(HEAD_KEY_PATTERN.match(k) for k in mismatched):
        theirs, ours = infer_num_classes(ckpt_sd), infer_num_classes(target)
        lines.append(
            f"  only the class heads differ (checkpoint {theirs} classes, model {ours}): "
            "pass allow_head_mismatch=True to re-initialize them for fine-tuning"
        )
    return "\n".join(lines)
