"""Hugging Face ``config.json`` for transformers' ``RTDetrForObjectDetection``, from our config.

Only what transformers' RT-DETR can express: a ResNet-vd backbone, the v1 decoder with
one sampling-point count and default query selection. Two choices keep transformers'
behaviour close to the reference's:

- ``eval_size`` is ``None``: with it set, transformers' AIFI drops the position
  embedding in eval mode (it expects a precomputed one it never builds).
- ``anchor_image_size`` is ``None``: anchors are computed for the actual input size
  (the reference precomputes them for 640x640 only).

transformers has no ``eval_idx``: for ``rtdetr_r50vd_m`` (stop after decoder layer 3)
it runs all 6 layers; a warning says so.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import PResNetConfig, RTDETRConfig
from ..nn.presnet import PRESNET_DEPTHS

__all__ = ["hf_config_dict", "hf_config_differences"]

log = logging.getLogger(__name__)

_BASE_WIDTHS = (64, 128, 256, 512)
# fields compared when loading HF weights into one of our models (architecture semantics
# that do not show in tensor shapes)
_SEMANTIC_FIELDS = (
    "encoder_activation_function",
    "activation_function",
    "decoder_activation_function",
    "decoder_n_points",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "positional_encoding_temperature",
    "num_feature_levels",
    "num_queries",
    "encode_proj_layers",
    "normalize_before",
)


def hf_config_dict(cfg: RTDETRConfig, class_names: list[str] | None = None) -> dict[str, Any]:
    """A ``config.json`` dict that makes transformers build the same network as ``cfg``.

    Raises:
        ValueError: a part of ``cfg`` transformers' RT-DETR cannot express.
    """
    if getattr(cfg, "checkpoint_layout", "v1") != "v1":
        raise ValueError(f"{cfg.name}: transformers' RTDetrForObjectDetection is RT-DETR v1, not RT-DETRv2")
    bb = cfg.backbone
    if not isinstance(bb, PResNetConfig) or bb.variant != "d":
        raise ValueError(f"{cfg.name}: transformers' RT-DETR supports only ResNet-vd backbones, not {bb}")
    enc, dec = cfg.encoder, cfg.decoder
    if enc.depth_mult != 1.0:
        raise ValueError(f"{cfg.name}: transformers' RT-DETR has 3 RepVGG blocks per CSP layer (depth_mult 1.0)")
    if dec.cross_attn_method != "default" or dec.query_select_method != "default":
        raise ValueError(f"{cfg.name}: transformers' RT-DETR has only the v1 decoder (default methods)")
    points = dec.num_points
    if isinstance(points, (tuple, list)):
        if len(set(points)) != 1:
            raise ValueError(f"{cfg.name}: per-level sampling points {points} are not expressible")
        points = points[0]
    if dec.eval_idx % dec.num_layers != dec.num_layers - 1:
        log.warning(
            "%s: transformers runs all %d decoder layers; this model stops after layer %d (eval_idx)",
            cfg.name,
            dec.num_layers,
            dec.eval_idx % dec.num_layers + 1,
        )
    kind, depths = PRESNET_DEPTHS[bb.depth]
    mult = 4 if kind == "bottleneck" else 1
    widths = [w * mult for w in _BASE_WIDTHS]
    if class_names is None or len(class_names) != cfg.num_classes:
        class_names = [f"LABEL_{i}" for i in range(cfg.num_classes)]
    return {
        "model_type": "rt_detr",
        "architectures": ["RTDetrForObjectDetection"],
        "backbone_config": {
            "model_type": "rt_detr_resnet",
            "num_channels": 3,
            "embedding_size": 64,
            "hidden_sizes": widths,
            "depths": list(depths),
            "layer_type": kind,
            "hidden_act": "relu",
            "downsample_in_first_stage": False,
            "downsample_in_bottleneck": False,
            "out_features": [f"stage{i + 1}" for i in bb.return_idx],
            "out_indices": [i + 1 for i in bb.return_idx],
        },
        "freeze_backbone_batch_norms": bb.freeze_norm,
        "encoder_hidden_dim": enc.hidden_dim,
        "encoder_in_channels": [widths[i] for i in bb.return_idx],
        "feat_strides": [4 * 2**i for i in bb.return_idx],
        "encoder_layers": enc.num_encoder_layers,
        "encoder_ffn_dim": enc.dim_feedforward,
        "encoder_attention_heads": enc.nhead,
        "dropout": enc.dropout,
        "activation_dropout": 0.0,
        "encode_proj_layers": list(enc.use_encoder_idx),
        "positional_encoding_temperature": int(enc.pe_temperature),
        "encoder_activation_function": enc.enc_act,
        "activation_function": enc.act,
        "eval_size": None,
        "normalize_before": False,
        "hidden_expansion": enc.expansion,
        "d_model": dec.hidden_dim,
        "num_queries": dec.num_queries,
        "decoder_in_channels": [enc.hidden_dim] * len(bb.return_idx),
        "decoder_ffn_dim": dec.dim_feedforward,
        "num_feature_levels": dec.num_levels,
        "decoder_n_points": points,
        "decoder_layers": dec.num_layers,
        "decoder_attention_heads": dec.nhead,
        "decoder_activation_function": dec.activation,
        "attention_dropout": dec.dropout,
        "num_denoising": dec.num_denoising,
        "label_noise_ratio": dec.label_noise_ratio,
        "box_noise_scale": dec.box_noise_scale,
        "learn_initial_query": dec.learnt_init_query,
        "anchor_image_size": None,
        "with_box_refine": True,
        "is_encoder_decoder": True,
        "layer_norm_eps": 1e-5,
        "batch_norm_eps": 1e-5,
        "id2label": {str(i): n for i, n in enumerate(class_names)},
        "label2id": {n: i for i, n in enumerate(class_names)},
    }


def hf_config_differences(hf_config: dict[str, Any], cfg: RTDETRConfig) -> list[str]:
    """Fields of a HF config that change the computation without changing tensor shapes
    and differ from ``cfg`` (``"field: theirs != ours"``); empty if ``cfg`` is not expressible."""
    try:
        ours = hf_config_dict(cfg)
    except ValueError:
        return []
    out = []
    for name in _SEMANTIC_FIELDS:
        if name in hf_config and _norm(hf_config[name]) != _norm(ours[name]):
            out.append(f"{name}: {hf_config[name]!r} != {ours[name]!r}")
    bb = hf_config.get("backbone_config") or {}
    if bb.get("downsample_in_bottleneck"):
        out.append("backbone_config.downsample_in_bottleneck: True != False")
    return out


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
