"""MSDeformableAttention's CPU per-image path (batches of 2+) against its batched form."""

from __future__ import annotations

import pytest
import torch

from rtdetr.nn import deformable_attention
from rtdetr.nn.deformable_attention import MSDeformableAttention

SHAPES = [(6, 5), (3, 3), (2, 2)]  # non-square levels


@pytest.mark.parametrize("method", ["default", "discrete"])
def test_per_image_path_matches_batched(method, monkeypatch):
    torch.manual_seed(0)
    attn = MSDeformableAttention(16, 4, 3, [2, 3, 1], method=method).double().eval()
    # random offsets and weights, so points spread over the maps and off them
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.5)
    b, lq, s = 3, 7, sum(h * w for h, w in SHAPES)
    query = torch.randn(b, lq, 16, dtype=torch.float64)
    boxes = torch.rand(b, lq, 1, 4, dtype=torch.float64)
    value = torch.randn(b, s, 16, dtype=torch.float64)
    with torch.no_grad():
        per_image = attn(query, boxes, value, SHAPES)  # CPU and b > 1: one image at a time
        singles = torch.cat([attn(query[i : i + 1], boxes[i : i + 1], value[i : i + 1], SHAPES) for i in range(b)])
        monkeypatch.setattr(deformable_attention, "tracing", lambda: True)  # what export sees
        batched = attn(query, boxes, value, SHAPES)
    assert per_image.shape == (b, lq, 16)
    torch.testing.assert_close(per_image, batched, atol=1e-12, rtol=0)
    torch.testing.assert_close(per_image, singles, atol=1e-12, rtol=0)


def test_per_image_path_gradients_match_batched(monkeypatch):
    """Training takes the per-image path too: its gradients (value split, not sliced) are the batched ones."""
    torch.manual_seed(0)
    attn = MSDeformableAttention(16, 4, 3, [2, 3, 1]).double().train()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.5)
    b, lq, s = 3, 7, sum(h * w for h, w in SHAPES)
    inputs = (torch.randn(b, lq, 16), torch.rand(b, lq, 1, 4), torch.randn(b, s, 16))

    def grads():
        query, boxes, value = (t.double().requires_grad_() for t in inputs)
        attn.zero_grad()
        (attn(query, boxes, value, SHAPES) ** 2).sum().backward()
        return [query.grad, boxes.grad, value.grad] + [p.grad.clone() for p in attn.parameters()]

    per_image = grads()
    monkeypatch.setattr(deformable_attention, "tracing", lambda: True)
    batched = grads()
    assert per_image[2].abs().sum() > 0
    for g, ref in zip(per_image, batched):
        torch.testing.assert_close(g, ref, atol=1e-10, rtol=0)
