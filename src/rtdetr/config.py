"""Model configuration: frozen dataclasses and the named presets.

A preset is a complete :class:`RTDETRConfig`; :func:`get_config` copies it with
field overrides (what ``build_model(name, **overrides)`` and YAML/CLI overrides
use). Values are the reference hyperparameters of each released model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import UserError

__all__ = [
    "ConfigError",
    "parse_overrides",
    "PResNetConfig",
    "HGNetv2Config",
    "CSPDarknetConfig",
    "EncoderConfig",
    "DecoderConfig",
    "TrainRecipe",
    "RTDETRConfig",
    "PRESETS",
    "PAPER_RESULTS",
    "get_config",
    "list_models",
]


class ConfigError(UserError, ValueError):
    """An unknown preset, an unknown or ambiguous config field, or a malformed override."""


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


@dataclass(frozen=True)
class CSPDarknetConfig:
    """CSPDarknet with C2f stages (YOLOv8's backbone layout), for training from scratch.

    ``widths``: channels of the stem and of stages 0..3; ``depths``: bottlenecks per
    stage's C2f block. See :mod:`rtdetr.nn.cspdarknet`.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 2, 2, 1)
    return_idx: tuple[int, ...] = (2, 3)
    act: str = "silu"


BackboneConfig = PResNetConfig | HGNetv2Config | CSPDarknetConfig


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
    """Transformer decoder, query selection and denoising.

    The RT-DETRv2 decoder is this one with three options: ``num_points`` per level
    (an int for all levels or a tuple), ``cross_attn_method`` "default" (bilinear
    grid_sample) or "discrete" (one-pixel gather, no GridSample; freezes the
    sampling offsets), and ``query_select_method`` "default", "one2many" or
    "agnostic" (see :func:`rtdetr.nn.query_selection.select_topk`).

    ``num_o2m_queries`` (0 in every preset) adds that many training-only queries
    matched one-to-many (H-DETR hybrid matching, :mod:`rtdetr.nn.hybrid_queries`);
    they have no weights of their own and do not exist at inference.

    ``dense_enc_outputs`` (off in every preset) makes training forwards also return every
    encoder token's score and box, which the loss then supervises one-to-many
    (:mod:`rtdetr.train.dense_loss`); eval outputs and weights are unchanged.

    ``box_refine`` "fdr" is the D-FINE option: each layer predicts a distribution over
    ``reg_max + 1`` bins per box edge, refined residually layer by layer (bin values set
    by ``reg_up`` and ``reg_scale``; see :mod:`rtdetr.nn.fdr`); training then adds the
    FGL and DDF losses (:mod:`rtdetr.train.fdr_loss`). "default" is the RT-DETR box head.
    """

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
    num_o2m_queries: int = 0
    box_refine: str = "default"
    reg_max: int = 32
    reg_up: float = 0.5
    reg_scale: float = 4.0
    dense_enc_outputs: bool = False

    def __post_init__(self) -> None:
        n = self.num_o2m_queries
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"decoder field num_o2m_queries must be an integer >= 0, got {n!r}")
        if n and self.box_refine == "fdr":
            # the FDR training outputs (per-layer edge distributions) have no one-to-many split yet
            raise ConfigError("decoder fields num_o2m_queries and box_refine='fdr' cannot be combined (yet)")


@dataclass(frozen=True)
class TrainRecipe:
    """The published training recipe of a preset (COCO from ImageNet-pretrained backbones).

    Field names follow :class:`rtdetr.train.TrainConfig` so a recipe can seed a run.
    The schedule is constant after the linear warmup (the reference's MultiStepLR
    milestone at epoch 1000 is never reached).

    Attributes:
        epochs: total epochs (72 = "6x").
        stop_epoch: from this epoch on the strong augmentations (photometric
            distort, zoom-out, IoU crop) and multi-scale resizing are off
            (RT-DETRv2); None keeps them on throughout (RT-DETR v1).
        lr / backbone_lr: AdamW learning rates of the encoder+decoder and of the
            backbone (equal where the reference has no separate backbone group).
        total_batch_size: images per optimizer step over all processes.
        multi_scale: per-batch random resize to 480..800 (off for RT-DETRv2-S).
        amp: the reference trained with mixed precision.
        source: where the numbers come from; says which ones are not verified.
    """

    epochs: int = 72
    stop_epoch: int | None = None
    lr: float = 1e-4
    backbone_lr: float = 1e-5
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    total_batch_size: int = 16
    warmup_iters: int = 2000
    ema_decay: float = 0.9999
    ema_warmup: int = 2000
    clip_max_norm: float = 0.1
    multi_scale: bool = True
    amp: bool = False
    source: str = ""


CheckpointLayout = Literal["v1", "v2"]


@dataclass(frozen=True)
class RTDETRConfig:
    """A whole detector.

    ``eval_spatial_size`` (h, w) is the size whose anchors and position embeddings
    are precomputed; other sizes still work (computed and cached).

    ``checkpoint_layout`` is the state-dict layout of the reference checkpoints
    the preset loads: "v1" (rtdetr_pytorch) or "v2" (rtdetrv2_pytorch), which
    names ``encoder.input_proj.i.{conv,norm}`` and ``decoder.enc_output.{proj,norm}``
    instead of ``.0/.1`` and stores ``decoder.anchors``, ``decoder.valid_mask`` and
    each cross-attention's ``num_points_scale`` as buffers (the model then uses the
    stored values, as the reference does). Either layout loads into either model.
    """

    name: str
    backbone: BackboneConfig
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    num_classes: int = 80
    eval_spatial_size: tuple[int, int] | None = (640, 640)
    num_top_queries: int = 300
    checkpoint_layout: CheckpointLayout = "v1"
    train: TrainRecipe = field(default_factory=TrainRecipe)


_V1_SRC = "reference v1 configs (rtdetrv2_pytorch configs/rtdetr): 6x, backbone lr 1e-5 (R101 1e-6)"
_V1_HG_SRC = (
    "PaddleDetection rtdetr_hgnetv2 configs as recalled, not verified: stem frozen, backbone lr "
    "multiplier 0.05 (L) / 0.01 (X) of 1e-4"
)
_V2_SRC = "rtdetrv2_pytorch configs/rtdetrv2"
_V2_SMALL_SRC = (
    "not a reference recipe: this package's design for the small presets (no published weights), "
    "patterned on RT-DETRv2-S; unverified"
)


def _v1(
    name: str,
    backbone: BackboneConfig,
    encoder: EncoderConfig,
    decoder: DecoderConfig,
    backbone_lr: float = 1e-5,
    source: str = _V1_SRC,
) -> RTDETRConfig:
    recipe = TrainRecipe(epochs=72, backbone_lr=backbone_lr, source=source)
    return RTDETRConfig(name=name, backbone=backbone, encoder=encoder, decoder=decoder, train=recipe)


def _v2(
    name: str,
    backbone: BackboneConfig,
    encoder: EncoderConfig,
    decoder: DecoderConfig,
    *,
    epochs: int,
    stop_epoch: int,
    backbone_lr: float,
    multi_scale: bool = True,
    source: str = _V2_SRC,
) -> RTDETRConfig:
    recipe = TrainRecipe(
        epochs=epochs, stop_epoch=stop_epoch, backbone_lr=backbone_lr, multi_scale=multi_scale, amp=True, source=source
    )
    return RTDETRConfig(
        name=name, backbone=backbone, encoder=encoder, decoder=decoder, checkpoint_layout="v2", train=recipe
    )


_R18 = PResNetConfig(depth=18, freeze_at=-1, freeze_norm=False)
_R34 = PResNetConfig(depth=34, freeze_at=-1, freeze_norm=False)
_R50 = PResNetConfig(depth=50, freeze_at=0, freeze_norm=True)
_R101 = PResNetConfig(depth=101, freeze_at=0, freeze_norm=True)
_HG_L = HGNetv2Config(size="L", freeze_at=0, freeze_norm=True)  # stem frozen, as in the reference
_HG_X = HGNetv2Config(size="X", freeze_at=0, freeze_norm=True)
_HG_H = HGNetv2Config(size="H", freeze_at=0, freeze_norm=True)
_ENC_HALF = EncoderConfig(expansion=0.5)  # R18 / R34 / R50-m: CSPRep hidden width 128
_ENC = EncoderConfig(expansion=1.0)
_ENC_384 = EncoderConfig(hidden_dim=384, dim_feedforward=2048, expansion=1.0)  # R101 / X
_ENC_512 = EncoderConfig(hidden_dim=512, dim_feedforward=2048, num_encoder_layers=2)  # H
_DEC3, _DEC4, _DEC6 = (DecoderConfig(num_layers=n) for n in (3, 4, 6))
_DEC6_M = DecoderConfig(num_layers=6, eval_idx=2)  # R50-m: trained with 6 layers, runs 3

# Small presets, this package's design (measured with rtdetr.summary at 640): HGNetv2-B0
# (with LAB, trained end to end) and 3 decoder layers for both.
# n (3.7 M params, 7.2 GFLOPs): only the stride-16/32 maps (the 80x80 level dominates the
#   cost of CCFF and of the decoder's input projection), width 128, FFNs 512, CSPRep hidden
#   64 with 2 RepVGG blocks, 6 sampling points per level to make up for the missing level.
# s (9.8 M params, 24.5 GFLOPs): the R18 layout (3 levels, width 256) on B0, with one
#   RepVGG block per CSPRep. Channel counts stay multiples of 64 for efficient kernels.
_HG_B0_S16 = HGNetv2Config(size="B0", freeze_at=-1, freeze_norm=False, return_idx=(2, 3))
_HG_B0 = HGNetv2Config(size="B0", freeze_at=-1, freeze_norm=False)
_ENC_N = EncoderConfig(hidden_dim=128, dim_feedforward=512, use_encoder_idx=(1,), expansion=0.5, depth_mult=0.5)
_DEC_N = DecoderConfig(hidden_dim=128, num_levels=2, num_points=(6, 6), num_layers=3, dim_feedforward=512)
_ENC_S = EncoderConfig(hidden_dim=256, dim_feedforward=1024, expansion=0.5, depth_mult=0.34)
_DEC_S = DecoderConfig(num_layers=3)
# D-FINE-style n: the n model with fine-grained distribution refinement of the box edges
# (D-FINE's reg_max 32, up 0.5, reg_scale 4) and its FGL / DDF losses in training.
_DEC_N_FDR = dataclasses.replace(_DEC_N, box_refine="fdr")
_DFINE_SRC = (
    "not a reference recipe: rtdetrv2_hgnetv2_n's recipe with the D-FINE FDR decoder option "
    "(D-FINE's FDR hyper-parameters and loss weights); unverified"
)
# The same detector on a CSPDarknet backbone at YOLOv8n's widths and depths (stride-16/32
# maps of 128 and 256 channels): about half HGNetv2-B0's training cost per image on a CPU,
# for training from scratch (docs/convergence.md, eighth round).
_CSP_N_S16 = CSPDarknetConfig(widths=(16, 32, 64, 128, 256), depths=(1, 2, 2, 1), return_idx=(2, 3))
_CSP_SRC = (
    "not a reference recipe: dfine_hgnetv2_n with a CSPDarknet (C2f) backbone for training from scratch; unverified"
)

PRESETS: dict[str, RTDETRConfig] = {
    cfg.name: cfg
    for cfg in [
        # RT-DETR (v1)
        _v1("rtdetr_r18vd", _R18, _ENC_HALF, _DEC3),
        _v1("rtdetr_r34vd", _R34, _ENC_HALF, _DEC4),
        _v1("rtdetr_r50vd_m", _R50, _ENC_HALF, _DEC6_M),
        _v1("rtdetr_r50vd", _R50, _ENC, _DEC6),
        _v1("rtdetr_r101vd", _R101, _ENC_384, _DEC6, backbone_lr=1e-6),
        _v1("rtdetr_hgnetv2_l", _HG_L, _ENC, _DEC6, backbone_lr=5e-6, source=_V1_HG_SRC),
        _v1("rtdetr_hgnetv2_x", _HG_X, _ENC_384, _DEC6, backbone_lr=1e-6, source=_V1_HG_SRC),
        # RT-DETRv2: same architecture, v2 decoder options (fields of DecoderConfig), v2 layout.
        # R18 trains its backbone at the full lr and without multi-scale resizing.
        _v2("rtdetrv2_r18vd", _R18, _ENC_HALF, _DEC3, epochs=120, stop_epoch=117, backbone_lr=1e-4, multi_scale=False),
        _v2("rtdetrv2_r34vd", _R34, _ENC_HALF, _DEC4, epochs=120, stop_epoch=117, backbone_lr=5e-5),
        _v2("rtdetrv2_r50vd_m", _R50, _ENC_HALF, _DEC6_M, epochs=84, stop_epoch=81, backbone_lr=1e-5),
        _v2("rtdetrv2_r50vd", _R50, _ENC, _DEC6, epochs=72, stop_epoch=71, backbone_lr=1e-5),
        _v2("rtdetrv2_r101vd", _R101, _ENC_384, _DEC6, epochs=72, stop_epoch=71, backbone_lr=1e-6),
        _v2("rtdetrv2_hgnetv2_l", _HG_L, _ENC, _DEC6, epochs=72, stop_epoch=71, backbone_lr=5e-6),
        _v2("rtdetrv2_hgnetv2_x", _HG_X, _ENC_384, _DEC6, epochs=72, stop_epoch=71, backbone_lr=1e-6),
        _v2("rtdetrv2_hgnetv2_h", _HG_H, _ENC_512, _DEC6, epochs=72, stop_epoch=71, backbone_lr=5e-6),
        # Small models for CPUs and edge devices (no published weights).
        _v2(
            "rtdetrv2_hgnetv2_n",
            _HG_B0_S16,
            _ENC_N,
            _DEC_N,
            epochs=120,
            stop_epoch=117,
            backbone_lr=1e-4,
            source=_V2_SMALL_SRC,
        ),
        _v2(
            "rtdetrv2_hgnetv2_s",
            _HG_B0,
            _ENC_S,
            _DEC_S,
            epochs=120,
            stop_epoch=117,
            backbone_lr=1e-4,
            source=_V2_SMALL_SRC,
        ),
        _v2(
            "dfine_hgnetv2_n",
            _HG_B0_S16,
            _ENC_N,
            _DEC_N_FDR,
            epochs=120,
            stop_epoch=117,
            backbone_lr=1e-4,
            source=_DFINE_SRC,
        ),
        _v2(
            "dfine_cspdarknet_n",
            _CSP_N_S16,
            _ENC_N,
            _DEC_N_FDR,
            epochs=120,
            stop_epoch=117,
            backbone_lr=1e-4,
            source=_CSP_SRC,
        ),
    ]
}

# Published numbers (COCO val2017, 640 px): params (M), GFLOPs, AP.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "rtdetr_r18vd": {"params_m": 20, "gflops": 60, "ap": 46.5},
    "rtdetr_r34vd": {"params_m": 31, "gflops": 92, "ap": 48.9},
    "rtdetr_r50vd_m": {"params_m": 36, "gflops": 100, "ap": 51.3},
    "rtdetr_r50vd": {"params_m": 42, "gflops": 136, "ap": 53.1},
    "rtdetr_r101vd": {"params_m": 76, "gflops": 259, "ap": 54.3},
    "rtdetr_hgnetv2_l": {"params_m": 32, "gflops": 110, "ap": 53.0},
    "rtdetr_hgnetv2_x": {"params_m": 67, "gflops": 234, "ap": 54.8},
    # RT-DETRv2 (arXiv 2407.17140): the v1 architectures' params / GFLOPs, higher AP.
    # The HGNetv2 and small v2 presets have no published numbers.
    "rtdetrv2_r18vd": {"params_m": 20, "gflops": 60, "ap": 48.1},
    "rtdetrv2_r34vd": {"params_m": 31, "gflops": 92, "ap": 49.9},
    "rtdetrv2_r50vd_m": {"params_m": 36, "gflops": 100, "ap": 51.9},
    "rtdetrv2_r50vd": {"params_m": 42, "gflops": 136, "ap": 53.4},
    "rtdetrv2_r101vd": {"params_m": 76, "gflops": 259, "ap": 54.3},
}

_SECTIONS = ("backbone", "encoder", "decoder", "train")


def list_models() -> list[str]:
    """Names of the presets accepted by ``build_model``."""
    return sorted(PRESETS)


def get_config(name: str | RTDETRConfig, **overrides: Any) -> RTDETRConfig:
    """A preset (or a given config) with fields replaced.

    Override keys are field names. Top-level fields (``num_classes``,
    ``eval_spatial_size``, ``num_top_queries``, ``checkpoint_layout``) apply
    directly; a field that exists in exactly one section (backbone, encoder,
    decoder, train; e.g. ``eval_idx``, ``num_queries``, ``cross_attn_method``,
    ``epochs``) is found there; a field in several sections must be qualified
    as ``section__field`` (e.g. ``encoder__hidden_dim=384``).
    """
    if isinstance(name, RTDETRConfig):
        cfg = name
    else:
        try:
            cfg = PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None

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
                raise ConfigError(f"unknown config field {key!r} for model {cfg.name!r}")
            per_section[section][fname] = value
            continue
        owners = [s for s in _SECTIONS if _has_field(getattr(cfg, s), key)]
        if not owners:
            raise ConfigError(f"unknown config field {key!r} for model {cfg.name!r}")
        if len(owners) > 1:
            qualified = ", ".join(f"{s}__{key}" for s in owners)
            raise ConfigError(f"config field {key!r} is ambiguous; use one of: {qualified}")
        per_section[owners[0]][key] = value

    sections = {s: dataclasses.replace(getattr(cfg, s), **kv) for s, kv in per_section.items() if kv}
    return dataclasses.replace(cfg, **top, **sections)


def _has_field(obj: Any, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(obj))


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["num_queries=100", "eval_idx=2"]`` (``--set`` flags) -> :func:`get_config` overrides.

    Values are read as Python literals (``100``, ``(640, 640)``, ``True``); ``true`` /
    ``false`` / ``null`` / ``none`` in any case are the booleans and None (a YAML or JSON
    habit; as strings they would all be truthy); anything else stays a string
    (``cross_attn_method=discrete``).
    """
    import ast

    words = {"true": True, "false": False, "none": None, "null": None}

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        if value.strip().lower() in words:
            out[key.strip()] = words[value.strip().lower()]
            continue
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()  # a bare string such as discrete
    return out
