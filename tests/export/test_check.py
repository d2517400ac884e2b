"""The parity comparison behind ``rtdetr export``'s check: robust near the score threshold, strict elsewhere."""

from __future__ import annotations

import pytest
import torch

from rtdetr.export.check import compare_detections

THRESHOLD = 0.5


def _reference() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image, three detections; the second scores a hair above THRESHOLD."""
    labels = torch.tensor([[0, 3, 1]])
    boxes = torch.tensor([[[10.0, 10, 50, 60], [100, 40, 180, 90], [5, 5, 20, 20]]])
    scores = torch.tensor([[0.9, THRESHOLD + 2e-6, 0.1]])
    return labels, boxes, scores


def test_score_a_rounding_step_across_the_threshold_still_matches():
    labels, boxes, scores = _reference()
    flipped = scores.clone()
    flipped[0, 1] = THRESHOLD - 2e-6  # the runtime's score for the same detection falls just below
    report = compare_detections((labels, boxes, scores), (labels, boxes, flipped), score_threshold=THRESHOLD)
    assert report.passed and report.compared == 2, report.summary()
    # ... and the other way round: a candidate detection above the threshold, its reference below it.
    report = compare_detections((labels, boxes, flipped), (labels, boxes, scores), score_threshold=THRESHOLD)
    assert report.passed and report.compared == 1, report.summary()


@pytest.mark.parametrize("defect", ["missing", "relabelled", "moved", "rescored", "empty batch", "short batch"])
def test_a_wrong_export_still_fails(defect):
    labels, boxes, scores = _reference()
    c_labels, c_boxes, c_scores = labels.clone(), boxes.clone(), scores.clone()
    if defect == "missing":  # the near-threshold detection is gone (another query in its place)
        c_labels[0, 1], c_boxes[0, 1], c_scores[0, 1] = 2, torch.tensor([0.0, 0, 1, 1]), 0.01
    elif defect == "relabelled":
        c_labels[0, 1] = 4
    elif defect == "moved":
        c_boxes[0, 1, 2] += 0.5  # half a pixel
    elif defect == "rescored":
        c_scores[0, 0] = 0.85
    else:  # the runtime lost the batch dimension (OpenVINO's AVX2 kernels with flushed denormals)
        n = 0 if defect == "empty batch" else 1
        labels, boxes, scores = (torch.cat([t, t]) for t in (labels, boxes, scores))
        c_labels, c_boxes, c_scores = c_labels[:n], c_boxes[:n], c_scores[:n]
    report = compare_detections((labels, boxes, scores), (c_labels, c_boxes, c_scores), score_threshold=THRESHOLD)
    assert not report.passed, report.summary()
    assert "FAIL" in report.summary()
    if "batch" in defect:
        assert report.unmatched == report.compared == 4 and "images for a batch of 2" in report.summary()
