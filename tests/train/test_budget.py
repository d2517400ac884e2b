"""Time-budgeted runs: the lr schedule is sized to the steps that fit, measured while training."""

import time

import torch

from rtdetr.data import generate_synthetic_dataset
from rtdetr.train.launch import train_for_budget
from rtdetr.train.optim import WarmupSchedule
from rtdetr.train.time_budget import TimeBudget
from rtdetr.train.train_config import TrainConfig


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _schedule(total: int) -> WarmupSchedule:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return WarmupSchedule(opt, warmup_iters=0, total_iters=total, schedule="cosine")


def test_schedule_is_resized_to_the_measured_rate_and_follows_a_slowdown(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    sched = _schedule(10**6)
    budget = TimeBudget(deadline=clock.now + 100.0, scheduler=sched, steps_per_epoch=10, every=5, skip=2)
    fitted = []
    for step in range(1, 8):  # 2 steps/s
        clock.now += 0.5
        fitted.append(budget.after_step(step))
    # measured from step 2 (t=1001) to step 7 (t=1003.5): 2 steps/s, 96.5 s left -> 7 + 193 steps
    assert fitted[:6] == [None] * 6 and sched.total_iters == 200 and fitted[6] == 20
    for step in range(8, 13):  # the machine slows to 0.5 steps/s
        clock.now += 2.0
        budget.after_step(step)
    # 10 steps in 12.5 s since step 2 -> 0.8 steps/s; 86.5 s left -> 12 + 69 steps
    assert sched.total_iters == 12 + round(0.8 * 86.5)
    assert 0.0 < sched.get_last_lr()[0] <= 1.0


def test_the_rate_is_the_recent_one_so_a_slow_start_is_forgotten(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    sched = _schedule(10**6)
    budget = TimeBudget(deadline=clock.now + 1000.0, scheduler=sched, steps_per_epoch=5, every=10, skip=1, window=20)
    assert budget.window == 20
    step = 0
    for step in range(1, 41):  # 1 step/s while another job shares the CPU
        clock.now += 1.0
        budget.after_step(step)
    for step in range(41, 101):  # then 4 steps/s
        clock.now += 0.25
        budget.after_step(step)
    # the last estimate (step 91, t=1052.75) measured from the mark at step 71 (t=1047.75): 4 steps/s;
    # an average since step 1 would say 90 steps / 51.75 s = 1.74 steps/s
    assert sched.total_iters == 91 + round(4.0 * (2000.0 - 1052.75))
    # a window shorter than an epoch is widened to the epoch (its evaluation counted in the rate)
    assert TimeBudget(0.0, sched, steps_per_epoch=500, window=100).window == 500


def test_a_fitted_run_ends_its_cosine_near_the_deadline(tmp_path, monkeypatch):
    import functools

    import rtdetr.train.engine as engine

    # Re-estimate after every step from the second on: a loaded test machine may run only a few
    # steps in the budget (with every=2 one ran none it could measure), and the last estimate is
    # then the one made nearest the deadline.
    monkeypatch.setattr(engine, "TimeBudget", functools.partial(TimeBudget, every=1, skip=1))
    data = generate_synthetic_dataset(tmp_path / "data", num_train=8, num_val=2, imgsz=64)
    cfg = TrainConfig(
        epochs=1,
        batch_size=2,
        imgsz=64,
        device="cpu",
        out_dir=str(tmp_path / "run"),
        num_workers=0,
        max_time_s=6.0,
        progress=False,
        eval_every=10**6,
        lr_schedule="cosine",
        warmup_iters=1,
        ema_decay=0.999,
        ema_max_share=0.1,
    )
    trainer = train_for_budget(
        "rtdetrv2_hgnetv2_n", data, cfg, fit_epochs=True, model_overrides={"num_queries": 10, "num_denoising": 10}
    )
    assert trainer.time_budget is not None and trainer.time_budget.estimates >= 1
    # The run planned (about) the steps it got: far from the 10000 epochs it started with.
    assert trainer.cfg.epochs < 10_000
    assert abs(trainer.scheduler.total_iters - trainer.step) <= max(8, 0.35 * trainer.step)
    # The EMA averages over at most a tenth of the planned steps (1000 at decay 0.999 is far more).
    horizon = max(1.0, 0.1 * trainer.scheduler.total_iters)
    assert trainer.ema.decay == min(0.999, 1 - 1 / horizon) < 0.999


def test_the_ema_cap_is_a_share_of_the_planned_steps_and_off_at_zero():
    from types import SimpleNamespace

    from rtdetr.train.engine import Trainer

    ema = SimpleNamespace(decay=0.99)
    for share, total, expected in ((0.0, 50, 0.99), (0.05, 400, 0.95), (0.05, 10**6, 0.99), (0.5, 1, 0.0)):
        trainer = SimpleNamespace(ema=ema, cfg=TrainConfig(ema_decay=0.99, ema_max_share=share))
        ema.decay = 0.99
        Trainer._fit_ema_to(trainer, total)
        assert abs(ema.decay - expected) < 1e-12, (share, total)


def test_the_progress_bar_says_epoch_count_unknown_until_the_budget_sized_the_run():
    from types import SimpleNamespace

    from rtdetr.train.engine import Trainer

    budget = SimpleNamespace(estimates=0)
    trainer = SimpleNamespace(time_budget=budget, cfg=TrainConfig(epochs=10_000))
    assert Trainer._epoch_label(trainer, 0) == "epoch 1/?"  # not the placeholder 10000
    budget.estimates, trainer.cfg = 1, TrainConfig(epochs=7)
    assert Trainer._epoch_label(trainer, 2) == "epoch 3/7"
    trainer.time_budget = None  # no budget: the configured epochs
    assert Trainer._epoch_label(trainer, 0) == "epoch 1/7"
