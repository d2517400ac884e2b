"""RT-DETR training loss: IoU-aware classification (VFL or MAL) plus L1 and GIoU box losses.

The same three losses supervise the final decoder layer, every intermediate
decoder layer and the encoder's top-K query selection head (each with its own
Hungarian matching), and the denoising queries (whose matching is known by
construction). Box losses are normalized by the number of ground-truth boxes in
the batch, averaged over processes; the denoising losses by that number times
the number of denoising groups.

Three training options (all off by default, so the reference numerics are unchanged):
DEIM's matchability-aware loss (``loss_mal``) in place of VFL, the losses of the
decoder's one-to-many query group (``o2m_outputs``, H-DETR hybrid matching: every
ground truth repeated ``o2m_repeat`` times, Hungarian-matched, suffix ``_o2m``), and the
dense task-aligned supervision of every encoder token (``enc_dense_outputs``,
``loss_dense_*``, :mod:`rtdetr.train.dense_loss`).

Formats: ``pred_logits`` [B, Q, C] raw logits, ``pred_boxes`` [B, Q, 4] cxcywh
normalized; targets are one dict per image with ``labels`` int64 [N] and
``boxes`` [N, 4] cxcywh normalized (see :mod:`rtdetr.train.matcher`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rtdetr.ops.boxes import box_cxcywh_to_xyxy, paired_box_iou, paired_generalized_box_iou
from rtdetr.train.dense_loss import dense_losses
from rtdetr.train.fdr_loss import DEFAULT_FDR_WEIGHTS, FDR_LOSS_NAMES, fdr_losses
from rtdetr.train.matcher import HungarianMatcher, Indices, Targets, validate_targets

if TYPE_CHECKING:
    from rtdetr.train.train_config import TrainConfig

__all__ = ["RTDETRCriterion", "build_criterion", "total_loss", "repeat_targets"]

logger = logging.getLogger(__name__)

LOSS_NAMES = ("loss_vfl", "loss_mal", "loss_bbox", "loss_giou")

# One head's predictions: ``pred_logits`` [B, Q, C] and ``pred_boxes`` [B, Q, 4].
Outputs = Mapping[str, Tensor]


def total_loss(losses: Mapping[str, Tensor]) -> Tensor:
    """Sum of the (already weighted) named losses returned by the criterion: a scalar."""
    if not losses:
        raise ValueError("no losses to sum")
    return torch.stack(list(losses.values())).sum()


def build_criterion(config: TrainConfig, num_classes: int) -> RTDETRCriterion:
    """The criterion a run's settings ask for: the reference VFL + L1 + GIoU (weights 1, 5, 2),
    with MAL in place of VFL when ``config.loss_cls == "mal"``, and the one-to-many settings."""
    cls_loss = "loss_mal" if config.loss_cls == "mal" else "loss_vfl"
    return RTDETRCriterion(
        matcher=HungarianMatcher(),
        num_classes=num_classes,
        weight_dict={cls_loss: 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        mal_alpha=config.mal_alpha,
        mal_gamma=config.mal_gamma,
        o2m_repeat=config.o2m_repeat,
        o2m_weight=config.o2m_loss_weight,
        dense_weight=config.dense_loss_weight,
        dense_topk=config.dense_topk,
        dense_cls_loss=config.dense_cls_loss,
    )


def repeat_targets(targets: Targets, k: int) -> list[dict[str, Tensor]]:
    """Every image's ``labels`` [N] and ``boxes`` [N, 4] tiled k times ([k*N], [k*N, 4]); other keys kept."""
    return [{**t, "labels": t["labels"].repeat(k), "boxes": t["boxes"].repeat(k, 1)} for t in targets]


def _compute_dtype(t: Tensor) -> torch.dtype:
    # fp16/bf16 lose too much in log-sigmoid and in sums over B*Q*C terms.
    return torch.promote_types(t.dtype, torch.float32)


class RTDETRCriterion(nn.Module):
    """Weighted sum of VFL, L1 and GIoU over all heads of RT-DETR.

    Args:
        matcher: a built :class:`~rtdetr.train.matcher.HungarianMatcher` (or any
            callable with the same signature).
        num_classes: C, the number of foreground classes (no background logit).
        weight_dict: weight per base loss name; only the losses named here are
            computed. Keys among ``loss_vfl``, ``loss_mal``, ``loss_bbox``, ``loss_giou``, and
            ``loss_fgl``, ``loss_ddf`` (used only with a ``box_refine="fdr"`` model's
            outputs, see :mod:`rtdetr.train.fdr_loss`; the default has D-FINE's 0.15, 1.5).
        alpha, gamma: VFL focusing parameters for the negatives.
        mal_alpha, mal_gamma: MAL's negative weight and its exponent (of the IoU
            target and of the negatives' focal term); DEIM uses 1 and 1.5.
        o2m_repeat: k, the copies of each ground truth the one-to-many group
            (``outputs["o2m_outputs"]``) is matched against.
        o2m_weight: factor on every ``*_o2m`` loss (0 skips them).
        dense_weight: factor on the dense encoder losses (``outputs["enc_dense_outputs"]``;
            0 skips them); their base weights are the class loss's, ``loss_bbox``'s and
            ``loss_giou``'s.
        dense_topk: positives per ground truth in the dense assignment.
    """

    def __init__(
        self,
        *,
        matcher: nn.Module,
        num_classes: int = 80,
        weight_dict: Mapping[str, float] | None = None,
        alpha: float = 0.75,
        gamma: float = 2.0,
        mal_alpha: float = 1.0,
        mal_gamma: float = 1.5,
        o2m_repeat: int = 6,
        o2m_weight: float = 1.0,
        dense_weight: float = 1.0,
        dense_topk: int = 10,
        dense_cls_loss: str = "bce",
    ) -> None:
        super().__init__()
        if weight_dict is None:
            weight_dict = {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, **DEFAULT_FDR_WEIGHTS}
        unknown = set(weight_dict) - set(LOSS_NAMES) - set(FDR_LOSS_NAMES)
        if unknown:
            raise ValueError(f"unknown losses in weight_dict: {sorted(unknown)}; known: {LOSS_NAMES + FDR_LOSS_NAMES}")
        self.matcher = matcher
        self.num_classes = num_classes
        self.weight_dict = dict(weight_dict)
        self.alpha = alpha
        self.gamma = gamma
        if o2m_repeat < 1:
            raise ValueError(f"o2m_repeat must be >= 1, got {o2m_repeat}")
        self.mal_alpha = mal_alpha
        self.mal_gamma = mal_gamma
        self.o2m_repeat = o2m_repeat
        self.o2m_weight = o2m_weight
        if dense_topk < 1:
            raise ValueError(f"dense_topk must be >= 1, got {dense_topk}")
        self.dense_weight = dense_weight
        self.dense_topk = dense_topk
        self.dense_cls_loss = dense_cls_loss

    def extra_repr(self) -> str:
        text = f"num_classes={self.num_classes}, weight_dict={self.weight_dict}, alpha={self.alpha}, gamma={self.gamma}"
        if "loss_mal" in self.weight_dict:
            text += f", mal_alpha={self.mal_alpha}, mal_gamma={self.mal_gamma}"
        text += f", o2m_repeat={self.o2m_repeat}, o2m_weight={self.o2m_weight}"
        return text + (
            f", dense_weight={self.dense_weight}, dense_topk={self.dense_topk}, dense_cls_loss={self.dense_cls_loss!r}"
        )

    # ------------------------------------------------------------------ losses

    def loss_vfl(self, outputs: Outputs, targets: Targets, indices: Indices, num_boxes: float) -> Tensor:
        """Varifocal loss (unweighted): BCE towards target score = IoU at the matched class.

        Matched queries are pulled towards the IoU of their box with their target
        (so the class score also ranks localization quality); every other
        (query, class) pair is pushed to 0 with the focal weight alpha * p^gamma.
        Returns a scalar; sum over all B*Q*C terms divided by num_boxes.
        """
        logits, one_hot, iou = self._iou_targets(outputs, targets, indices)
        target_score = iou  # zero off the matched pairs
        pred_score = logits.detach().sigmoid()
        weight = self.alpha * pred_score.pow(self.gamma) * (1 - one_hot) + target_score
        loss = F.binary_cross_entropy_with_logits(logits, target_score, weight=weight, reduction="none")
        # Equal to the reference's loss.mean(1).sum() * Q / num_boxes.
        return loss.sum() / num_boxes

    def loss_mal(self, outputs: Outputs, targets: Targets, indices: Indices, num_boxes: float) -> Tensor:
        """DEIM's matchability-aware loss (unweighted): VFL with target IoU^gamma and unweighted positives.

        For the matched (query, class) pairs, with q = IoU(box, target) and p = sigmoid(logit):
        ``-(q^g log p + (1 - q^g) log(1 - p))``, weight 1 whatever q is (VFL weights it by q,
        so a low-IoU match barely trains); every other pair: ``-a p^g log(1 - p)``
        (a = ``mal_alpha``, g = ``mal_gamma``). Sum over all B*Q*C terms / num_boxes.
        """
        logits, one_hot, iou = self._iou_targets(outputs, targets, indices)
        target_score = iou.pow(self.mal_gamma)  # 0^g = 0 off the matched pairs
        pred_score = logits.detach().sigmoid()
        weight = self.mal_alpha * pred_score.pow(self.mal_gamma) * (1 - one_hot) + one_hot
        loss = F.binary_cross_entropy_with_logits(logits, target_score, weight=weight, reduction="none")
        return loss.sum() / num_boxes

    def loss_boxes(self, outputs: Outputs, targets: Targets, indices: Indices, num_boxes: float) -> dict[str, Tensor]:
        """L1 on cxcywh and 1 - GIoU on xyxy of the matched pairs (unweighted scalars)."""
        _, _, src_boxes, tgt_boxes, _ = self._matched(outputs, targets, indices)
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="sum") / num_boxes
        giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes))
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    # ----------------------------------------------------------------- helpers

    def _iou_targets(self, outputs: Outputs, targets: Targets, indices: Indices) -> tuple[Tensor, Tensor, Tensor]:
        """(logits [B, Q, C] in float32 or wider, one_hot [B, Q, C] of the matched (query, class)
        pairs, IoU [B, Q, C] of each matched box with its target there and 0 elsewhere, detached)."""
        logits = outputs["pred_logits"]
        logits = logits.to(_compute_dtype(logits))
        batch_idx, query_idx, src_boxes, tgt_boxes, tgt_labels = self._matched(outputs, targets, indices)
        iou, _ = paired_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes))
        one_hot = torch.zeros_like(logits)
        one_hot[batch_idx, query_idx, tgt_labels] = 1.0
        iou_map = torch.zeros_like(logits)
        iou_map[batch_idx, query_idx, tgt_labels] = iou.detach().to(logits.dtype)
        return logits, one_hot, iou_map

    @staticmethod
    def _matched(outputs: Outputs, targets: Targets, indices: Indices) -> tuple[Tensor, ...]:
        """Flatten the per-image matches.

        Returns (batch_idx [K], query_idx [K], predicted boxes [K, 4],
        target boxes [K, 4], target labels [K]); boxes cxcywh, float32 or wider.
        """
        pred_boxes = outputs["pred_boxes"]
        device = pred_boxes.device
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([q for q, _ in indices]).to(device)
        src_boxes = pred_boxes[batch_idx, query_idx]
        src_boxes = src_boxes.to(_compute_dtype(src_boxes))
        # Indexing with the matcher's CPU indices works for tensors on any device.
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])
        tgt_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        return batch_idx, query_idx, src_boxes, tgt_boxes.to(src_boxes), tgt_labels.to(device).long()

    def _weighted(
        self,
        outputs: Outputs,
        targets: Targets,
        indices: Indices,
        num_boxes: float,
        suffix: str,
    ) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        if "loss_vfl" in self.weight_dict:
            losses["loss_vfl"] = self.loss_vfl(outputs, targets, indices, num_boxes)
        if "loss_mal" in self.weight_dict:
            losses["loss_mal"] = self.loss_mal(outputs, targets, indices, num_boxes)
        if "loss_bbox" in self.weight_dict or "loss_giou" in self.weight_dict:
            losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
        return {k + suffix: v * self.weight_dict[k] for k, v in losses.items() if k in self.weight_dict}

    @staticmethod
    def num_boxes(targets: Targets, device: torch.device) -> float:
        """Ground-truth boxes per process (all-reduced mean under torch.distributed), at least 1."""
        n = float(sum(int(t["boxes"].shape[0]) for t in targets))
        if not (dist.is_available() and dist.is_initialized()):
            return max(n, 1.0)  # no tensor, so no host-device sync
        # Averaging over processes keeps every rank's loss on the same scale.
        n_t = torch.tensor([n], dtype=torch.float32, device=device)
        dist.all_reduce(n_t)
        return (n_t / dist.get_world_size()).clamp(min=1).item()

    @staticmethod
    def dn_indices(dn_meta: Mapping[str, Any], targets: Targets) -> Indices:
        """Known matching of denoising queries: group g of image i holds its boxes 0..n_i-1.

        ``dn_positive_idx[i]`` int64 [n_i * dn_num_group] lists the positive
        denoising queries of image i, group by group, so the targets are
        arange(n_i) tiled dn_num_group times.
        """
        positive, groups = dn_meta["dn_positive_idx"], int(dn_meta["dn_num_group"])
        if len(positive) != len(targets):
            raise ValueError(f"dn_positive_idx has {len(positive)} entries for {len(targets)} targets")
        indices: Indices = []
        for i, (pos, t) in enumerate(zip(positive, targets)):
            n = int(t["labels"].shape[0])
            if n == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=pos.device)
                indices.append((empty, empty.clone()))
                continue
            if pos.shape[0] != n * groups:
                raise ValueError(
                    f"dn_positive_idx[{i}] has {pos.shape[0]} entries, expected {n} boxes x {groups} groups"
                )
            tgt_idx = torch.arange(n, dtype=torch.int64, device=pos.device).repeat(groups)
            indices.append((pos.long(), tgt_idx))
        return indices

    # ----------------------------------------------------------------- forward

    def forward(self, outputs: Mapping[str, Any], targets: Targets) -> dict[str, Tensor]:
        """Compute all weighted losses.

        Args:
            outputs: ``pred_logits`` [B, Q, C], ``pred_boxes`` [B, Q, 4] (final
                decoder layer); optional ``aux_outputs`` (list of such dicts:
                decoder layers 0..L-2, then the encoder top-K head, which has one
                logit when ``enc_meta["class_agnostic"]`` is set); optional
                ``dn_aux_outputs`` (one dict per decoder layer, [B, Q_dn, ...])
                with ``dn_meta`` (``dn_positive_idx``, ``dn_num_group``); optional
                ``o2m_outputs`` (one dict per decoder layer, [B, Q_o2m, ...]: the
                training-only one-to-many query group); optional ``enc_dense_outputs``
                (every encoder token's score and box, see :mod:`rtdetr.train.dense_loss`).
            targets: B dicts, ``labels`` int64 [N_b], ``boxes`` [N_b, 4] cxcywh.

        Returns:
            Scalar losses, already multiplied by their weight: ``loss_vfl`` (or
            ``loss_mal``), ``loss_bbox``, ``loss_giou``, the same with ``_aux_{i}``
            per aux output, ``_dn_{i}`` per denoising output and ``_o2m_{i}`` per
            one-to-many output (also times ``o2m_weight``), and ``loss_dense_cls``,
            ``loss_dense_bbox``, ``loss_dense_giou`` (times ``dense_weight``). Sum them with
            :func:`total_loss`.
        """
        bs = outputs["pred_logits"].shape[0]
        if len(targets) != bs:
            raise ValueError(f"got {len(targets)} targets for a batch of {bs} predictions")
        validate_targets(targets, self.num_classes)
        num_boxes = self.num_boxes(targets, outputs["pred_logits"].device)
        if all(t["boxes"].shape[0] == 0 for t in targets):
            logger.debug("batch without target boxes: only the negative VFL term is non-zero")

        main = {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}
        main_indices = self.matcher(main, targets)
        losses = self._weighted(main, targets, main_indices, num_boxes, "")
        aux_indices: list[Indices] = []

        aux_outputs = outputs.get("aux_outputs") or []
        agnostic_enc = bool((outputs.get("enc_meta") or {}).get("class_agnostic"))
        for i, aux in enumerate(aux_outputs):
            aux_targets = targets
            if agnostic_enc and i == len(aux_outputs) - 1:
                # 'agnostic' query selection: the encoder head (last aux entry) has one
                # objectness logit, so every target is class 0 for its matching and VFL.
                aux_targets = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
            indices = self.matcher(aux, aux_targets)
            aux_indices.append(indices)
            losses.update(self._weighted(aux, aux_targets, indices, num_boxes, f"_aux_{i}"))

        dn_outputs = outputs.get("dn_aux_outputs") or []
        if dn_outputs:
            if "dn_meta" not in outputs:
                raise ValueError("outputs has 'dn_aux_outputs' but no 'dn_meta'")
            dn_meta = outputs["dn_meta"]
            dn_idx = self.dn_indices(dn_meta, targets)
            dn_num_boxes = num_boxes * int(dn_meta["dn_num_group"])
            for i, dn in enumerate(dn_outputs):
                losses.update(self._weighted(dn, targets, dn_idx, dn_num_boxes, f"_dn_{i}"))

        o2m_outputs = outputs.get("o2m_outputs") or []
        if o2m_outputs and self.o2m_weight > 0:
            # Hybrid matching: with each box present k times, Hungarian matching gives
            # every box up to k queries of this group; normalized like k times the boxes.
            o2m_targets = repeat_targets(targets, self.o2m_repeat)
            o2m_num_boxes = num_boxes * self.o2m_repeat
            for i, o2m in enumerate(o2m_outputs):
                indices = self.matcher(o2m, o2m_targets)
                weighted = self._weighted(o2m, o2m_targets, indices, o2m_num_boxes, f"_o2m_{i}")
                losses.update({k: v * self.o2m_weight for k, v in weighted.items()})
        dense = outputs.get("enc_dense_outputs")
        if dense is not None and self.dense_weight > 0:
            cls_weight = self.weight_dict.get("loss_vfl", self.weight_dict.get("loss_mal", 0.0))
            base = {
                "loss_dense_cls": cls_weight,
                "loss_dense_bbox": self.weight_dict.get("loss_bbox", 0.0),
                "loss_dense_giou": self.weight_dict.get("loss_giou", 0.0),
            }
            # task_aligned_assign maps every label to 0 for a one-logit (agnostic) score head
            for k, v in dense_losses(dense, targets, topk=self.dense_topk, cls_loss=self.dense_cls_loss).items():
                losses[k] = v * base[k] * self.dense_weight
        if "fdr" in outputs:  # box_refine="fdr": FGL, DDF and the initial boxes' terms
            layer_indices = [*aux_indices[: outputs["fdr"]["corners"].shape[0] - 1], main_indices]
            losses.update(fdr_losses(self, outputs, targets, layer_indices, num_boxes))
        return losses
