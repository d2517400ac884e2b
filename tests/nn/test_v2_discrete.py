"""RT-DETRv2 discrete sampling ("dsp"): checked against an independent loop and against bilinear.

No reference fixture exists for a discrete-sampling forward, so the rule itself is
pinned here: pixel index round(loc * size) (the reference computes
trunc(loc * size + 0.5)), clamped to the map, gathered and mixed with the weights.
"""

from __future__ import annotations

import math

import torch

from rtdetr.nn.deformable_attention import MSDeformableAttention, ms_deformable_attention

SHAPES = [(5, 7), (3, 4)]  # non-square on purpose (the reference clamps x to h-1; we clamp per axis)
POINTS = [2, 3]
HEADS, DIM, B, LQ = 2, 3, 2, 4


def _inputs(low: float, high: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(B, s, HEADS, DIM, generator=g, dtype=torch.float64)
    p = sum(POINTS)
    loc = low + (high - low) * torch.rand(B, LQ, HEADS, p, 2, generator=g, dtype=torch.float64)
    weights = torch.softmax(torch.randn(B, LQ, HEADS, p, generator=g, dtype=torch.float64), -1)
    return value, loc, weights


def _discrete_loop(value, loc, weights):
    """One point at a time: floor(loc * size + 0.5), clamp, read the pixel, weight, sum."""
    out = torch.zeros(B, LQ, HEADS, DIM, dtype=value.dtype)
    for b in range(B):
        for q in range(LQ):
            for head in range(HEADS):
                point, start = 0, 0
                for (h, w), n in zip(SHAPES, POINTS):
                    for _ in range(n):
                        x, y = loc[b, q, head, point].tolist()
                        col = min(max(math.floor(x * w + 0.5), 0), w - 1)
                        row = min(max(math.floor(y * h + 0.5), 0), h - 1)
                        out[b, q, head] += weights[b, q, head, point] * value[b, start + row * w + col, head]
                        point += 1
                    start += h * w
    return out.reshape(B, LQ, HEADS * DIM)


def test_discrete_equals_an_independent_loop_including_out_of_range_points():
    value, loc, weights = _inputs(-0.3, 1.3)  # about a third of the points need clamping
    ours = ms_deformable_attention(value, SHAPES, loc, weights, POINTS, method="discrete")
    torch.testing.assert_close(ours, _discrete_loop(value, loc, weights), atol=1e-12, rtol=0)


def _pixel_locations(center_offset: float, seed: int = 1) -> torch.Tensor:
    """Locations (i + center_offset) / size at random interior pixels i of each point's level."""
    g = torch.Generator().manual_seed(seed)
    per_level = []
    for (h, w), n in zip(SHAPES, POINTS):
        col = torch.randint(0, w - 1, (B, LQ, HEADS, n), generator=g).double()
        row = torch.randint(0, h - 1, (B, LQ, HEADS, n), generator=g).double()
        per_level.append(torch.stack([(col + center_offset) / w, (row + center_offset) / h], -1))
    return torch.cat(per_level, dim=3)


def test_discrete_equals_bilinear_at_pixel_centers():
    """Bilinear sampling at a pixel center returns that pixel, so both methods agree there.

    Pixel i's center is (i + 0.5) / size for grid_sample (align_corners=False) but
    i / size for the reference's discrete rule, which reads pixel i+1 at (i + 0.5) / size
    (half a pixel apart): discrete at i / size equals bilinear at (i + 0.5) / size.
    """
    value, _, weights = _inputs(0.0, 1.0)
    discrete = ms_deformable_attention(value, SHAPES, _pixel_locations(0.0), weights, POINTS, method="discrete")
    bilinear = ms_deformable_attention(value, SHAPES, _pixel_locations(0.5), weights, POINTS, method="default")
    torch.testing.assert_close(discrete, bilinear, atol=1e-12, rtol=0)
    # Away from the centers bilinear interpolates while discrete still reads one pixel.
    off_center = ms_deformable_attention(value, SHAPES, _pixel_locations(0.75), weights, POINTS, method="default")
    assert (off_center - discrete).abs().max() > 1e-3


def test_discrete_module_freezes_offsets_and_matches_default_on_shared_weights():
    torch.manual_seed(0)
    default = MSDeformableAttention(16, 2, 2, [2, 3]).double()
    discrete = MSDeformableAttention(16, 2, 2, [2, 3], method="discrete").double()
    discrete.load_state_dict(default.state_dict())
    assert not discrete.sampling_offsets.weight.requires_grad and default.sampling_offsets.weight.requires_grad
    query = torch.randn(1, 5, 16, dtype=torch.float64)
    boxes = torch.rand(1, 5, 1, 4, dtype=torch.float64) * 0.5 + 0.25
    value = torch.randn(1, sum(h * w for h, w in SHAPES), 16, dtype=torch.float64)
    a, b = default(query, boxes, value, SHAPES), discrete(query, boxes, value, SHAPES)
    assert a.shape == b.shape == (1, 5, 16)
    assert not torch.allclose(a, b)  # nearest pixel vs bilinear: same shapes, different numbers
