"""Command line: ``rtdetr <command> ...``. The only module that prints results."""

from __future__ import annotations

import argparse
import logging
import sys

import torch

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> int:
    from . import build_model, list_models
    from .config import PAPER_RESULTS
    from .summary import summarize

    names = list_models() if args.all else args.models
    if not names:
        print("available models:\n  " + "\n  ".join(list_models()))
        print("\nusage: rtdetr info MODEL [MODEL ...] [--imgsz 640] | rtdetr info --all")
        return 0
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; available: {', '.join(list_models())}", file=sys.stderr)
        return 2

    rows = []
    for name in names:
        model = build_model(name, num_classes=args.num_classes)
        s = summarize(model, args.imgsz)
        paper = PAPER_RESULTS.get(name, {})
        rows.append((name, s, paper))
        if not args.all:
            cfg = model.config
            print(f"{name}")
            print(f"  backbone     {type(model.backbone).__name__} {cfg.backbone}")
            print(f"  encoder      hidden {cfg.encoder.hidden_dim}, expansion {cfg.encoder.expansion}, depth_mult {cfg.encoder.depth_mult}")
            print(f"  decoder      {cfg.decoder.num_layers} layers (eval_idx {cfg.decoder.eval_idx}), {cfg.decoder.num_queries} queries, {cfg.num_classes} classes")
            print(f"  params       {s.params / 1e6:.2f} M ({s.trainable_params / 1e6:.2f} M trainable)")
            print(f"  GFLOPs       {s.gflops:.1f} at {s.imgsz[0]}x{s.imgsz[1]}")
            if paper and s.imgsz == (640, 640):
                print(f"  paper        {paper['params_m']} M params, {paper['gflops']} GFLOPs, {paper['ap']} AP (COCO val2017)")
            print(f"  input        {(1, 3, *s.imgsz)}")
            print(f"  backbone out {s.backbone_shapes}")
            print(f"  encoder out  {s.encoder_shapes}")
            for k, v in s.output_shapes.items():
                print(f"  {k:<12} {v}")
            print()
    if args.all:
        print(f"| model | params (M) | GFLOPs @{args.imgsz} | paper params / GFLOPs / AP |")
        print("|---|---:|---:|---|")
        for name, s, paper in rows:
            ref = f"{paper['params_m']} / {paper['gflops']} / {paper['ap']}" if paper else "-"
            print(f"| {name} | {s.params / 1e6:.1f} | {s.gflops:.1f} | {ref} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtdetr", description="RT-DETR object detection")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="architecture summary: params, GFLOPs, output shapes")
    p.add_argument("models", nargs="*", help="preset name(s); none lists the presets")
    p.add_argument("--all", action="store_true", help="summary table of every preset")
    p.add_argument("--imgsz", type=int, default=640, help="square input size (default 640)")
    p.add_argument("--num-classes", type=int, default=80)
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not torch.cuda.is_available():
        # Denormals slow CPU inference and training of this model by >10x after a few steps.
        torch.set_flush_denormal(True)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
