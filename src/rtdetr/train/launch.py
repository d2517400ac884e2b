"""From names and paths to a ready Trainer / evaluation: what the CLI, the demo and benchmarks call."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..builder import build_postprocessor
from ..data import (
    BatchCollator,
    build_dataset,
    build_transforms,
    default_multi_scales,
    default_num_workers,
    resolve_dataset,
)
from ..data.mosaic import MosaicDataset
from ..eval import CocoEvaluator
from ..loader import build_model
from ..runtime import resolve_amp_dtype, setup_cpu_runtime
from .distributed import broadcast_object, init_distributed
from .engine import Trainer, evaluate
from .input_sizes import fit_multi_scales
from .run_dir import next_run_dir
from .train_config import TrainConfig, split_overrides

__all__ = ["build_trainer", "train_for_budget", "validate", "make_evaluator_for"]

log = logging.getLogger(__name__)

# The epoch count a time-fitted run starts with, before it has measured its step rate.
_UNFITTED_EPOCHS = 10_000


def make_evaluator_for(dataset: Any) -> CocoEvaluator:
    names = dict(zip(dataset.category_ids, dataset.class_names))
    return CocoEvaluator(dataset.coco_gt(), class_names=names)


def build_trainer(
    model_name: str,
    data: str | Path,
    config: TrainConfig,
    *,
    weights: str | Path | None = None,
    model_overrides: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    exist_ok: bool = False,
) -> Trainer:
    """A Trainer for preset ``model_name`` on the COCO/YOLO dataset at ``data``.

    ``weights`` initializes from a checkpoint (released or ours); when its class
    count differs from the dataset's, the mismatched head tensors are re-initialized.
    ``augment`` overrides knobs of the training transforms (:func:`build_transforms`
    keywords, e.g. ``zoom_out_side_range=(1.0, 2.0)``); the paper's values otherwise.

    ``config.out_dir`` holding an earlier run is never overwritten: the run goes to
    ``out_dir2``, ``out_dir3``, ... (logged; the Trainer's ``out_dir`` says where)
    unless ``exist_ok`` (which resuming into that folder needs).
    Multi-scale sizes too small for the model's query count are dropped (logged).
    ``model_overrides`` (``--set``) may also hold :class:`TrainConfig` fields (e.g.
    ``loss_cls="mal"``, ``mosaic_prob=0.5``); those replace the fields of ``config``
    (:func:`~rtdetr.train.train_config.split_overrides`).
    """
    model_overrides, train_overrides = split_overrides(model_overrides)
    if train_overrides:
        config = replace(config, **train_overrides)
    dist_info = init_distributed(config.device)
    # Rank 0 picks the folder and tells the others, so all ranks agree even if rank 0
    # has already created it by the time another rank would look.
    out_dir = broadcast_object(str(next_run_dir(config.out_dir, exist_ok)) if dist_info.is_main else None)
    if dist_info.is_main and Path(out_dir) != Path(config.out_dir):
        log.info(
            "%s holds an earlier run; this run goes to %s (--exist-ok reuses the folder, --resume continues it)",
            config.out_dir,
            out_dir,
        )
    elif dist_info.is_main:
        log.info("run directory: %s", out_dir)
    config = replace(config, out_dir=out_dir)
    spec = resolve_dataset(data)
    train_tf = build_transforms(True, config.imgsz, stop_epoch=config.stop_epoch, **(augment or {}))
    val_tf = build_transforms(False, config.imgsz)
    train_ds = build_dataset(spec, "train", transforms=train_tf)
    val_ds = build_dataset(spec, "val", transforms=val_tf) if "val" in spec.splits else None
    # The seed fixes the initial weights too: the same command and seed start from the same model.
    torch.manual_seed(config.seed)
    model = build_model(model_name, num_classes=train_ds.num_classes, **(model_overrides or {}))
    if weights is not None:
        from ..weights import load_weights

        report = load_weights(model, weights, allow_head_mismatch=True)
        log.info(
            "initialized from %s (%s); re-initialized for %d classes: %s",
            weights,
            report.state_key or report.format,
            train_ds.num_classes,
            report.reinitialized_keys or "none",
        )
    if config.mosaic_prob > 0:
        train_ds = MosaicDataset(train_ds, prob=config.mosaic_prob, size=config.imgsz, stop_epoch=config.mosaic_until)
        if config.mosaic_until is not None and config.mosaic_until <= 0:
            log.warning(
                "mosaic_prob=%g has no effect: mosaics stop at epoch 0 (set mosaic_stop_epoch)", config.mosaic_prob
            )
        else:
            log.info("mosaic composites with probability %g until epoch %s", config.mosaic_prob, config.mosaic_until)
    scales = fit_multi_scales(model, config.imgsz, default_multi_scales(config.imgsz) if config.multi_scale else None)
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


def train_for_budget(
    model_name: str,
    data: str | Path,
    config: TrainConfig,
    *,
    fit_epochs: bool = True,
    start: float | None = None,
    weights: str | Path | None = None,
    model_overrides: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    exist_ok: bool = False,
    resume: str | Path | None = None,
) -> Trainer:
    """Build a Trainer and train it within ``config.max_time_s`` seconds of wall time; returns it.

    The budget counts from ``start`` (a ``time.perf_counter()`` value; default: now), so
    building the model and reading the data are part of it: the time a user waits for
    training is the budget (the evaluation after the last step comes on top).
    ``fit_epochs``: the run sizes its lr schedule and epoch count to the steps that fit
    in the budget, from its own measured step rate (no separate probe); off when the
    user fixed the epoch count. Without ``max_time_s`` this is build + fit.
    """
    start = time.perf_counter() if start is None else start
    budget = config.max_time_s
    fit = bool(budget) and fit_epochs and resume is None
    if fit:
        # Until the first measurement (after ~20 steps) the schedule must not end: plenty of epochs.
        config = replace(config, epochs=max(config.epochs, _UNFITTED_EPOCHS))
    trainer = build_trainer(
        model_name, data, config, weights=weights, model_overrides=model_overrides, augment=augment, exist_ok=exist_ok
    )
    deadline = start + budget if budget else None
    if deadline is not None:
        log.info("training for the %.0f s left of the %.0f s budget", deadline - time.perf_counter(), budget)
    trainer.fit(resume=resume, deadline=deadline, fit_schedule=fit)
    return trainer


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
        raise ValueError(f"model predicts {model.config.num_classes} classes but {data} ({split}) has {ds.num_classes}")
    if num_workers is None:
        num_workers = default_num_workers(dist_info.device)
    # Under torchrun each rank evaluates every world_size-th image; the evaluator gathers them all.
    part = Subset(ds, range(dist_info.rank, len(ds), dist_info.world_size)) if dist_info.world_size > 1 else ds
    loader = DataLoader(part, batch_size=batch_size, collate_fn=BatchCollator(), num_workers=num_workers)
    model = model.to(dist_info.device)
    post = build_postprocessor(model, category_ids=ds.category_ids).to(dist_info.device)
    evaluator = make_evaluator_for(ds)
    setup_cpu_runtime(dist_info.device)
    amp = resolve_amp_dtype(dist_info.device, amp) is not None  # fp32 where bf16 would be emulated
    metrics = evaluate(model, loader, post, evaluator, dist_info.device, amp=amp, progress=progress)
    if len(evaluator.seen_image_ids) != len(ds):  # gathered from every rank: none may be missing
        raise RuntimeError(f"evaluated {len(evaluator.seen_image_ids)} of {len(ds)} images of {data} ({split})")
    return metrics, evaluator
