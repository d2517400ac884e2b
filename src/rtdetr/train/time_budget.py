"""Fit a step-based learning-rate schedule to a wall-clock deadline while the run trains.

A time-budgeted run (``rtdetr train --max-time``) does not know how many optimizer
steps it will get. A cosine schedule sized from a guess either ends early (the lr hits
its floor while time is left) or never decays. :class:`TimeBudget` measures the run's
own step rate and re-sizes the schedule every few steps, so the cosine ends with the
time: no separate speed probe, no steps spent on a throw-away model, and a machine that
slows down (other jobs, a warm-up of caches) is followed.
"""

from __future__ import annotations

import logging
import math
import time

from .distributed import broadcast_object
from .optim import WarmupSchedule

__all__ = ["TimeBudget"]

log = logging.getLogger(__name__)


class TimeBudget:
    """Re-sizes ``scheduler.total_iters`` to the steps that fit before ``deadline``.

    Args:
        deadline: ``time.perf_counter()`` value at which training stops.
        scheduler: the run's schedule; its ``total_iters`` is what gets re-sized (it is part
            of the scheduler's state dict, so a checkpoint keeps the current estimate).
        steps_per_epoch: optimizer steps in one epoch (to report and bound epochs).
        every: re-estimate after this many optimizer steps.
        skip: the first steps of a run are slow (kernel selection, allocator warm-up):
            the rate is measured from this step on.
    """

    def __init__(
        self, deadline: float, scheduler: WarmupSchedule, steps_per_epoch: int, *, every: int = 20, skip: int = 3
    ) -> None:
        self.deadline, self.scheduler, self.steps_per_epoch = deadline, scheduler, max(1, steps_per_epoch)
        self.every, self.skip = every, skip
        self._origin: tuple[int, float] | None = None  # (step, time) the rate is measured from
        self._seen = 0
        self.estimates = 0

    def after_step(self, step: int) -> int | None:
        """Call after each optimizer step; returns the epoch count the budget allows when it re-estimated."""
        self._seen += 1
        now = time.perf_counter()
        if self._seen == self.skip:
            self._origin = (step, now)
            return None
        if self._origin is None or (self._seen - self.skip) % self.every:
            return None
        rate = (step - self._origin[0]) / max(1e-9, now - self._origin[1])  # optimizer steps / s
        total = step + max(0, round(rate * (self.deadline - now)))
        total = broadcast_object(total)  # every rank runs the same schedule (rank 0's estimate)
        self.scheduler.total_iters = max(step + 1, total)
        self.estimates += 1
        epochs = math.ceil(self.scheduler.total_iters / self.steps_per_epoch)
        if self.estimates == 1:
            log.info(
                "time budget: %.2f steps/s -> about %d optimizer steps (%d epoch(s)); the lr schedule ends with the time",
                rate,
                self.scheduler.total_iters,
                epochs,
            )
        return epochs
