"""Architecture summary: parameter count, FLOPs and output shapes of a detector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelSummary", "forward_with_stages", "summarize"]


@dataclass
class ModelSummary:
    params: int
    trainable_params: int
    gflops: float
    imgsz: tuple[int, int]
    backbone_shapes: list[tuple[int, ...]]
    encoder_shapes: list[tuple[int, ...]]
    output_shapes: dict[str, tuple[int, ...]]


def forward_with_stages(model: nn.Module, images: Tensor) -> tuple[Any, list[Tensor], list[Tensor]]:
    """One forward of a detector, also returning what its backbone and its encoder output.

    images [B, 3, H, W] -> (the model's output, backbone feature maps [B, C_i, H_i, W_i],
    encoder feature maps [B, C, H_i, W_i]). The stages are recorded with forward hooks on
    the way, so they are not run a second time for their outputs.
    """
    seen: dict[str, list[Tensor]] = {}
    hooks = [
        part.register_forward_hook(lambda _m, _in, o, key=key: seen.setdefault(key, list(o)))
        for key, part in (("backbone", model.backbone), ("encoder", model.encoder))
    ]
    try:
        out = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return out, seen["backbone"], seen["encoder"]


@torch.no_grad()
def summarize(model: nn.Module, imgsz: int | tuple[int, int] = 640, *, batch: int = 1) -> ModelSummary:
    """Run one eval forward on zeros of size ``imgsz`` and count FLOPs.

    GFLOPs are 2 x multiply-accumulates of matmuls and convolutions as counted by
    ``torch.utils.flop_counter`` (the convention of the paper's table), attention's
    two matrix products included; the few element-wise ops and grid sampling are not
    counted. The model may live on the meta device (built under ``with
    torch.device("meta")``): the count needs shapes only, and is the same there.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(batch, 3, h, w, dtype=param.dtype, device=param.device)
        # The math backend runs attention as matrix products the counter sees; the fused
        # CPU kernels are invisible to it (the count would depend on the device).
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            out, feats, enc = forward_with_stages(model, x)
    finally:
        model.train(was_training)
    return ModelSummary(
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        gflops=counter.get_total_flops() / batch / 1e9,
        imgsz=(h, w),
        backbone_shapes=[tuple(f.shape) for f in feats],
        encoder_shapes=[tuple(f.shape) for f in enc],
        output_shapes={k: tuple(v.shape) for k, v in out.items()},
    )
