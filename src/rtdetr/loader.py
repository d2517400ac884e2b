"""``build_model`` and ``load_model``: from what a user names to a built detector, one way for every entry point.

``rtdetr predict/val/export/serve --model X``, ``Detector.from_pretrained(X)`` and
Python users all go through :func:`load_model`, so a preset name, a training
checkpoint, a released ``.pth``, a ``.safetensors`` file, a Hugging Face folder or
``hf:ORG/NAME`` mean the same everywhere, load without running code from the file
(unless ``trusted``), and fail with the same one-line :class:`~rtdetr.errors.UserError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .builder import build_detector
from .config import RTDETRConfig, get_config, list_models
from .errors import UserError
from .nn.detector import RTDETR

if TYPE_CHECKING:
    from .weights.formats import Checkpoint

__all__ = ["build_model", "load_model", "model_from_checkpoint", "MODEL_FILE_SUFFIXES"]

log = logging.getLogger(__name__)

# What a --model value that is not a preset may end with (exported .onnx files are
# run by Detector.from_pretrained, not rebuilt as modules).
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".onnx")


def build_model(
    name: str | RTDETRConfig,
    *,
    num_classes: int | None = None,
    weights: str | os.PathLike | Checkpoint | None = None,
    trusted: bool = False,
    **overrides: Any,
) -> RTDETR:
    """Build a detector from a preset name (see :func:`rtdetr.list_models`) or a config.

    Args:
        name: preset name such as ``"rtdetr_r18vd"``, or an :class:`RTDETRConfig`.
        num_classes: classes of the score heads. Default: as many as the ``weights``
            have (their score heads' size; names come along from the file, the hub
            config's ``id2label`` or the registry), else the preset's (80). A value
            different from the weights' raises :class:`~rtdetr.weights.WeightsMismatchError`
            (to fine-tune, build without weights and call ``load_weights(...,
            allow_head_mismatch=True)``).
        weights: optional weights to load (see :func:`rtdetr.weights.load_weights`:
            a registry tag such as ``"coco"``, a local file or directory, a URL, or
            ``"hf:ORG/NAME"``).
        trusted: allow torch files that hold arbitrary Python objects (unpickling can
            run code; never for files from an untrusted source).
        **overrides: config fields to change, e.g. ``eval_idx=1``, ``num_queries=100``
            (see :func:`rtdetr.config.get_config` for the rules).

    Returns:
        An :class:`RTDETR` in training mode; freshly initialized unless ``weights``
        is given. Its resolved config is ``model.config``.
    """
    ckpt = None
    if weights is not None:
        from .weights import Checkpoint, read_weights  # deferred: pulls in download machinery
        from .weights.infer import infer_num_classes

        if isinstance(weights, Checkpoint):
            ckpt = weights
        else:
            ckpt = read_weights(weights, name if isinstance(name, str) else name.name, trusted=trusted)
        if num_classes is None:
            num_classes = infer_num_classes(ckpt.state_dict)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    model = build_detector(get_config(name, **overrides))
    if ckpt is not None:
        from .weights import load_weights

        load_weights(model, ckpt)
    return model


def load_model(
    spec: str | os.PathLike | RTDETRConfig,
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    trusted: bool = False,
    **overrides: Any,
) -> RTDETR:
    """Build the detector that ``spec`` names, with weights loaded when it names some.

    Args:
        spec: one of
            - a preset name (``"rtdetr_r18vd"``, see :func:`rtdetr.list_models`) or an
              :class:`RTDETRConfig`: built fresh, or with ``weights``;
            - a training checkpoint written by ``rtdetr train`` (``last.pt``/``best.pt``):
              rebuilt from the config it stores (EMA weights, class names, input size);
            - any other weights: a released ``.pth``, a ``.safetensors`` file, a
              Hugging Face ``save_pretrained`` folder or ``"hf:ORG/NAME"``: the preset is
              the one recorded in the file, else the one its tensor shapes match.
        weights: for a preset only: registry tag (``"coco"``), file, folder, URL or ``hf:``.
        num_classes: default: the weights' class count (their score heads), else 80.
        trusted: allow torch files holding arbitrary Python objects. Unpickling such a
            file can run any code, so this is off by default and files are read with
            ``torch.load(weights_only=True)``.
        overrides: config fields, e.g. ``eval_idx=2``, ``num_queries=100``.

    Returns:
        An :class:`~rtdetr.RTDETR` in training mode, on the CPU; ``model.class_names``
        set when the weights carry names.

    Raises:
        UserError: (and its subclasses) unknown preset, missing file, unreadable or
            refused (unsafe) file, weights that do not fit; the message says what to do.
    """
    if isinstance(spec, RTDETRConfig) or str(spec) in list_models():
        if weights is None:
            _warn_untrained(spec.name if isinstance(spec, RTDETRConfig) else str(spec))
        return build_model(spec, num_classes=num_classes, weights=weights, trusted=trusted, **overrides)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text.startswith("hf:") or path.exists():
        if weights is not None:
            raise UserError(f"weights={weights!r} is for preset names; {text} holds weights already")
        if path.suffix.lower() == ".onnx":
            raise UserError(
                f"{path} is an exported ONNX graph, not a PyTorch model: run it with Detector.from_pretrained"
            )
        state = None
        if path.is_file() and path.suffix.lower() in (".pt", ".pth"):
            from .weights.formats import torch_load

            state = torch_load(path, trusted=trusted)
            if isinstance(state, dict) and isinstance(state.get("config"), dict) and "model" in state:
                return _from_training_state(state, path, num_classes=num_classes, **overrides)
        return _from_weights(text, num_classes=num_classes, trusted=trusted, loaded=state, **overrides)
    if path.suffix.lower() in MODEL_FILE_SUFFIXES or os.sep in text:
        raise FileNotFoundError(f"model file not found: {path}")
    close = difflib.get_close_matches(text, list_models(), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; presets: {', '.join(list_models())}"
    raise UserError(f"unknown model {text!r}: not a preset name, nor an existing file or folder{hint}")


def _warn_untrained(name: str) -> None:
    """A preset without weights predicts noise; fine for speed tests, a surprise otherwise."""
    from .weights.registry import list_weights

    tags = [e.tag for e in list_weights(name)]
    hint = f"weights={tags[0]!r} (--weights {tags[0]})" if tags else "a checkpoint you trained (--model last.pt)"
    log.warning("%s has no weights: it is randomly initialized and its detections mean nothing; pass %s", name, hint)


def model_from_checkpoint(
    path: str | Path, *, prefer_ema: bool = True, trusted: bool = False, **overrides: Any
) -> RTDETR:
    """Rebuild a model from one of our training checkpoints (config + weights + class names).

    ``eval_spatial_size`` becomes the training image size, so ``Detector`` and export
    default to the resolution the model learned at; ``overrides`` win over both.
    """
    from .train.checkpoint import load_checkpoint

    state = load_checkpoint(path, trusted=trusted)
    return _from_training_state(state, Path(path), prefer_ema=prefer_ema, **overrides)


def _from_training_state(
    state: dict[str, Any], path: Path, *, prefer_ema: bool = True, num_classes: int | None = None, **overrides: Any
) -> RTDETR:
    from .weights.errors import WeightsMismatchError

    cfg = state.get("config")
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise UserError(f"{path} has no model config; build the preset and pass the file as weights instead")
    if num_classes is not None and num_classes != cfg["num_classes"]:
        raise UserError(
            f"{path} predicts {cfg['num_classes']} classes, not {num_classes}; to fine-tune it on "
            f"{num_classes} classes train with --weights {path}"
        )
    known = _field_names(cfg["name"])
    fields: dict[str, Any] = {}
    for section in ("backbone", "encoder", "decoder"):
        for k, v in cfg[section].items():
            if k != "__type__":
                fields[f"{section}__{k}"] = tuple(v) if isinstance(v, list) else v
    for k in ("eval_spatial_size", "num_top_queries", "checkpoint_layout"):
        if k in cfg:
            fields[k] = tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]
    imgsz = (state.get("train_config") or {}).get("imgsz")
    if isinstance(imgsz, int):
        # Predict at the size the model was trained and validated at, not the preset's default.
        fields["eval_spatial_size"] = (imgsz, imgsz)
    for k in sorted(set(fields) - known):  # written by another version of this package
        log.warning("%s: ignoring config field %r, unknown to this version", path, k)
        del fields[k]
    fields.update(overrides)
    model = build_model(cfg["name"], num_classes=cfg["num_classes"], **fields)
    weights = state["ema"]["module"] if prefer_ema and state.get("ema") else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise WeightsMismatchError(f"{path}: weights do not fit its own config ({str(e).splitlines()[0]})") from None
    model.class_names = state.get("class_names")
    model.category_ids = state.get("category_ids")
    return model


def _field_names(name: str) -> set[str]:
    """Config fields of preset ``name`` as a checkpoint spells them (``section__field`` in sections)."""
    preset = get_config(name)
    names = {f.name for f in dataclasses.fields(preset)}
    for section in ("backbone", "encoder", "decoder"):
        names |= {f"{section}__{f.name}" for f in dataclasses.fields(getattr(preset, section))}
    return names


def _from_weights(spec: str, *, num_classes: int | None, trusted: bool, loaded: Any, **overrides: Any) -> RTDETR:
    """A preset chosen from the weights themselves (recorded name, else tensor shapes).

    ``loaded``: the torch file's contents when the caller has read them already.
    """
    from .weights import read_weights
    from .weights.infer import infer_model_names

    ckpt = read_weights(spec, trusted=trusted, loaded=loaded)
    name = ckpt.model_name if ckpt.model_name in list_models() else None
    if name is None:
        guesses = infer_model_names(ckpt.state_dict)
        if len(guesses) != 1:
            what = f"it matches {', '.join(guesses)}" if guesses else "its tensors match no preset"
            raise UserError(
                f"cannot tell which preset {spec} is for ({what}): give the preset and the file as weights, "
                f"e.g. --model {guesses[0] if guesses else 'rtdetr_r18vd'} --weights {spec}"
            )
        name = guesses[0]
    log.info("%s: building %s for these weights", spec, name)
    return build_model(name, num_classes=num_classes, weights=ckpt, **overrides)
