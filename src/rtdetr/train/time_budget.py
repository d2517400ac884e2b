"""Fit a step-based learning-rate schedule to a wall-clock deadline while the run trains.

A time-budgeted run (``rtdetr train --max-time``) does not know how many optimizer
steps it will get. A cosine schedule sized from a guess either ends early (the lr hits
its floor while time is left) or never decays. :class:`TimeBudget` measures the run's
own step rate and re-sizes the schedule every few steps, so the cosine ends with the
time: no separate speed probe, no steps spent on a throw-away model, and a machine that
slows down or speeds up (other jobs, a warm-up of caches) is followed. The rate is the
recent one (a window of at least an epoch or ``window`` steps), not the run's average: an
average keeps counting a slow start, or another job that ran for a while and ended, and
ends the schedule early (a 3-minute demo that shared its CPU with another job for ~20 s of
its first epoch planned ~345 steps and got 360, the last ones at the floor lr).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque

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
        window: the rate is measured over the last ``max(window, steps_per_epoch)`` steps
            (an epoch at least, so that a per-epoch evaluation is counted in it), or since
            ``skip`` while the run is shorter.
    """

    def __init__(
        self,
        deadline: float,
        scheduler: WarmupSchedule,
        steps_per_epoch: int,
        *,
        every: int = 20,
        skip: int = 3,
        window: int = 100,
    ) -> None:
        self.deadline, self.scheduler, self.steps_per_epoch = deadline, scheduler, max(1, steps_per_epoch)
        self.every, self.skip = every, skip
        self.window = max(1, window, self.steps_per_epoch)
        self._marks: deque[tuple[int, float]] = deque()  # (step, time) from `skip` on, at each estimate
        self._seen = 0
        self.estimates = 0

    def after_step(self, step: int) -> int | None:
        """Call after each optimizer step; returns the epoch count the budget allows when it re-estimated."""
        self._seen += 1
        now = time.perf_counter()
        if self._seen == self.skip:
            self._marks.append((step, now))
            return None
        if not self._marks or (self._seen - self.skip) % self.every:
            return None
        while len(self._marks) > 1 and step - self._marks[1][0] >= self.window:
            self._marks.popleft()  # the oldest mark that still spans `window` steps stays first
        since_step, since = self._marks[0]
        self._marks.append((step, now))
        rate = (step - since_step) / max(1e-9, now - since)  # optimizer steps / s
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
