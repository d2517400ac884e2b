"""``rtdetr predict``: images, folders, globs and videos to annotated files and a COCO-results JSON."""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

from ..argtypes import image_size, non_negative_int, positive_int, probability
from ..cli_options import EAGER_HELP, TRUSTED_HELP, detector_from_args, resolve_device
from ..errors import UserError
from ..runtime import PRECISION_HELP, PRECISIONS
from .defaults import DEFAULT_CONF

__all__ = ["add_predict_parser", "add_benchmark_parser"]


def _precision(detector) -> str:
    """What ``--precision auto`` became (ONNX models run as exported)."""
    return getattr(detector.backend, "precision", "as exported")


def _output_folder(out: str) -> Path:
    """``--out`` as a folder; refused when it names an existing file (it would be written over)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the annotated media and JSON results")
    return path


def _cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .sources import expand_path
    from .writer import PredictionWriter

    # Everything the user named is checked before the model loads (seconds) or anything is written.
    files = [f for source in args.source for f in expand_path(source)]
    out = _output_folder(args.out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: each rank predicts its share
        return _cmd_predict_sharded(args, files, out)
    device = resolve_device(args.device)
    detector = detector_from_args(args)
    if args.classes is not None and max(args.classes) >= detector.num_classes:
        bad = sorted(c for c in set(args.classes) if c >= detector.num_classes)
        raise UserError(f"--classes {' '.join(map(str, bad))}: this model has classes 0..{detector.num_classes - 1}")
    skipped: list[str] = []
    # Default: an unreadable file is skipped (the library logs one warning line naming it and
    # why) and counted; --strict stops at the first. All unreadable -> an error (exit 2).
    on_error = "raise" if args.strict else (lambda path, error: skipped.append(path))
    counts: Counter[str] = Counter()
    n_images, speed_sum = 0, Counter()
    t0 = time.perf_counter()
    writer = PredictionWriter(out, save_images=not args.no_save_images, save_json=not args.no_save_json)
    # The bar is closed and log lines (skipped files) go above it, so each warning and a
    # final error message are lines of their own, not glued to the bar's last state.
    with writer, logging_redirect_tqdm(), tqdm(desc="predict", unit="img") as bar:
        results = detector.predict(
            files,
            conf=args.conf,
            classes=args.classes,
            max_det=args.max_det,
            batch_size=args.batch_size,
            stream=True,
            on_error=on_error,
        )
        for det in results:
            writer.add(det)
            n_images += 1
            counts.update(det.names)
            speed_sum.update(det.speed)
            bar.update()
    elapsed = time.perf_counter() - t0
    found = ", ".join(f"{n} {name}" for name, n in counts.most_common(10)) or "nothing"
    print(f"{n_images} image(s)/frame(s) in {elapsed:.1f} s; found {found} (conf >= {args.conf})")
    if n_images:
        per = ", ".join(f"{k} {v / n_images:.1f} ms" for k, v in speed_sum.items())
        print(f"per image: {per} at {detector.imgsz}x{detector.imgsz} on {device} ({_precision(detector)})")
    if skipped:
        print(
            f"skipped {len(skipped)} unreadable file(s) of {len(files)} (each named in a warning above; "
            "--strict stops at the first)"
        )
    media = ", annotated media" if not args.no_save_images else ""
    print(f"results in {out}/ (predictions.json, images.json{media})")
    return 0


def _cmd_predict_sharded(args: argparse.Namespace, files: list[str], out: Path) -> int:
    """``torchrun ... rtdetr predict``: this rank's chunks, then rank 0 merges (see infer/sharding.py)."""
    from ..train.distributed import barrier, cleanup, init_distributed
    from .sharding import merge_parts, plan_shards, prepare_parts, run_shard

    dist_info = init_distributed(args.device)
    args.device = str(dist_info.device)  # cuda:LOCAL_RANK, not every rank on cuda:0
    settings = {
        k: getattr(args, k, None)
        for k in ("model", "weights", "conf", "imgsz", "classes", "max_det", "precision", "batch_size", "set")
    }
    plan = plan_shards(files, rank=dist_info.rank, world_size=dist_info.world_size, settings=settings)
    try:
        if dist_info.is_main:
            done = prepare_parts(out, plan)
            print(
                f"{len(files)} file(s) in {plan.num_chunks} chunk(s) over {plan.world_size} ranks; {done} done before"
            )
        barrier()  # the manifest and clean-up come before any rank reads or writes parts
        detector = detector_from_args(args)
        if args.classes is not None and max(args.classes) >= detector.num_classes:
            raise UserError(f"--classes {max(args.classes)}: this model has classes 0..{detector.num_classes - 1}")
        on_error_raise = "raise" if args.strict else None

        def predict(chunk: list[str], on_error):
            return detector.predict(
                chunk,
                conf=args.conf,
                classes=args.classes,
                max_det=args.max_det,
                batch_size=args.batch_size,
                stream=True,
                on_error=on_error_raise or on_error,
            )

        stats = run_shard(out, plan, predict, save_images=not args.no_save_images)
        print(f"rank {plan.rank}: {stats.chunks_done} chunk(s) predicted, {stats.chunks_skipped} already done")
        barrier()
        if dist_info.is_main:
            merged = merge_parts(out, plan)
            print(
                f"{merged.images} image(s)/frame(s), {merged.annotations} detection(s) merged into {out}/predictions.json"
            )
            if merged.skipped_files:
                print(f"skipped {len(merged.skipped_files)} unreadable file(s) of {len(files)}")
    finally:
        cleanup()
    return 0


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("source", nargs="+", help="image / video files, folders or glob patterns")
    p.add_argument("--model", required=True, help="preset name, training checkpoint (.pt) or exported .onnx")
    p.add_argument(
        "--weights", default=None, help="weights for a preset: registry tag (coco), file, URL or hf:ORG/NAME"
    )
    p.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    p.add_argument(
        "--conf", type=probability, default=DEFAULT_CONF, help=f"minimum score 0..1 (default {DEFAULT_CONF})"
    )
    p.add_argument("--imgsz", type=image_size, default=None, help="input side, multiple of 32 (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--classes", type=non_negative_int, nargs="+", default=None, help="keep only these class indices")
    p.add_argument("--max-det", type=positive_int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--eager", action="store_true", help=EAGER_HELP)
    p.add_argument("--out", default="runs/predict", help="output folder")
    p.add_argument("--no-save-images", action="store_true", help="only write the JSON files")
    p.add_argument("--no-save-json", action="store_true", help="only write annotated media")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file (default: skip, warn)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config override, e.g. eval_idx=2")
    p.set_defaults(func=_cmd_predict)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    import torch

    from .benchmark import benchmark_detector

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    detector = detector_from_args(args)
    stats = benchmark_detector(detector, batch=args.batch, runs=args.runs, warmup=args.warmup)
    print(
        f"{args.model} on {device} ({_precision(detector)}, {torch.get_num_threads()} threads), "
        f"{detector.imgsz}x{detector.imgsz}, batch {args.batch}, {args.runs} runs"
    )
    print("| scope | median ms | p90 ms | images/s |\n|---|---:|---:|---:|")
    for scope, st in stats.items():
        print(f"| {scope.replace('_', '-')} | {st.median_ms:.1f} | {st.p90_ms:.1f} | {st.images_per_s:.2f} |")
    print("end-to-end = JPEG decode (1280x720) + resize + model + top-K + score filter")
    return 0


def add_benchmark_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="latency and throughput, model-only and end to end")
    p.add_argument("--model", required=True, help="preset name, training checkpoint (.pt) or exported .onnx")
    p.add_argument("--weights", default=None)
    p.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    p.add_argument("--imgsz", type=image_size, default=None, help="a multiple of 32 (default: the model's, 640)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--eager", action="store_true", help=EAGER_HELP)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", type=positive_int, default=20)
    p.add_argument(
        "--warmup",
        type=non_negative_int,
        default=5,
        help="untimed calls first (oneDNN builds kernels on the first few)",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config override, e.g. eval_idx=2")
    p.set_defaults(func=_cmd_benchmark)
