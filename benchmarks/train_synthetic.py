"""Train from scratch on the synthetic set for a fixed wall-clock budget; print AP/AP50 and images/s.

    python benchmarks/train_synthetic.py --budget-min 15                 # ours only
    python benchmarks/train_synthetic.py --budget-min 10 --compare hf,yolo
    python benchmarks/train_synthetic.py --throughput                    # fwd+bwd+loss img/s vs transformers
    python benchmarks/train_synthetic.py --throughput --isolated         # ... each variant in its own process

Comparisons are benchmark-only dependencies: transformers (``RTDetrForObjectDetection``
with our R18 configuration, random init) and ultralytics (YOLOv8n from its yaml, no
pretrained weights). Every model is scored by the same COCO evaluator on the same
validation images. Timings are wall clock on this machine with the default thread count.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from hf_reference import hf_rtdetr  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from torch.utils.data import DataLoader

import rtdetr
from rtdetr.data import (
    BatchCollator,
    build_dataset,
    build_transforms,
    default_num_workers,
    generate_synthetic_dataset,
    resolve_dataset,
)
from rtdetr.demo import DEMO_SETTINGS
from rtdetr.infer.torch_backend import KEEP_FREED_MEMORY_ENV
from rtdetr.nn.postprocess import PostProcessor
from rtdetr.train.launch import build_trainer, epochs_for_budget, make_evaluator_for
from rtdetr.train.train_config import TrainConfig

# The demo's from-scratch CPU settings, with the warmups the recorded runs used.
FROM_SCRATCH = {**DEMO_SETTINGS, "warmup_iters": 50, "ema_warmup": 50, "progress": False}


def ensure_data(root: Path, imgsz: int, num_train: int, num_val: int) -> Path:
    if not (root / "annotations" / "instances_val.json").exists():
        generate_synthetic_dataset(root, num_train=num_train, num_val=num_val, imgsz=imgsz, seed=0)
    return root


def train_ours(
    data: Path, model: str, imgsz: int, budget_s: float, out: Path, overrides: dict, *, amp: bool = False
) -> dict:
    cfg = TrainConfig(epochs=1, imgsz=imgsz, out_dir=str(out), max_time_s=budget_s, amp=amp, **FROM_SCRATCH)
    # The epoch count only shapes the cosine schedule (the budget ends the run): sized
    # from the speed of a few probe steps, which do not count against the budget.
    cfg = replace(cfg, epochs=max(2, epochs_for_budget(model, data, cfg, budget_s, model_overrides=overrides)))
    trainer = build_trainer(model, data, cfg, model_overrides=overrides)
    trainer.fit()
    m = trainer.last_metrics or trainer.evaluate()
    rates = [h["images_per_s"] for h in trainer.history]  # training only, evaluation excluded
    return {
        "model": f"rtdetr {model}",
        "AP": m["AP"],
        "AP50": m["AP50"],
        "train_img_s": sum(rates) / len(rates),
        "epochs": trainer.epoch,
        "checkpoint": str(trainer.out_dir / "last.pt"),
    }


def _loaders(data: Path, imgsz: int, batch: int):
    spec = resolve_dataset(data)
    # The same pipeline as ours (strong augmentation off from ``stop_epoch``), loaded the same way.
    train = build_dataset(
        spec, "train", transforms=build_transforms(True, imgsz, stop_epoch=FROM_SCRATCH["stop_epoch"])
    )
    val = build_dataset(spec, "val", transforms=build_transforms(False, imgsz))
    workers = default_num_workers("cpu")
    tl = DataLoader(
        train, batch_size=batch, shuffle=True, collate_fn=BatchCollator(), num_workers=workers, drop_last=True
    )
    vl = DataLoader(val, batch_size=batch, collate_fn=BatchCollator(), num_workers=workers)
    return train, val, tl, vl


def train_hf(data: Path, imgsz: int, budget_s: float) -> dict:
    train, val, tl, vl = _loaders(data, imgsz, FROM_SCRATCH["batch_size"])
    model = hf_rtdetr("rtdetr_r18vd", train.num_classes).train()
    opt = torch.optim.AdamW(model.parameters(), lr=FROM_SCRATCH["lr"], weight_decay=1e-4)
    t0, seen = time.perf_counter(), 0
    while time.perf_counter() - t0 < budget_s:
        for images, targets in tl:
            labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
            loss = model(pixel_values=images, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            opt.step()
            seen += images.shape[0]
            if time.perf_counter() - t0 > budget_s:
                break
    elapsed = time.perf_counter() - t0
    m = _evaluate(lambda x: _hf_outputs(model, x), val, vl)
    return {
        "model": "transformers RTDetr R18",
        "AP": m["AP"],
        "AP50": m["AP50"],
        "train_img_s": seen / elapsed,
        "epochs": seen / len(train),
    }


def _hf_outputs(model, x):
    out = model(pixel_values=x)
    return {"pred_logits": out.logits, "pred_boxes": out.pred_boxes}


@torch.no_grad()
def _evaluate(forward, val, loader) -> dict:
    evaluator = make_evaluator_for(val)
    post = PostProcessor(val.num_classes, num_top_queries=100, category_ids=val.category_ids)
    for images, targets in loader:
        outputs = forward(images)
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, r in zip(targets, post(outputs, sizes)):
            evaluator.update([{"image_id": int(t["image_id"]), **r}])
    return evaluator.compute()


def train_yolo(data: Path, imgsz: int, budget_s: float, out: Path, *, device: str = "cpu") -> dict:
    from ultralytics import YOLO

    yaml_path = _export_yolo_layout(data, out / "yolo_data")
    model = YOLO("yolov8n.yaml")
    t0 = time.perf_counter()
    model.train(
        data=str(yaml_path),
        epochs=1000,
        time=budget_s / 3600,
        imgsz=imgsz,
        device=device,
        workers=2,
        batch=FROM_SCRATCH["batch_size"],
        pretrained=False,
        amp=False,
        plots=False,
        val=False,
        project=str(out),
        name="yolo",
        exist_ok=True,
        verbose=False,
    )
    elapsed = time.perf_counter() - t0
    val = build_dataset(resolve_dataset(data), "val")
    evaluator = make_evaluator_for(val)
    for i in range(len(val)):
        r = model.predict(str(val.image_path(i)), imgsz=imgsz, conf=0.001, device=device, verbose=False)[0]
        evaluator.update(
            [
                {
                    "image_id": int(val.image_ids[i]),
                    "boxes": r.boxes.xyxy,
                    "scores": r.boxes.conf,
                    "labels": torch.tensor([val.category_ids[int(c)] for c in r.boxes.cls], dtype=torch.int64),
                }
            ]
        )
    m = evaluator.compute()
    return {
        "model": "ultralytics YOLOv8n",
        "AP": m["AP"],
        "AP50": m["AP50"],
        "train_img_s": float("nan"),
        "epochs": float("nan"),
        "wall_s": elapsed,
    }


def _export_yolo_layout(data: Path, dest: Path) -> Path:
    """Write the synthetic COCO set as an Ultralytics YOLO dataset (symlinked images, txt labels)."""
    spec = resolve_dataset(data)
    for split in ("train", "val"):
        ds = build_dataset(spec, split)
        (dest / "images" / split).mkdir(parents=True, exist_ok=True)
        (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(len(ds)):
            src = Path(ds.image_path(i))
            link = dest / "images" / split / src.name
            if not link.exists():
                link.symlink_to(src.resolve())
            _, target = ds[i]
            w, h = (int(v) for v in target["orig_size"])
            lines = []
            for (x1, y1, x2, y2), c in zip(target["boxes"].tolist(), target["labels"].tolist()):
                lines.append(
                    f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                )
            (dest / "labels" / split / (src.stem + ".txt")).write_text("\n".join(lines))
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(spec.class_names))
    yaml_path = dest / "data.yaml"
    yaml_path.write_text(f"path: {dest.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml_path


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
        cmd = [sys.executable, __file__, "--throughput-child", "--steps", str(steps)]
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
    p.add_argument("--budget-min", type=float, default=15.0)
    p.add_argument("--model", default="rtdetr_r18vd")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--data", default="runs/bench/data")
    p.add_argument("--train-images", type=int, default=800)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--num-queries", type=int, default=100)
    p.add_argument("--compare", default="", help="comma list: hf,yolo")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for our model")
    p.add_argument("--lr", type=float, default=None, help="override the from-scratch lr (all parameters)")
    p.add_argument("--batch-size", type=int, default=None, help="override the from-scratch batch size (all models)")
    p.add_argument("--throughput", action="store_true", help="only the R18 @640 batch-4 training throughput table")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (--throughput)")
    p.add_argument("--isolated", action="store_true", help="--throughput: each variant in its own process")
    p.add_argument("--throughput-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", default=None, choices=list(THROUGHPUT_VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_flush_denormal(True)

    if args.throughput_child:  # one allocator setting, see throughput_table
        import json

        print(json.dumps(throughput(steps=args.steps, only=args.only)))
        return
    if args.throughput:
        print(throughput_table(args.steps, isolated=args.isolated))
        return

    if args.lr:
        FROM_SCRATCH.update(lr=args.lr, backbone_lr=args.lr)
    if args.batch_size:
        FROM_SCRATCH.update(batch_size=args.batch_size)
    data = ensure_data(Path(args.data), args.imgsz, args.train_images, args.val_images)
    budget = args.budget_min * 60
    results = []
    if not args.skip_ours:
        results.append(
            train_ours(
                data,
                args.model,
                args.imgsz,
                budget,
                Path(args.data).parent / "ours",
                {"num_queries": args.num_queries},
                amp=args.amp,
            )
        )
        print(results[-1], flush=True)
    runners = {
        "hf": lambda: train_hf(data, args.imgsz, budget),
        "yolo": lambda: train_yolo(data, args.imgsz, budget, Path(args.data).parent),
    }
    for name in filter(None, args.compare.split(",")):
        try:
            results.append(runners[name]())
        except Exception as e:  # one failed comparison must not lose the others' numbers
            logging.exception("%s comparison failed", name)
            nan = float("nan")
            results.append(
                {
                    "model": f"{name} (failed: {type(e).__name__})",
                    "AP": nan,
                    "AP50": nan,
                    "train_img_s": nan,
                    "epochs": nan,
                }
            )
        print(results[-1], flush=True)
    print(
        f"from scratch on the synthetic set: {args.train_images} train / {args.val_images} val images, "
        f"{args.imgsz} px, {args.budget_min:g} min budget, {torch.get_num_threads()} threads, "
        f"lr {FROM_SCRATCH['lr']}, batch {FROM_SCRATCH['batch_size']}, amp {args.amp}"
    )
    print("| model | AP | AP50 | train images/s | epochs |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['train_img_s']:.1f} | {r['epochs']:.1f} |")


if __name__ == "__main__":
    main()
