"""The D-FINE losses of the FDR decoder option: FGL and DDF (GO-LSD self-distillation).

A model built with ``box_refine="fdr"`` (:mod:`rtdetr.nn.fdr`) returns, in training,
``outputs["fdr"]`` (and ``outputs["dn_fdr"]`` for the denoising queries) holding each
decoder layer's edge-bin logits ``corners`` [L, B, Q, 4, N+1], the initial boxes
``ref_boxes`` [B, Q, 4] the edge distances are measured from, the bin values
``project`` [N+1] and ``pre_outputs`` (the initial boxes with layer 0's logits).

* **FGL** (fine-grained localization), per layer: for each matched query and edge, the
  target distance (target box edge vs initial box, :func:`rtdetr.nn.fdr.box_to_distance`)
  falls between two bins n and n+1 with linear weights w_n, w_{n+1}; the loss is
  ``IoU * -(w_n log P(n) + w_{n+1} log P(n+1))`` summed over matched queries and edges,
  divided by the number of matched queries. IoU is that of the layer's box with its
  target, detached.
* **DDF** (decoupled distillation focal), per layer but the last: the KL divergence
  ``T^2 KL(softmax(teacher / T) || softmax(student / T))`` per edge, teacher = the last
  layer's logits, detached (the student learns from the teacher, never the reverse);
  each query weighted by its box's IoU with its target if matched, else by the teacher's
  top class probability; the mean over matched queries and the mean over unmatched ones
  are mixed with weights sqrt(N_matched) and sqrt(N_unmatched).

"Matched" for both is D-FINE's global-optimal set: the union of the Hungarian matches of
every decoder layer and of the initial boxes, each query kept with the target it was
matched to most often. The initial boxes also get the usual VFL/L1/GIoU terms (``_pre``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from rtdetr.nn.fdr import box_to_distance, distance_to_bins
from rtdetr.ops.boxes import box_cxcywh_to_xyxy, paired_box_iou
from rtdetr.train.matcher import Indices, Targets

if TYPE_CHECKING:
    from rtdetr.train.criterion import RTDETRCriterion

__all__ = ["DEFAULT_FDR_WEIGHTS", "FDR_LOSS_NAMES", "ddf_loss", "fdr_losses", "fgl_loss", "go_indices"]

FDR_LOSS_NAMES = ("loss_fgl", "loss_ddf")
# D-FINE's weights (with VFL 1, L1 5, GIoU 2) and distillation temperature.
DEFAULT_FDR_WEIGHTS = {"loss_fgl": 0.15, "loss_ddf": 1.5}
DDF_TEMPERATURE = 5.0


def fgl_loss(
    corners: Tensor, ref_boxes: Tensor, tgt_boxes: Tensor, iou: Tensor, project: Tensor, num_boxes: float
) -> Tensor:
    """Fine-grained localization loss of K matched queries (unweighted scalar).

    corners [K, 4, N+1] edge logits, ref_boxes [K, 4] and tgt_boxes [K, 4] cxcywh,
    iou [K] (detached quality weights), project [N+1] bin values.
    """
    logp = F.log_softmax(corners.float(), dim=-1)
    target = box_to_distance(ref_boxes.float(), tgt_boxes.float())  # [K, 4]
    left, w_left, w_right = distance_to_bins(target, project.float())
    lp_left = logp.gather(-1, left.unsqueeze(-1)).squeeze(-1)
    lp_right = logp.gather(-1, (left + 1).unsqueeze(-1)).squeeze(-1)
    per_edge = -(w_left * lp_left + w_right * lp_right)  # [K, 4]
    return (per_edge * iou.float().unsqueeze(-1)).sum() / num_boxes


def ddf_loss(
    student: Tensor, teacher: Tensor, matched: Tensor, weight: Tensor, temperature: float = DDF_TEMPERATURE
) -> Tensor:
    """Decoupled distillation focal loss of one layer (unweighted scalar).

    student, teacher [B, Q, 4, N+1] edge logits (the teacher is detached here);
    matched [B, Q] bool; weight [B, Q] (IoU for matched, teacher confidence otherwise).
    """
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)  # [B, Q, 4]
    per_query = (temperature**2) * kl.mean(-1) * weight.detach().float()  # [B, Q]
    n_pos, n_neg = int(matched.sum()), int((~matched).sum())
    total = per_query.sum() * 0.0  # keeps the graph when a part is empty
    if n_pos:
        total = total + math.sqrt(n_pos) * per_query[matched].mean()
    if n_neg:
        total = total + math.sqrt(n_neg) * per_query[~matched].mean()
    return total / max(math.sqrt(n_pos) + math.sqrt(n_neg), 1.0)


def go_indices(per_layer: list[Indices]) -> Indices:
    """Union of several matchings of the same queries: per image, each query matched in any
    of them, with the target it was matched to most often (ties: the smaller target index)."""
    out: Indices = []
    for per_image in zip(*per_layer):
        counts: Counter[tuple[int, int]] = Counter()
        for q, t in per_image:
            counts.update(zip(q.tolist(), t.tolist()))
        best: dict[int, tuple[int, int]] = {}
        for (q, t), c in counts.items():
            if q not in best or (c, -t) > (best[q][1], -best[q][0]):
                best[q] = (t, c)
        qs = sorted(best)
        device = per_image[0][0].device
        out.append(
            (
                torch.tensor(qs, dtype=torch.int64, device=device),
                torch.tensor([best[q][0] for q in qs], dtype=torch.int64, device=device),
            )
        )
    return out


def _count_over_processes(n: int, device: torch.device) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return max(float(n), 1.0)
    n_t = torch.tensor([float(n)], device=device)
    dist.all_reduce(n_t)
    return (n_t / dist.get_world_size()).clamp(min=1).item()


def _layer_terms(
    crit: RTDETRCriterion,
    fdr: Mapping[str, Any],
    layers: list[Mapping[str, Tensor]],
    targets: Targets,
    indices: Indices,
    num_boxes: float,
    suffixes: list[str],
) -> dict[str, Tensor]:
    """FGL on every layer and DDF on every layer but the last, with one matching for all."""
    losses: dict[str, Tensor] = {}
    corners, project = fdr["corners"][-len(layers) :], fdr["project"]
    teacher = layers[-1]
    matched = torch.zeros(teacher["pred_logits"].shape[:2], dtype=torch.bool, device=corners.device)
    batch_idx, query_idx, _, tgt_boxes, _ = crit._matched(teacher, targets, indices)
    matched[batch_idx, query_idx] = True
    conf = teacher["pred_logits"].detach().float().sigmoid().amax(-1)  # [B, Q]
    ref = fdr["ref_boxes"][batch_idx, query_idx]
    for layer, (out, suffix) in enumerate(zip(layers, suffixes)):
        boxes = out["pred_boxes"][batch_idx, query_idx].float()
        iou, _ = paired_box_iou(box_cxcywh_to_xyxy(boxes.detach()), box_cxcywh_to_xyxy(tgt_boxes))
        iou = iou.nan_to_num(0.0).clamp(0.0, 1.0)  # degenerate (negative-width) boxes
        if "loss_fgl" in crit.weight_dict:
            fgl = fgl_loss(corners[layer][batch_idx, query_idx], ref, tgt_boxes, iou, project, num_boxes)
            losses["loss_fgl" + suffix] = fgl * crit.weight_dict["loss_fgl"]
        if "loss_ddf" in crit.weight_dict and layer < len(layers) - 1:
            weight = conf.clone()
            weight[batch_idx, query_idx] = iou
            ddf = ddf_loss(corners[layer], corners[-1], matched, weight)
            losses["loss_ddf" + suffix] = ddf * crit.weight_dict["loss_ddf"]
    return losses


def fdr_losses(
    crit: RTDETRCriterion,
    outputs: Mapping[str, Any],
    targets: Targets,
    layer_indices: list[Indices],
    num_boxes: float,
) -> dict[str, Tensor]:
    """Every FDR term of one batch, weighted; keys as the criterion's (``_aux_{i}``, ``_dn_{i}``, ``_pre``).

    ``layer_indices`` are the criterion's Hungarian matches of the decoder layers in order
    (layers 0..L-2 from ``aux_outputs``, then the final output). Terms: FGL per layer,
    DDF per layer but the last, VFL/L1/GIoU of the initial boxes (``_pre``), and the same
    on the denoising queries with their known matching (``_dn_{i}``, ``_dn_pre``).
    Without the intermediate layers' outputs (``aux_loss=False``) only the final layer's
    FGL and the initial boxes' terms remain.
    """
    fdr = outputs["fdr"]
    num_layers = fdr["corners"].shape[0]
    main = {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}
    aux = list(outputs.get("aux_outputs") or [])[: num_layers - 1]
    if len(aux) != num_layers - 1 or len(layer_indices) != num_layers:
        aux, layer_indices = [], layer_indices[-1:]  # no intermediate layers to supervise or distil
    losses: dict[str, Tensor] = {}
    pre = fdr["pre_outputs"]
    pre_indices = crit.matcher(pre, targets)
    losses.update(crit._weighted(pre, targets, pre_indices, num_boxes, "_pre"))
    go = go_indices([*layer_indices, pre_indices])
    num_go = _count_over_processes(sum(int(q.numel()) for q, _ in go), fdr["corners"].device)
    suffixes = [f"_aux_{i}" for i in range(len(aux))] + [""]
    losses.update(_layer_terms(crit, fdr, [*aux, main], targets, go, num_go, suffixes))

    dn_fdr = outputs.get("dn_fdr")
    dn_layers = outputs.get("dn_aux_outputs") or []
    if dn_fdr is not None and dn_layers:
        dn_meta = outputs["dn_meta"]
        dn_idx = crit.dn_indices(dn_meta, targets)
        dn_num_boxes = num_boxes * int(dn_meta["dn_num_group"])
        losses.update(crit._weighted(dn_fdr["pre_outputs"], targets, dn_idx, dn_num_boxes, "_dn_pre"))
        suffixes = [f"_dn_{i}" for i in range(num_layers)]
        losses.update(_layer_terms(crit, dn_fdr, list(dn_layers), targets, dn_idx, dn_num_boxes, suffixes))
    return losses
