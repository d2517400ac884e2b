"""The training loop: one object that owns model, optimizer, EMA, data loaders and checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from ..data.issues import DatasetError
from ..data.workers import default_num_workers
from ..nn.postprocess import PostProcessor
from ..runtime import resolve_amp_dtype, setup_cpu_runtime
from .checkpoint import (
    capture_rng_state,
    load_checkpoint,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
    to_plain,
)
from .criterion import build_criterion, total_loss
from .distributed import DistInfo, all_reduce_mean, any_rank, barrier, init_distributed
from .evaluation import autocast_context, evaluate, progress_bar
from .input_sizes import check_multi_scales
from .optim import ModelEMA, WarmupSchedule, build_optimizer
from .run_logger import RunLogger
from .time_budget import TimeBudget
from .train_config import TrainConfig

__all__ = ["Trainer", "TrainingDiverged", "evaluate", "autocast_context"]

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the loss term."""


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


class Trainer:
    """Trains an RT-DETR model with the paper's recipe (see :class:`TrainConfig`).

    Args:
        model: an (unwrapped) detector, e.g. from :func:`rtdetr.build_model`.
        train_dataset: yields (image float [3, S, S] in [0, 1], target dict with
            ``labels`` int64 [N], ``boxes`` cxcywh normalized [N, 4], ``image_id``, ``orig_size``).
        val_dataset: same format; evaluation needs ``make_evaluator`` too.
        collate_fn: batches samples into (images [B, 3, S, S], list of targets);
            objects with ``set_epoch(epoch)`` (collator, dataset, transforms) are told the epoch.
        make_evaluator: returns a fresh COCO evaluator for ``val_dataset``.
        class_names / category_ids: stored in checkpoints so predictions carry names.

    On a CPU device it sets the process up as :func:`rtdetr.runtime.setup_cpu_runtime`
    does with ``keep_memory=True``: denormals flushed, and glibc keeps freed memory
    (process-wide; the resident size stays at its peak) so the activations of each step
    are not page-faulted in again.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset,
        *,
        config: TrainConfig,
        collate_fn: Callable,
        val_dataset: Dataset | None = None,
        val_collate_fn: Callable | None = None,
        make_evaluator: Callable[[], Any] | None = None,
        criterion: nn.Module | None = None,
        class_names: list[str] | None = None,
        category_ids: list[int] | None = None,
        dist_info: DistInfo | None = None,
    ) -> None:
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        # Flush denormals (they made CPU steps ~14x slower) and keep freed memory in the
        # process: otherwise glibc unmaps each large freed activation and the next step
        # page-faults it in again: 5-10k faults, 10-20 ms of kernel time per step of batch 4
        # at 320 px on 2 cores.
        setup_cpu_runtime(self.device, keep_memory=True)
        # Decided once per run (one warning): bf16 autocast on a CPU that emulates bf16 is
        # several times slower than float32, so such a run trains in float32 unless forced.
        self.amp_dtype = resolve_amp_dtype(self.device, config.amp, config.amp_dtype, force=config.amp_force)
        if config.amp and self.amp_dtype is None:
            config = dataclasses.replace(config, amp=False)  # what runs (and what checkpoints record)
        self.cfg = config
        self.out_dir = Path(config.out_dir)
        _check_not_empty(train_dataset, "train")
        if val_dataset is not None:
            _check_not_empty(val_dataset, "val")
        # Every size the model will see must give it enough encoder tokens for its queries:
        # fail now, not in the middle of an epoch when a small multi-scale size comes up.
        check_multi_scales(model, config.imgsz, getattr(collate_fn, "multi_scales", None))
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.out_dir)  # left by a process killed while saving
        torch.manual_seed(config.seed)

        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        num_classes = model.config.num_classes
        if config.freeze_backbone:
            model.backbone.requires_grad_(False)
        if config.sync_bn and self.dist.world_size > 1 and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.train_model: nn.Module = self.model
        if self.dist.world_size > 1:
            # find_unused_parameters: with no boxes on a rank there are no denoising queries,
            # so the denoising embedding gets no gradient there.
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.criterion = (criterion or build_criterion(config, num_classes)).to(self.device)
        self.optimizer = build_optimizer(
            self.model,
            lr=config.lr,
            backbone_lr=config.backbone_lr,
            weight_decay=config.weight_decay,
            betas=config.betas,
        )
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.collate_fn, self.val_collate_fn = collate_fn, val_collate_fn or collate_fn
        self.make_evaluator = make_evaluator
        self.num_workers = (
            config.num_workers
            if config.num_workers is not None
            else default_num_workers(self.device, processes_per_node=self.dist.local_world_size)
        )
        self.steps_per_epoch = math.ceil(self._batches_per_epoch() / config.accumulate)
        self.scheduler = WarmupSchedule(
            self.optimizer,
            warmup_iters=config.warmup_iters,
            total_iters=self.steps_per_epoch * config.epochs,
            schedule=config.lr_schedule,
            flat_share=config.lr_flat_share,
        )
        use_scaler = self.amp_dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.ema = ModelEMA(self.model, decay=config.ema_decay, warmups=config.ema_warmup) if config.ema else None
        if config.compile:  # after the EMA's deep copy, which must stay eager
            self.model.compile_static_parts()
        self.postprocessor = PostProcessor(
            num_classes, num_top_queries=model.config.num_top_queries, category_ids=category_ids
        ).to(self.device)
        self.class_names, self.category_ids = class_names, category_ids
        self.epoch, self.step = 0, 0
        self.best_ap = -1.0
        self.last_checkpoint: Path | None = None  # the newest complete checkpoint of this run
        self._last_checkpoint_epoch = 0  # the epochs it holds
        self.history: list[dict[str, Any]] = []
        self.time_budget: TimeBudget | None = None  # set by fit(fit_schedule=True) under a deadline
        self.last_metrics: dict[str, Any] = {}  # full result of the latest evaluation (per-class table too)
        self.run_logger = RunLogger(self.out_dir) if self.dist.is_main else None

    # ----------------------------------------------------------------- data
    def _batches_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.train_dataset) / self.dist.world_size)
        n = per_rank // self.cfg.batch_size if per_rank >= self.cfg.batch_size else 1
        return min(n, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else n

    def _train_loader(self, epoch: int) -> DataLoader:
        if self.dist.world_size > 1:
            sampler = DistributedSampler(self.train_dataset, shuffle=True, seed=self.cfg.seed)
            sampler.set_epoch(epoch)
        else:
            # A generator per epoch: the order depends on (seed, epoch) only, so a resumed
            # run sees exactly the batches the uninterrupted run would have.
            sampler = RandomSampler(self.train_dataset, generator=torch.Generator().manual_seed(self.cfg.seed + epoch))
        return DataLoader(
            self.train_dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            drop_last=len(self.train_dataset) >= self.cfg.batch_size * self.dist.world_size,
            generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch),
            pin_memory=self.device.type == "cuda",
        )

    def val_loader(self) -> DataLoader:
        ds = self.val_dataset
        sampler = DistributedSampler(ds, shuffle=False) if self.dist.world_size > 1 else SequentialSampler(ds)
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            collate_fn=self.val_collate_fn,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(0),
        )

    def _set_epoch(self, epoch: int) -> None:
        for obj in (self.collate_fn, self.train_dataset, getattr(self.train_dataset, "transforms", None)):
            if obj is not None and hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    # ------------------------------------------------------------- training
    def train_one_epoch(self, epoch: int, deadline: float | None = None) -> dict[str, float]:
        cfg, model = self.cfg, self.train_model
        model.train()
        if cfg.freeze_backbone:
            self.model.backbone.eval()
        loader = self._train_loader(epoch)
        total_batches = self._batches_per_epoch()
        sums: dict[str, float] = {}
        seen, batches, t0 = 0, 0, time.perf_counter()
        bar = progress_bar(
            loader, cfg.progress and self.dist.is_main, total=total_batches, desc=self._epoch_label(epoch)
        )
        self.optimizer.zero_grad(set_to_none=True)
        for i, (images, targets) in enumerate(bar):
            if i >= total_batches:
                break
            epochs_before = self.cfg.epochs
            loss, losses = self.train_step(
                images, targets, update=(i + 1) % cfg.accumulate == 0 or i + 1 == total_batches
            )
            if self.cfg.epochs != epochs_before and hasattr(bar, "set_description"):
                bar.set_description(self._epoch_label(epoch))  # the time budget sized the run
            seen += images.shape[0]
            batches += 1
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k in ("loss_vfl", "loss_mal", "loss_bbox", "loss_giou"):
                if k in losses:
                    sums[k] = sums.get(k, 0.0) + losses[k].item()
            if hasattr(bar, "set_postfix"):
                rate = seen * self.dist.world_size / (time.perf_counter() - t0)
                bar.set_postfix(
                    loss=f"{loss.item():.3f}", lr=f"{self.optimizer.param_groups[-1]['lr']:.2e}", img_s=f"{rate:.1f}"
                )
            # Decided together: a rank leaving on its own clock would leave the others
            # waiting in the next step's gradient all-reduce forever.
            if deadline is not None and any_rank(time.perf_counter() > deadline, self.device):
                break
        stats = {k: v / max(1, batches) for k, v in sums.items()}
        stats = all_reduce_mean(stats, self.device)
        elapsed = time.perf_counter() - t0
        stats["images"] = seen * self.dist.world_size  # this epoch's, all ranks (a budget can end it early)
        stats["train_s"] = elapsed
        stats["images_per_s"] = seen * self.dist.world_size / max(1e-9, elapsed)
        stats["lr"] = self.optimizer.param_groups[-1]["lr"]
        return stats

    def train_step(
        self, images: torch.Tensor, targets: list[dict], *, update: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One batch of training: forward, loss, backward, and with ``update`` the optimizer
        step (:meth:`optimizer_step`); ``update=False`` accumulates the gradients only.

        Args:
            images: float [B, 3, H, W] in [0, 1], on any device.
            targets: per image ``labels`` int64 [N] and ``boxes`` cxcywh normalized [N, 4].

        Returns:
            the total loss (a detached scalar) and every loss term.

        Raises:
            TrainingDiverged: a loss term is NaN or infinite (nothing was stepped).
        """
        loss, losses = self.forward_loss(images, targets)
        self.backward(loss)
        if update:
            self.optimizer_step()
        return loss.detach(), losses

    def forward_loss(self, images: torch.Tensor, targets: list[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training forward and the criterion on one batch: (total loss, loss terms)."""
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        targets = _to_device(targets, self.device)
        with autocast_context(self.device, self.cfg.amp, self.cfg.amp_dtype):
            outputs = self.train_model(images, targets)
        losses = self.criterion(outputs, targets)
        loss = total_loss(losses)
        if not torch.isfinite(loss):
            bad = [k for k, v in losses.items() if not torch.isfinite(v)]
            raise TrainingDiverged(
                f"non-finite loss in epoch {self.epoch + 1} before optimizer step {self.step + 1}: "
                f"{', '.join(f'{k}={losses[k].item()}' for k in bad)}; lower the lr or check the data"
            )
        return loss, losses

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of ``loss``, averaged over the ``accumulate`` batches of one step (and
        scaled for float16 autocast on a GPU)."""
        self.scaler.scale(loss / self.cfg.accumulate).backward()

    def optimizer_step(self) -> None:
        """Clip, step the optimizer and the lr schedule, re-fit a time-budgeted run's schedule,
        then update the EMA; the gradients are zeroed for the next step."""
        cfg = self.cfg
        if cfg.clip_max_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        if self.time_budget is not None:
            fitted = self.time_budget.after_step(self.step)
            if fitted is not None:  # the epochs the rest of the budget allows
                self.cfg = dataclasses.replace(cfg, epochs=max(fitted, self.epoch + 1))
                self._fit_ema_to(self.scheduler.total_iters)
        if self.ema is not None:  # after the re-fit: this update already uses the fitted decay
            self.ema.update(self.model)

    def _epoch_label(self, epoch: int) -> str:
        """The progress bar's "epoch i/n"; "epoch i/?" while a time budget has not yet sized
        the run (its placeholder epoch count is no one's plan)."""
        unfitted = self.time_budget is not None and self.time_budget.estimates == 0
        return f"epoch {epoch + 1}/{'?' if unfitted else self.cfg.epochs}"

    def _fit_ema_to(self, total_steps: int) -> None:
        """Cap the EMA's horizon at ``ema_max_share`` of the run's expected optimizer steps."""
        share = self.cfg.ema_max_share
        if self.ema is None or share <= 0:
            return
        horizon = max(1.0, share * total_steps)  # steps: an EMA of decay d averages ~1 / (1 - d)
        self.ema.decay = min(self.cfg.ema_decay, 1.0 - 1.0 / horizon)

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self) -> dict[str, Any]:
        if self.val_dataset is None or self.make_evaluator is None:
            return {}
        return evaluate(
            self.eval_model(),
            self.val_loader(),
            self.postprocessor,
            self.make_evaluator(),
            self.device,
            amp=self.cfg.amp,
            amp_dtype=self.cfg.amp_dtype,
            progress=self.cfg.progress and self.dist.is_main,
            memory_format=self.memory_format,
        )

    def fit(
        self, resume: str | Path | None = None, *, deadline: float | None = None, fit_schedule: bool = False
    ) -> list[dict[str, Any]]:
        """Train for ``config.epochs`` (from a checkpoint's next epoch when resuming).

        ``config.max_time_s`` counts from this call; ``deadline`` (a ``time.perf_counter()``
        value) replaces that clock, so time spent before ``fit`` (building the model and
        data) counts against the budget too. ``fit_schedule``: with a time budget, size
        the lr schedule (and the epoch count) to the steps that fit in it, re-measured as
        the run goes (:class:`~rtdetr.train.time_budget.TimeBudget`). Ctrl-C
        (KeyboardInterrupt) is re-raised after logging which checkpoint to resume from.
        """
        if resume is not None:
            self.load_state(load_checkpoint(resume, map_location=self.device))
            self.last_checkpoint, self._last_checkpoint_epoch = Path(resume), self.epoch
            log.info("resumed from %s at epoch %d (step %d)", resume, self.epoch + 1, self.step)
        if self.run_logger is not None:
            self.run_logger.begin(self.epoch)
        finished = False
        try:
            self._run_epochs(deadline, fit_schedule)
            finished = True
        except KeyboardInterrupt:
            if self.dist.is_main:
                log.warning("%s", self.interrupted_message())
            raise
        finally:
            if self.run_logger is not None:
                self.run_logger.close(plot=finished)
        return self.history

    def _run_epochs(self, deadline: float | None = None, fit_schedule: bool = False) -> None:
        if deadline is None and self.cfg.max_time_s:
            deadline = time.perf_counter() + self.cfg.max_time_s
        if fit_schedule and deadline is not None:
            self.time_budget = TimeBudget(deadline, self.scheduler, self.steps_per_epoch)
        while self.epoch < self.cfg.epochs:
            epoch = self.epoch
            self._set_epoch(epoch)
            stats = self.train_one_epoch(epoch, deadline)
            out_of_time = deadline is not None and any_rank(time.perf_counter() > deadline, self.device)
            metrics = {}
            if (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs or out_of_time:
                metrics = self.evaluate()
                self.last_metrics = metrics
            self.epoch = epoch + 1
            record = {
                "epoch": self.epoch,
                "step": self.step,
                **stats,
                **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
            self.history.append(record)
            if self.run_logger is not None:
                self.run_logger.log(record)
            if self.dist.is_main:  # one writer per run, whatever logging is set up
                self._save(metrics)
            barrier()
            if out_of_time:
                log.info("time budget spent after %d epoch(s)", self.epoch)
                break

    def interrupted_message(self) -> str:
        """What an interrupted run tells the user: where its last checkpoint is and how to go on."""
        where = f"training interrupted in epoch {self.epoch + 1}"
        if self.last_checkpoint is None:
            return f"{where}; no checkpoint was written yet (one is saved after each epoch)"
        return (
            f"{where}; the last checkpoint is {self.last_checkpoint} (after epoch {self._last_checkpoint_epoch}); "
            f"continue with: rtdetr train ... --resume {self.last_checkpoint}"
        )

    # ---------------------------------------------------------- checkpoints
    def state(self, metrics: dict | None = None) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_ap": self.best_ap,
            "rng": capture_rng_state(),
            "config": to_plain(self.model.config),
            "train_config": to_plain(self.cfg),
            "class_names": self.class_names,
            "category_ids": self.category_ids,
            "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_ap = float(state.get("best_ap", -1.0))
        restore_rng_state(state["rng"])

    def _save(self, metrics: dict) -> None:
        ap = metrics.get("AP")
        is_best = isinstance(ap, (int, float)) and ap > self.best_ap
        if is_best:
            # Before writing last.pt: a run resumed from it must know this epoch's AP is the
            # one to beat, or a worse epoch would replace best.pt.
            self.best_ap = float(ap)
        state = self.state(metrics)
        self.last_checkpoint = save_checkpoint(state, self.out_dir / "last.pt")
        self._last_checkpoint_epoch = self.epoch
        if is_best:
            save_checkpoint(state, self.out_dir / "best.pt")


def _check_not_empty(dataset: Dataset, split: str) -> None:
    if len(dataset) == 0:
        name = getattr(dataset, "name", None)
        raise DatasetError(
            f"the {split} split{f' ({name})' if name else ''} has no images; "
            "check the image folder and annotation file the dataset points to"
        )
