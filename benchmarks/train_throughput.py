"""Training images/s (forward + backward + loss) of our R18 vs transformers' R18 at 640 px, batch 4.

    python -m benchmarks.train_throughput                 # variants interleaved in one process per allocator
    python -m benchmarks.train_throughput --isolated      # each variant in its own process

transformers (``RTDetrForObjectDetection`` with our R18 configuration, random init) is
a benchmark-only dependency. Timings are wall clock on this machine with the default
thread count; the CPU capability is printed with the table.
"""

from __future__ import annotations

import argparse
import time

import torch

import rtdetr
from benchmarks.hf_reference import hf_rtdetr
from rtdetr.runtime import KEEP_FREED_MEMORY_ENV, cpu_description

# glibc malloc settings the throughput table is measured under, each in a fresh process
# (they must be set before the first allocation). "keep freed memory" is what
# rtdetr.infer.keep_freed_memory() sets: no mmap for big blocks, no trimming, one arena.
ALLOCATORS: dict[str, dict[str, str]] = {
    "glibc defaults": {},
    "keep freed memory": KEEP_FREED_MEMORY_ENV,
}


# key: label, in table order; transformers fp32, the baseline of the ratios, last.
THROUGHPUT_VARIANTS: dict[str, str] = {
    "ours": "rtdetr (ours), fp32",
    "ours_cl": "rtdetr (ours), fp32 channels-last (the trainer's default)",
    "ours_cl_compile": "rtdetr (ours), fp32 channels-last, compile=True",
    "ours_bf16": "rtdetr (ours), bf16 autocast, channels-last",
    "hf_bf16": "transformers, bf16 autocast",
    "hf": "transformers, fp32",
}


def throughput(imgsz: int = 640, batch: int = 4, steps: int = 5, only: str | None = None) -> list[dict]:
    """Training images/s (forward + backward + loss) of our R18 vs transformers' R18, same process.

    Both run fp32 and bf16 autocast; ours also with channels-last memory format
    (which the trainer uses on CPU) and with ``TrainConfig.compile`` (backbone and
    encoder through ``torch.compile``; compiled in the warm-up step). The variants
    take turns, one step each per round, so a slow phase of the machine hits all of
    them alike; medians of ``steps``. ``only``: run just the variant of that key.
    """
    from rtdetr.train import HungarianMatcher, RTDETRCriterion, total_loss

    torch.manual_seed(0)
    x = torch.rand(batch, 3, imgsz, imgsz)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    targets = [{"labels": torch.randint(0, 80, (6,)), "boxes": torch.rand(6, 4) * 0.4 + 0.3} for _ in range(batch)]
    crit = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=80)
    hf_labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    models: dict[str, torch.nn.Module] = {}

    def ours(key: str, channels_last: bool = False, compile: bool = False) -> torch.nn.Module:
        if key not in models:
            model = rtdetr.build_model("rtdetr_r18vd").train()
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            if compile:
                model.compile_static_parts()
            models[key] = model
        return models[key]

    def ours_step(model, images, bf16=False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images, targets)
        total_loss(crit(out, targets)).backward()

    def hf_step(bf16=False):
        if "hf" not in models:
            models["hf"] = hf_rtdetr("rtdetr_r18vd", 80).train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = models["hf"](pixel_values=x, labels=hf_labels).loss
        loss.backward()

    steps_of = {
        "ours": lambda: ours_step(ours("ours"), x),
        "ours_cl": lambda: ours_step(ours("cl", channels_last=True), x_cl),
        "ours_cl_compile": lambda: ours_step(ours("compiled", channels_last=True, compile=True), x_cl),
        "ours_bf16": lambda: ours_step(ours("cl", channels_last=True), x_cl, bf16=True),
        "hf_bf16": lambda: hf_step(bf16=True),
        "hf": lambda: hf_step(),
    }
    variants = {key: steps_of[key] for key in ([only] if only is not None else THROUGHPUT_VARIANTS)}
    times: dict[str, list[float]] = {key: [] for key in variants}
    for fn in variants.values():
        fn()  # warm-up (and compilation)
    for _ in range(steps):
        for key, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    rows = []
    for key, ts in times.items():
        median = sorted(ts)[len(ts) // 2]
        rows.append({"key": key, "impl": THROUGHPUT_VARIANTS[key], "median_s": median, "img_s": batch / median})
    return rows


def throughput_table(steps: int, *, isolated: bool = False) -> str:
    """Run :func:`throughput` once per allocator setting, each in a child process; a markdown table.

    ``isolated``: every variant in a process of its own instead (no shared heap
    between implementations; the machine's slow phases then fall on one of them).
    """
    import json
    import os
    import subprocess
    import sys

    def child(env: dict[str, str], only: str | None) -> list[dict]:
        cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--child", "--steps", str(steps)]
        proc = subprocess.run(
            cmd + (["--only", only] if only else []), env={**os.environ, **env}, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"throughput child ({env}, {only}) failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    results = {}
    for label, env in ALLOCATORS.items():
        results[label] = [r for key in THROUGHPUT_VARIANTS for r in child(env, key)] if isolated else child(env, None)
    mode = "each variant in its own process" if isolated else "variants interleaved in one process"
    lines = [
        f"training throughput, R18 @640, batch 4, fwd+bwd+loss, {torch.get_num_threads()} threads, median of {steps}, {mode}",
        "| allocator | implementation | median step (s) | images/s | vs transformers fp32, same allocator | vs transformers fp32, glibc defaults |",
        "|---|---|---:|---:|---:|---:|",
    ]
    default_hf = results["glibc defaults"][-1]["img_s"]
    for label, rows in results.items():
        base = rows[-1]["img_s"]
        for r in rows:
            lines.append(
                f"| {label} | {r['impl']} | {r['median_s']:.2f} | {r['img_s']:.2f} | "
                f"{r['img_s'] / base:.2f}x | {r['img_s'] / default_hf:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    p.add_argument("--isolated", action="store_true", help="each variant in its own process")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", default=None, choices=list(THROUGHPUT_VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_flush_denormal(True)
    if args.child:  # one allocator setting, see throughput_table
        import json

        print(json.dumps(throughput(steps=args.steps, only=args.only)))
        return
    print(f"CPU: {cpu_description()}")
    print(throughput_table(args.steps, isolated=args.isolated))


if __name__ == "__main__":
    main()
