"""Assemble a detector from a config: the one place where presets become modules."""

from __future__ import annotations

from torch import nn

from .config import BackboneConfig, CSPDarknetConfig, HGNetv2Config, PResNetConfig, RTDETRConfig
from .nn.cspdarknet import CSPDarknet
from .nn.decoder import RTDETRDecoder
from .nn.detector import RTDETR
from .nn.encoder import HybridEncoder
from .nn.hgnetv2 import HGNetv2
from .nn.postprocess import PostProcessor
from .nn.presnet import PResNet

__all__ = ["build_detector", "build_backbone", "build_postprocessor"]


def build_backbone(cfg: BackboneConfig) -> nn.Module:
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
    if isinstance(cfg, CSPDarknetConfig):
        return CSPDarknet(widths=cfg.widths, depths=cfg.depths, return_idx=cfg.return_idx, act=cfg.act)
    raise TypeError(f"unsupported backbone config {type(cfg).__name__}")


def build_detector(cfg: RTDETRConfig) -> RTDETR:
    """Modules for a resolved config, freshly initialized, in training mode (``model.config = cfg``).

    The pure construction step: presets, overrides and weights are :func:`rtdetr.build_model`'s.
    """
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
        num_o2m_queries=dec.num_o2m_queries,
        box_refine=dec.box_refine,
        reg_max=dec.reg_max,
        reg_up=dec.reg_up,
        reg_scale=dec.reg_scale,
        dense_enc_outputs=dec.dense_enc_outputs,
    )
    model = RTDETR(backbone, encoder, decoder)
    model.config = cfg
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
