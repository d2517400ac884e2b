"""Tracking quality and tracker cost on synthetic moving-shape videos.

Stages (all by default; ``--stage`` picks one):

1. ``train``: render training clips (seeds 1000+) as a COCO dataset and train a small
   detector from scratch for ``--train-minutes`` (``rtdetr train --recipe scratch``'s settings).
2. ``eval``: render ``--clips`` evaluation clips (seeds 0..), run the trained detector on
   every frame and a tracker on its detections, and score with ``motmetrics`` (MOTA, IDF1,
   ID switches); also a row with ground-truth boxes jittered by ``--jitter`` px (5% dropped)
   as detections, which isolates the tracker from the detector's errors.

Prints a markdown table: detections source, tracker, MOTA, IDF1, ID switches, detector ms
per frame, tracker ms per frame (``update`` only, our adapter included) and their ratio.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/track_synthetic.py --out runs/track_bench
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from rtdetr.infer.results import Detections
from rtdetr.track.adapter import make_tracker
from rtdetr.track.metrics import mot_scores
from rtdetr.track.synthetic import Clip, make_clip, write_frames_dataset

log = logging.getLogger("track_synthetic")


def train(args: argparse.Namespace) -> Path:
    from rtdetr.train.launch import train_for_budget
    from rtdetr.train.recipes import get_recipe
    from rtdetr.train.train_config import TrainConfig

    data = Path(args.out) / "data"
    if not (data / "annotations" / "instances_val.json").exists():
        kw = dict(size=args.imgsz, frames=90, num_classes=args.classes, objects=6, crossings=1, radius=args.radius)
        write_frames_dataset([make_clip(seed=1000 + i, **kw) for i in range(args.train_clips)], data, "train", every=4)
        write_frames_dataset([make_clip(seed=5000 + i, **kw) for i in range(3)], data, "val", every=15)
    recipe = get_recipe("scratch")  # what `rtdetr train --recipe scratch --max-time` runs
    cfg = TrainConfig(
        imgsz=args.imgsz,
        device="cpu",
        out_dir=str(Path(args.out) / "train"),
        max_time_s=args.train_minutes * 60,
        **recipe.train,
    )
    overrides = recipe.model_overrides_for(args.model)
    trainer = train_for_budget(args.model, data, cfg, model_overrides=overrides, exist_ok=True)
    log.info(
        "detector: %s, AP50 on held-out frames %.3f", trainer.out_dir / "last.pt", trainer.last_metrics.get("AP50", -1)
    )
    return trainer.out_dir / "last.pt"


def _jittered(clip: Clip, t: int, rng: np.random.Generator, jitter: float) -> Detections:
    rows = [b for b in clip.gt if b[0] == t and rng.random() > 0.05]
    boxes = torch.tensor([b[3:] for b in rows], dtype=torch.float32).reshape(-1, 4)
    boxes += torch.from_numpy(rng.normal(0, jitter, size=boxes.shape).astype(np.float32))
    return Detections(
        boxes=boxes,
        scores=torch.full((len(rows),), 0.9),
        labels=torch.tensor([b[2] for b in rows], dtype=torch.int64),
        image_size=(clip.frames.shape[2], clip.frames.shape[1]),
        class_names=clip.class_names,
    )


def _thresholds(name: str, activation: float | None) -> dict[str, float]:
    """The library's score thresholds (tuned for YOLOX's scores) set to ``activation`` for our detector's scale."""
    if activation is None:
        return {}
    keys = {
        "bytetrack": ("track_activation_threshold", "high_conf_det_threshold"),
        "sort": ("track_activation_threshold",),
        "ocsort": ("high_conf_det_threshold",),
    }[name]
    return dict.fromkeys(keys, activation)


def evaluate(args: argparse.Namespace, checkpoint: Path | None) -> None:
    from rtdetr.infer import Detector

    kw = dict(size=args.imgsz, frames=args.frames, num_classes=args.classes, objects=6, crossings=2, radius=args.radius)
    clips = [make_clip(seed=i, **kw) for i in range(args.clips)]
    sources = [("gt + jitter", None)]
    if checkpoint is not None:
        det = Detector.from_pretrained(str(checkpoint), precision=args.precision, imgsz=args.imgsz)
        det.warmup()
        sources.insert(0, (f"trained {args.model}", det))
    print(
        f"{args.clips} clips x {args.frames} frames, {args.imgsz}x{args.imgsz}, {args.classes} classes; "
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"conf {args.conf}; tracker score thresholds: {args.activation or 'the library defaults'}; lost {args.lost_seconds} s"
    )
    print(
        "| detections | tracker | MOTA | IDF1 | ID switches | detector ms/frame | tracker ms/frame | tracker/detector |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, detector in sources:
        # Detections once per clip, then each tracker on the same detections.
        per_clip, det_ms = [], []
        for c, clip in enumerate(clips):
            rng = np.random.default_rng(c)
            dets = []
            for t, frame in enumerate(clip.frames):
                if detector is None:
                    dets.append(_jittered(clip, t, rng, args.jitter))
                    continue
                t0 = time.perf_counter()
                (d,) = detector.predict_images([torch.from_numpy(frame).permute(2, 0, 1)], conf=args.conf)
                det_ms.append((time.perf_counter() - t0) * 1e3)
                dets.append(d)
            per_clip.append(dets)
        for tracker_name in args.trackers:
            hyps, track_ms = [], []
            for clip, dets in zip(clips, per_clip):
                tracker = make_tracker(
                    tracker_name,
                    fps=clip.fps,
                    lost_seconds=args.lost_seconds,
                    **_thresholds(tracker_name, args.activation),
                )
                rows = []
                for t, d in enumerate(dets):
                    t0 = time.perf_counter()
                    tracked = tracker.update(d)
                    track_ms.append((time.perf_counter() - t0) * 1e3)
                    rows += [(t, int(i), *b) for i, b in zip(tracked.track_ids.tolist(), tracked.boxes.tolist())]
                hyps.append(rows)
            scores = mot_scores([c.gt for c in clips], hyps)
            d_ms = float(np.median(det_ms)) if det_ms else float("nan")
            k_ms = float(np.median(track_ms))
            ratio = f"{100 * k_ms / d_ms:.1f}%" if det_ms else "-"
            d_txt = f"{d_ms:.1f}" if det_ms else "-"
            print(
                f"| {name} | {tracker_name} | {scores['mota']:.3f} | {scores['idf1']:.3f} | {scores['num_switches']} "
                f"| {d_txt} | {k_ms:.2f} | {ratio} |"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/track_bench")
    p.add_argument("--stage", choices=["all", "train", "eval"], default="all")
    p.add_argument("--model", default="rtdetrv2_hgnetv2_n")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--radius", type=float, nargs=2, default=(0.045, 0.09), help="object radii, fractions of imgsz")
    p.add_argument("--train-clips", type=int, default=30)
    p.add_argument("--train-minutes", type=float, default=6.0)
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--conf", type=float, default=0.3)
    p.add_argument("--jitter", type=float, default=1.5, help="std in px of the ground-truth row's box noise")
    p.add_argument("--lost-seconds", type=float, default=1.0)
    p.add_argument(
        "--activation",
        type=float,
        default=None,
        help="score that starts a track / counts as high (default: the library's, 0.6-0.7 for ByteTrack)",
    )
    p.add_argument("--precision", default="fp32")
    p.add_argument("--trackers", nargs="+", default=["bytetrack", "sort", "ocsort"])
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_flush_denormal(True)
    checkpoint = Path(args.out) / "train" / "last.pt"
    if args.stage in ("all", "train"):
        checkpoint = train(args)
    if args.stage in ("all", "eval"):
        evaluate(args, checkpoint if checkpoint.is_file() else None)


if __name__ == "__main__":
    main()
