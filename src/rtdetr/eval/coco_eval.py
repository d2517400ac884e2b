"""COCO box-detection metrics via faster-coco-eval (preferred) or pycocotools (fallback).

Formats:

* Ground truth: a COCO dict (``images`` / ``annotations`` / ``categories``; ``bbox`` is
  ``[x, y, w, h]`` in pixels) or a path to such a json file.
* Predictions (``CocoEvaluator.update``): one dict per image with ``image_id`` (int),
  ``boxes`` ``[N, 4]`` xyxy pixels in the *original* image, ``scores`` ``[N]`` and
  ``labels`` ``[N]``. Labels must already be dataset **category ids** (e.g. 1..90 on COCO):
  the caller maps the model's contiguous class indices to category ids beforehand.
  Tensors (any float dtype/device), numpy arrays or lists are accepted.
* Results json: a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["CocoEvaluator", "format_metrics_table", "available_backends", "SUMMARY_KEYS"]

logger = logging.getLogger(__name__)

#: Keys of the 12 standard COCO summary numbers, in COCOeval's ``stats`` order.
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_BACKENDS = ("faster_coco_eval", "pycocotools")


def available_backends() -> list[str]:
    """Names of the importable backends, preferred first."""
    found = []
    for name in _BACKENDS:
        with contextlib.suppress(ImportError):
            __import__(name)
            found.append(name)
    return found


def _resolve_backend(backend: str) -> str:
    """Backend name for ``backend`` ("auto" picks the first importable one)."""
    if backend == "auto":
        names = available_backends()
        if not names:
            raise ImportError("COCO evaluation needs `faster-coco-eval` (preferred) or `pycocotools`")
        return names[0]
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {_BACKENDS}")
    return backend


def _backend_classes(backend: str) -> tuple[Any, Any]:
    """``(COCO, COCOeval)`` classes of a resolved backend name."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"predictions contain non-finite {name}")
    return arr


class CocoEvaluator:
    """Accumulates detections and computes COCO bbox metrics.

    Args:
        ground_truth: COCO-format dict or path to a COCO json. Annotations missing ``area``
            get ``w * h``; missing ``iscrowd`` get 0 (the input is not modified).
        class_names: optional names overriding the json's category names: a mapping
            ``{category_id: name}`` or a sequence in sorted-category-id order.
        backend: ``"auto"`` (faster-coco-eval, else pycocotools), ``"faster_coco_eval"`` or
            ``"pycocotools"``.
        restrict_to_seen: evaluate only images passed to ``update`` (including those with no
            detections), as when validating on a subset; if none were seen, all gt images.

    Predictions for an image id given again replace the earlier ones. In distributed runs,
    call ``synchronize()`` on every rank, then ``summarize()`` on rank 0.
    """

    def __init__(
        self,
        ground_truth: Mapping[str, Any] | str | Path,
        class_names: Mapping[int, str] | Sequence[str] | None = None,
        backend: str = "auto",
        restrict_to_seen: bool = True,
    ) -> None:
        if isinstance(ground_truth, (str, Path)):
            with open(ground_truth) as f:
                ground_truth = json.load(f)
        anns = []
        for ann in ground_truth.get("annotations", []):
            ann = dict(ann)
            ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
            ann.setdefault("iscrowd", 0)
            anns.append(ann)
        self.gt: dict[str, Any] = {
            "images": list(ground_truth.get("images", [])),
            "annotations": anns,
            "categories": list(ground_truth.get("categories", [])),
        }
        self.image_ids = {int(img["id"]) for img in self.gt["images"]}
        self.category_ids = sorted(int(c["id"]) for c in self.gt["categories"])
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in self.gt["categories"]}
        if isinstance(class_names, Mapping):
            names.update({int(k): str(v) for k, v in class_names.items()})
        elif class_names is not None:
            names.update(dict(zip(self.category_ids, map(str, class_names), strict=False)))
        self.class_names = names
        self.num_gt = {cid: 0 for cid in self.category_ids}
        for ann in anns:
            if not ann["iscrowd"]:
                self.num_gt[int(ann["category_id"])] = self.num_gt.get(int(ann["category_id"]), 0) + 1
        self.backend = _resolve_backend(backend)
        _backend_classes(self.backend)  # fail early if the backend is missing
        self.restrict_to_seen = restrict_to_seen
        self._dets: dict[int, np.ndarray] = {}  # image_id -> [N, 6] (x, y, w, h, score, category_id)

    @property
    def seen_image_ids(self) -> list[int]:
        """Image ids given to ``update`` (after ``synchronize``: by any rank), sorted."""
        return sorted(self._dets)

    def reset(self) -> None:
        """Drop all accumulated detections."""
        self._dets = {}

    def update(self, predictions: Iterable[Mapping[str, Any]]) -> None:
        """Add detections; see the module docstring for the per-image dict format."""
        predictions = list(predictions)
        unknown_ids = sorted({int(p["image_id"]) for p in predictions} - self.image_ids)
        if unknown_ids:
            raise ValueError(f"predictions for image ids not in the ground truth: {unknown_ids}")
        for pred in predictions:
            image_id = int(pred["image_id"])
            boxes = _to_numpy(pred["boxes"], "boxes").reshape(-1, 4)
            scores = _to_numpy(pred["scores"], "scores").reshape(-1)
            labels = _to_numpy(pred["labels"], "labels").reshape(-1)
            if not len(boxes) == len(scores) == len(labels):
                raise ValueError(
                    f"image {image_id}: boxes/scores/labels lengths differ ({len(boxes)}, {len(scores)}, {len(labels)})"
                )
            unknown = sorted(set(labels.astype(np.int64).tolist()) - set(self.category_ids))
            if unknown:
                raise ValueError(
                    f"image {image_id}: labels {unknown} are not category ids of the ground truth "
                    f"(map contiguous class indices to category ids first)"
                )
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
            self._dets[image_id] = np.concatenate([xywh, scores[:, None], labels[:, None]], axis=1)

    def synchronize(self) -> None:
        """Gather detections from all ranks (no-op unless torch.distributed is initialized).

        Every rank ends up with the union; an image reported by several ranks (e.g. padding of
        a DistributedSampler) is kept once, from the lowest rank.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._dets)
        merged: dict[int, np.ndarray] = {}
        for part in gathered:
            for image_id, dets in part.items():
                merged.setdefault(image_id, dets)
        self._dets = merged

    def results_json(self) -> list[dict[str, Any]]:
        """Accumulated detections in COCO results format (bbox ``[x, y, w, h]`` pixels)."""
        return [
            {"image_id": image_id, "category_id": int(c), "bbox": [x, y, w, h], "score": s}
            for image_id in sorted(self._dets)
            for x, y, w, h, s, c in self._dets[image_id].tolist()
        ]

    def save_results(self, path: str | Path) -> None:
        """Write ``results_json()`` to ``path``."""
        with open(path, "w") as f:
            json.dump(self.results_json(), f)

    def _run_backend(self) -> Any:
        """Run evaluate/accumulate/summarize with the backend's output captured to debug logs."""
        coco_cls, eval_cls = _backend_classes(self.backend)
        dt_anns = self.results_json()
        for i, ann in enumerate(dt_anns, 1):
            ann.update(id=i, area=ann["bbox"][2] * ann["bbox"][3], iscrowd=0)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            coco_gt, coco_dt = coco_cls(), coco_cls()
            coco_gt.dataset = {k: list(v) for k, v in self.gt.items()}
            coco_gt.dataset["annotations"] = [dict(a) for a in self.gt["annotations"]]
            coco_dt.dataset = {"images": self.gt["images"], "categories": self.gt["categories"], "annotations": dt_anns}
            coco_gt.createIndex()
            coco_dt.createIndex()
            kwargs = {"print_function": logger.debug} if self.backend == "faster_coco_eval" else {}
            evaluator = eval_cls(coco_gt, coco_dt, iouType="bbox", **kwargs)
            if self.restrict_to_seen and self._dets:
                evaluator.params.imgIds = sorted(self._dets)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        if buf.getvalue().strip():
            logger.debug("COCO backend output:\n%s", buf.getvalue().rstrip())
        return evaluator

    def summarize(self) -> dict[str, Any]:
        """Compute metrics.

        Returns:
            ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
            "ARl"}`` floats in [0, 1] (-1 where COCO leaves a metric undefined, e.g. no gt in an
            area range), plus ``"per_class"``: a list of ``(category_id, name, AP, AP50, num_gt)``
            in category-id order (AP = -1 for categories without gt).
        """
        evaluator = self._run_backend()
        metrics: dict[str, Any] = {k: float(v) for k, v in zip(SUMMARY_KEYS, evaluator.stats[:12], strict=True)}
        precision = np.asarray(evaluator.eval["precision"])  # [T, R, K, A, M]
        iou50 = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - 0.5)))
        per_class = []
        for k, cid in enumerate(int(c) for c in evaluator.params.catIds):
            p = precision[:, :, k, 0, -1]  # area "all", largest maxDets
            ap = float(p[p > -1].mean()) if (p > -1).any() else -1.0
            ap50 = float(p[iou50][p[iou50] > -1].mean()) if (p[iou50] > -1).any() else -1.0
            per_class.append((cid, self.class_names.get(cid, str(cid)), ap, ap50, self.num_gt.get(cid, 0)))
        metrics["per_class"] = per_class
        n_images = len(evaluator.params.imgIds)
        # debug: the caller shows the table (rtdetr val, the end of training) or an epoch line (training)
        logger.debug("COCO bbox metrics over %d images:\n%s", n_images, format_metrics_table(metrics, per_class=False))
        return metrics

    compute = summarize


def _fmt(v: float) -> str:
    return f"{v:.4f}" if v >= 0 else "   n/a"


def format_metrics_table(metrics: Mapping[str, Any], per_class: bool = True) -> str:
    """Render ``summarize()`` output as markdown-style tables (summary, then per class)."""
    keys = [k for k in SUMMARY_KEYS if k in metrics]
    lines = ["| " + " | ".join(f"{k:>6}" for k in keys) + " |", "|" + "|".join("-" * 8 for _ in keys) + "|"]
    lines.append("| " + " | ".join(f"{_fmt(float(metrics[k])):>6}" for k in keys) + " |")
    rows = metrics.get("per_class") or []
    if per_class and rows:
        width = max(8, *(len(str(r[1])) for r in rows))
        lines += ["", f"| {'id':>4} | {'class':<{width}} | {'AP':>6} | {'AP50':>6} | {'num_gt':>6} |"]
        lines.append(f"|{'-' * 6}|{'-' * (width + 2)}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
        for cid, name, ap, ap50, n in rows:
            lines.append(f"| {cid:>4} | {name:<{width}} | {_fmt(ap):>6} | {_fmt(ap50):>6} | {n:>6} |")
    return "\n".join(lines)
