"""Efficient hybrid encoder: AIFI (intra-scale attention on S5) + CCFF (cross-scale CNN fusion).

Input: backbone maps S3, S4, S5 ([B, C_i, H/8, W/8], [B, C_i, H/16, W/16], [B, C_i, H/32, W/32]).
Output: F3, F4, F5 with ``hidden_dim`` channels at the same resolutions.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import multihead_attention
from .checkpoint_layout import CheckpointLayout, child_names, install_layout_hook, named_pair
from .layers import ConvNormLayer, CSPRepLayer, get_activation
from .memory_format import dense_grad, flatten_hw, is_channels_last, unflatten_hw

__all__ = ["HybridEncoder", "TransformerEncoderLayer", "sincos_position_embedding_2d"]

PosEmbedLayout = Literal["rowcol", "reference"]


def sincos_position_embedding_2d(
    h: int, w: int, dim: int = 256, temperature: float = 10000.0, layout: PosEmbedLayout = "rowcol"
) -> Tensor:
    """Fixed 2D sin-cos embedding for an h x w token grid, tokens in row-major order.

    Returns [1, h * w, dim] in float32: four blocks of dim/4 channels,
    ``sin(a*om), cos(a*om), sin(b*om), cos(b*om)`` with ``om_k = temperature**(-k / (dim/4))``.

    ``layout="rowcol"``: a = row (y), b = column (x) of each token.
    ``layout="reference"``: the reference's exact construction, which builds the
    grid with ``meshgrid(arange(w), arange(h))`` and flattens it against row-major
    tokens, so a = token // h and b = token % h. For square grids (every size the
    released models were trained and evaluated at) both layouts are identical; for
    non-square grids the reference assigns positions inconsistently and "rowcol" is
    the consistent extension. Float32 on purpose: the reference computes it in
    float32 even in a float64 model, and parity to 1e-8 depends on that.
    """
    if dim % 4 != 0:
        raise ValueError(f"embedding dim must be divisible by 4 for 2D sin-cos embedding, got {dim}")
    token = torch.arange(h * w, dtype=torch.int64)
    period = w if layout == "rowcol" else h
    a = (token // period).to(torch.float32)
    b = (token % period).to(torch.float32)
    pos_dim = dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim)
    out_a = a[:, None] @ omega[None]  # [h*w, dim/4]
    out_b = b[:, None] @ omega[None]
    return torch.cat([out_a.sin(), out_a.cos(), out_b.sin(), out_b.cos()], dim=1)[None]


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer; the position embedding goes into query and key only."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0, activation: str = "gelu"
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = get_activation(activation)

    def forward(self, src: Tensor, pos_embed: Tensor | None = None) -> Tensor:
        """src [B, N, C], pos_embed [1, N, C] -> [B, N, C]."""
        q = k = src if pos_embed is None else src + pos_embed
        attn = multihead_attention(self.self_attn, q, k, src)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, make_layer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(make_layer() for _ in range(num_layers))

    def forward(self, src: Tensor, pos_embed: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos_embed=pos_embed)
        return src


class HybridEncoder(nn.Module):
    """AIFI on the levels in ``use_encoder_idx`` (S5 only in RT-DETR), then top-down + bottom-up CCFF.

    Args:
        in_channels: channels of the backbone maps, e.g. [128, 256, 512] for R18.
        feat_strides: their strides, e.g. [8, 16, 32].
        hidden_dim: width of every encoder map (256; 384 for R101).
        expansion: CSPRepLayer hidden width factor (0.5 for R18/R34/R50-m).
        depth_mult: scales the 3 RepVGG blocks of each CSPRepLayer.
        eval_spatial_size: (h, w) whose position embedding is precomputed.
        pos_embed_layout: see :func:`sincos_position_embedding_2d`.
        checkpoint_layout: child names of ``input_proj[i]`` in ``state_dict()``
            ("v1": ``0``/``1``, "v2": ``conv``/``norm``); both load.
    """

    def __init__(
        self,
        *,
        in_channels: list[int],
        feat_strides: list[int],
        hidden_dim: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        enc_act: str = "gelu",
        use_encoder_idx: tuple[int, ...] = (2,),
        num_encoder_layers: int = 1,
        pe_temperature: float = 10000.0,
        expansion: float = 1.0,
        depth_mult: float = 1.0,
        act: str = "silu",
        eval_spatial_size: tuple[int, int] | None = (640, 640),
        pos_embed_layout: PosEmbedLayout = "rowcol",
        checkpoint_layout: CheckpointLayout = "v1",
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.feat_strides = list(feat_strides)
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = tuple(use_encoder_idx)
        self.pe_temperature = pe_temperature
        self.pos_embed_layout = pos_embed_layout
        self.out_channels = [hidden_dim] * len(in_channels)
        self.out_strides = list(feat_strides)

        names = child_names("encoder_input_proj", checkpoint_layout)
        self.input_proj = nn.ModuleList(
            named_pair(names, nn.Conv2d(c, hidden_dim, 1, bias=False), nn.BatchNorm2d(hidden_dim)) for c in in_channels
        )
        self.encoder = nn.ModuleList(
            TransformerEncoder(
                lambda: TransformerEncoderLayer(hidden_dim, nhead, dim_feedforward, dropout, enc_act),
                num_encoder_layers,
            )
            for _ in self.use_encoder_idx
        )
        num_blocks = round(3 * depth_mult)
        n = len(in_channels) - 1
        self.lateral_convs = nn.ModuleList(ConvNormLayer(hidden_dim, hidden_dim, 1, 1, act=act) for _ in range(n))
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(hidden_dim * 2, hidden_dim, num_blocks, expansion=expansion, act=act) for _ in range(n)
        )
        self.downsample_convs = nn.ModuleList(ConvNormLayer(hidden_dim, hidden_dim, 3, 2, act=act) for _ in range(n))
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(hidden_dim * 2, hidden_dim, num_blocks, expansion=expansion, act=act) for _ in range(n)
        )

        install_layout_hook(self, kind="encoder_input_proj", container="input_proj")

        # Position embeddings by (h, w, device); the eval size is filled now, others on first use.
        # Filled on the device new tensors go to (a `with torch.device("meta")` block
        # builds the model without memory, as `rtdetr info` does).
        self._pos_cache: dict[tuple[int, int, str], Tensor] = {}
        if eval_spatial_size is not None:
            device = torch.get_default_device()
            for idx in self.use_encoder_idx:
                s = self.feat_strides[idx]
                self._pos_embed(eval_spatial_size[0] // s, eval_spatial_size[1] // s, device)

    def _pos_embed(self, h: int, w: int, device: torch.device) -> Tensor:
        key = (h, w, str(device))
        if key not in self._pos_cache:
            if len(self._pos_cache) >= 32:  # bounded: multi-scale training visits ~13 sizes
                self._pos_cache.clear()
            self._pos_cache[key] = sincos_position_embedding_2d(
                h, w, self.hidden_dim, self.pe_temperature, self.pos_embed_layout
            ).to(device)
        return self._pos_cache[key]

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"HybridEncoder expects {len(self.in_channels)} feature maps, got {len(feats)}")
        proj = [proj_i(f) for proj_i, f in zip(self.input_proj, feats)]

        # AIFI: attention within the coarsest level only (cheap: 400 tokens at 640 px).
        for enc, idx in zip(self.encoder, self.use_encoder_idx):
            b, c, h, w = proj[idx].shape
            src = flatten_hw(proj[idx])  # [B, C, h, w] -> [B, h*w, C]
            pos = self._pos_embed(h, w, src.device).to(src.dtype)
            memory = enc(src, pos_embed=pos)
            proj[idx] = unflatten_hw(memory, h, w, channels_last=is_channels_last(proj[idx]))

        # CCFF top-down: the lateral conv output also replaces the higher level.
        n = len(self.in_channels) - 1
        inner = [proj[-1]]
        for i in range(n):
            high = self.lateral_convs[i](inner[0])
            inner[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            low = dense_grad(proj[n - 1 - i])  # its gradient is a channel slice of the cat's
            if up.shape[-2:] != low.shape[-2:]:
                # Odd map sizes: stride-2 levels have ceil(h/2) rows, so 2x upsampling can
                # overshoot by one; crop, which keeps the exact 2x nearest alignment.
                up = up[..., : low.shape[-2], : low.shape[-1]]
            inner.insert(0, self.fpn_blocks[i](torch.cat([up, low], dim=1)))

        # CCFF bottom-up.
        outs = [inner[0]]
        for i in range(n):
            down = self.downsample_convs[i](outs[-1])
            outs.append(self.pan_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        return outs
