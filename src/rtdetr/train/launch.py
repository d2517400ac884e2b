"""From names and paths to a ready Trainer / evaluation: what the CLI, the demo and benchmarks call."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..builder import build_model, build_postprocessor
from ..data import BatchCollator, build_dataset, build_transforms, default_multi_scales, default_num_workers, resolve_dataset
from ..eval import CocoEvaluator
from .checkpoint import load_checkpoint
from .distributed import init_distributed
from .engine import Trainer, evaluate
from .train_config import TrainConfig

__all__ = ["build_trainer", "epochs_for_budget", "model_from_checkpoint", "validate", "make_evaluator_for"]

log = logging.getLogger(__name__)


def make_evaluator_for(dataset: Any) -> CocoEvaluator:
    names = dict(zip(dataset.category_ids, dataset.class_names))
    return CocoEvaluator(dataset.coco_gt(), class_names=names)


def model_from_checkpoint(path: str | Path, *, prefer_ema: bool = True, **overrides: Any) -> nn.Module:
    """Rebuild a model from one of our training checkpoints (config + weights + class names).

    ``eval_spatial_size`` becomes the training image size, so ``Detector`` and export
    default to the resolution the model learned at; ``overrides`` win over both.
    """
    state = load_checkpoint(path)
    cfg = state.get("config")
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ValueError(f"{path} has no model config; build the preset and pass the file as weights instead")
    fields: dict[str, Any] = {}
    for section in ("backbone", "encoder", "decoder"):
        for k, v in cfg[section].items():
            if k != "__type__":
                fields[f"{section}__{k}"] = tuple(v) if isinstance(v, list) else v
    for k in ("eval_spatial_size", "num_top_queries"):
        if k in cfg:
            fields[k] = tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]
    imgsz = (state.get("train_config") or {}).get("imgsz")
    if isinstance(imgsz, int):
        # Predict at the size the model was trained and validated at, not the preset's default.
        fields["eval_spatial_size"] = (imgsz, imgsz)
    fields.update(overrides)
    model = build_model(cfg["name"], num_classes=cfg["num_classes"], **fields)
    weights = state["ema"]["module"] if prefer_ema and state.get("ema") else state["model"]
    model.load_state_dict(weights)
    model.class_names = state.get("class_names")
    model.category_ids = state.get("category_ids")
    return model


def build_trainer(
    model_name: str,
    data: str | Path,
    config: TrainConfig,
    *,
    weights: str | Path | None = None,
    model_overrides: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
) -> Trainer:
    """A Trainer for preset ``model_name`` on the COCO/YOLO dataset at ``data``.

    ``weights`` initializes from a checkpoint (released or ours); when its class
    count differs from the dataset's, the mismatched head tensors are re-initialized.
    ``augment`` overrides knobs of the training transforms (:func:`build_transforms`
    keywords, e.g. ``zoom_out_side_range=(1.0, 2.0)``); the paper's values otherwise.
    """
    dist_info = init_distributed(config.device)
    spec = resolve_dataset(data)
    train_tf = build_transforms(True, config.imgsz, stop_epoch=config.stop_epoch, **(augment or {}))
    val_tf = build_transforms(False, config.imgsz)
    train_ds = build_dataset(spec, "train", transforms=train_tf)
    val_ds = build_dataset(spec, "val", transforms=val_tf) if "val" in spec.splits else None
    model = build_model(model_name, num_classes=train_ds.num_classes, **(model_overrides or {}))
    if weights is not None:
        from ..weights import load_weights

        report = load_weights(model, weights, allow_head_mismatch=True)
        log.info(
            "initialized from %s (%s); re-initialized for %d classes: %s",
            weights, report.state_key or report.format, train_ds.num_classes, report.reinitialized_keys or "none",
        )  # fmt: skip
    scales = default_multi_scales(config.imgsz) if config.multi_scale else None
    return Trainer(
        model,
        train_ds,
        config=config,
        collate_fn=BatchCollator(multi_scales=scales, stop_epoch=config.stop_epoch),
        val_dataset=val_ds,
        val_collate_fn=BatchCollator(),
        make_evaluator=(lambda: make_evaluator_for(val_ds)) if val_ds is not None else None,
        class_names=train_ds.class_names,
        category_ids=train_ds.category_ids,
        dist_info=dist_info,
    )


def epochs_for_budget(
    model_name: str,
    data: str | Path,
    config: TrainConfig,
    budget_s: float,
    *,
    model_overrides: dict[str, Any] | None = None,
    probe_steps: int = 4,
) -> int:
    """Epochs that fill ``budget_s`` of training, from the speed of a few probe steps.

    For time-budgeted runs (``config.max_time_s``): the budget ends the run, the epoch
    count shapes the lr schedule, so a cosine schedule reaches its end when the time
    does. The probe trains a throw-away model (in ``config.out_dir``/probe) for
    ``probe_steps`` steps after one warm-up step; its time does not count.
    """
    probe_cfg = replace(
        config, epochs=1, max_steps_per_epoch=probe_steps, max_time_s=None, progress=False,
        out_dir=str(Path(config.out_dir) / "probe"), eval_every=10**9,
    )  # fmt: skip
    probe = build_trainer(model_name, data, probe_cfg, model_overrides=model_overrides)
    n_train = len(probe.train_dataset)
    probe.train_one_epoch(0)  # warm-up: the first steps set up kernels and caches
    stats = probe.train_one_epoch(1)
    epochs = round(budget_s * stats["images_per_s"] / n_train)
    log.info("probe: %.1f images/s -> %d epochs of %d images in %.0f s", stats["images_per_s"], epochs, n_train, budget_s)
    return max(1, epochs)


def validate(
    model: nn.Module,
    data: str | Path,
    *,
    split: str = "val",
    imgsz: int = 640,
    batch_size: int = 8,
    num_workers: int | None = None,
    device: str = "auto",
    amp: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], CocoEvaluator]:
    """COCO metrics of ``model`` on a split of the dataset at ``data`` (and the evaluator, for its json)."""
    dist_info = init_distributed(device)
    ds = build_dataset(resolve_dataset(data), split, transforms=build_transforms(False, imgsz))
    if model.config.num_classes != ds.num_classes:
        raise ValueError(
            f"model predicts {model.config.num_classes} classes but {data} ({split}) has {ds.num_classes}"
        )
    if num_workers is None:
        num_workers = default_num_workers(dist_info.device)
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=BatchCollator(), num_workers=num_workers)
    model = model.to(dist_info.device)
    post = build_postprocessor(model, category_ids=ds.category_ids).to(dist_info.device)
    evaluator = make_evaluator_for(ds)
    from ..runtime import setup_cpu_runtime

    setup_cpu_runtime(dist_info.device)
    metrics = evaluate(model, loader, post, evaluator, dist_info.device, amp=amp, progress=progress)
    return metrics, evaluator
