"""Name-keyed weights and the fixed input of the reference forward fixtures, in the repository.

The fixtures (``tests/data/forward_r18vd_slim.pt`` here, ``forward_*.pt`` in the full
reference set) were recorded with weights that depend only on each state-dict key and shape,
so any implementation using the reference's key names gets the same model. The rule, as the
reference set's README and its `fill.py` define it, for every floating-point tensor of key ``k`` and
shape ``s``: draw ``z ~ N(0, 1)`` in float64 from a generator seeded with ``crc32(k)``, then

- ``running_var``: ``1 + 0.1 |z|``; ``running_mean``: ``0.1 z``;
- tensors of two or more dimensions (conv, linear, embedding): ``z / sqrt(prod(s[1:]))``;
- other ``weight`` tensors (norm scales): ``1 + 0.1 z``; anything else (biases): ``0.1 z``.

The input is ``torch.rand`` in float64 from a generator seeded with the fixture's
``input_seed``. ``tests/nn/test_reference_parity.py`` checks this module against the
reference's `fill.py` whenever the full set is present, so the two cannot drift apart.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn


def key_values(key: str, shape: torch.Size) -> torch.Tensor:
    """float64 values for the state-dict entry ``key`` of ``shape`` (see the module docstring)."""
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    if key.endswith("running_var"):
        return 1.0 + 0.1 * z.abs()
    if key.endswith("running_mean"):
        return 0.1 * z
    if len(shape) >= 2:
        return z / math.sqrt(math.prod(shape[1:]))
    return 1.0 + 0.1 * z if key.endswith("weight") else 0.1 * z


@torch.no_grad()
def fill_state_dict(model: nn.Module) -> None:
    """Overwrite every floating-point parameter and buffer of ``model`` in place.

    Convert the model to float64 first: filling float32 tensors rounds the values.
    """
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            tensor.copy_(key_values(key, tensor.shape).to(tensor.dtype))


def reference_image(seed: int = 0, size: tuple[int, int] = (640, 640), batch: int = 1) -> torch.Tensor:
    """The fixtures' input: float64 ``[batch, 3, H, W]`` uniform in [0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=gen, dtype=torch.float64)
