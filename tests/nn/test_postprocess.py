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


def test_bf16_outputs_are_scaled_to_pixels_in_float32():
    """bf16 model outputs (8 significant bits) scaled in bf16 land on a 4-8 px grid at 1080p."""
    torch.manual_seed(0)
    logits = (torch.randn(2, 50, 4) * 3).to(torch.bfloat16)
    boxes = torch.rand(2, 50, 4).mul(0.5).add(0.25).to(torch.bfloat16)  # cxcywh, the model's bf16 values
    sizes = torch.tensor([[1920, 1080], [1280, 720]])
    post = PostProcessor(4, num_top_queries=40)
    labels16, boxes16, scores16 = post.forward_tensors({"pred_logits": logits, "pred_boxes": boxes}, sizes)
    labels32, boxes32, scores32 = post.forward_tensors(
        {"pred_logits": logits.float(), "pred_boxes": boxes.float()}, sizes
    )  # the same values, upcast by the caller
    assert boxes16.dtype == scores16.dtype == torch.float32
    assert torch.equal(labels16, labels32)
    assert (boxes16 - boxes32).abs().max() < 0.5
    torch.testing.assert_close(scores16, scores32, atol=1e-6, rtol=0)


def test_float64_outputs_stay_float64():
    """The reference-parity tests run in float64: the upcast must not round them to float32."""
    out = {k: v.double() for k, v in _outputs().items()}
    _, boxes, scores = PostProcessor(4, num_top_queries=2).forward_tensors(out, torch.tensor([[200, 100], [10, 10]]))
    assert boxes.dtype == scores.dtype == torch.float64
