"""PResNet: ResNet-vd backbones (depth 18/34/50/101) as used by RT-DETR.

"vd" differs from torchvision's ResNet in two places: the stem is three 3x3
convs (3->32 s2, 32->32, 32->64) instead of one 7x7, and a downsampling
shortcut is 2x2 average pooling followed by a stride-1 1x1 conv, so the
shortcut sees every input pixel instead of one in four.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNormLayer, freeze_batch_norm, get_activation

__all__ = ["PResNet", "PRESNET_DEPTHS"]

# depth -> (block type, blocks per stage)
PRESNET_DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
_BASE_CHANNELS = (64, 128, 256, 512)


def _shortcut(ch_in: int, ch_out: int, stride: int, variant: str) -> nn.Module:
    if variant == "d" and stride == 2:
        return nn.Sequential(
            OrderedDict(
                pool=nn.AvgPool2d(2, 2, 0, ceil_mode=True),
                conv=ConvNormLayer(ch_in, ch_out, 1, 1),
            )
        )
    return ConvNormLayer(ch_in, ch_out, 1, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; used by depths 18 and 34."""

    expansion = 1

    def __init__(self, ch_in: int, ch_out: int, stride: int, shortcut: bool, act: str, variant: str) -> None:
        super().__init__()
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(ch_in, ch_out, stride, variant)
        self.branch2a = ConvNormLayer(ch_in, ch_out, 3, stride, act=act)
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, 1)
        self.act = get_activation(act, inplace=True)  # on the residual sum, a temporary

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch2b(self.branch2a(x))
        return self.act(out + (x if self.shortcut else self.short(x)))


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) with a residual; used by depths 50 and 101.

    Variants other than "a" put the stride on the 3x3 conv (ResNet v1.5 style).
    """

    expansion = 4

    def __init__(self, ch_in: int, ch_out: int, stride: int, shortcut: bool, act: str, variant: str) -> None:
        super().__init__()
        stride1, stride2 = (stride, 1) if variant == "a" else (1, stride)
        self.branch2a = ConvNormLayer(ch_in, ch_out, 1, stride1, act=act)
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, stride2, act=act)
        self.branch2c = ConvNormLayer(ch_out, ch_out * self.expansion, 1, 1)
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(ch_in, ch_out * self.expansion, stride, variant)
        self.act = get_activation(act, inplace=True)  # on the residual sum, a temporary

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        return self.act(out + (x if self.shortcut else self.short(x)))


class _Stage(nn.Module):
    def __init__(self, block: type, ch_in: int, ch_out: int, count: int, first_stride: int, act: str, variant: str):
        super().__init__()
        blocks = []
        for i in range(count):
            blocks.append(block(ch_in, ch_out, first_stride if i == 0 else 1, i != 0, act, variant))
            ch_in = ch_out * block.expansion
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class PResNet(nn.Module):
    """ResNet-vd backbone returning the feature maps of the stages in ``return_idx``.

    Args:
        depth: 18, 34, 50 or 101.
        variant: "d" (vd shortcut, the RT-DETR setting) or "a"/"b" (plain shortcuts).
        return_idx: stage indices to return (0-based; stage i has stride 4 * 2**i).
        freeze_at: -1 trains everything; k >= 0 freezes the stem and the first k stages.
        freeze_norm: replace BatchNorm by FrozenBatchNorm2d (statistics and affine fixed).

    Attributes:
        out_channels: channels of each returned map, e.g. [128, 256, 512] for depth 18.
        strides: stride of each returned map, e.g. [8, 16, 32].
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        variant: str = "d",
        num_stages: int = 4,
        return_idx: tuple[int, ...] = (1, 2, 3),
        act: str = "relu",
        freeze_at: int = -1,
        freeze_norm: bool = False,
    ) -> None:
        super().__init__()
        if depth not in PRESNET_DEPTHS:
            raise ValueError(f"PResNet depth must be one of {sorted(PRESNET_DEPTHS)}, got {depth}")
        kind, counts = PRESNET_DEPTHS[depth]
        block = BasicBlock if kind == "basic" else BottleneckBlock
        self.return_idx = tuple(return_idx)

        stem_ch = 64
        if variant in ("c", "d"):
            stem = [
                ("conv1_1", 3, stem_ch // 2, 2),
                ("conv1_2", stem_ch // 2, stem_ch // 2, 1),
                ("conv1_3", stem_ch // 2, stem_ch, 1),
            ]
        else:
            stem = [("conv1_1", 3, stem_ch, 2)]
        self.conv1 = nn.Sequential(
            OrderedDict((name, ConvNormLayer(cin, cout, 3, s, act=act)) for name, cin, cout, s in stem)
        )

        ch_in = stem_ch
        stage_channels, stage_strides = [], []
        self.res_layers = nn.ModuleList()
        for i in range(num_stages):
            # stage 0 keeps the stride-4 resolution of the stem + max-pool
            self.res_layers.append(_Stage(block, ch_in, _BASE_CHANNELS[i], counts[i], 1 if i == 0 else 2, act, variant))
            ch_in = _BASE_CHANNELS[i] * block.expansion
            stage_channels.append(ch_in)
            stage_strides.append(4 * 2**i)
        self.out_channels = [stage_channels[i] for i in self.return_idx]
        self.strides = [stage_strides[i] for i in self.return_idx]

        if freeze_at >= 0:
            self._freeze(self.conv1)
            for i in range(min(freeze_at, num_stages)):
                self._freeze(self.res_layers[i])
        if freeze_norm:
            freeze_batch_norm(self)

    @staticmethod
    def _freeze(module: nn.Module) -> None:
        for p in module.parameters():
            p.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x [B, 3, H, W] -> list of [B, C_i, H / s_i, W / s_i] for each returned stage."""
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        outs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs
