"""Multi-scale deformable cross-attention (Deformable DETR), in plain PyTorch.

Each query attends to a few sampled points per head and per feature level
instead of every memory token. Sampling is bilinear ``grid_sample`` (default)
or, for runtimes without GridSample (RT-DETRv2 "discrete"), a one-pixel
gather. No compiled extension is needed.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint_layout import install_layout_hook
from .memory_format import tracing

__all__ = ["MSDeformableAttention", "ms_deformable_attention"]

CrossAttnMethod = Literal["default", "discrete"]


def ms_deformable_attention(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
    num_points: list[int],
    method: CrossAttnMethod = "default",
) -> Tensor:
    """Sample value maps at the given locations and mix the samples with the weights.

    Args:
        value: [B, S, heads, head_dim], levels flattened row-major and concatenated.
        spatial_shapes: (h, w) of each level; sum of h * w equals S.
        sampling_locations: [B, Lq, heads, P, 2], (x, y) normalized to [0, 1],
            P = sum(num_points) with the points of level 0 first.
        attention_weights: [B, Lq, heads, P], softmax-normalized over P.
        num_points: sampling points per level.
        method: "default" (bilinear, zero padding, align_corners=False) or
            "discrete" (one pixel per point, gathered; see :func:`_gather_nearest`).

    Returns:
        [B, Lq, heads * head_dim].
    """
    b, _, heads, head_dim = value.shape
    lq = sampling_locations.shape[1]
    # [B, S, heads, d] -> [B*heads, d, S], split into levels
    value_list = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in spatial_shapes], dim=-1)
    grids = 2 * sampling_locations - 1 if method == "default" else sampling_locations
    # Points before queries: [B, Lq, heads, P, 2] -> [B*heads, P, Lq, 2], split into levels. The
    # samples are then [B*heads, d, P, Lq] and the weighted sum over P adds rows of Lq contiguous
    # floats; with P innermost (P is 4..12) that sum, grid_sample and their backward took ~1.2x
    # the CPU time (tests/nn/test_deformable_attention.py pins the layout-free result).
    grid_list = grids.permute(0, 2, 3, 1, 4).flatten(0, 1).split(num_points, dim=1)

    samples = []
    for (h, w), value_l, grid_l in zip(spatial_shapes, value_list, grid_list):
        value_l = value_l.reshape(b * heads, head_dim, h, w)
        if method == "default":
            # -> [B*heads, d, P_l, Lq]
            samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
        else:
            samples.append(_gather_nearest(value_l, grid_l))
    # [B, Lq, heads, P] -> [B*heads, 1, P, Lq]
    weights = attention_weights.permute(0, 2, 3, 1).flatten(0, 1).unsqueeze(1)
    out = (torch.cat(samples, dim=2) * weights).sum(2)  # [B*heads, d, Lq]
    return out.reshape(b, heads * head_dim, lq).permute(0, 2, 1)


def _gather_nearest(value_l: Tensor, loc_l: Tensor) -> Tensor:
    """value_l [N, d, h, w], loc_l [N, H, W, 2] (x, y) in [0, 1] -> [N, d, H, W], one pixel per point.

    The reference's rule, kept so RT-DETRv2 "dsp" checkpoints see what they were
    trained on: pixel index ``trunc(loc * size + 0.5)`` clamped to the map, i.e.
    ``loc * size`` rounded to the nearest integer. That puts pixel i's center at
    ``loc = i / size``, half a pixel from grid_sample's (align_corners=False)
    ``(i + 0.5) / size``: discrete(loc) equals default(loc + 0.5 / size) at those
    centers (see tests/nn/test_v2_discrete.py). Coordinates are clamped per axis
    (x to w-1, y to h-1); the reference clamps both to h-1, which is the same on
    the square maps it was trained on and would index the wrong pixel otherwise.
    """
    n, d, h, w = value_l.shape
    gh, gw = loc_l.shape[1:3]  # any grid of points, as for grid_sample
    size = torch.tensor([w, h], device=loc_l.device, dtype=loc_l.dtype)
    coord = (loc_l * size + 0.5).to(torch.int64)  # truncates; after the clamp that equals floor
    x = coord[..., 0].clamp(0, w - 1)
    y = coord[..., 1].clamp(0, h - 1)
    index = (y * w + x).reshape(n, 1, gh * gw).expand(n, d, gh * gw)
    return value_l.flatten(2).gather(2, index).reshape(n, d, gh, gw)


class MSDeformableAttention(nn.Module):
    """Deformable cross-attention with 4-d (cx, cy, w, h) reference boxes.

    Sampling location = ref_cxcy + offset / points_of_level * ref_wh * offset_scale.

    Args:
        embed_dim: query / value width.
        num_heads: attention heads.
        num_levels: feature levels in the memory.
        num_points: sampling points per level (an int for all levels, or a list; RT-DETRv2).
        method: "default" or "discrete" (RT-DETRv2; freezes the sampling offsets).
        offset_scale: 0.5 in RT-DETR.
        persistent_scale: keep ``num_points_scale`` (1/points of each point's
            level) in the state dict, as RT-DETRv2 checkpoints do; the forward
            always uses the buffer, so a loaded checkpoint's values are used.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 3,
        num_points: int | list[int] = 4,
        *,
        method: CrossAttnMethod = "default",
        offset_scale: float = 0.5,
        persistent_scale: bool = False,
    ) -> None:
        super().__init__()
        if method not in ("default", "discrete"):
            raise ValueError(f"cross_attn_method must be 'default' or 'discrete', got {method!r}")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.num_points = [num_points] * num_levels if isinstance(num_points, int) else list(num_points)
        if len(self.num_points) != num_levels:
            raise ValueError(f"num_points has {len(self.num_points)} entries for {num_levels} levels")
        self.embed_dim, self.num_heads, self.num_levels = embed_dim, num_heads, num_levels
        self.method = method
        self.offset_scale = offset_scale
        self.total_points = sum(self.num_points)
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * self.total_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * self.total_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        # 1/points for every sampling point, float32 like the reference (exact for powers of two,
        # so multiplying equals v1's division by the point count).
        scale = torch.tensor([1.0 / n for n in self.num_points for _ in range(n)], dtype=torch.float32)
        self.register_buffer("num_points_scale", scale, persistent=persistent_scale)
        install_layout_hook(self, derived_buffers=("num_points_scale",))
        self.reset_parameters()
        if method == "discrete":
            self.sampling_offsets.requires_grad_(False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # Offsets start on a ring of directions, one per head, growing with the point index.
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values  # [heads, 2]
        scaling = torch.cat([torch.arange(1, n + 1, dtype=torch.float32) for n in self.num_points])
        bias = grid[:, None, :] * scaling[None, :, None]  # [heads, P, 2]
        self.sampling_offsets.bias.copy_(bias.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_boxes: Tensor,
        value: Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """
        Args:
            query: [B, Lq, C].
            reference_boxes: [B, Lq, 1, 4] cxcywh normalized (one box shared by all levels).
            value: [B, S, C] flattened multi-level memory.
            spatial_shapes: (h, w) per level.

        Returns:
            [B, Lq, C].
        """
        b, lq = query.shape[:2]
        heads = self.num_heads
        offsets = self.sampling_offsets(query).reshape(b, lq, heads, self.total_points, 2)
        logits = self.attention_weights(query).reshape(b, lq, heads, self.total_points)
        # The softmax over P runs with the points before the queries ([B, heads, P, Lq], the
        # layout the sampling consumes); over an innermost P of 4..12 floats the CPU kernel
        # took ~3x as long. Handed on as a [B, Lq, heads, P] view of that layout.
        weights = F.softmax(logits.permute(0, 2, 3, 1), dim=2).permute(0, 3, 1, 2)
        scale = self.num_points_scale.to(query.dtype).unsqueeze(-1)  # [P, 1]
        # [B, Lq, 1, 1, 2] broadcasts over heads and points
        ref_cxcy = reference_boxes[:, :, None, :, :2]
        ref_wh = reference_boxes[:, :, None, :, 2:]
        locations = ref_cxcy + offsets * scale * ref_wh * self.offset_scale
        if b > 1 and value.device.type == "cpu" and not tracing():
            # On the CPU, one image at a time. The projected value map of one image
            # ([S, C], 8.6 MB at 640 px) is reused from malloc's heap and stays in cache;
            # a [B, S, C] one is a fresh mmap, page-faulted in, in every layer. And at
            # B = 1 the sampling reads it as a view in its head-interleaved layout, while
            # a batch is first copied to [B*heads, d, S] ([B, S, C] again), from which
            # grid_sample also gathers slower. Same function; at B = 8 the decoder takes
            # 0.75-0.9x the time per image (rtdetr_r18vd, 640 px). Traced and compiled
            # graphs (export) keep the batched form: no Python loop over a batch that
            # may be symbolic.
            out = torch.cat(
                [
                    self._sample(v, spatial_shapes, loc, w)
                    for v, loc, w in zip(value.split(1), locations.split(1), weights.split(1))
                ]
            )
        else:
            out = self._sample(value, spatial_shapes, locations, weights)
        return self.output_proj(out)

    def _sample(
        self, value: Tensor, spatial_shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor
    ) -> Tensor:
        """value [B, S, C] (unprojected), locations [B, Lq, heads, P, 2], weights [B, Lq, heads, P] -> [B, Lq, C]."""
        value = self.value_proj(value).reshape(value.shape[0], value.shape[1], self.num_heads, -1)
        return ms_deformable_attention(value, spatial_shapes, locations, weights, self.num_points, self.method)
