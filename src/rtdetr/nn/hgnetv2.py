"""HGNetv2 backbone (PP-HGNetV2, as used by RT-DETR-L/X/H and RT-DETRv2).

A stem of small convs (stride 4) followed by four stages of HG blocks. Each HG
block runs a chain of convs, concatenates the block input with every
intermediate output and aggregates the concatenation with a squeeze (1x1 ->
out/2) and an excitation (1x1 -> out) conv. Stages 2-4 start with a depthwise
stride-2 conv. Module and parameter names follow the RT-DETRv2 reference so
its checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv_bn_act import ConvBNAct, LearnableAffineBlock, LightConvBNAct
from .layers import freeze_batch_norm

__all__ = [
    "HGNetv2",
    "HGNetv2Spec",
    "HGStageSpec",
    "HGNETV2_SPECS",
    "ConvBNAct",
    "LearnableAffineBlock",
]


@dataclass(frozen=True)
class HGStageSpec:
    """One stage: ``[in, mid, out, blocks, downsample, light, kernel, layers]``."""

    in_channels: int
    mid_channels: int
    out_channels: int
    num_blocks: int
    downsample: bool
    light: bool
    kernel_size: int
    num_layers: int


@dataclass(frozen=True)
class HGNetv2Spec:
    """A backbone size: stem ``(in, mid, out)`` channels, four stages, LAB use."""

    stem: tuple[int, int, int]
    stages: tuple[HGStageSpec, ...]
    use_lab: bool = False


def _spec(stem: tuple[int, int, int], *stages: tuple, use_lab: bool = False) -> HGNetv2Spec:
    return HGNetv2Spec(stem, tuple(HGStageSpec(*s) for s in stages), use_lab)


T, F_ = True, False
# PP-HGNetV2 B0..B6. RT-DETR's L / X / H are B4 / B5 / B6. The small sizes were
# trained with learnable affine blocks (LAB), the large ones without.
HGNETV2_SPECS: dict[str, HGNetv2Spec] = {
    "B0": _spec(
        (3, 16, 16),
        (16, 16, 64, 1, F_, F_, 3, 3),
        (64, 32, 256, 1, T, F_, 3, 3),
        (256, 64, 512, 2, T, T, 5, 3),
        (512, 128, 1024, 1, T, T, 5, 3),
        use_lab=True,
    ),
    "B1": _spec(
        (3, 24, 32),
        (32, 32, 64, 1, F_, F_, 3, 3),
        (64, 48, 256, 1, T, F_, 3, 3),
        (256, 96, 512, 2, T, T, 5, 3),
        (512, 192, 1024, 1, T, T, 5, 3),
        use_lab=True,
    ),
    "B2": _spec(
        (3, 24, 32),
        (32, 32, 96, 1, F_, F_, 3, 4),
        (96, 64, 384, 1, T, F_, 3, 4),
        (384, 128, 768, 3, T, T, 5, 4),
        (768, 256, 1536, 1, T, T, 5, 4),
        use_lab=True,
    ),
    "B3": _spec(
        (3, 24, 32),
        (32, 32, 128, 1, F_, F_, 3, 5),
        (128, 64, 512, 1, T, F_, 3, 5),
        (512, 128, 1024, 3, T, T, 5, 5),
        (1024, 256, 2048, 1, T, T, 5, 5),
        use_lab=True,
    ),
    "L": _spec(
        (3, 32, 48),
        (48, 48, 128, 1, F_, F_, 3, 6),
        (128, 96, 512, 1, T, F_, 3, 6),
        (512, 192, 1024, 3, T, T, 5, 6),
        (1024, 384, 2048, 1, T, T, 5, 6),
    ),
    "X": _spec(
        (3, 32, 64),
        (64, 64, 128, 1, F_, F_, 3, 6),
        (128, 128, 512, 2, T, F_, 3, 6),
        (512, 256, 1024, 5, T, T, 5, 6),
        (1024, 512, 2048, 2, T, T, 5, 6),
    ),
    "H": _spec(
        (3, 48, 96),
        (96, 96, 192, 2, F_, F_, 3, 6),
        (192, 192, 512, 3, T, F_, 3, 6),
        (512, 384, 1024, 6, T, T, 5, 6),
        (1024, 768, 2048, 3, T, T, 5, 6),
    ),
}
HGNETV2_SPECS["B4"] = HGNETV2_SPECS["L"]
HGNETV2_SPECS["B5"] = HGNETV2_SPECS["X"]
HGNETV2_SPECS["B6"] = HGNETV2_SPECS["H"]
del T, F_


class StemBlock(nn.Module):
    """Stride-4 stem: [B, 3, H, W] -> [B, out, ceil(ceil(H/2)/2), ceil(ceil(W/2)/2)]."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, use_lab: bool = False) -> None:
        super().__init__()
        self.stem1 = ConvBNAct(in_channels, mid_channels, 3, stride=2, use_lab=use_lab)
        self.stem2a = ConvBNAct(mid_channels, mid_channels // 2, 2, use_lab=use_lab, pad_right_bottom=True)
        self.stem2b = ConvBNAct(mid_channels // 2, mid_channels, 2, use_lab=use_lab, pad_right_bottom=True)
        self.stem3 = ConvBNAct(mid_channels * 2, mid_channels, 3, stride=2, use_lab=use_lab)
        self.stem4 = ConvBNAct(mid_channels, out_channels, 1, use_lab=use_lab)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem1(x)
        conv_branch = self.stem2b(self.stem2a(x))
        # Zero (not -inf) padding, so the pool branch matches the reference even
        # where LAB makes activations negative.
        pool_branch = self._pool(F.pad(x, (0, 1, 0, 1)))
        x = torch.cat([pool_branch, conv_branch], dim=1)
        return self.stem4(self.stem3(x))

    def _pool(self, x: Tensor) -> Tensor:
        """2x2 stride-1 max pool: [B, C, H+1, W+1] -> [B, C, H, W]."""
        if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export():
            # Its backward routes a tie's gradient to one element, as the reference; and an
            # exported ONNX/OpenVINO graph keeps a single MaxPool node for its runtime.
            return self.pool(x)
        # The max of four shifted views: the same values, ~2.5x faster than
        # max_pool2d_with_indices on channels-last CPU tensors (which also writes indices);
        # also inside a TorchScript trace, where the pool cost ~10% of a small model's
        # forward (infer/graph_cache.py).
        top = torch.maximum(x[..., :-1, :-1], x[..., :-1, 1:])
        return torch.maximum(top, torch.maximum(x[..., 1:, :-1], x[..., 1:, 1:]))


class HGBlock(nn.Module):
    """``num_layers`` chained convs, concat of input and all outputs, squeeze-excite 1x1s.

    [B, Cin, H, W] -> [B, Cout, H, W]; ``residual`` adds the input (Cin == Cout).
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        num_layers: int,
        kernel_size: int,
        light: bool,
        residual: bool,
        use_lab: bool = False,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            cin = in_channels if i == 0 else mid_channels
            if light:
                self.layers.append(LightConvBNAct(cin, mid_channels, kernel_size, use_lab=use_lab))
            else:
                self.layers.append(ConvBNAct(cin, mid_channels, kernel_size, use_lab=use_lab))
        total = in_channels + num_layers * mid_channels
        self.aggregation_squeeze_conv = ConvBNAct(total, out_channels // 2, 1, use_lab=use_lab)
        self.aggregation_excitation_conv = ConvBNAct(out_channels // 2, out_channels, 1, use_lab=use_lab)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        outputs = [x]
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        x = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(torch.cat(outputs, dim=1)))
        return x + identity if self.residual else x


class HGStage(nn.Module):
    """Optional depthwise 3x3 stride-2 conv-BN (no activation), then HG blocks."""

    def __init__(self, spec: HGStageSpec, use_lab: bool = False) -> None:
        super().__init__()
        c_in = spec.in_channels
        self.downsample: nn.Module = (
            ConvBNAct(c_in, c_in, 3, stride=2, groups=c_in, use_act=False, use_lab=use_lab)
            if spec.downsample
            else nn.Identity()
        )
        self.blocks = nn.Sequential(
            *[
                HGBlock(
                    c_in if i == 0 else spec.out_channels,
                    spec.mid_channels,
                    spec.out_channels,
                    spec.num_layers,
                    spec.kernel_size,
                    spec.light,
                    residual=i > 0,
                    use_lab=use_lab,
                )
                for i in range(spec.num_blocks)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class HGNetv2(nn.Module):
    """HGNetv2 backbone returning the feature maps of the stages in ``return_idx``.

    Args:
        name: a key of ``HGNETV2_SPECS`` ("B0".."B6", "L", "X", "H") or a spec.
        return_idx: stage indices (0..3) to return; stage i has stride
            4 * 2**(number of downsampling stages up to i), i.e. 4, 8, 16, 32.
        freeze_at: ``>= 0`` freezes the stem and the stages with index < freeze_at.
        freeze_norm: replace BatchNorm2d with FrozenBatchNorm2d.
        use_lab: override the spec's learnable-affine-block setting.

    Input [B, 3, H, W] (any H, W); output maps [B, out_channels[i], ~H/s_i, ~W/s_i]
    (each stride-2 step rounds up).
    """

    def __init__(
        self,
        *,
        name: str | HGNetv2Spec = "L",
        return_idx: Sequence[int] = (1, 2, 3),
        freeze_at: int = -1,
        freeze_norm: bool = True,
        use_lab: bool | None = None,
    ) -> None:
        super().__init__()
        if isinstance(name, str):
            if name not in HGNETV2_SPECS:
                raise ValueError(f"unknown HGNetv2 size {name!r}; choose from {sorted(HGNETV2_SPECS)}")
            spec = HGNETV2_SPECS[name]
        else:
            spec = name
        lab = spec.use_lab if use_lab is None else use_lab
        self.return_idx = [int(i) for i in return_idx]
        if not self.return_idx or any(not 0 <= i < len(spec.stages) for i in self.return_idx):
            raise ValueError(f"return_idx {return_idx} out of range for {len(spec.stages)} stages")

        self.stem = StemBlock(*spec.stem, use_lab=lab)
        self.stages = nn.ModuleList(HGStage(s, use_lab=lab) for s in spec.stages)

        all_strides, stride = [], 4
        for s in spec.stages:
            stride *= 2 if s.downsample else 1
            all_strides.append(stride)
        self.out_channels: list[int] = [spec.stages[i].out_channels for i in self.return_idx]
        self.strides: list[int] = [all_strides[i] for i in self.return_idx]

        if freeze_at >= 0:
            for module in [self.stem, *self.stages[:freeze_at]]:
                module.requires_grad_(False)
        if freeze_norm:
            freeze_batch_norm(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> one [B, C_i, H_i, W_i] map per entry of ``return_idx``."""
        x = self.stem(x)
        feats = []
        for stage in self.stages[: max(self.return_idx) + 1]:
            x = stage(x)
            feats.append(x)
        return [feats[i] for i in self.return_idx]
