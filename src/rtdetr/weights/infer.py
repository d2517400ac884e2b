"""Which preset a state dict (our naming) was made for, read from its key names and shapes.

Used to say "this checkpoint is for rtdetr_r50vd" in mismatch errors and to pick the
configuration when converting a checkpoint without an explicit model name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from ..config import PRESETS, PResNetConfig
from ..nn.presnet import PRESNET_DEPTHS

__all__ = ["describe_state_dict", "infer_model_names", "infer_num_classes"]


def _count(keys: list[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def infer_num_classes(state_dict: Mapping[str, Tensor]) -> int | None:
    """Classes of the score heads, or None when there are none."""
    for key in ("decoder.dec_score_head.0.weight", "decoder.enc_score_head.weight"):
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return None


def describe_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, str | float | int] | None:
    """Architecture features of a PResNet-backbone RT-DETR state dict, or None if not one.

    Keys: ``layout`` (checkpoint layout, "v1" or "v2"), ``depth``, ``hidden_dim``, ``expansion``,
    ``dim_feedforward``, ``num_layers`` (decoder), ``num_classes``.
    """
    keys = list(state_dict)
    block = r"^backbone\.res_layers\.{}\.blocks\.(\d+)\."
    counts = tuple(_count(keys, block.format(s)) for s in range(4))
    kind = "bottleneck" if any(".branch2c." in k for k in keys) else "basic"
    depth = next((d for d, (kd, c) in PRESNET_DEPTHS.items() if kd == kind and c == counts), None)
    layout = "v2" if "encoder.input_proj.0.conv.weight" in state_dict else "v1"
    proj = "encoder.input_proj.0.conv.weight" if layout == "v2" else "encoder.input_proj.0.0.weight"
    try:
        hidden = int(state_dict[proj].shape[0])
        csp_hidden = int(state_dict["encoder.fpn_blocks.0.conv1.conv.weight"].shape[0])
        ffn = int(state_dict["encoder.encoder.0.layers.0.linear1.weight"].shape[0])
    except KeyError:
        return None
    if depth is None:
        return None
    return {
        "layout": layout,
        "depth": depth,
        "hidden_dim": hidden,
        "expansion": csp_hidden / hidden,
        "dim_feedforward": ffn,
        "num_layers": _count(keys, r"^decoder\.decoder\.layers\.(\d+)\."),
        "num_classes": infer_num_classes(state_dict) or 0,
    }


def infer_model_names(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Presets whose architecture matches the state dict (usually one; empty if none)."""
    feats = describe_state_dict(state_dict)
    if feats is None:
        return []
    out = []
    for name, cfg in PRESETS.items():
        if not isinstance(cfg.backbone, PResNetConfig):
            continue
        if (
            getattr(cfg, "checkpoint_layout", "v1") == feats["layout"]
            and cfg.backbone.depth == feats["depth"]
            and cfg.encoder.hidden_dim == feats["hidden_dim"]
            and abs(cfg.encoder.expansion - float(feats["expansion"])) < 1e-6
            and cfg.encoder.dim_feedforward == feats["dim_feedforward"]
            and cfg.decoder.num_layers == feats["num_layers"]
        ):
            out.append(name)
    return sorted(out)
