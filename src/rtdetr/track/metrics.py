"""MOTA, IDF1 and ID switches with ``motmetrics``, from ground-truth and tracker boxes.

Boxes are ``(frame, id, x0, y0, x1, y1)`` in pixels (xyxy). The IoU distances are
computed here: ``motmetrics.distances.iou_matrix`` 1.4 calls ``np.asfarray``, which
NumPy 2 removed; the accumulator and metrics themselves work on NumPy 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["iou_distances", "mot_scores"]

Row = Sequence[float]  # (frame, id, x0, y0, x1, y1, ...): extra fields are ignored


def iou_distances(gt: np.ndarray, hyp: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """``1 - IoU`` of xyxy boxes ``gt [G, 4]`` x ``hyp [H, 4]``; NaN (no match) where IoU < ``min_iou``."""
    if len(gt) == 0 or len(hyp) == 0:
        return np.empty((len(gt), len(hyp)))
    lt = np.maximum(gt[:, None, :2], hyp[None, :, :2])
    rb = np.minimum(gt[:, None, 2:], hyp[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_g = (gt[:, 2:] - gt[:, :2]).clip(0).prod(-1)
    area_h = (hyp[:, 2:] - hyp[:, :2]).clip(0).prod(-1)
    iou = inter / np.maximum(area_g[:, None] + area_h[None, :] - inter, 1e-9)
    dist = 1.0 - iou
    dist[iou < min_iou] = np.nan
    return dist


def _accumulate(gt: Sequence[Row], hyp: Sequence[Row], min_iou: float):
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    frames = sorted({int(r[0]) for r in gt} | {int(r[0]) for r in hyp})
    by_gt: dict[int, list[Row]] = {}
    by_hyp: dict[int, list[Row]] = {}
    for r in gt:
        by_gt.setdefault(int(r[0]), []).append(r)
    for r in hyp:
        by_hyp.setdefault(int(r[0]), []).append(r)
    for f in frames:
        g, h = by_gt.get(f, []), by_hyp.get(f, [])
        gb = np.array([r[2:6] for r in g], dtype=np.float64).reshape(-1, 4)
        hb = np.array([r[2:6] for r in h], dtype=np.float64).reshape(-1, 4)
        acc.update([int(r[1]) for r in g], [int(r[1]) for r in h], iou_distances(gb, hb, min_iou), frameid=f)
    return acc


def mot_scores(
    gts: Sequence[Sequence[Row]], hyps: Sequence[Sequence[Row]], *, min_iou: float = 0.5
) -> dict[str, float]:
    """CLEAR-MOT and identity scores over several sequences (one list of rows per sequence).

    Ground-truth rows here are ``(frame, id, x0, y0, x1, y1)``; a :data:`~rtdetr.track.synthetic.GtBox`
    ``(frame, id, label, x0, y0, x1, y1)`` is accepted too (the label is dropped).

    Returns:
        ``{"mota", "idf1", "num_switches", "num_false_positives", "num_misses", "precision", "recall"}``
        over all sequences together.
    """
    import motmetrics as mm

    if len(gts) != len(hyps):
        raise ValueError(f"{len(gts)} ground-truth sequences but {len(hyps)} tracker sequences")
    gts = [[(r[0], r[1], *r[3:7]) if len(r) == 7 else r for r in seq] for seq in gts]
    accs = [_accumulate(g, h, min_iou) for g, h in zip(gts, hyps)]
    keys = ["mota", "idf1", "num_switches", "num_false_positives", "num_misses", "precision", "recall"]
    summary = mm.metrics.create().compute_many(
        accs, metrics=keys, names=[str(i) for i in range(len(accs))], generate_overall=True
    )
    row = summary.loc["OVERALL"]
    return {k: (int(row[k]) if k.startswith("num_") else float(row[k])) for k in keys}
