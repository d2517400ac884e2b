"""Settings of one training run (what to run, not what the model is)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from ..errors import UserError

__all__ = ["TrainConfig", "OVERRIDE_FIELDS", "split_overrides"]

# The CLI flag of each field whose flag is not just "--" + the name with dashes.
_FLAGS = {"max_time_s": "--max-time", "num_workers": "--workers", "out_dir": "--out", "multi_scale": "--no-multi-scale"}
LR_SCHEDULES = ("flat", "cosine")
AMP_DTYPES = ("auto", "float16", "bfloat16")
CLS_LOSSES = ("vfl", "mal")
DENSE_CLS_LOSSES = ("bce", "vfl")
# Sample-efficiency and optimizer options with no flag of their own: set as ``--set KEY=VALUE`` (``rtdetr
# train``, see split_overrides), which is what their error messages name.
OVERRIDE_FIELDS = (
    "loss_cls",
    "mal_gamma",
    "mal_alpha",
    "o2m_repeat",
    "o2m_loss_weight",
    "dense_loss_weight",
    "dense_topk",
    "dense_cls_loss",
    "mosaic_prob",
    "mosaic_stop_epoch",
    "lr_flat_share",
    "betas",
)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the reference COCO recipe; batch_size is per process.

    Invalid values raise :class:`rtdetr.errors.UserError` naming the field and its CLI flag.

    Attributes:
        epochs: total epochs (72 = the paper's 6x schedule).
        stop_epoch: from this epoch on, strong augmentation and multi-scale are off
            (RT-DETRv2 "dynamic augmentation"); None keeps them on throughout.
        accumulate: micro-batches per optimizer step (gradient accumulation).
        amp: mixed precision; ``amp_dtype`` "auto" is bf16 on CPU, fp16 on CUDA. On a
            CPU without native bf16 (no AVX512-BF16 / AMX, see
            :func:`rtdetr.runtime.cpu_supports_bf16`) bf16 autocast is several times
            slower than float32 (AVX2: 1.25 vs 6.2 img/s), so such a run trains in
            float32 with one warning.
        amp_force: keep bf16 autocast on such a CPU anyway.
        clip_max_norm: gradient-norm clip (0 disables).
        warmup_iters / lr_schedule: linear warmup over optimizer steps, then "flat"
            (reference) or "cosine" (better for short runs).
        lr_flat_share: with "cosine", the share of the run's steps held at the peak lr
            before the decay starts (D-FINE / DEIM's flat-cosine); 0 is the plain cosine,
            which decays from step 0 on (under the warm-up).
        ema_decay / ema_warmup: weight EMA; evaluation and ``best.pt`` use the EMA.
        ema_max_share: with a time budget (``max_time_s``, schedule fitted to it), cap the
            EMA's horizon, 1 / (1 - decay) steps, at this share of the run's expected steps
            (0: no cap). A short run is still steep at its end, and an EMA over its last
            ~100 of ~500 steps lags the weights it averages.
        freeze_backbone: train encoder and decoder only (backbone weights and BN fixed).
        max_time_s: stop (and evaluate) once this wall-clock budget is spent.
        max_steps_per_epoch: cap iterations per epoch (quick tests and demos).
        num_workers: DataLoader worker processes; None picks one for the machine
            (:func:`rtdetr.data.default_num_workers`: 0, loading in the training process,
            on a CPU run with at most 4 cores, where workers fight the compute threads).
        channels_last: NHWC memory format for model and images (~1.2x faster CPU
            convolutions with oneDNN; numerics equal up to float rounding).
        compile: ``torch.compile`` the backbone and the hybrid encoder of the trained
            model (the decoder stays eager: its denoising query count changes with every
            batch). The first step pays for compilation (~40 s on 2 CPU cores) and
            every new input size compiles again, so pair it with ``multi_scale=False``.
            State-dict keys, checkpoints and the (eager) EMA model are unchanged.
            Measured: 3-7% faster fp32 steps on a 2-core CPU (R18, 640 px), slower on an
            H200 (R18 fp16: 166 vs 182 img/s), so a CPU option.
        loss_cls: classification loss, "vfl" (reference) or "mal" (DEIM's
            matchability-aware loss: target IoU^mal_gamma, positives not weighted by
            IoU, negatives mal_alpha * p^mal_gamma * BCE(p, 0)).
        o2m_repeat / o2m_loss_weight: copies of each ground truth the model's
            training-only one-to-many queries (model field ``num_o2m_queries``) are
            matched against, and the factor on their losses.
        dense_loss_weight / dense_topk: factor on the dense task-aligned losses of every
            encoder token (model field ``dense_enc_outputs``; :mod:`rtdetr.train.dense_loss`)
            and the positives each ground truth gets there; ``dense_cls_loss`` "bce" (plain
            BCE on every token, as YOLOv8) or "vfl" (negatives focal-weighted, positives
            weighted by their target score).
        mosaic_prob: probability that a training sample is a 2x2 mosaic of four
            images (DEIM's "dense one-to-one": more targets per image); 0 disables.
        mosaic_stop_epoch: first epoch without mosaics; None follows ``stop_epoch``.
    """

    epochs: int = 72
    batch_size: int = 4
    imgsz: int = 640
    lr: float = 1e-4
    backbone_lr: float = 1e-5
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 2000
    lr_schedule: str = "flat"
    lr_flat_share: float = 0.0
    ema: bool = True
    ema_decay: float = 0.9999
    ema_warmup: int = 2000
    ema_max_share: float = 0.0
    clip_max_norm: float = 0.1
    amp: bool = False
    amp_dtype: str = "auto"
    amp_force: bool = False
    accumulate: int = 1
    stop_epoch: int | None = None
    multi_scale: bool = True
    num_workers: int | None = None
    seed: int = 0
    eval_every: int = 1
    freeze_backbone: bool = False
    sync_bn: bool = False
    device: str = "auto"
    out_dir: str = "runs/train"
    max_time_s: float | None = None
    max_steps_per_epoch: int | None = None
    progress: bool = True
    channels_last: bool = True
    compile: bool = False
    loss_cls: str = "vfl"
    mal_gamma: float = 1.5
    mal_alpha: float = 1.0
    o2m_repeat: int = 6
    o2m_loss_weight: float = 1.0
    dense_loss_weight: float = 1.0
    dense_topk: int = 10
    dense_cls_loss: str = "bce"
    mosaic_prob: float = 0.0
    mosaic_stop_epoch: int | None = None

    @property
    def mosaic_until(self) -> int | None:
        """First epoch without mosaics (``mosaic_stop_epoch``, else ``stop_epoch``; None: never stops)."""
        return self.mosaic_stop_epoch if self.mosaic_stop_epoch is not None else self.stop_epoch

    def __post_init__(self) -> None:
        def at_least(name: str, low: float, *, optional: bool = False, integer: bool = True) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            kind = int if integer else (int, float)
            ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value) and value >= low
            if not ok:
                what = "an integer" if integer else "a number"
                _bad(name, value, f"{what} >= {low:g}" + (" (or unset)" if optional else ""))

        def in_unit_interval(value: Any, *, closed: bool = False) -> bool:  # [0, 1), or [0, 1] if closed
            return isinstance(value, (int, float)) and 0.0 <= value and (value <= 1.0 if closed else value < 1.0)

        at_least("epochs", 1)
        at_least("batch_size", 1)
        at_least("imgsz", 32)  # the coarsest feature map has stride 32
        at_least("accumulate", 1)
        at_least("eval_every", 1)
        at_least("warmup_iters", 0)
        at_least("ema_warmup", 0)
        at_least("seed", 0)
        at_least("lr", 0, integer=False)
        at_least("backbone_lr", 0, integer=False)
        at_least("weight_decay", 0, integer=False)
        at_least("clip_max_norm", 0, integer=False)
        at_least("stop_epoch", 0, optional=True)
        at_least("num_workers", 0, optional=True)
        at_least("max_steps_per_epoch", 1, optional=True)
        if self.max_time_s is not None:
            at_least("max_time_s", 0, integer=False)
            if self.max_time_s <= 0:
                _bad("max_time_s", self.max_time_s, "a positive number of seconds")
        if not in_unit_interval(self.ema_decay):
            _bad("ema_decay", self.ema_decay, "a number in [0, 1)")
        if not in_unit_interval(self.ema_max_share, closed=True):
            _bad("ema_max_share", self.ema_max_share, "a number in [0, 1]")
        if not (
            isinstance(self.betas, (tuple, list)) and len(self.betas) == 2 and all(map(in_unit_interval, self.betas))
        ):
            _bad("betas", self.betas, "two numbers in [0, 1), e.g. (0.9, 0.999)")
        if not in_unit_interval(self.lr_flat_share):
            _bad("lr_flat_share", self.lr_flat_share, "a number in [0, 1)")
        if self.lr_schedule not in LR_SCHEDULES:
            _bad("lr_schedule", self.lr_schedule, f"one of {', '.join(LR_SCHEDULES)}")
        if self.amp_dtype not in AMP_DTYPES:
            _bad("amp_dtype", self.amp_dtype, f"one of {', '.join(AMP_DTYPES)}")
        if self.loss_cls not in CLS_LOSSES:
            _bad("loss_cls", self.loss_cls, f"one of {', '.join(CLS_LOSSES)}")
        at_least("mal_gamma", 0, integer=False)
        at_least("mal_alpha", 0, integer=False)
        at_least("o2m_repeat", 1)
        at_least("o2m_loss_weight", 0, integer=False)
        at_least("dense_loss_weight", 0, integer=False)
        at_least("dense_topk", 1)
        if self.dense_cls_loss not in DENSE_CLS_LOSSES:
            _bad("dense_cls_loss", self.dense_cls_loss, f"one of {', '.join(DENSE_CLS_LOSSES)}")
        at_least("mosaic_stop_epoch", 0, optional=True)
        at_least("mosaic_prob", 0, integer=False)
        if self.mosaic_prob > 1:
            _bad("mosaic_prob", self.mosaic_prob, "a probability in [0, 1]")


def split_overrides(overrides: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` overrides -> (model config overrides, :class:`TrainConfig` fields).

    A key naming a TrainConfig field is a training setting (``lr``, ``max_steps_per_epoch``,
    the ``OVERRIDE_FIELDS`` options ...); every other key is a model config field.
    """
    names = {f.name for f in fields(TrainConfig)}
    model, train = {}, {}
    for key, value in (overrides or {}).items():
        (train if key in names else model)[key] = value
    return model, train


def _bad(name: str, value: Any, expected: str) -> None:
    flag = "--set " + name + "=..." if name in OVERRIDE_FIELDS else _FLAGS.get(name, "--" + name.replace("_", "-"))
    raise UserError(f"training setting {name} ({flag}) must be {expected}, got {value!r}")
