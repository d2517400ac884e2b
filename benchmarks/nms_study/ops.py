"""The measured pieces of the NMS study: YOLO-style postprocessing, box counting, timing.

Pure tensor functions with no model or dataset behind them, so they can be tested on
synthetic tensors (tests/test_nms_study.py) and timed in isolation.

YOLO's raw output (Ultralytics ``Detect`` head in eval mode) is one tensor per image,
``[4 + nc, A]``: ``cx, cy, w, h`` in input-image pixels, then ``nc`` sigmoid class
scores, for ``A`` anchors (2100 at 320 px). Postprocessing follows Ultralytics'
validator (``non_max_suppression(..., multi_label=True)``), the setting its reported
AP comes from: every (anchor, class) pair scoring above the confidence threshold is a
candidate box, then class-aware NMS (torchvision ``batched_nms``) and the ``max_det``
best are kept. ``multi_label=False`` is its predictor's setting (best class per anchor).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = [
    "Candidates",
    "count_above",
    "device_sync",
    "summarize_ms",
    "timed",
    "yolo_candidates",
    "yolo_nms",
]

# (boxes xyxy [N, 4], scores [N], class indices [N])
Candidates = tuple[Tensor, Tensor, Tensor]


def yolo_candidates(raw: Tensor, conf: float, *, multi_label: bool = True, max_nms: int = 30000) -> Candidates:
    """The boxes that enter NMS: pairs above ``conf``, as xyxy pixels in the input image.

    Args:
        raw: ``[4 + nc, A]`` one image's raw YOLO output (xywh + sigmoid scores).
        conf: confidence threshold (strictly greater passes, as in Ultralytics).
        multi_label: every (anchor, class) pair above ``conf`` (validator) or only
            each anchor's best class (predictor).
        max_nms: cap on the candidates (the highest scoring kept), as Ultralytics does.
    """
    xywh, scores = raw[:4], raw[4:]
    if multi_label:
        cls, idx = torch.nonzero(scores > conf, as_tuple=True)
        score = scores[cls, idx]
    else:
        score, cls = scores.max(0)
        idx = torch.nonzero(score > conf, as_tuple=True)[0]
        score, cls = score[idx], cls[idx]
    if score.numel() > max_nms:
        score, order = score.topk(max_nms)
        idx, cls = idx[order], cls[order]
    cx, cy, w, h = xywh[:, idx]
    boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=1)
    return boxes, score, cls


def yolo_nms(candidates: Candidates, iou: float, max_det: int = 300) -> Candidates:
    """Class-aware NMS at IoU ``iou``; the ``max_det`` highest scoring survivors, best first."""
    boxes, scores, cls = candidates
    keep = batched_nms(boxes, scores, cls, iou)[:max_det]  # batched_nms returns indices sorted by score
    return boxes[keep], scores[keep], cls[keep]


def count_above(scores: Tensor, thresholds: Sequence[float]) -> tuple[list[int], list[int]]:
    """How many boxes pass each threshold, counted two ways.

    Args:
        scores: ``[nc, A]`` class scores of one image (YOLO: anchors; DETR: queries).
        thresholds: confidence thresholds.

    Returns:
        ``(pairs, anchors)``: per threshold, the (anchor, class) pairs above it (the
        multi-label NMS input size) and the anchors whose best class is above it.
    """
    thr = torch.as_tensor(list(thresholds), dtype=scores.dtype, device=scores.device)[:, None]
    flat = scores.reshape(-1)[None]
    best = scores.amax(0)[None]
    return (flat > thr).sum(1).tolist(), (best > thr).sum(1).tolist()


def device_sync(device: torch.device | str) -> Callable[[], None]:
    """A function that waits for queued device work (CUDA kernels run asynchronously)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed(sync: Callable[[], None], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``, the device synchronized before and after so queued work counts."""
    sync()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - t


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, mean and 90th percentile of a list of durations, in milliseconds."""
    ms = sorted(s * 1e3 for s in seconds)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {"median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms), "p90_ms": p90, "n": len(ms)}
