"""From scratch for fixed wall-clock budgets: AP-vs-time curves of ours and YOLOv8n, same data, threads, evaluator.

    python benchmarks/train_synthetic.py --budgets 5,10,20 --compare yolo --data runs/bench/shapes
    python benchmarks/train_synthetic.py --budgets 5,10 --compare yolo --synth b --data runs/bench/shapes_b
    python benchmarks/train_synthetic.py --budgets 5 --set num_denoising=0            # an ablation of ours only
    python benchmarks/train_synthetic.py --budgets 5 --compare yolo --latency --json results.json
    python benchmarks/train_synthetic.py --steps 400 --threads 1 --variants "num_layers=2;num_layers=2 lr=1e-3"

Protocol (each run in a fresh process, budgets interleaved ours / YOLO so a slow phase of
the machine hits both):

* ours: exactly ``rtdetr train --recipe scratch --data DIR --imgsz S --max-time B`` (``--max-time``
  counts the command's set-up), then scored as ``rtdetr val`` scores it.
* YOLOv8n: ``YOLO("yolov8n.yaml").train(data, time=B, imgsz=S)`` with Ultralytics' own
  defaults (batch 16, SGD/auto optimizer, mosaic and its other augmentation, in-process
  loading on a CPU, which Ultralytics forces). Changed, and printed with the table: the
  torch thread count is set to ours (Ultralytics sets cores - 1 on a CPU: 1 thread on a
  2-core machine); ``val=False`` (its per-epoch validation would spend the budget; ours
  also evaluates once, at the end); ``plots=False`` (no font download offline).
* both: the same COCO evaluator (``rtdetr.eval.CocoEvaluator``, faster-coco-eval) on the
  same validation images; YOLO predicts at conf 0.001 (its validation default).

``--data DIR`` is any COCO folder (``annotations/instances_{train,val}.json``, ``train/``,
``val/``); when it does not exist it is generated: ``--synth a`` (default) the project's
shapes, 3 classes, 320 px, up to 8 objects of 12 px .. half the image; ``--synth b`` another
set: 5 classes, 256 px images, up to 14 smaller objects (6 px .. 30%).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rtdetr.runtime import cpu_description

LATENCY_ROUNDS = 3  # passes over the latency images; each contender runs once per image per pass
SYNTH_SETS = {
    "a": dict(num_train=2000, num_val=200, imgsz=320, num_classes=3),
    "b": dict(num_train=2000, num_val=200, imgsz=256, num_classes=5, max_objects=14, object_size=(6.0, 0.3)),
}


def ensure_data(root: Path, synth: str) -> Path:
    if not (root / "annotations" / "instances_val.json").exists():
        from rtdetr.data import generate_synthetic_dataset

        generate_synthetic_dataset(root, seed=0, **SYNTH_SETS[synth])
    return root


def _run(cmd: list[str], threads: int, log: Path) -> tuple[float, float]:
    """Run ``cmd`` with ``threads`` compute threads, output to ``log``; its (wall, CPU) seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed (exit {proc.returncode}); see {log}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


# ------------------------------------------------------------------------------------- ours


def run_ours(
    data: Path, out: Path, budget_s: float | None, args: argparse.Namespace, sets: list[str], steps: int | None = None
) -> dict:
    """``rtdetr train --recipe scratch`` for ``budget_s`` (or ``steps`` optimizer steps) in a fresh
    process, then ``rtdetr val``'s metrics."""
    from rtdetr.loader import load_model
    from rtdetr.train.launch import validate

    cmd = [sys.executable, "-m", "rtdetr.cli", "train", "--recipe", args.recipe, "--data", str(data)]
    cmd += ["--imgsz", str(args.imgsz), "--out", str(out), "--exist-ok"]
    # A fixed step count is contention-proof (AP after N steps does not depend on the machine's load).
    if steps is None:
        cmd += ["--max-time", str(budget_s)]
    else:  # more steps than one pass over the data: that many epochs, each cut to an equal share
        epochs = -(-steps // _steps_per_epoch(data, sets, args.recipe))
        cmd += ["--epochs", str(epochs), "--set", f"max_steps_per_epoch={-(-steps // epochs)}"]
    cmd += ["--model", args.model] if args.model else []
    for item in sets:
        cmd += ["--set", item]
    wall, cpu = _run(cmd, args.threads, out.parent / f"{out.name}.log")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    model = load_model(str(out / "last.pt"))
    metrics, _ = validate(model, data, imgsz=args.imgsz, device="cpu", progress=False)
    seen = sum(r["images"] for r in records)
    img_s = seen / sum(r["train_s"] for r in records)
    return {
        "model": f"ours {model.config.name}" + (f" ({', '.join(sets)})" if sets else ""),
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "train_img_s": img_s,
        "images_seen": seen,
        "epochs": records[-1]["epoch"],
        "command_wall_s": wall,
        "command_cpu_s": cpu,
        "checkpoint": str(out / "last.pt"),
    }


def _steps_per_epoch(data: Path, sets: list[str], recipe: str) -> int:
    """Optimizer steps in one pass over ``data``'s training split, as the Trainer counts them: the
    recipe's batch size (or ``batch_size=`` among ``sets``), the last, short batch dropped."""
    from rtdetr.config import parse_overrides
    from rtdetr.data import build_dataset, resolve_dataset
    from rtdetr.train.recipes import get_recipe
    from rtdetr.train.train_config import TrainConfig

    batch = int(get_recipe(recipe).train.get("batch_size", TrainConfig.batch_size))
    batch = int(parse_overrides(sets).get("batch_size", batch))
    return max(1, len(build_dataset(resolve_dataset(data), "train")) // batch)


def ablate(data: Path, out: Path, args: argparse.Namespace) -> None:
    """Each ``--variants`` entry trained for ``--steps`` optimizer steps: AP and CPU seconds per step."""
    rows = []
    for spec in args.variants.split(";"):
        sets = spec.split()
        tag = "_".join(x.replace("=", "-") for x in sets) or "recipe"
        row = run_ours(data, out / f"steps{args.steps}_{tag}", None, args, sets, steps=args.steps)
        rows.append({"variant": spec.strip() or "(the recipe)", **row})
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"{args.steps} optimizer steps each on {data} ({args.imgsz} px), {args.threads} threads, CPU {cpu_description()}"
    )
    print("| variant | AP | AP50 | CPU s per step |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['command_cpu_s'] / args.steps:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "steps": args.steps, "rows": rows}, indent=1))


# ------------------------------------------------------------------------------------- YOLO


def export_yolo_layout(data: Path, dest: Path) -> Path:
    """The COCO folder as an Ultralytics dataset (symlinked images, txt labels); the data.yaml path."""
    from rtdetr.data import build_dataset, resolve_dataset

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
            lines = [
                f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                for (x1, y1, x2, y2), c in zip(target["boxes"].tolist(), target["labels"].tolist())
            ]
            (dest / "labels" / split / (src.stem + ".txt")).write_text("\n".join(lines))
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(spec.class_names))
    yaml_path = dest / "data.yaml"
    yaml_path.write_text(f"path: {dest.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml_path


def run_yolo(data: Path, out: Path, budget_s: float, args: argparse.Namespace) -> dict:
    yaml_path = export_yolo_layout(data, data.parent / f"{data.name}_yolo")
    result = out.parent / f"{out.name}.json"
    cmd = [sys.executable, __file__, "--yolo-child", "--data", str(data), "--yolo-data", str(yaml_path)]
    cmd += ["--imgsz", str(args.imgsz), "--threads", str(args.threads), "--budget-s", str(budget_s)]
    cmd += ["--out", str(out), "--result", str(result)]
    wall, cpu = _run(cmd, args.threads, out.parent / f"{out.name}.log")
    return {**json.loads(result.read_text()), "command_wall_s": wall, "command_cpu_s": cpu}


def yolo_child(args: argparse.Namespace) -> None:
    """Train YOLOv8n from its yaml with its defaults (threads, val and plots aside), then score it."""
    from ultralytics import YOLO

    from rtdetr.data import build_dataset, resolve_dataset
    from rtdetr.train.launch import make_evaluator_for

    counts = {"images": 0, "t_start": None, "t_end": None}

    def same_threads(trainer) -> None:  # Ultralytics set cores - 1 when it chose the device
        torch.set_num_threads(args.threads)
        counts["t_start"] = time.perf_counter()

    def count(trainer) -> None:
        counts["images"] += trainer.batch_size  # a short last batch of an epoch counts in full
        counts["t_end"] = time.perf_counter()

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_start", same_threads)
    model.add_callback("on_train_batch_end", count)
    out = Path(args.out)
    model.train(
        data=args.yolo_data, time=args.budget_s / 3600, imgsz=args.imgsz, device="cpu", pretrained=False,
        val=False, plots=False, project=str(out.parent), name=out.name, exist_ok=True, verbose=False,
    )  # fmt: skip
    trainer = model.trainer
    weights = Path(trainer.last)
    predictor = YOLO(str(weights))
    val = build_dataset(resolve_dataset(args.data), "val")
    evaluator = make_evaluator_for(val)
    for i in range(len(val)):
        r = predictor.predict(str(val.image_path(i)), imgsz=args.imgsz, conf=0.001, device="cpu", verbose=False)[0]
        if i == 0:
            torch.set_num_threads(args.threads)  # predict chose the device (and threads) again
        labels = torch.tensor([val.category_ids[int(c)] for c in r.boxes.cls], dtype=torch.int64)
        evaluator.update(
            [{"image_id": int(val.image_ids[i]), "boxes": r.boxes.xyxy, "scores": r.boxes.conf, "labels": labels}]
        )
    m = evaluator.compute()
    train_s = (counts["t_end"] or 0) - (counts["t_start"] or 0)
    n_train = len(build_dataset(resolve_dataset(args.data), "train"))
    Path(args.result).write_text(
        json.dumps(
            {
                "model": "YOLOv8n (ultralytics)",
                "AP": m["AP"],
                "AP50": m["AP50"],
                "train_img_s": counts["images"] / train_s if train_s > 0 else float("nan"),
                "images_seen": counts["images"],
                "epochs": counts["images"] / n_train,
                "checkpoint": str(weights),
                "batch": trainer.batch_size,
                "threads": torch.get_num_threads(),
            }
        )
    )


# ---------------------------------------------------------------------------------- latency


def latency_child(args: argparse.Namespace) -> None:
    """Batch-1 end-to-end latency on the validation images: file -> detections (decode/NMS included).

    Every contender is loaded in this one process and they take turns on each image (the
    order rotating from image to image), over ``LATENCY_ROUNDS`` passes: this machine's
    speed drifts by tens of percent within minutes, and measured one after the other the
    same model came out 29 ms in one run and 41 ms in the next.
    """
    from rtdetr import Detector
    from rtdetr.data import build_dataset, resolve_dataset

    paths = [str(build_dataset(resolve_dataset(args.data), "val").image_path(i)) for i in range(args.latency_images)]
    contenders: dict[str, Callable[[str], object]] = {}
    if args.yolo_checkpoint:
        from ultralytics import YOLO

        yolo = YOLO(args.yolo_checkpoint)
        yolo.predict(paths[0], imgsz=args.imgsz, conf=0.001, device="cpu", verbose=False)  # its setup: threads
        contenders["YOLOv8n: predict(file), conf 0.001, NMS included"] = lambda path: yolo.predict(
            path, imgsz=args.imgsz, conf=0.001, device="cpu", verbose=False
        )
    torch.set_num_threads(args.threads)
    # Detector's defaults (traced graphs on a CPU) in fp32 and "auto", and fp32 eager for scale
    for precision, graph in (("fp32", "auto"), ("auto", "auto"), ("fp32", "eager")):
        det = Detector.from_pretrained(
            args.checkpoint, imgsz=args.imgsz, device="cpu", precision=precision, graph=graph
        )
        det.warmup()  # what a latency-minded user does: the CPU graph is traced now
        what = f"{precision}{', eager' if graph == 'eager' else ''}"
        contenders[f"ours: Detector.predict(file), {what}, conf 0.001, decode included"] = lambda path, det=det: (
            det.predict(path, conf=0.001)
        )
    runs = list(contenders.items())
    for path in paths[:5]:
        for _, run in runs:
            run(path)
    times: dict[str, list[float]] = {label: [] for label in contenders}
    for _ in range(LATENCY_ROUNDS):
        for i, path in enumerate(paths):
            for label, run in runs[i % len(runs) :] + runs[: i % len(runs)]:
                t = time.perf_counter()
                run(path)
                times[label].append((time.perf_counter() - t) * 1e3)
    rows = []
    for label, ts in times.items():
        ts.sort()
        rows.append(
            {
                "what": label,
                "median_ms": ts[len(ts) // 2],
                "p10_ms": ts[len(ts) // 10],
                "p90_ms": ts[9 * len(ts) // 10],
                "images": len(paths),
                "runs": len(ts),
                "threads": args.threads,
            }
        )
    Path(args.result).write_text(json.dumps(rows))


def run_latency(ours: str, yolo: str | None, data: Path, out: Path, args: argparse.Namespace) -> list[dict]:
    """Latency of our checkpoint (fp32 and "auto" as Detector runs them, fp32 eager) and, given one, a
    YOLO checkpoint, all interleaved in one child process (:func:`latency_child`)."""
    result = out / "latency.json"
    cmd = [sys.executable, __file__, "--latency-child", "--checkpoint", ours, "--data", str(data)]
    cmd += ["--imgsz", str(args.imgsz), "--threads", str(args.threads), "--result", str(result)]
    cmd += ["--latency-images", str(args.latency_images)] + (["--yolo-checkpoint", yolo] if yolo else [])
    _run(cmd, args.threads, out / "latency.log")  # (wall, cpu) unused
    return json.loads(result.read_text())


# ------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="5,10,20", help="comma list of training budgets in minutes")
    p.add_argument("--compare", default="", help="'yolo' to train YOLOv8n on each budget too")
    p.add_argument("--data", default="runs/bench/shapes", help="COCO folder (generated when missing, see --synth)")
    p.add_argument("--synth", choices=sorted(SYNTH_SETS), default="a", help="what to generate when --data is missing")
    p.add_argument("--model", default=None, help="our preset (default: the recipe's)")
    p.add_argument("--recipe", default="scratch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to rtdetr train --set")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--steps", type=int, default=None, help="ablation: train each --variants entry this many steps")
    p.add_argument(
        "--variants", default="", help="ablation: ';'-separated entries of space-separated KEY=VALUE (--set) items"
    )
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="compute threads for every model")
    p.add_argument("--out", default=None, help="run folders (default: next to --data)")
    p.add_argument("--latency", action="store_true", help="also batch-1 end-to-end latency of the last runs")
    p.add_argument("--latency-images", type=int, default=60)
    p.add_argument("--json", default=None, help="write every number here")
    p.add_argument(
        "--latency-of",
        default=None,
        metavar="OURS.pt[,YOLO.pt]",
        help="no training: only the interleaved latency of these checkpoints",
    )
    for hidden in ("--yolo-child", "--yolo-data", "--budget-s", "--result", "--latency-child", "--checkpoint"):
        p.add_argument(
            hidden,
            default=None,
            help=argparse.SUPPRESS,
            **({"action": "store_true"} if hidden in ("--yolo-child", "--latency-child") else {}),
        )
    p.add_argument("--yolo-checkpoint", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_flush_denormal(True)
    if args.yolo_child:
        args.budget_s = float(args.budget_s)
        return yolo_child(args)
    if args.latency_child:
        return latency_child(args)

    data = ensure_data(Path(args.data), args.synth)
    out = Path(args.out) if args.out else data.parent / f"{data.name}_runs"
    out.mkdir(parents=True, exist_ok=True)
    if args.steps:
        return ablate(data, out, args)
    if args.latency_of:
        ours, _, yolo = args.latency_of.partition(",")
        for lat in run_latency(ours, yolo or None, data, out, args):
            print(json.dumps(lat))
        return None
    budgets = [float(b) for b in args.budgets.split(",") if b]
    tag = "_".join(s.replace("=", "-") for s in args.set) or "default"
    runs = []
    for minutes in budgets:
        row = run_ours(data, out / f"ours_{tag}_{minutes:g}min", minutes * 60, args, args.set)
        runs.append({"budget_min": minutes, **row})
        print(json.dumps(runs[-1]), flush=True)
        if "yolo" in args.compare:
            row = run_yolo(data, out / f"yolo_{minutes:g}min", minutes * 60, args)
            runs.append({"budget_min": minutes, **row})
            print(json.dumps(runs[-1]), flush=True)
    latency = []
    if args.latency:
        ours = [r for r in runs if r["model"].startswith("ours")][-1]["checkpoint"]
        yolos = [r["checkpoint"] for r in runs if r["model"].startswith("YOLO")]
        latency = run_latency(ours, yolos[-1] if yolos else None, data, out, args)
    header = (
        f"from scratch on {data} ({args.imgsz} px), {args.threads} threads, CPU {cpu_description()}, "
        f"torch {torch.__version__}; YOLOv8n at Ultralytics defaults except threads = ours, val=False, plots=False"
    )
    print(header)
    print("| budget (min) | model | AP | AP50 | train images/s | images seen | epochs |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in runs:
        seen = f"{r['images_seen']:.0f}" if r.get("images_seen") else "-"
        print(
            f"| {r['budget_min']:g} | {r['model']} | {r['AP']:.3f} | {r['AP50']:.3f} | "
            f"{r['train_img_s']:.1f} | {seen} | {r['epochs']:.1f} |"
        )
    for lat in latency:
        print(
            f"latency: {lat['what']}: {lat['median_ms']:.1f} ms median (p10 {lat['p10_ms']:.1f}, "
            f"p90 {lat['p90_ms']:.1f}) of {lat['runs']} runs on {lat['images']} images, interleaved"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"header": header, "cpu": cpu_description(), "runs": runs, "latency": latency}, indent=1)
        )


if __name__ == "__main__":
    main()
