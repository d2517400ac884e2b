"""The measurements of the NMS study, each a function of runners (``detectors``) and images.

* ``box_counts``: boxes per image above each confidence threshold.
* ``yolo_nms_grid``: per (conf, IoU) setting, the NMS time per image and the COCO AP.
* ``ours_threshold_sweep``: our postprocessor's time and AP against its score threshold.
* ``e2e_latency``: preprocess + model + postprocess per image, every detector alike.

Timing rules (the same for every detector): warm-up calls that are not recorded, many
repetitions, medians; the device is synchronized around each timed stage; repetitions of
different settings / detectors are interleaved (round-robin, rotated each round), so a
burst of load from other processes on a shared machine hits all of them alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .detectors import Preprocess, RTDETRRunner, YoloRunner
from .ops import count_above, summarize_ms, timed, yolo_candidates, yolo_nms

__all__ = [
    "ValImage",
    "box_counts",
    "coco_ap",
    "e2e_latency",
    "load_val_images",
    "ours_threshold_sweep",
    "raw_outputs",
    "yolo_nms_grid",
]

Sync = Callable[[], None]


@dataclass
class ValImage:
    """One validation image: decoded uint8 RGB on the host, its id and original (w, h) on the device."""

    image_id: int
    image: Tensor
    orig_wh: Tensor


def load_val_images(data: Path, device: torch.device, limit: int | None = None) -> tuple[list[ValImage], Any]:
    """The validation split decoded into memory (decoding is not part of any timing)."""
    from rtdetr.data import build_dataset, resolve_dataset

    ds = build_dataset(resolve_dataset(data), "val")
    images = []
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        image, target = ds[i]
        wh = torch.as_tensor([int(v) for v in target["orig_size"]], dtype=torch.int64, device=device)
        images.append(ValImage(int(target["image_id"]), image.as_subclass(Tensor).contiguous(), wh))
    return images, ds


@torch.inference_mode()
def raw_outputs(runner: Any, images: Sequence[ValImage], pre: Preprocess) -> list[Any]:
    """Each image's raw model output (kept on the device), for the postprocessing studies."""
    return [runner.forward(pre(im.image)) for im in images]


def coco_ap(dataset: Any, images: Sequence[ValImage], dets: Sequence[dict[str, Tensor]]) -> dict[str, float]:
    """COCO AP / AP50 of per-image detections (category ids, original-image pixels)."""
    from rtdetr.train.launch import make_evaluator_for

    evaluator = make_evaluator_for(dataset)
    evaluator.update([{"image_id": im.image_id, **d} for im, d in zip(images, dets, strict=True)])
    m = evaluator.compute()
    return {"AP": m["AP"], "AP50": m["AP50"]}


def box_counts(runner: Any, raws: Sequence[Any], thresholds: Sequence[float]) -> dict[str, list[float]]:
    """Mean boxes per image above each threshold: (anchor|query, class) pairs and anchors|queries."""
    pairs, anchors = [], []
    for raw in raws:
        p, a = count_above(runner.scores(raw), thresholds)
        pairs.append(p)
        anchors.append(a)
    return {"thresholds": list(thresholds), "pairs": _column_means(pairs), "anchors": _column_means(anchors)}


def _column_means(rows: list[list[int]]) -> list[float]:
    """Per-threshold mean over images (rows: images, columns: thresholds)."""
    return [statistics.fmean(col) for col in zip(*rows)]


def _per_image_median(times: list[list[float]]) -> list[float]:
    return [statistics.median(t) for t in times]


@torch.inference_mode()
def yolo_nms_grid(
    runner: YoloRunner,
    raws: Sequence[Tensor],
    images: Sequence[ValImage],
    dataset: Any,
    confs: Sequence[float],
    ious: Sequence[float],
    *,
    reps: int,
    warmup: int,
    sync: Sync,
) -> list[dict[str, Any]]:
    """NMS time and AP for every (conf, IoU) setting.

    Per image and setting, the candidate filtering (threshold + xywh -> xyxy) and
    ``batched_nms`` (+ top ``max_det``) are timed separately, ``reps`` times after
    ``warmup`` unrecorded calls, and the per-image medians are summarized over images.
    """
    settings = [(c, i) for c in confs for i in ious]
    n = len(images)
    filt_t = {s: [[] for _ in range(n)] for s in settings}
    nms_t = {s: [[] for _ in range(n)] for s in settings}
    kept = {s: [0] * n for s in settings}
    cands = {s: [0] * n for s in settings}
    dets = {s: [None] * n for s in settings}
    for rep in range(warmup + reps):
        rot = rep % len(settings)
        for s in settings[rot:] + settings[:rot]:
            conf, iou = s
            for k, raw in enumerate(raws):
                cand, t_f = timed(sync, yolo_candidates, raw, conf, multi_label=runner.multi_label)
                out, t_n = timed(sync, yolo_nms, cand, iou, runner.max_det)
                if rep >= warmup:
                    filt_t[s][k].append(t_f)
                    nms_t[s][k].append(t_n)
                if rep == 0:
                    cands[s][k] = int(cand[1].numel())
                    kept[s][k] = int(out[1].numel())
                    dets[s][k] = runner.finish(*out, images[k].orig_wh)
    rows = []
    for s in settings:
        f, m = _per_image_median(filt_t[s]), _per_image_median(nms_t[s])
        total = [a + b for a, b in zip(f, m)]
        rows.append(
            {
                "conf": s[0],
                "iou": s[1],
                "boxes_in": statistics.fmean(cands[s]),
                "boxes_kept": statistics.fmean(kept[s]),
                "filter": summarize_ms(f),
                "nms": summarize_ms(m),
                "total": summarize_ms(total),
                **coco_ap(dataset, images, dets[s]),
            }
        )
    return rows


@torch.inference_mode()
def ours_threshold_sweep(
    runners: Sequence[RTDETRRunner],
    raws: Sequence[Sequence[dict[str, Tensor]]],
    images: Sequence[ValImage],
    dataset: Any,
    thresholds: Sequence[float | None],
    *,
    reps: int,
    warmup: int,
    sync: Sync,
) -> list[dict[str, Any]]:
    """Our postprocessing (sigmoid -> top-K -> score filter) time and AP per score threshold."""
    rows = []
    for runner, rs in zip(runners, raws, strict=True):
        # The same postprocessor as the runner's, once per threshold.
        posts = {thr: runner.with_threshold(thr) for thr in thresholds}
        times = {thr: [[] for _ in images] for thr in thresholds}
        dets = {thr: [None] * len(images) for thr in thresholds}
        for rep in range(warmup + reps):
            rot = rep % len(thresholds)
            for thr in list(thresholds[rot:]) + list(thresholds[:rot]):
                for k, (raw, im) in enumerate(zip(rs, images)):
                    out, t = timed(sync, posts[thr], raw, im.orig_wh[None])
                    out = out[0]
                    if rep >= warmup:
                        times[thr][k].append(t)
                    if rep == 0:
                        dets[thr][k] = out
        for thr in thresholds:
            rows.append(
                {
                    "model": runner.name,
                    "score_threshold": thr,
                    "boxes_kept": statistics.fmean(int(d["scores"].numel()) for d in dets[thr]),
                    "post": summarize_ms(_per_image_median(times[thr])),
                    **coco_ap(dataset, images, dets[thr]),
                }
            )
    return rows


@torch.inference_mode()
def e2e_latency(
    runners: Sequence[Any],
    images: Sequence[ValImage],
    pre: Preprocess,
    *,
    rounds: int,
    warmup: int,
    sync: Sync,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per-image latency of preprocess, model and postprocess (batch 1), for every runner.

    Each round gives every runner a block of all ``images`` (after ``warmup`` unrecorded
    calls that re-warm caches after the previous runner), in an order rotated per round.
    Returns ``{name: {"pre"|"model"|"post"|"total": summarize_ms(...)}}`` over all calls.
    """
    stages = ("pre", "model", "post", "total")
    rec: dict[str, dict[str, list[float]]] = {r.name: {s: [] for s in stages} for r in runners}
    for rnd in range(rounds):
        rot = rnd % len(runners)
        for runner in list(runners[rot:]) + list(runners[:rot]):
            for k in range(warmup + len(images)):
                im = images[k % len(images)]
                x, t_pre = timed(sync, pre, im.image)
                raw, t_model = timed(sync, runner.forward, x)
                _, t_post = timed(sync, runner.postprocess, raw, im.orig_wh)
                if k >= warmup:
                    r = rec[runner.name]
                    r["pre"].append(t_pre)
                    r["model"].append(t_model)
                    r["post"].append(t_post)
                    r["total"].append(t_pre + t_model + t_post)
        log(f"  latency round {rnd + 1}/{rounds} done")
    return {name: {s: summarize_ms(v) for s, v in r.items()} for name, r in rec.items()}
