"""ModelEMA: the average it keeps, and that it follows the source model it is given; the lr schedule's shape."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rtdetr.train.optim import ModelEMA, WarmupSchedule


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def _perturb(model: nn.Module, step: int) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1 * (step + 1))
    model.train()(torch.randn(2, 3, 8, 8))  # moves the running statistics, counts a batch


def test_ema_follows_its_formula_over_updates() -> None:
    model = _net()
    model(torch.randn(1, 3, 8, 8))  # materialize the lazy layer before the copy
    ema = ModelEMA(model, decay=0.9, warmups=3)
    expected = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for step in range(4):
        _perturb(model, step)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-(step + 1) / 3))
        for k, v in model.state_dict().items():
            expected[k] = expected[k] * d + v * (1 - d) if v.is_floating_point() else v.clone()
    got = ema.module.state_dict()
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-7, msg=k)
    # the integer buffer is copied, not averaged
    assert int(got["1.num_batches_tracked"]) == int(model.state_dict()["1.num_batches_tracked"]) == 5


def test_ema_reads_a_reassigned_buffer_and_a_new_source_model() -> None:
    model = _net()
    model(torch.randn(1, 3, 8, 8))
    ema = ModelEMA(model, decay=0.5, warmups=0)
    ema.update(model)
    # a module that replaces its buffer object instead of updating it in place
    before = ema.module[1].running_mean.clone()
    model[1].running_mean = torch.full((4,), 8.0)
    ema.update(model)
    torch.testing.assert_close(ema.module[1].running_mean, before * 0.5 + 4.0)
    # another model object with the same layout: its values are the ones averaged in
    other = _net()
    other(torch.randn(1, 3, 8, 8))
    with torch.no_grad():
        other[0].weight.fill_(2.0)
        ema.module[0].weight.zero_()
    ema.update(other)
    torch.testing.assert_close(ema.module[0].weight, torch.ones_like(other[0].weight))


def test_a_loaded_ema_keeps_the_decay_it_was_saved_with():
    """A budgeted run lowers its EMA decay (the ema_max_share cap); resuming must not reset it."""
    model = nn.Linear(2, 2)
    saved = ModelEMA(model, decay=0.99, warmups=3)
    saved.update(model)
    saved.decay = 0.95  # what Trainer._fit_ema_to sets for a 400-step budget at 5%
    resumed = ModelEMA(model, decay=0.99, warmups=3)
    resumed.load_state_dict(saved.state_dict())
    assert (resumed.decay, resumed.updates) == (0.95, 1)
    old_state = {k: v for k, v in saved.state_dict().items() if k != "decay"}  # a checkpoint without it
    fresh = ModelEMA(model, decay=0.99, warmups=3)
    fresh.load_state_dict(old_state)
    assert fresh.decay == 0.99


def _factors(steps: list[int], **kw) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupSchedule(opt, schedule="cosine", total_iters=100, **kw)
    return [schedule._factor(s) for s in steps]


def test_flat_cosine_holds_the_peak_then_decays_over_the_rest() -> None:
    steps = [0, 9, 30, 60, 80, 99, 100, 150]
    plain = _factors(steps, warmup_iters=10)
    flat = _factors(steps, warmup_iters=10, flat_share=0.6)
    # the same warm-up; the plain cosine decays from step 0 on, the flat one holds the peak to step 60
    assert flat[:2] == pytest.approx([0.1, 1.0]) and plain[0] == pytest.approx(0.1) and plain[1] < 0.99
    assert plain[2] < 0.95 and flat[2] == pytest.approx(1.0) and flat[3] == pytest.approx(1.0)
    # then a half cosine over the remaining 40 steps: at 80 half-way, 0.05 + 0.95 * 0.5
    assert flat[4] == pytest.approx(0.05 + 0.95 * 0.5)
    assert flat[6:] == pytest.approx([0.05, 0.05]) and plain[6:] == pytest.approx([0.05, 0.05])
    # flat_share=0 is the plain cosine, step for step
    assert _factors(steps, warmup_iters=10, flat_share=0.0) == plain
    with pytest.raises(ValueError, match="flat_share"):
        _factors(steps, flat_share=1.0)
