"""HGNetv2's conv unit: conv -> BN -> ReLU -> learnable affine, and its fast paths.

The small HGNetv2 sizes (B0-B3) follow each activation with a learnable affine block
(LAB, ``scale * x + bias`` with scalar parameters). On a CPU these full-size
elementwise passes cost about as much as the narrow convolutions themselves, so
:class:`ConvBNAct` folds the LAB's scale into the batch norm while training and
into the conv (plus one clamp) for inference. Module and parameter names follow the
RT-DETRv2 reference, so its checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import DepthwiseConv2d, _last_conv

__all__ = ["LearnableAffineBlock", "ConvBNAct", "ClampAt", "LightConvBNAct"]


class LearnableAffineBlock(nn.Module):
    """``scale * x + bias`` with one learnable scalar each (shape [1])."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x + self.bias


class ConvBNAct(nn.Module):
    """Conv (no bias) -> BN -> optional ReLU -> optional LAB.

    ``pad_right_bottom`` replaces symmetric padding by a zero pad of one pixel
    on the right and bottom (for the stem's 2x2 convs, which keep the size);
    the pad lives in a Sequential with the conv, so the conv weight is
    ``conv.1.weight`` as in the reference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        use_act: bool = True,
        use_lab: bool = False,
        pad_right_bottom: bool = False,
    ) -> None:
        super().__init__()
        if pad_right_bottom:
            self.conv: nn.Module = nn.Sequential(
                nn.ZeroPad2d((0, 1, 0, 1)),
                nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=False),
            )
        elif groups > 1 and groups == in_channels == out_channels:
            self.conv = DepthwiseConv2d(out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2)
        else:
            self.conv = nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            )
        self.bn: nn.Module = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True) if use_act else nn.Identity()  # on the BN output, a temporary
        # LAB only ever follows an activation.
        self.lab = LearnableAffineBlock() if (use_act and use_lab) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """[B, Cin, H, W] -> [B, Cout, H', W']."""
        x = self.conv(x)
        if self._lab_folds_into_bn(x):
            return self._bn_relu_lab(x)
        return self.lab(self.act(self.bn(x)))

    def _lab_folds_into_bn(self, x: Tensor) -> bool:
        # Training on a CPU only: eval keeps the reference's op order (and deploy() folds
        # everything into the conv), CUDA would sync on the sign below, and a compiled
        # graph fuses these elementwise ops by itself.
        return (
            type(self.bn) is nn.BatchNorm2d
            and self.bn.training  # batch statistics (a model in train mode may hold eval-mode norms)
            and x.device.type == "cpu"
            and self.bn.affine
            and isinstance(self.act, nn.ReLU)
            and isinstance(self.lab, LearnableAffineBlock)
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()
        )

    def _bn_relu_lab(self, x: Tensor) -> Tensor:
        """``lab(relu(bn(x)))`` in three memory passes instead of four.

        ``s * relu(z) + b == b + sign(s) * relu(|s| * z)``, and ``|s| * bn(x)`` is a
        batch norm whose affine weight and bias are multiplied by ``|s|``: the LAB's
        full-size multiply (and its backward, two more passes) becomes a product of
        C-vectors. Same function and gradients up to float rounding. In training mode
        a ConvBNAct with LAB spent ~40% of its non-conv time in that multiply
        (channels-last, 1 thread, AVX-512).
        """
        bn, scale, bias = self.bn, self.lab.scale, self.lab.bias
        # The momentum / batch-counter logic of nn.BatchNorm2d's own forward, restated:
        # calling that forward with swapped parameters (torch.func.functional_call) gave
        # the same numbers but its per-call overhead ate most of the gain (A/B: -3% per
        # training step against -10% this way, 1 thread, AVX-512).
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
                momentum = 1.0 / float(bn.num_batches_tracked)
        negative = bool(scale.detach().item() < 0)
        magnitude = -scale if negative else scale
        z = F.batch_norm(
            x,
            bn.running_mean if bn.track_running_stats else None,
            bn.running_var if bn.track_running_stats else None,
            bn.weight * magnitude,
            bn.bias * magnitude,
            True,  # batch statistics, as nn.BatchNorm2d in training mode
            momentum,
            bn.eps,
        )
        z = F.relu(z, inplace=True)  # batch norm's backward needs its input, not its output
        return bias - z if negative else z + bias

    @torch.no_grad()
    def fold_lab(self) -> bool:
        """After batch-norm folding (``fold_batch_norms``), fold ReLU + LAB into the conv.

        ``s * relu(conv(x)) + b`` equals ``max(s * conv(x) + b, b)`` for ``s >= 0`` and
        ``min(..., b)`` for ``s < 0``: the conv's weight and bias are scaled by ``s`` and
        shifted by ``b``, and the two full-size elementwise passes become one clamp.
        Same function to float rounding; inference only (the state dict changes).
        Returns whether anything was folded.
        """
        conv = _last_conv(self.conv)
        if not (isinstance(self.bn, nn.Identity) and isinstance(self.act, nn.ReLU)):
            return False
        if conv is None or conv.bias is None or not isinstance(self.lab, LearnableAffineBlock):
            return False
        scale, bias = float(self.lab.scale), float(self.lab.bias)
        conv.weight.mul_(scale)
        conv.bias.mul_(scale).add_(bias)
        self.act = nn.Identity()
        self.lab = ClampAt(bias, upper=scale < 0)
        return True


class ClampAt(nn.Module):
    """``max(x, bound)`` (or ``min`` with ``upper``): a ReLU + LAB folded for inference."""

    def __init__(self, bound: float, upper: bool = False) -> None:
        super().__init__()
        self.bound, self.upper = bound, upper

    def forward(self, x: Tensor) -> Tensor:
        if self.upper:
            return x.clamp_max_(self.bound) if not torch.is_grad_enabled() else x.clamp_max(self.bound)
        return x.clamp_min_(self.bound) if not torch.is_grad_enabled() else x.clamp_min(self.bound)

    def extra_repr(self) -> str:
        return f"{'max' if self.upper else 'min'}={self.bound:g}"


class LightConvBNAct(nn.Module):
    """1x1 conv-BN (no activation) then depthwise kxk conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, use_lab: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, 1, use_act=False, use_lab=use_lab)
        self.conv2 = ConvBNAct(out_channels, out_channels, kernel_size, groups=out_channels, use_lab=use_lab)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))
