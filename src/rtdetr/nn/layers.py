"""Small building blocks shared by the backbone, the hybrid encoder and the decoder.

Module and attribute names follow the reference implementation so that released
checkpoints load with ``strict=True``: a conv-norm unit has children ``conv`` and
``norm``; a RepVGG block has ``conv1`` (3x3) and ``conv2`` (1x1); an MLP keeps its
linear layers in ``layers``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = [
    "get_activation",
    "ConvNormLayer",
    "DepthwiseConv2d",
    "cpu_autocast_active",
    "RepVggBlock",
    "CSPRepLayer",
    "MLP",
    "freeze_batch_norm",
    "fold_batch_norms",
]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def get_activation(name: str | None, *, inplace: bool = False) -> nn.Module:
    """Activation module from its name (``None`` -> identity).

    ``inplace``: ReLU overwrites its input (its backward needs only its output), for
    callers whose input is a temporary nobody else reads, such as a BatchNorm output
    (BatchNorm's backward needs its input, not its output). It saves one activation-
    sized buffer per layer: at 640 px the stem's maps are 52-105 MB each, fresh memory
    that is page-faulted in on every training step. Other activations ignore it.
    """
    if name is None:
        return nn.Identity()
    try:
        cls = _ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}") from None
    return cls(inplace=True) if inplace and cls is nn.ReLU else cls()


def cpu_autocast_active(x: Tensor) -> bool:
    """True when ``x`` is on the CPU and CPU autocast is on: where ops below opt out to float32."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (groups == channels) that computes in float32 under CPU autocast.

    Same parameters, state-dict keys and results as ``nn.Conv2d`` everywhere else. Why:
    oneDNN's bfloat16 depthwise convolution is slow on AVX512-BF16 CPUs, above all its
    backward pass: a 3x3 stride-2 depthwise conv over [8, 256, 40, 40] took 22 ms
    forward + backward in bf16 against 4 ms in fp32 (2 cores, channels-last), which made
    depthwise layers ~80 ms of a 720 ms ``rtdetrv2_hgnetv2_n`` training step at 320 px.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False):
        super().__init__(channels, channels, kernel_size, stride, padding=padding, groups=channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if cpu_autocast_active(x):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class ConvNormLayer(nn.Module):
    """Conv2d -> BatchNorm2d -> activation. Padding defaults to 'same' for odd kernels."""

    def __init__(
        self,
        ch_in: int,
        ch_out: int,
        kernel_size: int,
        stride: int = 1,
        *,
        padding: int | None = None,
        groups: int = 1,
        bias: bool = False,
        act: str | None = None,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 if padding is None else padding
        self.conv = nn.Conv2d(ch_in, ch_out, kernel_size, stride, padding=padding, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(ch_out)
        self.act = get_activation(act, inplace=True)  # on the norm's output, read by no one else

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


def _conv_norm_params(conv: nn.Conv2d, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """Kernel and bias of a single conv equivalent to ``norm(conv(x))`` with fixed statistics."""
    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
    kernel = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return kernel, bias


class RepVggBlock(nn.Module):
    """act(BN(conv3x3(x)) + BN(conv1x1(x))); folds into one 3x3 conv for deployment.

    After :meth:`convert_to_deploy` the block holds a single biased 3x3 ``conv`` and
    computes the same function (to float rounding) at a third of the memory traffic.
    """

    def __init__(self, ch_in: int, ch_out: int, act: str = "relu") -> None:
        super().__init__()
        self.ch_in, self.ch_out = ch_in, ch_out
        self.conv1 = ConvNormLayer(ch_in, ch_out, 3, 1, padding=1)
        self.conv2 = ConvNormLayer(ch_in, ch_out, 1, 1, padding=0)
        self.act = get_activation(act)

    @property
    def deployed(self) -> bool:
        return hasattr(self, "conv")

    def forward(self, x: Tensor) -> Tensor:
        if self.deployed:
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def convert_to_deploy(self) -> None:
        if self.deployed:
            return
        k3, b3 = _conv_norm_params(self.conv1.conv, self.conv1.norm)
        k1, b1 = _conv_norm_params(self.conv2.conv, self.conv2.norm)
        weight = self.conv1.conv.weight
        conv = nn.Conv2d(self.ch_in, self.ch_out, 3, 1, padding=1, bias=True, device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(k3 + F.pad(k1, [1, 1, 1, 1]))  # 1x1 kernel sits at the 3x3 center
        conv.bias.copy_(b3 + b1)
        self.conv = conv
        del self.conv1, self.conv2


class CSPRepLayer(nn.Module):
    """Cross-stage-partial block of RepVGG blocks (the CCFF fusion block).

    Two 1x1 branches to ``hidden = int(out * expansion)`` channels; one runs
    ``num_blocks`` RepVGG blocks; their sum goes through a 1x1 conv to ``out``
    (identity when ``hidden == out``).
    """

    def __init__(
        self, ch_in: int, ch_out: int, num_blocks: int = 3, *, expansion: float = 1.0, act: str = "silu"
    ) -> None:
        super().__init__()
        hidden = int(ch_out * expansion)
        self.conv1 = ConvNormLayer(ch_in, hidden, 1, 1, act=act)
        self.conv2 = ConvNormLayer(ch_in, hidden, 1, 1, act=act)
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden, hidden, act=act) for _ in range(num_blocks)])
        self.conv3 = ConvNormLayer(hidden, ch_out, 1, 1, act=act) if hidden != ch_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class MLP(nn.Module):
    """``num_layers`` Linear layers with an activation between them (none after the last)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, act: str = "relu") -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = get_activation(act)

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return x


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d under ``module`` by a FrozenBatchNorm2d holding its statistics.

    Frozen BN has no ``num_batches_tracked`` buffer, which is how the reference
    checkpoints of frozen-norm backbones are laid out. Replacement keeps each
    child's position, so state-dict key order is unchanged.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batch_norm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Conv2d):
        return module[-1]  # e.g. (ZeroPad2d, Conv2d) in the HGNetv2 stem
    return None


def _fold_into(conv: nn.Conv2d, norm: nn.Module) -> bool:
    if not isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d)):
        return False
    if isinstance(norm, nn.BatchNorm2d) and (norm.training or norm.running_var is None):
        return False  # batch statistics: nothing fixed to fold
    kernel, bias = _conv_norm_params(conv, norm)
    conv.weight.copy_(kernel)
    conv.bias = nn.Parameter(bias)
    return True


@torch.no_grad()
def fold_batch_norms(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a conv into that conv.

    Pairs found: a module's ``conv`` + ``norm``/``bn`` children (conv-norm units,
    whose forward applies them back to back) and consecutive (conv, norm) entries
    of an ``nn.Sequential``. The conv gets weights scaled by ``gamma / std`` and the
    bias ``beta - mean * gamma / std``; the norm becomes ``nn.Identity``. Same
    function to float rounding, one memory pass fewer per layer. Changes the
    ``state_dict`` (an inference-only transform, like RepVGG fusion). Returns the
    number of norms folded.
    """
    folded = 0
    for unit in list(module.modules()):
        if isinstance(unit, nn.Sequential):
            names = list(unit._modules)
            for prev, cur in zip(names, names[1:]):
                conv = _last_conv(unit._modules[prev])
                if conv is not None and _fold_into(conv, unit._modules[cur]):
                    unit._modules[cur] = nn.Identity()
                    folded += 1
            continue
        conv = _last_conv(getattr(unit, "conv", None))
        for name in ("norm", "bn"):
            if conv is not None and _fold_into(conv, getattr(unit, name, None)):
                setattr(unit, name, nn.Identity())
                folded += 1
    return folded
