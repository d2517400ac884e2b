"""CSPDarknet with C2f stages (the YOLOv8 backbone layout): a backbone built to train from scratch.

HGNetv2's small sizes were designed to be fine-tuned from ImageNet weights; trained from
random weights on a CPU, their narrow, high-resolution stages (each convolution followed by
batch norm, ReLU and a learnable affine) are memory-bound. At YOLOv8n's widths and depths
this backbone costs about half of HGNetv2-B0's forward + backward per training image on a
CPU (docs/convergence.md, eighth round). No published RT-DETR weights use it.

Layout, for ``widths = (w0, w1, w2, w3, w4)`` and ``depths = (n1, n2, n3, n4)``::

    stem      3x3 conv, stride 2                      3  -> w0   (stride 2)
    stage 0   3x3 conv s2, C2f(n1)                    w0 -> w1   (stride 4)
    stage 1   3x3 conv s2, C2f(n2)                    w1 -> w2   (stride 8)
    stage 2   3x3 conv s2, C2f(n3)                    w2 -> w3   (stride 16)
    stage 3   3x3 conv s2, C2f(n4), SPPF              w3 -> w4   (stride 32)

Every convolution is conv -> BatchNorm -> activation (:class:`ConvNormLayer`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .layers import ConvNormLayer

__all__ = ["Bottleneck", "C2f", "SPPF", "CSPDarknet"]


class Bottleneck(nn.Module):
    """Two 3x3 conv units with a residual connection: [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, channels: int, act: str = "silu") -> None:
        super().__init__()
        self.conv1 = ConvNormLayer(channels, channels, 3, act=act)
        self.conv2 = ConvNormLayer(channels, channels, 3, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class C2f(nn.Module):
    """CSP block with every bottleneck's output kept: [B, Cin, H, W] -> [B, Cout, H, W].

    A 1x1 conv makes two halves of ``Cout // 2`` channels; the bottlenecks chain on the
    second half, and a 1x1 conv fuses both halves and every bottleneck output
    (``(2 + num_blocks) * Cout // 2`` channels).
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, act: str = "silu") -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1 = ConvNormLayer(in_channels, 2 * half, 1, act=act)
        self.blocks = nn.ModuleList(Bottleneck(half, act=act) for _ in range(num_blocks))
        self.conv2 = ConvNormLayer((2 + num_blocks) * half, out_channels, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.conv1(x).chunk(2, dim=1))  # 2 x [B, half, H, W]
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.conv2(torch.cat(parts, dim=1))  # [B, (2 + n) * half, H, W] -> [B, Cout, H, W]


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max pools (receptive fields 5, 9, 13).

    [B, Cin, H, W] -> [B, Cout, H, W]; the pools run on ``Cin // 2`` channels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, act: str = "silu") -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = ConvNormLayer(in_channels, hidden, 1, act=act)
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.conv2 = ConvNormLayer(4 * hidden, out_channels, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        pooled = [self.conv1(x)]
        for _ in range(3):
            pooled.append(self.pool(pooled[-1]))
        return self.conv2(torch.cat(pooled, dim=1))  # [B, 4 * hidden, H, W] -> [B, Cout, H, W]


class CSPDarknet(nn.Module):
    """CSPDarknet backbone returning the feature maps of the stages in ``return_idx``.

    Args:
        widths: channels of the stem and of stages 0..3 (5 values).
        depths: bottlenecks in the C2f block of stages 0..3 (4 values).
        return_idx: stage indices (0..3) to return; stage i has stride ``4 * 2**i``.
        act: activation of every conv unit (a name :func:`get_activation` knows).

    Input [B, 3, H, W]; output maps [B, widths[i + 1], ~H/s_i, ~W/s_i] (each stride-2
    conv rounds up). Stages after the last returned one are not built.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        depths: Sequence[int] = (1, 2, 2, 1),
        return_idx: Sequence[int] = (2, 3),
        act: str = "silu",
    ) -> None:
        super().__init__()
        if len(widths) != 5 or len(depths) != 4:
            raise ValueError(f"CSPDarknet needs 5 widths and 4 depths, got {tuple(widths)} and {tuple(depths)}")
        if any(w % 2 or w < 2 for w in widths[1:]):
            raise ValueError(f"CSPDarknet stage widths must be even (C2f splits them in halves), got {tuple(widths)}")
        self.return_idx = sorted(int(i) for i in return_idx)
        if not self.return_idx or any(not 0 <= i < 4 for i in self.return_idx):
            raise ValueError(f"return_idx {tuple(return_idx)} out of range for 4 stages")

        self.stem = ConvNormLayer(3, widths[0], 3, 2, act=act)
        stages = []
        for i in range(self.return_idx[-1] + 1):
            layers: list[nn.Module] = [
                ConvNormLayer(widths[i], widths[i + 1], 3, 2, act=act),
                C2f(widths[i + 1], widths[i + 1], depths[i], act=act),
            ]
            if i == 3:
                layers.append(SPPF(widths[4], widths[4], act=act))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = [int(widths[i + 1]) for i in self.return_idx]
        self.strides = [4 * 2**i for i in self.return_idx]

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> one map per ``return_idx`` entry, shallowest first."""
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs
