"""The clipped logit used for box refinement and denoising queries."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["inverse_sigmoid"]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) = log(x / (1 - x)) with x clipped to [0, 1] and both terms to >= eps (finite everywhere)."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
