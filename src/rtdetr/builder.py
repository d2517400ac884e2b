"""Assemble a detector from a config: the one place where presets become modules."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torch import nn

from .config import HGNetv2Config, PResNetConfig, RTDETRConfig, get_config
from .nn.decoder import RTDETRDecoder
from .nn.detector import RTDETR
from .nn.encoder import HybridEncoder
from .nn.hgnetv2 import HGNetv2
from .nn.postprocess import PostProcessor
from .nn.presnet import PResNet

if TYPE_CHECKING:
    from .weights.formats import Checkpoint

__all__ = ["build_model", "build_backbone", "build_postprocessor"]


def build_backbone(cfg: PResNetConfig | HGNetv2Config) -> nn.Module:
    """Backbone exposing ``out_channels`` and ``strides`` of its returned maps."""
    if isinstance(cfg, PResNetConfig):
        return PResNet(
            depth=cfg.depth,
            variant=cfg.variant,
            return_idx=cfg.return_idx,
            freeze_at=cfg.freeze_at,
            freeze_norm=cfg.freeze_norm,
        )
    if isinstance(cfg, HGNetv2Config):
        return HGNetv2(
            name=cfg.size,
            return_idx=cfg.return_idx,
            freeze_at=cfg.freeze_at,
            freeze_norm=cfg.freeze_norm,
            use_lab=cfg.use_lab,
        )
    raise TypeError(f"unsupported backbone config {type(cfg).__name__}")


def build_model(
    name: str | RTDETRConfig,
    *,
    num_classes: int | None = None,
    weights: str | os.PathLike | Checkpoint | None = None,
    trusted: bool = False,
    **overrides: Any,
) -> RTDETR:
    """Build a detector from a preset name (see :func:`rtdetr.list_models`) or a config.

    Args:
        name: preset name such as ``"rtdetr_r18vd"``, or an :class:`RTDETRConfig`.
        num_classes: classes of the score heads. Default: as many as the ``weights``
            have (their score heads' size; names come along from the file, the hub
            config's ``id2label`` or the registry), else the preset's (80). A value
            different from the weights' raises :class:`~rtdetr.weights.WeightsMismatchError`
            (to fine-tune, build without weights and call ``load_weights(...,
            allow_head_mismatch=True)``).
        weights: optional weights to load (see :func:`rtdetr.weights.load_weights`:
            a registry tag such as ``"coco"``, a local file or directory, a URL, or
            ``"hf:ORG/NAME"``).
        trusted: allow torch files that hold arbitrary Python objects (unpickling can
            run code; never for files from an untrusted source).
        **overrides: config fields to change, e.g. ``eval_idx=1``, ``num_queries=100``
            (see :func:`rtdetr.config.get_config` for the rules).

    Returns:
        An :class:`RTDETR` in training mode; freshly initialized unless ``weights``
        is given. Its resolved config is ``model.config``.
    """
    ckpt = None
    if weights is not None:
        from .weights import Checkpoint, read_weights  # deferred: pulls in download machinery
        from .weights.infer import infer_num_classes

        if isinstance(weights, Checkpoint):
            ckpt = weights
        else:
            ckpt = read_weights(weights, name if isinstance(name, str) else name.name, trusted=trusted)
        if num_classes is None:
            num_classes = infer_num_classes(ckpt.state_dict)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    cfg = get_config(name, **overrides)
    backbone = build_backbone(cfg.backbone)
    enc = cfg.encoder
    encoder = HybridEncoder(
        in_channels=backbone.out_channels,
        feat_strides=backbone.strides,
        hidden_dim=enc.hidden_dim,
        nhead=enc.nhead,
        dim_feedforward=enc.dim_feedforward,
        dropout=enc.dropout,
        enc_act=enc.enc_act,
        use_encoder_idx=enc.use_encoder_idx,
        num_encoder_layers=enc.num_encoder_layers,
        pe_temperature=enc.pe_temperature,
        expansion=enc.expansion,
        depth_mult=enc.depth_mult,
        act=enc.act,
        eval_spatial_size=cfg.eval_spatial_size,
        pos_embed_layout=enc.pos_embed_layout,
        checkpoint_layout=cfg.checkpoint_layout,
    )
    dec = cfg.decoder
    decoder = RTDETRDecoder(
        num_classes=cfg.num_classes,
        hidden_dim=dec.hidden_dim,
        num_queries=dec.num_queries,
        feat_channels=encoder.out_channels,
        feat_strides=encoder.out_strides,
        num_levels=dec.num_levels,
        num_points=list(dec.num_points) if isinstance(dec.num_points, tuple) else dec.num_points,
        nhead=dec.nhead,
        num_layers=dec.num_layers,
        dim_feedforward=dec.dim_feedforward,
        dropout=dec.dropout,
        activation=dec.activation,
        num_denoising=dec.num_denoising,
        label_noise_ratio=dec.label_noise_ratio,
        box_noise_scale=dec.box_noise_scale,
        learnt_init_query=dec.learnt_init_query,
        eval_spatial_size=cfg.eval_spatial_size,
        eval_idx=dec.eval_idx,
        eps=dec.eps,
        aux_loss=dec.aux_loss,
        cross_attn_method=dec.cross_attn_method,
        query_select_method=dec.query_select_method,
        checkpoint_layout=cfg.checkpoint_layout,
    )
    model = RTDETR(backbone, encoder, decoder)
    model.config = cfg
    if ckpt is not None:
        from .weights import load_weights

        load_weights(model, ckpt)
    return model


def build_postprocessor(
    model_or_config: RTDETR | RTDETRConfig,
    *,
    score_threshold: float | None = None,
    category_ids: list[int] | None = None,
) -> PostProcessor:
    """The postprocessor matching a model (class count and top-K from its config)."""
    cfg = model_or_config.config if isinstance(model_or_config, nn.Module) else model_or_config
    return PostProcessor(
        cfg.num_classes,
        num_top_queries=cfg.num_top_queries,
        score_threshold=score_threshold,
        category_ids=category_ids,
    )
