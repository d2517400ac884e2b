"""Model configuration: frozen dataclasses and the named presets.

A preset is a complete :class:`RTDETRConfig`; :func:`get_config` copies it with
field overrides (what ``build_model(name, **overrides)`` and YAML/CLI overrides
use). Values are the reference hyperparameters of each released model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "PResNetConfig",
    "HGNetv2Config",
    "EncoderConfig",
    "DecoderConfig",
    "RTDETRConfig",
    "PRESETS",
    "PAPER_RESULTS",
    "get_config",
    "list_models",
]


@dataclass(frozen=True)
class PResNetConfig:
    """ResNet-vd backbone. ``freeze_at=k >= 0`` freezes the stem and the first k stages."""

    depth: int = 50
    variant: str = "d"
    freeze_at: int = -1
    freeze_norm: bool = False
    return_idx: tuple[int, ...] = (1, 2, 3)


@dataclass(frozen=True)
class HGNetv2Config:
    """HGNetv2 backbone of size B0..B6 / L / X / H."""

    size: str = "L"
    freeze_at: int = -1
    freeze_norm: bool = True
    use_lab: bool | None = None
    return_idx: tuple[int, ...] = (1, 2, 3)


BackboneConfig = Union[PResNetConfig, HGNetv2Config]


@dataclass(frozen=True)
class EncoderConfig:
    """Hybrid encoder (AIFI + CCFF). ``pos_embed_layout``: see ``sincos_position_embedding_2d``."""

    hidden_dim: int = 256
    nhead: int = 8
    dim_feedforward: int = 1024
    dropout: float = 0.0
    enc_act: str = "gelu"
    use_encoder_idx: tuple[int, ...] = (2,)
    num_encoder_layers: int = 1
    pe_temperature: float = 10000.0
    expansion: float = 1.0
    depth_mult: float = 1.0
    act: str = "silu"
    pos_embed_layout: str = "rowcol"


@dataclass(frozen=True)
class DecoderConfig:
    """Transformer decoder, query selection and denoising."""

    hidden_dim: int = 256
    num_queries: int = 300
    num_levels: int = 3
    num_points: int | tuple[int, ...] = 4
    nhead: int = 8
    num_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.0
    activation: str = "relu"
    num_denoising: int = 100
    label_noise_ratio: float = 0.5
    box_noise_scale: float = 1.0
    learnt_init_query: bool = False
    eval_idx: int = -1
    eps: float = 1e-2
    aux_loss: bool = True
    cross_attn_method: str = "default"
    query_select_method: str = "default"


@dataclass(frozen=True)
class RTDETRConfig:
    """A whole detector. ``eval_spatial_size`` (h, w) is the size whose anchors and
    position embeddings are precomputed; other sizes still work (computed and cached)."""

    name: str
    backbone: BackboneConfig
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    num_classes: int = 80
    eval_spatial_size: tuple[int, int] | None = (640, 640)
    num_top_queries: int = 300


_R18_34_ENCODER = EncoderConfig(expansion=0.5)

PRESETS: dict[str, RTDETRConfig] = {
    "rtdetr_r18vd": RTDETRConfig(
        name="rtdetr_r18vd",
        backbone=PResNetConfig(depth=18, freeze_at=-1, freeze_norm=False),
        encoder=_R18_34_ENCODER,
        decoder=DecoderConfig(num_layers=3),
    ),
    "rtdetr_r34vd": RTDETRConfig(
        name="rtdetr_r34vd",
        backbone=PResNetConfig(depth=34, freeze_at=-1, freeze_norm=False),
        encoder=_R18_34_ENCODER,
        decoder=DecoderConfig(num_layers=4),
    ),
    "rtdetr_r50vd_m": RTDETRConfig(
        name="rtdetr_r50vd_m",
        backbone=PResNetConfig(depth=50, freeze_at=0, freeze_norm=True),
        encoder=EncoderConfig(expansion=0.5),
        decoder=DecoderConfig(num_layers=6, eval_idx=2),
    ),
    "rtdetr_r50vd": RTDETRConfig(
        name="rtdetr_r50vd",
        backbone=PResNetConfig(depth=50, freeze_at=0, freeze_norm=True),
        encoder=EncoderConfig(expansion=1.0),
        decoder=DecoderConfig(num_layers=6),
    ),
    "rtdetr_r101vd": RTDETRConfig(
        name="rtdetr_r101vd",
        backbone=PResNetConfig(depth=101, freeze_at=0, freeze_norm=True),
        encoder=EncoderConfig(hidden_dim=384, dim_feedforward=2048, expansion=1.0),
        decoder=DecoderConfig(num_layers=6),
    ),
}

# Published numbers (paper, COCO val2017, 640 px): params (M), GFLOPs, AP.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "rtdetr_r18vd": {"params_m": 20, "gflops": 60, "ap": 46.5},
    "rtdetr_r34vd": {"params_m": 31, "gflops": 92, "ap": 48.9},
    "rtdetr_r50vd_m": {"params_m": 36, "gflops": 100, "ap": 51.3},
    "rtdetr_r50vd": {"params_m": 42, "gflops": 136, "ap": 53.1},
    "rtdetr_r101vd": {"params_m": 76, "gflops": 259, "ap": 54.3},
}

_SECTIONS = ("backbone", "encoder", "decoder")


def list_models() -> list[str]:
    """Names of the presets accepted by ``build_model``."""
    return sorted(PRESETS)


def get_config(name: str | RTDETRConfig, **overrides: Any) -> RTDETRConfig:
    """A preset (or a given config) with fields replaced.

    Override keys are field names. Top-level fields (``num_classes``,
    ``eval_spatial_size``, ``num_top_queries``) apply directly; a field that
    exists in exactly one section (e.g. ``eval_idx``, ``num_queries``,
    ``depth``) is found there; a field in several sections must be qualified
    as ``section__field`` (e.g. ``encoder__hidden_dim=384``).
    """
    if isinstance(name, RTDETRConfig):
        cfg = name
    else:
        try:
            cfg = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None

    top: dict[str, Any] = {}
    per_section: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    top_fields = {f.name for f in dataclasses.fields(cfg)} - set(_SECTIONS) - {"name"}
    for key, value in overrides.items():
        if key in top_fields:
            top[key] = value
            continue
        if "__" in key:
            section, fname = key.split("__", 1)
            if section not in _SECTIONS or not _has_field(getattr(cfg, section), fname):
                raise ValueError(f"unknown config field {key!r} for model {cfg.name!r}")
            per_section[section][fname] = value
            continue
        owners = [s for s in _SECTIONS if _has_field(getattr(cfg, s), key)]
        if not owners:
            raise ValueError(f"unknown config field {key!r} for model {cfg.name!r}")
        if len(owners) > 1:
            qualified = ", ".join(f"{s}__{key}" for s in owners)
            raise ValueError(f"config field {key!r} is ambiguous; use one of: {qualified}")
        per_section[owners[0]][key] = value

    sections = {s: dataclasses.replace(getattr(cfg, s), **kv) for s, kv in per_section.items() if kv}
    return dataclasses.replace(cfg, **top, **sections)


def _has_field(obj: Any, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(obj))
