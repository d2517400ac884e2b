from __future__ import annotations

import torch

from rtdetr.nn.postprocess import PostProcessor


def _outputs():
    logits = torch.full((2, 3, 4), -10.0)
    logits[0, 1, 2] = 2.0  # strong: query 1, class 2
    logits[0, 0, 0] = 0.0  # medium: score 0.5
    logits[1, 2, 3] = 1.0
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.25, 0.5, 0.5, 1.0], [0.1, 0.1, 0.1, 0.1]]).expand(2, 3, 4)
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_topk_labels_and_pixel_boxes():
    post = PostProcessor(4, num_top_queries=2)
    labels, boxes, scores = post.forward_tensors(_outputs(), torch.tensor([[200, 100], [10, 10]]))
    assert labels.tolist()[0] == [2, 0]
    assert torch.allclose(scores[0], torch.tensor([2.0, 0.0]).sigmoid())
    # query 1 box cxcywh (0.25, 0.5, 0.5, 1.0) on a 200x100 image -> xyxy (0, 0, 100, 100)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.0, 0.0, 100.0, 100.0]))
    assert labels[1, 0] == 3


def test_threshold_and_category_ids():
    post = PostProcessor(4, num_top_queries=5, score_threshold=0.4, category_ids=[10, 20, 30, 40])
    results = post(_outputs(), torch.tensor([[200, 100], [10, 10]]))
    assert results[0]["labels"].tolist() == [30, 10]
    assert results[1]["labels"].tolist() == [40]
    assert all((r["scores"] >= 0.4).all() for r in results)
