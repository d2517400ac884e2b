"""The validation loop the Trainer runs, and the precision and progress helpers it shares with training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..nn.postprocess import PostProcessor

__all__ = ["evaluate", "autocast_context", "progress_bar"]


def autocast_context(device: torch.device, enabled: bool, dtype: str = "auto"):
    """Autocast to ``dtype`` ("auto": float16 on CUDA, bfloat16 elsewhere) when ``enabled``.

    A primitive: it does not ask whether the dtype pays on this machine. Runs decide
    that once with :func:`rtdetr.runtime.resolve_amp_dtype` (the Trainer does in its
    constructor), which turns bf16 off on CPUs without native bf16.
    """
    if not enabled:
        return contextlib.nullcontext()
    if dtype == "auto":
        dtype = "float16" if device.type == "cuda" else "bfloat16"
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def progress_bar(iterable: Iterable, enabled: bool, **kwargs: Any) -> Iterable:
    """``iterable`` wrapped in a tqdm bar when ``enabled`` and tqdm is installed, else itself."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are a nicety
        return iterable
    return tqdm(iterable, dynamic_ncols=True, **kwargs)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    postprocessor: PostProcessor,
    evaluator: Any,
    device: torch.device,
    *,
    amp: bool = False,
    amp_dtype: str = "auto",
    progress: bool = False,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, Any]:
    """COCO metrics of ``model`` on ``loader`` (targets carry ``image_id`` and ``orig_size`` (w, h)).

    ``evaluator`` accumulates per-image predictions with dataset category ids
    (the postprocessor maps labels through its ``category_ids``).
    """
    was_training = model.training
    model.eval()
    for images, targets in progress_bar(loader, progress, desc="eval", leave=False):
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        with autocast_context(device, amp, amp_dtype):
            outputs = model(images)
        outputs = {k: v.float() for k, v in outputs.items()}
        sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
        results = postprocessor(outputs, sizes)
        evaluator.update(
            [{"image_id": int(t["image_id"]), **{k: v.cpu() for k, v in r.items()}} for t, r in zip(targets, results)]
        )
    model.train(was_training)
    evaluator.synchronize()  # every rank ends up with all detections
    return evaluator.compute()
