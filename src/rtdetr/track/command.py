"""``rtdetr track``: videos, folders of frames, cameras and streams to tracks, MOT files and annotated video."""

from __future__ import annotations

import argparse
import time
from collections import Counter

from ..argtypes import image_size, non_negative_float, non_negative_int, positive_float, positive_int, probability
from ..cli_options import EAGER_HELP, TRUSTED_HELP, detector_from_args, resolve_device
from ..errors import UserError
from ..runtime import PRECISION_HELP, PRECISIONS

__all__ = ["add_track_parser"]

# Tracking keeps low-score boxes: ByteTrack's second association uses them to hold tracks
# through occlusion, so the default is below predict's 0.5.
TRACK_CONF = 0.25
_TRACKERS = ("bytetrack", "sort", "ocsort")  # rtdetr.track.adapter.TRACKERS (no torch import here)


def _tracker_options(items: list[str] | None) -> dict:
    from ..config import parse_overrides

    try:
        return parse_overrides(items)
    except Exception as exc:  # the config parser's message names --set; say --tracker-set
        raise UserError(str(exc).replace("--set", "--tracker-set")) from exc


def _cmd_track(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..infer.command import _output_folder
    from ..infer.sources import expand_path
    from ..infer.writer import PredictionWriter
    from .capture import is_live_source
    from .mot import TrackLog

    # Everything the user named is checked before the model loads.
    source = args.source
    if not is_live_source(source):
        expand_path(source)
    out = _output_folder(args.out)
    options = _tracker_options(args.tracker_set)
    device = resolve_device(args.device)
    detector = detector_from_args(args)
    if args.classes is not None and max(args.classes) >= detector.num_classes:
        bad = sorted(c for c in set(args.classes) if c >= detector.num_classes)
        raise UserError(f"--classes {' '.join(map(str, bad))}: this model has classes 0..{detector.num_classes - 1}")
    frames = detector.track(
        int(source) if source.isdigit() else source,
        tracker=args.tracker,
        fps=args.fps,
        lost_seconds=args.lost_seconds,
        class_aware=not args.class_agnostic,
        conf=args.conf,
        classes=args.classes,
        max_det=args.max_det,
        keep_images=not args.no_save_video,
        on_error="raise" if args.strict else "skip",
        **options,
    )
    log = TrackLog(out)
    ids: set[tuple[str, int]] = set()
    speed: Counter[str] = Counter()
    n = 0
    t0 = time.perf_counter()
    writer = PredictionWriter(out, save_images=not args.no_save_video, save_json=True)
    try:
        with writer, logging_redirect_tqdm(), tqdm(desc="track", unit="frame") as bar:
            position, sequence = -1, None
            for det in frames:
                position = position + 1 if det.sequence == sequence else 0
                sequence = det.sequence
                writer.add(det)
                log.add(det, position)
                ids.update((str(det.sequence), i) for i in det.track_ids.tolist())
                speed.update(det.speed)
                n += 1
                bar.update()
    finally:  # Ctrl-C on a camera ends the run: what was tracked so far is still written
        if n:
            log.close()
    elapsed = time.perf_counter() - t0
    print(f"{n} frame(s) in {elapsed:.1f} s; {len(ids)} track(s) in {len(log.sequences)} sequence(s)")
    if n:
        per = ", ".join(f"{k} {v / n:.1f} ms" for k, v in speed.items())
        print(f"per frame: {per} at {detector.imgsz}x{detector.imgsz} on {device}")
        video = ", annotated media" if not args.no_save_video else ""
        print(f"results in {out}/ (mot/<sequence>.txt, tracks.json, predictions.json, images.json{video})")
    return 0


def add_track_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track", help="track objects through a video, a folder of frames, a camera index or a stream URL"
    )
    p.add_argument("source", help="video file, folder of frames, glob, camera index (0) or stream URL (rtsp://...)")
    p.add_argument("--model", required=True, help="preset name, training checkpoint (.pt) or exported .onnx")
    p.add_argument(
        "--weights", default=None, help="weights for a preset: registry tag (coco), file, URL or hf:ORG/NAME"
    )
    p.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    p.add_argument("--tracker", choices=_TRACKERS, default="bytetrack", help="association (default bytetrack)")
    p.add_argument(
        "--lost-seconds",
        type=non_negative_float,
        default=1.0,
        help="how long a lost track waits for its object (default 1 s, at the video's fps)",
    )
    p.add_argument("--fps", type=positive_float, default=None, help="frame rate (default: the video's; 30 for frames)")
    p.add_argument("--class-agnostic", action="store_true", help="let a track continue across classes")
    p.add_argument(
        "--tracker-set",
        action="append",
        metavar="KEY=VALUE",
        help="option of the tracker class, e.g. track_activation_threshold=0.5 (repeatable)",
    )
    p.add_argument("--conf", type=probability, default=TRACK_CONF, help=f"minimum score 0..1 (default {TRACK_CONF})")
    p.add_argument("--imgsz", type=image_size, default=None, help="input side, multiple of 32 (default: the model's)")
    p.add_argument("--classes", type=non_negative_int, nargs="+", default=None, help="keep only these class indices")
    p.add_argument("--max-det", type=positive_int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--eager", action="store_true", help=EAGER_HELP)
    p.add_argument("--out", default="runs/track", help="output folder")
    p.add_argument("--no-save-video", action="store_true", help="only write the MOT and JSON files")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file (default: skip, warn)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config override, e.g. eval_idx=2")
    p.set_defaults(func=_cmd_track)
