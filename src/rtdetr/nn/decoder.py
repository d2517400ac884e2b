"""RT-DETR transformer decoder: query selection, deformable decoder layers, per-layer heads.

Data contract (eval, batch B, Q queries, C classes):
    encoder maps [B, C_i, h_i, w_i] -> pred_logits [B, Q, C], pred_boxes [B, Q, 4]
    (cxcywh normalized to [0, 1]).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from .attention import multihead_attention
from .checkpoint_layout import CheckpointLayout, child_names, install_layout_hook, named_pair
from .deformable_attention import CrossAttnMethod, MSDeformableAttention
from .denoising import DenoisingGroup, build_denoising_group
from .fdr import BOX_REFINE_METHODS, FDRRefiner
from .hybrid_queries import hybrid_attn_mask, split_o2m
from .inverse_sigmoid import inverse_sigmoid
from .layers import MLP, get_activation
from .memory_format import dense_grad, flatten_hw
from .query_selection import QUERY_SELECT_METHODS, QuerySelectMethod, generate_anchors, select_topk

__all__ = ["RTDETRDecoder", "TransformerDecoderLayer", "generate_anchors"]


class TransformerDecoderLayer(nn.Module):
    """Post-norm: self-attention -> deformable cross-attention -> FFN, each with add & LayerNorm."""

    def __init__(
        self,
        d_model: int = 256,
        n_head: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        activation: str = "relu",
        n_levels: int = 3,
        n_points: int | list[int] = 4,
        cross_attn_method: CrossAttnMethod = "default",
        persistent_scale: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformableAttention(
            d_model, n_head, n_levels, n_points, method=cross_attn_method, persistent_scale=persistent_scale
        )
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = get_activation(activation)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: list[tuple[int, int]],
        attn_mask: Tensor | None,
        query_pos: Tensor,
    ) -> Tensor:
        """tgt [B, Lq, C], reference_boxes [B, Lq, 1, 4], memory [B, S, C], query_pos [B, Lq, C] -> [B, Lq, C]."""
        q = k = tgt + query_pos
        attn = multihead_attention(self.self_attn, q, k, tgt, attn_mask)
        tgt = self.norm1(tgt + self.dropout1(attn))
        cross = self.cross_attn(tgt + query_pos, reference_boxes, memory, spatial_shapes)
        tgt = self.norm2(tgt + self.dropout2(cross))
        ffn = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))


class TransformerDecoder(nn.Module):
    """The stack of decoder layers (holds no heads; see :class:`RTDETRDecoder`)."""

    def __init__(self, layers: list[TransformerDecoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


def _bias_init_with_prob(prob: float) -> float:
    return -math.log((1 - prob) / prob)


class RTDETRDecoder(nn.Module):
    """Decoder with uncertainty-minimal query selection and iterative box refinement.

    Args:
        num_classes: classes predicted (sigmoid per class; no background logit).
        hidden_dim: decoder width (256).
        num_queries: queries selected from the encoder tokens (300).
        feat_channels: channels of the encoder maps (256; 384 for R101).
        feat_strides: their strides.
        num_levels: memory levels (extra levels are made by strided convs).
        num_points: deformable sampling points per level (int or per-level list).
        num_layers: decoder layers.
        eval_idx: layer whose heads give the inference output; later layers are
            skipped (negative counts from the end).
        num_denoising: denoising queries in training (0 disables).
        eval_spatial_size: (h, w) whose anchors are precomputed, as the buffers
            ``anchors`` / ``valid_mask`` that eval-mode forwards at that size use;
            other sizes (and training) compute them on first use and cache them.
        cross_attn_method: "default" (bilinear sampling) or "discrete" (one-pixel
            gather, no GridSample; RT-DETRv2).
        query_select_method: "default" (top-K tokens by max class logit),
            "one2many" (top-K over token x class pairs) or "agnostic" (one
            class-agnostic objectness logit, so ``enc_score_head`` has one output),
            the RT-DETRv2 options; see :func:`select_topk`.
        checkpoint_layout: "v1" or "v2" key names and persistent buffers (see
            :mod:`rtdetr.nn.checkpoint_layout`); both load into either.
        num_o2m_queries: K2 training-only queries matched one-to-many (hybrid
            matching, see :mod:`rtdetr.nn.hybrid_queries`); 0 (default) disables.
            No parameters of their own: eval outputs and weights are unchanged.
        box_refine: "default" (each layer refines the box logits) or "fdr" (D-FINE's
            fine-grained distribution refinement of the four edges, with ``reg_max``,
            ``reg_up``, ``reg_scale``; see :mod:`rtdetr.nn.fdr`).
        dense_enc_outputs: in training, also return the score and box of every encoder
            token (``enc_dense_outputs``) for dense one-to-many supervision
            (:mod:`rtdetr.train.dense_loss`). No parameters of its own: eval outputs and
            weights are unchanged.
    """

    def __init__(
        self,
        *,
        num_classes: int = 80,
        hidden_dim: int = 256,
        num_queries: int = 300,
        feat_channels: list[int] = (256, 256, 256),
        feat_strides: list[int] = (8, 16, 32),
        num_levels: int = 3,
        num_points: int | list[int] = 4,
        nhead: int = 8,
        num_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        activation: str = "relu",
        num_denoising: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        learnt_init_query: bool = False,
        eval_spatial_size: tuple[int, int] | None = (640, 640),
        eval_idx: int = -1,
        eps: float = 1e-2,
        aux_loss: bool = True,
        cross_attn_method: CrossAttnMethod = "default",
        query_select_method: QuerySelectMethod = "default",
        checkpoint_layout: CheckpointLayout = "v1",
        num_o2m_queries: int = 0,
        box_refine: str = "default",
        reg_max: int = 32,
        reg_up: float = 0.5,
        reg_scale: float = 4.0,
        dense_enc_outputs: bool = False,
    ) -> None:
        super().__init__()
        if num_o2m_queries < 0 or (learnt_init_query and num_o2m_queries > num_queries):
            limit = f"in [0, num_queries={num_queries}] with learnt_init_query" if learnt_init_query else ">= 0"
            raise ValueError(f"num_o2m_queries must be {limit}, got {num_o2m_queries}")
        if len(feat_channels) > num_levels:
            raise ValueError(f"{len(feat_channels)} feature maps for only {num_levels} levels")
        if not -num_layers <= eval_idx < num_layers:
            raise ValueError(f"eval_idx {eval_idx} out of range for {num_layers} decoder layers")
        if query_select_method not in QUERY_SELECT_METHODS:
            raise ValueError(f"query_select_method must be one of {QUERY_SELECT_METHODS}, got {query_select_method!r}")
        if box_refine not in BOX_REFINE_METHODS:
            raise ValueError(f"box_refine must be one of {BOX_REFINE_METHODS}, got {box_refine!r}")
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.feat_strides = list(feat_strides)
        self.num_levels = num_levels
        self.num_layers = num_layers
        self.eval_idx = eval_idx % num_layers
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.learnt_init_query = learnt_init_query
        self.eps = eps
        self.aux_loss = aux_loss
        self.query_select_method = query_select_method
        self.num_o2m_queries = num_o2m_queries
        self.dense_enc_outputs = dense_enc_outputs
        # Missing strides for extra levels continue the doubling.
        while len(self.feat_strides) < num_levels:
            self.feat_strides.append(self.feat_strides[-1] * 2)

        self.input_proj = nn.ModuleList()
        for c in feat_channels:
            self.input_proj.append(
                nn.Sequential(
                    OrderedDict(conv=nn.Conv2d(c, hidden_dim, 1, bias=False), norm=nn.BatchNorm2d(hidden_dim))
                )
            )
        c = feat_channels[-1]
        for _ in range(num_levels - len(feat_channels)):
            self.input_proj.append(
                nn.Sequential(
                    OrderedDict(
                        conv=nn.Conv2d(c, hidden_dim, 3, 2, padding=1, bias=False), norm=nn.BatchNorm2d(hidden_dim)
                    )
                )
            )
            c = hidden_dim

        self.decoder = TransformerDecoder(
            [
                TransformerDecoderLayer(
                    hidden_dim,
                    nhead,
                    dim_feedforward,
                    dropout,
                    activation,
                    num_levels,
                    num_points,
                    cross_attn_method,
                    persistent_scale=checkpoint_layout == "v2",
                )
                for _ in range(num_layers)
            ]
        )
        if num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)
        if learnt_init_query:
            self.tgt_embed = nn.Embedding(num_queries, hidden_dim)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, num_layers=2)
        self.enc_output = named_pair(
            child_names("enc_output", checkpoint_layout), nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim)
        )
        # "agnostic" selection scores objectness, not classes
        self.enc_score_head = nn.Linear(hidden_dim, 1 if query_select_method == "agnostic" else num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, num_layers=3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_layers))
        # FDR: the per-layer heads give 4 x (reg_max + 1) edge-bin logits instead of a box delta.
        self.fdr = (
            FDRRefiner(hidden_dim, reg_max=reg_max, up=reg_up, reg_scale=reg_scale) if box_refine == "fdr" else None
        )
        box_out = 4 if self.fdr is None else self.fdr.head_dim
        self.dec_bbox_head = nn.ModuleList(
            MLP(hidden_dim, hidden_dim, box_out, num_layers=3) for _ in range(num_layers)
        )
        self.reset_parameters()

        self._anchor_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._eval_shapes: list[tuple[int, int]] | None = None
        if eval_spatial_size is not None:
            h, w = eval_spatial_size
            self._eval_shapes = [(math.ceil(h / s), math.ceil(w / s)) for s in self.feat_strides]
            anchors, valid = generate_anchors(self._eval_shapes, eps=eps)
            # v2 checkpoints store these (the reference then uses the stored values in eval);
            # v1 ones do not. Buffers either way, so they follow .to(device) / .double().
            persistent = checkpoint_layout == "v2"
            self.register_buffer("anchors", anchors, persistent=persistent)
            self.register_buffer("valid_mask", valid, persistent=persistent)
        install_layout_hook(self, kind="enc_output", container="enc_output", derived_buffers=("anchors", "valid_mask"))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # Class priors start at 1% so the sigmoid focal/VFL losses begin small.
        bias = _bias_init_with_prob(0.01)
        nn.init.constant_(self.enc_score_head.bias, bias)
        nn.init.zeros_(self.enc_bbox_head.layers[-1].weight)
        nn.init.zeros_(self.enc_bbox_head.layers[-1].bias)
        for cls_head, box_head in zip(self.dec_score_head, self.dec_bbox_head):
            nn.init.constant_(cls_head.bias, bias)
            nn.init.zeros_(box_head.layers[-1].weight)
            nn.init.zeros_(box_head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        if self.learnt_init_query:
            nn.init.xavier_uniform_(self.tgt_embed.weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[0].weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[1].weight)

    def _anchors(self, spatial_shapes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
        """anchors [1, S, 4] (logits) and valid_mask [1, S, 1] bool for these level shapes.

        Eval at the eval size uses the buffers, as the reference does: after loading
        a v2 checkpoint those hold its stored anchors (which the reference computed
        the same way before saving). Training, like the reference, always computes them.
        """
        if not self.training and spatial_shapes == self._eval_shapes:
            return self.anchors, self.valid_mask
        key = (tuple(spatial_shapes), str(device))
        if key not in self._anchor_cache:
            if len(self._anchor_cache) >= 32:  # bounded: multi-scale training visits ~13 sizes
                self._anchor_cache.clear()
            anchors, valid = generate_anchors(spatial_shapes, eps=self.eps)
            self._anchor_cache[key] = (anchors.to(device), valid.to(device))
        return self._anchor_cache[key]

    def _flatten_memory(self, feats: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        for i in range(len(feats), self.num_levels):
            proj.append(self.input_proj[i](feats[-1] if i == len(feats) else proj[-1]))
        shapes = [(p.shape[2], p.shape[3]) for p in proj]
        # [B, C, h, w] -> [B, h*w, C], levels concatenated: [B, S, C]
        memory = torch.cat([flatten_hw(dense_grad(p)) for p in proj], dim=1)
        return memory, shapes

    def _select_queries(
        self, memory: Tensor, shapes: list[tuple[int, int]], k: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor] | None]:
        """Top-K encoder tokens -> (content queries, reference boxes (logits), their enc logits and
        boxes, and the dense outputs of every token or None).

        Invalid (border) tokens are zeroed for selection only; like the reference,
        the decoder's cross-attention still reads the unmasked memory. The box head
        runs on the K selected tokens only: the same numbers as running it on all S
        and gathering (the reference's order), at K/S of its cost (2.2 GFLOPs saved
        at 640 px and width 256). ``k`` tokens are selected (default ``num_queries``).
        With ``dense_enc_outputs`` in training the box head runs on all S tokens, whose
        scores and boxes are returned for the dense loss (``pred_logits`` [B, S, C],
        ``pred_boxes`` [B, S, 4] cxcywh, ``anchor_centers`` [S, 2], ``valid`` [S] bool).
        """
        anchors, valid = self._anchors(shapes, memory.device)
        memory = valid.to(memory.dtype) * memory
        output_memory = self.enc_output(memory)  # [B, S, C]
        enc_logits = self.enc_score_head(output_memory)  # [B, S, classes]
        topk = select_topk(enc_logits, k or self.num_queries, self.query_select_method)  # [B, K]

        def take(x: Tensor) -> Tensor:
            return x.gather(1, topk.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

        topk_memory = take(output_memory)  # [B, K, C]
        anchors = anchors.to(output_memory.dtype).expand(memory.shape[0], -1, -1)
        dense = None
        if self.training and self.dense_enc_outputs:
            all_unact = self.enc_bbox_head(output_memory) + anchors  # [B, S, 4]
            ref_unact = take(all_unact)
            dense = {
                "pred_logits": enc_logits,
                "pred_boxes": all_unact.sigmoid(),
                "anchor_centers": anchors[0, :, :2].float().sigmoid(),  # [S, 2]; invalid ones at 1
                "valid": valid[0, :, 0],
            }
        else:
            ref_unact = self.enc_bbox_head(topk_memory) + take(anchors)  # [B, K, 4]
        topk_logits = take(enc_logits)
        if self.learnt_init_query:
            target = self.tgt_embed.weight.unsqueeze(0).expand(memory.shape[0], -1, -1)
        else:
            target = topk_memory.detach()
        return target, ref_unact, topk_logits, ref_unact.sigmoid(), dense

    def forward(self, feats: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> dict:
        """Encoder maps -> dict with ``pred_logits`` [B, Q, C] and ``pred_boxes`` [B, Q, 4] (cxcywh).

        In training (with targets) the dict also holds ``aux_outputs`` (decoder
        layers 0..L-2, then the encoder top-K head), and, when denoising queries
        were made, ``dn_aux_outputs`` (one per layer) and ``dn_meta``; with
        ``dense_enc_outputs``, ``enc_dense_outputs`` (every encoder token's head outputs).
        """
        memory, shapes = self._flatten_memory(feats)
        dn: DenoisingGroup | None = None
        if self.training and self.num_denoising > 0:
            if targets is None:
                raise ValueError("training-mode forward needs targets (list of dicts with 'labels' and 'boxes')")
            dn = build_denoising_group(
                targets,
                num_classes=self.num_classes,
                num_queries=self.num_queries,
                class_embed=self.denoising_class_embed,
                num_denoising=self.num_denoising,
                label_noise_ratio=self.label_noise_ratio,
                box_noise_scale=self.box_noise_scale,
            )
        # One-to-many group (training only): the top num_o2m tokens of a selection whose first
        # num_queries are the main queries (topk is sorted); at most one per token.
        num_o2m = min(self.num_o2m_queries, memory.shape[1]) if self.training else 0
        k = max(self.num_queries, num_o2m)
        target, ref_unact, enc_logits, enc_boxes, dense = self._select_queries(memory, shapes, k)
        if num_o2m:
            o2m_target, o2m_ref = target[:, :num_o2m], ref_unact[:, :num_o2m]
            target, ref_unact, enc_logits, enc_boxes = (
                x[:, : self.num_queries] for x in (target, ref_unact, enc_logits, enc_boxes)
            )
        attn_mask = None
        if dn is not None:
            target = torch.cat([dn.class_embed.to(target.dtype), target], 1)
            ref_unact = torch.cat([dn.boxes_unact.to(ref_unact.dtype), ref_unact], 1)
            attn_mask = dn.attn_mask
        if num_o2m:
            attn_mask = hybrid_attn_mask(attn_mask, target.shape[1], num_o2m, memory.device)
            target, ref_unact = torch.cat([target, o2m_target], 1), torch.cat([ref_unact, o2m_ref], 1)
        fdr_extras = None
        if self.fdr is not None:
            boxes, logits, fdr_extras = self.fdr.decode(self, target, ref_unact.detach(), memory, shapes, attn_mask)
        else:
            boxes, logits = self._decode(target, ref_unact.detach(), memory, shapes, attn_mask)

        if not self.training:
            return {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        o2m_outputs = None
        if num_o2m:
            boxes, logits, o2m_outputs = split_o2m(boxes, logits, num_o2m)
        if fdr_extras is not None:  # split like the boxes below: [denoising | matching] queries
            fdr_extras = FDRRefiner.training_outputs(fdr_extras, logits, dn.meta["dn_num_split"][0] if dn else 0)
        if dn is not None:
            num_dn = dn.meta["dn_num_split"][0]
            dn_boxes, boxes = boxes[:, :, :num_dn], boxes[:, :, num_dn:]
            dn_logits, logits = logits[:, :, :num_dn], logits[:, :, num_dn:]
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if fdr_extras is not None:  # edge distributions for the FDR losses (rtdetr.train.fdr_loss)
            out.update(fdr_extras)
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:-1], boxes[:-1])] + [
                {"pred_logits": enc_logits, "pred_boxes": enc_boxes}
            ]
            if self.query_select_method == "agnostic":
                # the encoder entry (last of aux_outputs) has one objectness logit, not classes
                out["enc_meta"] = {"class_agnostic": True}
            if dn is not None:
                out["dn_aux_outputs"] = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(dn_logits, dn_boxes)]
                out["dn_meta"] = dn.meta
        if o2m_outputs is not None:
            out["o2m_outputs"] = o2m_outputs
        if dense is not None:
            out["enc_dense_outputs"] = dense
        return out

    def _decode(
        self,
        target: Tensor,
        ref_unact: Tensor,
        memory: Tensor,
        shapes: list[tuple[int, int]],
        attn_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Run the layers with iterative refinement -> boxes [L', B, Lq, 4], logits [L', B, Lq, C].

        Training returns every layer; eval returns only layer ``eval_idx`` and stops there.
        """
        output = target
        ref_detached = ref_unact.sigmoid()
        ref = ref_detached
        out_boxes, out_logits = [], []
        for i, layer in enumerate(self.decoder.layers):
            query_pos = self.query_pos_head(ref_detached)
            output = layer(output, ref_detached.unsqueeze(2), memory, shapes, attn_mask, query_pos)
            box_delta = self.dec_bbox_head[i](output)
            new_ref = torch.sigmoid(box_delta + inverse_sigmoid(ref_detached))
            if self.training:
                out_logits.append(self.dec_score_head[i](output))
                # "Look forward twice": the reported box refines the previous layer's box
                # before detaching, so this layer's loss also trains the previous layer.
                out_boxes.append(new_ref if i == 0 else torch.sigmoid(box_delta + inverse_sigmoid(ref)))
            elif i == self.eval_idx:
                out_logits.append(self.dec_score_head[i](output))
                out_boxes.append(new_ref)
                break
            ref = new_ref
            ref_detached = new_ref.detach() if self.training else new_ref
        return torch.stack(out_boxes), torch.stack(out_logits)
