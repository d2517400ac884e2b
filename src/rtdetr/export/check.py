"""Parity of an exported detector against the PyTorch model on the same input.

The comparison is over the top detections (sorted by score, at or above a score
threshold): every reference detection must appear in the exported model's
outputs with the same label, a score within ``score_atol`` and a box within
``box_atol`` pixels (max over the four xyxy coordinates). Matching is by label
and nearest box among near-equal scores, not by position: two queries whose
scores tie to float rounding may legitimately come out in either order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .graph import example_inputs, export_module

__all__ = [
    "AgreementReport",
    "Detections",
    "ParityReport",
    "check_export",
    "compare_detections",
    "detection_agreement",
    "run_both",
]

log = logging.getLogger(__name__)

Detections = tuple[Tensor | np.ndarray, Tensor | np.ndarray, Tensor | np.ndarray]  # labels, boxes, scores


@dataclass
class ParityReport:
    """Outcome of :func:`compare_detections`.

    Attributes:
        name: what was compared, e.g. ``"onnxruntime vs PyTorch"``.
        compared: reference detections checked (over all images).
        unmatched: of those, how many had no counterpart (same label, score within tolerance).
        max_box_diff: largest |box difference| in pixels over matched detections.
        max_score_diff: largest |score difference| over matched detections.
        box_atol / score_atol / score_threshold / max_detections: the criteria used.
        failures: human-readable descriptions of the first mismatches.
    """

    name: str
    compared: int
    unmatched: int
    max_box_diff: float
    max_score_diff: float
    box_atol: float
    score_atol: float
    score_threshold: float
    max_detections: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.compared > 0 and self.unmatched == 0 and self.max_box_diff <= self.box_atol

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        text = (
            f"{self.name}: {verdict}: {self.compared} detections (top {self.max_detections} per image, "
            f"score >= {self.score_threshold:g}) compared, {self.unmatched} unmatched; "
            f"max |box diff| {self.max_box_diff:.3g} px (tol {self.box_atol:g}), "
            f"max |score diff| {self.max_score_diff:.3g} (tol {self.score_atol:g})"
        )
        if self.compared == 0:
            text += "; nothing scored above the threshold, lower it to compare"
        if self.failures:
            text += "\n  " + "\n  ".join(self.failures)
        return text


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def compare_detections(
    reference: Detections,
    candidate: Detections,
    *,
    name: str = "export vs PyTorch",
    score_threshold: float = 0.0,
    max_detections: int = 100,
    box_atol: float = 1e-3,
    score_atol: float = 1e-4,
) -> ParityReport:
    """Compare batched ``(labels [B, K], boxes [B, K, 4], scores [B, K])`` of two runtimes.

    Each reference detection among the top ``max_detections`` of its image with
    score >= ``score_threshold`` is matched to an unused candidate detection with
    the same label and |score difference| <= ``score_atol`` (the nearest box wins).
    The threshold selects reference detections only: candidates are searched among
    all K outputs, whatever their score, so a score a rounding step below the
    threshold in the candidate still matches (it cannot flip the verdict), while a
    missing, relabelled, moved or rescored detection fails. Outputs of the wrong
    shape (e.g. a batch of 0 images) are a failed report, not an exception.
    """
    r_lab, r_box, r_sco = (_np(t) for t in reference)
    c_lab, c_box, c_sco = (_np(t) for t in candidate)
    criteria = dict(
        box_atol=box_atol, score_atol=score_atol, score_threshold=score_threshold, max_detections=max_detections
    )
    shape_error = _shape_error(r_lab, r_box, r_sco, c_lab, c_box, c_sco)
    if shape_error:
        # A wrong output shape is a failed export (e.g. a runtime that lost the dynamic batch), not a crash
        # of the checker: every reference detection counts as unmatched.
        expected = sum(min(max_detections, int((row >= score_threshold).sum())) for row in r_sco)
        return ParityReport(
            name=name,
            compared=max(expected, 1),
            unmatched=max(expected, 1),
            max_box_diff=0.0,
            max_score_diff=0.0,
            failures=[shape_error],
            **criteria,
        )
    compared = unmatched = 0
    max_box = max_score = 0.0
    failures: list[str] = []
    for b in range(r_lab.shape[0]):
        used = np.zeros(c_lab.shape[1], dtype=bool)
        order = np.argsort(-r_sco[b], kind="stable")[:max_detections]
        for i in order:
            if r_sco[b, i] < score_threshold:
                break
            compared += 1
            cand = (~used) & (c_lab[b] == r_lab[b, i]) & (np.abs(c_sco[b] - r_sco[b, i]) <= score_atol)
            if not cand.any():
                unmatched += 1
                if len(failures) < 5:
                    failures.append(
                        f"image {b}: label {int(r_lab[b, i])} score {r_sco[b, i]:.5f} box {np.round(r_box[b, i], 2).tolist()} "
                        f"has no counterpart (same label, score within {score_atol:g})"
                    )
                continue
            idx = np.flatnonzero(cand)
            dist = np.abs(c_box[b, idx] - r_box[b, i]).max(-1)
            j = idx[int(np.argmin(dist))]
            used[j] = True
            box_diff = float(np.abs(c_box[b, j] - r_box[b, i]).max())
            if box_diff > box_atol and len(failures) < 5:
                failures.append(
                    f"image {b}: label {int(r_lab[b, i])} score {r_sco[b, i]:.5f}: box {np.round(c_box[b, j], 4).tolist()} "
                    f"vs {np.round(r_box[b, i], 4).tolist()} (|diff| {box_diff:.3g} px)"
                )
            max_box = max(max_box, box_diff)
            max_score = max(max_score, float(abs(c_sco[b, j] - r_sco[b, i])))
    return ParityReport(
        name=name,
        compared=compared,
        unmatched=unmatched,
        max_box_diff=max_box,
        max_score_diff=max_score,
        failures=failures,
        **criteria,
    )


def _shape_error(r_lab, r_box, r_sco, c_lab, c_box, c_sco) -> str | None:
    """Why the candidate's (labels, boxes, scores) cannot be compared with the reference's, or None."""
    shapes = {"labels": c_lab.shape, "boxes": c_box.shape, "scores": c_sco.shape}
    batch = r_lab.shape[0]
    if c_lab.ndim != 2 or c_sco.shape != c_lab.shape or c_box.shape != (*c_lab.shape, 4):
        return f"candidate outputs have inconsistent shapes {shapes} (expected labels/scores [B, K], boxes [B, K, 4])"
    if c_lab.shape[0] != batch:
        return f"candidate returned {c_lab.shape[0]} images for a batch of {batch} (output shapes {shapes})"
    return None


@dataclass
class AgreementReport:
    """How close an approximate export (int8, fp16) is to the reference.

    For each image's top ``top_k`` reference detections, the candidate detection
    (among its top ``3 * top_k``) with the same label and the highest box IoU is found.

    Attributes:
        compared: reference detections looked up.
        matched: fraction of them with a same-label candidate at IoU >= 0.5.
        mean_iou: mean of the best same-label IoU (0 when there is none).
        mean_score_diff: mean |score difference| over the matched pairs.
    """

    name: str
    compared: int
    top_k: int
    matched: float
    mean_iou: float
    mean_score_diff: float

    def summary(self) -> str:
        return (
            f"{self.name}: top {self.top_k} detections per image ({self.compared} in all): "
            f"{100 * self.matched:.0f}% found with the same label at IoU >= 0.5, mean best IoU "
            f"{self.mean_iou:.3f}, mean |score diff| {self.mean_score_diff:.4f}"
        )


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box a [4] with boxes b [N, 4] -> [N]."""
    lt, rb = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[2:] - a[:2], 0, None))
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def detection_agreement(
    reference: Detections, candidate: Detections, *, top_k: int = 10, name: str = "export vs PyTorch"
) -> AgreementReport:
    """Label/box agreement of two batched outputs (see :class:`AgreementReport`); order-insensitive."""
    r_lab, r_box, r_sco = (_np(t) for t in reference)
    c_lab, c_box, c_sco = (_np(t) for t in candidate)
    ious: list[float] = []
    score_diffs: list[float] = []
    for b in range(r_lab.shape[0]):
        r_order = np.argsort(-r_sco[b], kind="stable")[:top_k]
        c_order = np.argsort(-c_sco[b], kind="stable")[: 3 * top_k]
        for i in r_order:
            same = c_order[c_lab[b, c_order] == r_lab[b, i]]
            if len(same) == 0:
                ious.append(0.0)
                continue
            iou = _box_iou(r_box[b, i], c_box[b, same])
            j = int(np.argmax(iou))
            ious.append(float(iou[j]))
            if iou[j] >= 0.5:
                score_diffs.append(abs(float(r_sco[b, i]) - float(c_sco[b, same[j]])))
    arr = np.asarray(ious)
    return AgreementReport(
        name=name,
        compared=len(arr),
        top_k=top_k,
        matched=float((arr >= 0.5).mean()) if len(arr) else 0.0,
        mean_iou=float(arr.mean()) if len(arr) else 0.0,
        mean_score_diff=float(np.mean(score_diffs)) if score_diffs else float("nan"),
    )


def _runner(path: Path, threads: int | None) -> tuple[str, Callable[[Tensor, Tensor], Detections]]:
    """A callable for an exported file, chosen by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from ..infer.onnx_backend import OnnxBackend

        return "onnxruntime vs PyTorch", OnnxBackend(path, threads=threads)
    if suffix in (".torchscript", ".pt", ".ts"):
        from .torchscript import load_torchscript

        module = load_torchscript(path)

        def run(images: Tensor, sizes: Tensor) -> Detections:
            with torch.no_grad():
                return module(images, sizes)

        return "TorchScript vs PyTorch", run
    if suffix == ".xml" or path.is_dir():
        from .openvino import OpenVinoRunner

        return "OpenVINO vs PyTorch", OpenVinoRunner(path, threads=threads)
    raise ValueError(f"{path}: cannot check a file with suffix {suffix!r} (expected .onnx, .torchscript or .xml)")


def run_both(
    path: str | Path, model: nn.Module, images: Tensor, sizes: Tensor, *, threads: int | None = None
) -> tuple[str, Detections, Detections]:
    """``(name, PyTorch detections, exported-file detections)`` on ``images`` [B, 3, S, S] / ``sizes`` [B, 2].

    The PyTorch side is the deploy-fused fp32 model with the same postprocess.
    """
    with torch.no_grad():
        reference = export_module(model)(images, sizes)
    name, run = _runner(Path(path), threads)
    return name, reference, run(images, sizes)


def check_export(
    path: str | Path,
    model: nn.Module,
    *,
    imgsz: int,
    batch: int = 1,
    score_threshold: float = 0.0,
    max_detections: int = 100,
    box_atol: float = 1e-3,
    score_atol: float = 1e-4,
    threads: int | None = None,
    inputs: tuple[Tensor, Tensor] | None = None,
) -> ParityReport:
    """Run an exported file and the PyTorch model (deploy-fused fp32) on the same input and compare.

    Args:
        path: ``.onnx``, ``.torchscript`` or OpenVINO ``.xml`` written by this package.
        model: the PyTorch model it was exported from (not modified).
        imgsz: input side S.
        batch: images in the check batch (deterministic random images unless ``inputs``).
        inputs: optional ``(images float32 [B, 3, S, S], orig_sizes int64 [B, 2])``.
        Other arguments: see :func:`compare_detections`. fp16 / int8 exports need
        looser tolerances than the fp32 defaults.
    """
    images, sizes = inputs if inputs is not None else example_inputs(imgsz, batch=batch, seed=1)
    name, reference, candidate = run_both(path, model, images, sizes, threads=threads)
    report = compare_detections(
        reference,
        candidate,
        name=name,
        score_threshold=score_threshold,
        max_detections=max_detections,
        box_atol=box_atol,
        score_atol=score_atol,
    )
    log.info("%s", report.summary())
    return report
