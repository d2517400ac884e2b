"""Shared helpers for the weights tests: random weights and the transformers configs of the presets."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["randomize_", "hf_reference_config", "HF_PRESET_FIELDS"]


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every floating tensor with well-scaled random values (no zero or constant
    heads, non-trivial BatchNorm statistics) so that parity tests exercise every weight."""
    g = torch.Generator().manual_seed(seed)
    for key, t in module.state_dict().items():
        if not t.is_floating_point():
            continue
        x = torch.randn(t.shape, generator=g, dtype=t.dtype)
        if key.endswith("running_var"):
            v = 0.5 + x.abs()
        elif key.endswith("running_mean"):
            v = 0.1 * x
        elif t.dim() >= 2:  # conv / linear / embedding
            v = x / math.sqrt(t[0].numel())
        elif key.endswith("weight"):  # norm scales
            v = 1.0 + 0.1 * x
        else:
            v = 0.1 * x
        t.copy_(v)
    return module


# The transformers configuration of each preset, written out by hand from the architecture
# (ResNet-vd depth and widths, CSP expansion, encoder width, decoder depth) so that
# ``hf_config_dict`` is checked against an independent statement of it.
HF_PRESET_FIELDS: dict[str, dict] = {
    "rtdetr_r18vd": {
        "backbone": {"depths": [2, 2, 2, 2], "layer_type": "basic", "hidden_sizes": [64, 128, 256, 512]},
        "encoder_in_channels": [128, 256, 512],
        "hidden_expansion": 0.5,
        "decoder_layers": 3,
        "freeze_backbone_batch_norms": False,
    },
    "rtdetr_r50vd": {
        "backbone": {"depths": [3, 4, 6, 3], "layer_type": "bottleneck", "hidden_sizes": [256, 512, 1024, 2048]},
        "encoder_in_channels": [512, 1024, 2048],
        "hidden_expansion": 1.0,
        "decoder_layers": 6,
        "freeze_backbone_batch_norms": True,
    },
}


def hf_reference_config(name: str, **overrides):
    """transformers ``RTDetrConfig`` for a preset (80 classes), from :data:`HF_PRESET_FIELDS`."""
    from transformers import RTDetrConfig, RTDetrResNetConfig

    fields = dict(HF_PRESET_FIELDS[name])
    backbone = RTDetrResNetConfig(**fields.pop("backbone"), out_indices=[2, 3, 4])
    return RTDetrConfig(backbone_config=backbone, num_labels=80, **fields, **overrides)
