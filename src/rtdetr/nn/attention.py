"""Multi-head self-attention through ``nn.MultiheadAttention``'s parameters, CPU-autocast aware.

The encoder's AIFI layer and the decoder's query self-attention keep the reference's
``nn.MultiheadAttention`` modules (``in_proj_weight``, ``out_proj``: released checkpoints
load unchanged). :func:`multihead_attention` calls the module as is, except under CPU
autocast, where it runs the projections in bfloat16 and the attention core in float32:
PyTorch's bfloat16 flash attention on the CPU is ~2x slower than its float32 one at the
decoder's shapes (forward + backward of [8, 8, 292, 16]: 26 ms in bf16, 15 ms in fp32 on
2 AVX512-BF16 cores), and float32 softmax is also the more exact one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import cpu_autocast_active

__all__ = ["multihead_attention"]


def multihead_attention(
    attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None
) -> Tensor:
    """``attn(query, key, value, attn_mask=attn_mask, need_weights=False)[0]``.

    Args:
        attn: a ``batch_first`` module with equal query/key/value widths (packed ``in_proj_weight``).
        query, key, value: [B, L, C].
        attn_mask: [L, L] bool (True = masked, the module's convention) or additive float; None.

    Returns:
        [B, L, C].
    """
    if not cpu_autocast_active(query) or attn.in_proj_weight is None:
        return attn(query, key, value, attn_mask=attn_mask, need_weights=False)[0]
    b, lq, c = query.shape
    heads = attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)

    def split_heads(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        # [B, L, C] -> [B, L, heads, C / heads] -> [B, heads, L, C / heads], float32
        return F.linear(x, w, bias).view(b, x.shape[1], heads, c // heads).transpose(1, 2).float()

    q, k, v = split_heads(query, w_q, b_q), split_heads(key, w_k, b_k), split_heads(value, w_v, b_v)
    mask = None
    if attn_mask is not None:
        # SDPA's bool masks mark what to keep, the module's what to drop
        mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask.float()
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=attn.dropout if attn.training else 0.0)
    out = out.transpose(1, 2).reshape(b, lq, c)  # [B, heads, L, C / heads] -> [B, L, C]
    return attn.out_proj(out)
