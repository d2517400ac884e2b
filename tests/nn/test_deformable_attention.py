"""MSDeformableAttention's CPU per-image path (batches of 2+) against its batched form."""

from __future__ import annotations

import math

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


def _naive_ms_deformable_attention(value, shapes, locations, weights, num_points):
    """Bilinear sampling written out point by point (zero outside the map, pixel i centred
    at (i + 0.5) / size), then the weighted sum: the function's contract, independently."""
    b, _, heads, d = value.shape
    lq = locations.shape[1]
    out = torch.zeros(b, lq, heads, d, dtype=value.dtype)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    level_of_point = [lvl for lvl, n in enumerate(num_points) for _ in range(n)]
    for n in range(b):
        for q in range(lq):
            for m in range(heads):
                for p, lvl in enumerate(level_of_point):
                    h, w = shapes[lvl]
                    x = locations[n, q, m, p, 0].item() * w - 0.5
                    y = locations[n, q, m, p, 1].item() * h - 0.5
                    x0, y0 = math.floor(x), math.floor(y)
                    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                        if 0 <= xi < w and 0 <= yi < h:
                            bilinear = (1 - abs(x - xi)) * (1 - abs(y - yi))
                            row = value[n, starts[lvl] + yi * w + xi, m]
                            out[n, q, m] += weights[n, q, m, p] * bilinear * row
    return out.reshape(b, lq, heads * d)


def test_sampling_equals_bilinear_interpolation_written_out():
    torch.manual_seed(0)
    points = [2, 3, 1]
    b, lq, heads, d = 2, 3, 2, 4
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(b, s, heads, d, dtype=torch.float64)
    locations = torch.rand(b, lq, heads, sum(points), 2, dtype=torch.float64) * 1.4 - 0.2  # some off the map
    weights = torch.rand(b, lq, heads, sum(points), dtype=torch.float64).softmax(-1)
    got = deformable_attention.ms_deformable_attention(value, SHAPES, locations, weights, points)
    torch.testing.assert_close(
        got, _naive_ms_deformable_attention(value, SHAPES, locations, weights, points), atol=1e-12, rtol=0
    )
    # gradients for every input (value, locations, weights) by finite differences
    inputs = (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda v, loc, w: deformable_attention.ms_deformable_attention(v, SHAPES, loc, w, points), inputs
    )
