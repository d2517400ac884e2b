"""Fine-grained distribution refinement (FDR) of box edges, the D-FINE decoder option.

Instead of regressing a box delta, each decoder layer predicts, for each of the four
edges (left, top, right, bottom) of a box, a probability distribution over
``N + 1`` bins (``N = reg_max``). The edge offset is the expectation
``sum_n W(n) P(n)`` of a fixed, non-uniform weighting function ``W`` (fine bins near
zero, coarse ones at the ends). The first layer also predicts an *initial box*
(a conventional box delta); every layer's edges are offsets from that box, and each
layer after the first adds residual logits to the previous layer's logits, so a
deeper layer only corrects the distribution it was handed.

Units: an edge distance is measured outward from the initial box's edge, in units
of that box's width (left/right) or height (top/bottom)::

    x1 = cx - w * (1/2 + d_left)     x2 = cx + w * (1/2 + d_right)
    y1 = cy - h * (1/2 + d_top)      y2 = cy + h * (1/2 + d_bottom)

With ``up = a`` and ``reg_scale = c`` the bins are, for ``k = n - N/2``::

    W = 0                                       k = 0
    W = sign(k) * ((1 + a c) ** (2|k| / (N - 2)) - 1) / c     1 <= |k| <= N/2 - 1
    W = sign(k) * 2 a                            |k| = N/2  (the two end bins)

so the inner bins span [-a, a] (denser near 0 for larger c) and the end bins catch
larger corrections. This is the D-FINE weighting function (its ``up``, ``reg_scale``;
there the distances are in units of the box size divided by ``reg_scale``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .inverse_sigmoid import inverse_sigmoid
from .layers import MLP

if TYPE_CHECKING:
    from .decoder import RTDETRDecoder

__all__ = [
    "BOX_REFINE_METHODS",
    "FDRRefiner",
    "box_to_distance",
    "distance_to_bins",
    "distance_to_box",
    "distribution_integral",
    "weighting_function",
]

BOX_REFINE_METHODS = ("default", "fdr")


def weighting_function(reg_max: int, up: float, reg_scale: float) -> Tensor:
    """The bin values W(0..reg_max): float32 [reg_max + 1], increasing, W(n) = -W(reg_max - n).

    ``reg_max`` (N) must be even and >= 4 (one zero bin in the middle, at least one
    inner bin per side); ``up`` (a) bounds the inner bins, ``reg_scale`` (c) their curvature.
    """
    if not isinstance(reg_max, int) or isinstance(reg_max, bool) or reg_max < 4 or reg_max % 2:
        raise UserError(f"decoder field reg_max must be an even integer >= 4, got {reg_max!r}")
    if not up > 0 or not reg_scale > 0:
        raise UserError(f"decoder fields reg_up and reg_scale must be positive, got {up!r} and {reg_scale!r}")
    half = reg_max // 2
    k = torch.arange(1, half, dtype=torch.float64)
    inner = (torch.pow(torch.tensor(1.0 + up * reg_scale, dtype=torch.float64), 2 * k / (reg_max - 2)) - 1) / reg_scale
    end = torch.tensor([2.0 * up], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    values = torch.cat([-end, -inner.flip(0), zero, inner, end])
    return values.to(torch.float32)


def distribution_integral(corner_logits: Tensor, project: Tensor) -> Tensor:
    """Expected edge distances: logits [..., 4, N+1] -> sum_n W(n) softmax(logits)(n), [..., 4]."""
    probs = F.softmax(corner_logits, dim=-1)
    return probs @ project.to(probs.dtype)


def distance_to_box(ref: Tensor, dist: Tensor) -> Tensor:
    """ref [..., 4] cxcywh, dist [..., 4] (left, top, right, bottom, in ref box units) -> cxcywh [..., 4].

    Not clamped: strongly negative distances give a box of negative width (as in
    D-FINE), which the box losses push back.
    """
    cx, cy, w, h = ref.unbind(-1)
    dl, dt, dr, db = dist.unbind(-1)
    x1, x2 = cx - w * (0.5 + dl), cx + w * (0.5 + dr)
    y1, y2 = cy - h * (0.5 + dt), cy + h * (0.5 + db)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_to_distance(ref: Tensor, box: Tensor, eps: float = 1e-9) -> Tensor:
    """Inverse of :func:`distance_to_box`: ref, box [..., 4] cxcywh -> distances [..., 4] (l, t, r, b)."""
    cx, cy, w, h = ref.unbind(-1)
    bx, by, bw, bh = box.unbind(-1)
    w, h = w.clamp(min=eps), h.clamp(min=eps)
    left = (cx - (bx - bw / 2)) / w - 0.5
    top = (cy - (by - bh / 2)) / h - 0.5
    right = ((bx + bw / 2) - cx) / w - 0.5
    bottom = ((by + bh / 2) - cy) / h - 0.5
    return torch.stack([left, top, right, bottom], dim=-1)


def distance_to_bins(dist: Tensor, project: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The two bins around each distance and their interpolation weights.

    dist [...] (any shape), project [N+1] increasing -> (left bin int64 [...] in
    0..N-1, weight of the left bin [...], weight of the right bin [...]), with
    ``w_left * W(left) + w_right * W(left + 1) == dist`` for a distance inside
    [W(0), W(N)]; distances outside are clamped to the end bins.
    """
    project = project.to(dist.dtype)
    d = dist.clamp(project[0], project[-1])
    left = torch.searchsorted(project.contiguous(), d.detach().contiguous(), right=True) - 1
    left = left.clamp(0, project.numel() - 2)
    lo, hi = project[left], project[left + 1]
    w_right = ((d - lo) / (hi - lo)).clamp(0.0, 1.0)
    return left, 1.0 - w_right, w_right


class FDRRefiner(nn.Module):
    """The FDR decoding loop's own parts: the initial-box head and the bin values.

    The per-layer distribution heads are the decoder's ``dec_bbox_head`` (each an MLP
    to ``4 * (reg_max + 1)`` logits, last layer zero-initialized: a uniform
    distribution, whose expectation is 0 by the symmetry of W, i.e. "keep the box").

    Args:
        hidden_dim: decoder width.
        reg_max: N, bins per edge minus one (D-FINE: 32).
        up, reg_scale: a and c of :func:`weighting_function` (D-FINE: 0.5, 4).
    """

    def __init__(self, hidden_dim: int, *, reg_max: int = 32, up: float = 0.5, reg_scale: float = 4.0) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.up, self.reg_scale = up, reg_scale
        # Derived from the config, so not stored in checkpoints.
        self.register_buffer("project", weighting_function(reg_max, up, reg_scale), persistent=False)
        self.pre_bbox_head = MLP(hidden_dim, hidden_dim, 4, num_layers=3)
        nn.init.zeros_(self.pre_bbox_head.layers[-1].weight)
        nn.init.zeros_(self.pre_bbox_head.layers[-1].bias)

    @property
    def head_dim(self) -> int:
        """Outputs of each layer's distribution head: 4 * (reg_max + 1)."""
        return 4 * (self.reg_max + 1)

    def extra_repr(self) -> str:
        return f"reg_max={self.reg_max}, up={self.up}, reg_scale={self.reg_scale}"

    def decode(
        self,
        dec: RTDETRDecoder,
        target: Tensor,
        ref_unact: Tensor,
        memory: Tensor,
        shapes: list[tuple[int, int]],
        attn_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, dict[str, Any] | None]:
        """The decoder layers with FDR: the FDR counterpart of ``RTDETRDecoder._decode``.

        target [B, Lq, C], ref_unact [B, Lq, 4] (logits of the reference boxes, detached).
        Returns boxes [L', B, Lq, 4] cxcywh and logits [L', B, Lq, classes] (every
        layer in training, only ``eval_idx`` in eval), and in training a dict:
        ``corners`` [L, B, Lq, 4, N+1] (each layer's accumulated edge logits),
        ``ref_boxes`` [B, Lq, 4] (the detached initial boxes the distances refer to),
        ``pre_boxes`` [B, Lq, 4] (the initial boxes, trainable) and ``project`` [N+1].
        """
        output = target
        ref_detached = ref_unact.sigmoid()
        init_ref: Tensor | None = None
        pre_boxes: Tensor | None = None
        corners: Tensor | None = None
        out_boxes, out_logits, out_corners = [], [], []
        bins = self.reg_max + 1
        for i, layer in enumerate(dec.decoder.layers):
            query_pos = dec.query_pos_head(ref_detached)
            output = layer(output, ref_detached.unsqueeze(2), memory, shapes, attn_mask, query_pos)
            if init_ref is None:
                # The initial box b0: a conventional refinement of the query's reference box.
                pre_boxes = torch.sigmoid(self.pre_bbox_head(output) + inverse_sigmoid(ref_detached))
                init_ref = pre_boxes.detach()
            step = dec.dec_bbox_head[i](output).unflatten(-1, (4, bins))  # [B, Lq, 4, N+1]
            # Residual: this layer corrects the previous layer's logits (not detached, so the
            # later layers' losses also train the earlier heads).
            corners = step if corners is None else corners + step
            box = distance_to_box(init_ref, distribution_integral(corners, self.project))
            if dec.training:
                out_logits.append(dec.dec_score_head[i](output))
                out_boxes.append(box)
                out_corners.append(corners)
            elif i == dec.eval_idx:
                out_logits.append(dec.dec_score_head[i](output))
                out_boxes.append(box)
                break
            ref_detached = box.detach() if dec.training else box
        if not dec.training:
            return torch.stack(out_boxes), torch.stack(out_logits), None
        extras = {
            "corners": torch.stack(out_corners),
            "ref_boxes": init_ref,
            "pre_boxes": pre_boxes,
            "project": self.project,
        }
        return torch.stack(out_boxes), torch.stack(out_logits), extras

    @staticmethod
    def training_outputs(extras: dict[str, Any], logits: Tensor, num_dn: int) -> dict[str, Any]:
        """The FDR entries of the training output dict, split into matching and denoising queries.

        ``logits`` [L, B, Lq, classes] are every layer's class logits (layer 0's score the
        initial boxes, as in D-FINE). Returns ``{"fdr": {...}}`` and, when ``num_dn`` > 0,
        ``"dn_fdr"``; each holds ``corners`` [L, B, Q, 4, N+1], ``ref_boxes`` [B, Q, 4],
        ``project`` [N+1] and ``pre_outputs`` (``pred_logits`` [B, Q, C], ``pred_boxes``
        [B, Q, 4] of the initial boxes) for :mod:`rtdetr.train.fdr_loss`.
        """

        def part(sl: slice) -> dict[str, Any]:
            return {
                "corners": extras["corners"][:, :, sl],
                "ref_boxes": extras["ref_boxes"][:, sl],
                "project": extras["project"],
                "pre_outputs": {"pred_logits": logits[0][:, sl], "pred_boxes": extras["pre_boxes"][:, sl]},
            }

        out = {"fdr": part(slice(num_dn, None))}
        if num_dn > 0:
            out["dn_fdr"] = part(slice(0, num_dn))
        return out
