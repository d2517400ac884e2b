"""Feature maps <-> token sequences without breaking a channels-last layout.

The trainer runs convolutions channels-last on the CPU ([B, C, H, W] stored as
[B, H, W, C]). The transformer parts want tokens [B, H*W, C], which is exactly that
storage: converting there and back can be a free view. The helpers below keep it one,
and keep the gradients that flow back into the convolutions dense, because the CPU
kernels punish anything else (see :func:`dense_grad`). Contiguous (NCHW) maps take the
plain ``flatten(2).permute`` route, unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tracing", "is_channels_last", "flatten_hw", "unflatten_hw", "dense_grad"]


def tracing() -> bool:
    """True inside ``torch.jit.trace`` / ``torch.compile`` / export graphs (shapes may be symbolic)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return torch.jit.is_tracing() or (is_compiling is not None and is_compiling())


def is_channels_last(x: Tensor) -> bool:
    """A 4-d map stored [B, H, W, C] (and not also plain contiguous, as 1x1 maps are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def flatten_hw(x: Tensor) -> Tensor:
    """[B, C, h, w] -> [B, h*w, C], tokens in row-major order. A view when ``x`` is channels-last."""
    if is_channels_last(x):
        return x.permute(0, 2, 3, 1).flatten(1, 2)  # [B, h, w, C] (its storage) -> [B, h*w, C]
    return x.flatten(2).permute(0, 2, 1)  # [B, C, h*w] -> [B, h*w, C]


def unflatten_hw(tokens: Tensor, h: int, w: int, *, channels_last: bool) -> Tensor:
    """[B, h*w, C] -> dense [B, C, h, w], stored channels-last or contiguous as asked.

    From contiguous tokens the channels-last result is a view (no copy).
    """
    b, _, c = tokens.shape
    x = tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)  # [B, C, h, w], strides of channels-last
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class _DenseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.channels_last = is_channels_last(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous(memory_format=torch.channels_last if ctx.channels_last else torch.contiguous_format)


def dense_grad(x: Tensor) -> Tensor:
    """``x`` unchanged; in the backward pass its gradient is made dense in ``x``'s layout.

    Why: the gradient of a tensor that went into ``torch.cat`` (or was sliced) comes
    back as a strided view of a larger one. CPU BatchNorm backward on a channels-last
    input with such a gradient leaves its vectorized path: 43 ms against 9.5 ms for a
    [4, 256, 80, 80] map, 77 ms against 4 ms for [4, 64, 160, 160] (2 cores). One copy
    is far cheaper. No-op without autograd, and in traced or exported graphs.
    """
    if not (x.requires_grad and torch.is_grad_enabled()) or tracing():
        return x
    return _DenseGrad.apply(x)
