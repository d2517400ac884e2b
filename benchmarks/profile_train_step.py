"""Where a from-scratch training step spends its time, stage by stage, on this CPU.

    python benchmarks/profile_train_step.py                                  # the recipe's preset @320, batch 4
    python benchmarks/profile_train_step.py --set num_denoising=0 --set num_layers=2
    python benchmarks/profile_train_step.py --ops 25                         # also the top ops (torch.profiler)

Runs the Trainer's own step (the from-scratch recipe's settings, data from the synthetic
set loaded in-process) and times each stage with wall clocks: data loading, backbone,
encoder, decoder (query selection, denoising groups and layers), matching, the loss
terms, backward, optimizer + EMA. Prints a table (ms per step and share) and the
training images/s; ``--json`` writes the same numbers. The CPU capability is printed
with it because the balance between stages differs between AVX2 and AVX-512 machines.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from rtdetr.config import parse_overrides
from rtdetr.data import generate_synthetic_dataset
from rtdetr.runtime import cpu_description
from rtdetr.train.launch import build_trainer
from rtdetr.train.recipes import get_recipe
from rtdetr.train.train_config import TrainConfig


class StageClock:
    """Wall-clock milliseconds per named stage, summed over the profiled steps."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - t) * 1e3

    def wrap_forward(self, module: nn.Module, name: str) -> None:
        """Time every call of ``module`` under ``name`` (forward only)."""
        original = module.forward

        def timed(*args, **kwargs):
            with self(name):
                return original(*args, **kwargs)

        module.forward = timed


def profile(
    model_name: str, data: Path, imgsz: int, steps: int, overrides: dict, recipe: str, ops: int
) -> tuple[list, float]:
    cfg = TrainConfig(imgsz=imgsz, out_dir=str(data.parent / "profile_run"), progress=False, **get_recipe(recipe).train)
    # build_trainer routes the TrainConfig fields among the overrides (compile, batch_size ...)
    # to the run's settings: read them back from the trainer.
    model_overrides = {**get_recipe(recipe).model, **overrides}
    trainer = build_trainer(model_name, data, cfg, model_overrides=model_overrides, exist_ok=True)
    cfg = trainer.cfg
    clock = StageClock()
    model, crit = trainer.model, trainer.criterion
    clock.wrap_forward(model.backbone, "backbone")
    clock.wrap_forward(model.encoder, "encoder")
    clock.wrap_forward(model.decoder, "decoder (incl. query selection, denoising)")
    clock.wrap_forward(crit.matcher, "matching (Hungarian, all layers)")
    loader = trainer._train_loader(0)

    # The Trainer's own step, in its three parts, each timed.
    clock.wrap_forward(trainer.train_model, "forward total")
    clock.wrap_forward(crit, "loss total (incl. matching)")

    def step(images, targets):
        loss, _ = trainer.forward_loss(images, targets)
        with clock("backward"):
            trainer.backward(loss)
        with clock("optimizer + clip + EMA"):
            trainer.optimizer_step()

    def batches():
        while True:
            yield from loader

    it = batches()
    for _ in range(3 if not cfg.compile else 6):  # warm-up: kernels, caches, allocator (and compilation)
        step(*next(it))
    clock.ms.clear()
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if ops else None
    t0 = time.perf_counter()
    if prof:
        prof.__enter__()
    for _ in range(steps):
        with clock("data loading (in-process)"):
            images, targets = next(it)
        step(images, targets)
    if prof:
        prof.__exit__(None, None, None)
    elapsed = time.perf_counter() - t0
    total_ms = elapsed * 1e3 / steps
    rows = []
    for name, ms in clock.ms.items():
        rows.append({"stage": name, "ms_per_step": ms / steps, "share": ms / steps / total_ms})
    rows.append({"stage": "whole step", "ms_per_step": total_ms, "share": 1.0})
    if prof:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=ops))
    return rows, cfg.batch_size * steps / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="preset (default: the recipe's)")
    p.add_argument("--recipe", default="scratch")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--data", default="runs/bench/profile_data")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config or TrainConfig override (e.g. num_layers=2, compile=true)",
    )
    p.add_argument("--ops", type=int, default=0, help="also print the top N ops by self CPU time")
    p.add_argument("--json", default=None, help="write the table as JSON here")
    args = p.parse_args()
    torch.set_flush_denormal(True)
    data = Path(args.data)
    if not (data / "annotations" / "instances_val.json").exists():
        generate_synthetic_dataset(data, num_train=64, num_val=8, imgsz=args.imgsz, seed=0)
    args.model = args.model or get_recipe(args.recipe).default_model or "rtdetrv2_hgnetv2_n"
    rows, img_s = profile(args.model, data, args.imgsz, args.steps, parse_overrides(args.set), args.recipe, args.ops)
    head = (
        f"{args.model} @{args.imgsz}, recipe {args.recipe}, overrides {args.set or 'none'}, "
        f"{torch.get_num_threads()} threads, {cpu_description()}: {img_s:.2f} train images/s"
    )
    print(head)
    print("| stage | ms / step | share |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['ms_per_step']:.0f} | {r['share']:.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": head, "images_per_s": img_s, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
