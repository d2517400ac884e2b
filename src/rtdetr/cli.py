"""Command line: ``rtdetr <command> ...``. This module and the ``command.py`` of each
subpackage (which define their own subcommands) are the only ones that print results.

Errors: a problem with the user's input (:class:`rtdetr.errors.UserError` and its
subclasses, missing files, invalid values) prints one ``error: ...`` message and exits
with code 2; Ctrl-C exits with 130; ``-v`` shows tracebacks. Building the parser
imports no PyTorch, so ``rtdetr --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TYPE_CHECKING

from .cli_options import TRUSTED_HELP
from .errors import UserError
from .export.command import add_export_parser
from .infer.command import add_benchmark_parser, add_predict_parser
from .serve.command import add_serve_parser
from .track.command import add_track_parser

if TYPE_CHECKING:
    from .train.train_config import TrainConfig

__all__ = ["main"]

# When this process started importing us: `rtdetr train --max-time` counts from here.
_STARTED = time.perf_counter()

_WORKERS_HELP = "DataLoader workers (default: 0 on a CPU with <= 4 cores, else up to 8)"


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from . import build_model, list_models
    from .config import PAPER_RESULTS
    from .summary import summarize

    table = args.all or args.table
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
        # Counting needs shapes only: on the meta device no weights are initialized or
        # multiplied (r101 at 640 px: ~1 s instead of ~10 s), and the count is the same.
        with torch.device("meta"):
            model = build_model(name, num_classes=args.num_classes)
        s = summarize(model, args.imgsz)
        paper = PAPER_RESULTS.get(name, {})
        rows.append((name, s, paper))
        if not table:
            cfg = model.config
            print(f"{name}")
            print(f"  backbone     {type(model.backbone).__name__} {cfg.backbone}")
            print(
                f"  encoder      hidden {cfg.encoder.hidden_dim}, expansion {cfg.encoder.expansion}, depth_mult {cfg.encoder.depth_mult}"
            )
            print(
                f"  decoder      {cfg.decoder.num_layers} layers (eval_idx {cfg.decoder.eval_idx}), {cfg.decoder.num_queries} queries, {cfg.num_classes} classes"
            )
            print(f"  params       {s.params / 1e6:.2f} M ({s.trainable_params / 1e6:.2f} M trainable)")
            print(f"  GFLOPs       {s.gflops:.1f} at {s.imgsz[0]}x{s.imgsz[1]}")
            if paper and s.imgsz == (640, 640):
                print(
                    f"  paper        {paper['params_m']} M params, {paper['gflops']} GFLOPs, {paper['ap']} AP (COCO val2017)"
                )
            print(f"  input        {(1, 3, *s.imgsz)}")
            print(f"  backbone out {s.backbone_shapes}")
            print(f"  encoder out  {s.encoder_shapes}")
            for k, v in s.output_shapes.items():
                print(f"  {k:<12} {v}")
            print()
    if table:
        print(f"| model | params (M) | GFLOPs @{args.imgsz} | paper params / GFLOPs / AP |")
        print("|---|---:|---:|---|")
        for name, s, paper in rows:
            ref = f"{paper['params_m']} / {paper['gflops']} / {paper['ap']}" if paper else "-"
            print(f"| {name} | {s.params / 1e6:.1f} | {s.gflops:.1f} | {ref} |")
    return 0


def _train_setup(args: argparse.Namespace, **extra) -> tuple[str, TrainConfig, dict]:
    """(preset, TrainConfig, model overrides) from the flags over the recipe over the preset's reference recipe.

    ``--recipe reference`` (default) is the preset's paper recipe (epochs, lrs, warmups,
    stop epoch, multi-scale); ``--recipe scratch`` replaces it with the from-scratch
    settings and picks its preset when ``--model`` is omitted. Flags given on the
    command line win. ``--set KEY=VALUE`` sets a TrainConfig field when KEY names one,
    else a model config field.
    """
    from pathlib import Path

    from .config import get_config, parse_overrides
    from .train.recipes import get_recipe
    from .train.train_config import TrainConfig, split_overrides

    recipe = get_recipe(args.recipe)
    model_name = args.model or recipe.default_model or "rtdetr_r18vd"
    paper = get_config(model_name).train
    # --out, else the folder of the checkpoint given to --resume (a run continues where it was).
    out = args.out
    if out is None:
        out = str(Path(args.resume).parent) if args.resume not in (None, "auto") else "runs/train"

    fields: dict = dict(
        epochs=paper.epochs,
        batch_size=4,
        lr=paper.lr,
        backbone_lr=paper.backbone_lr,
        weight_decay=paper.weight_decay,
        betas=tuple(paper.betas),
        clip_max_norm=paper.clip_max_norm,
        warmup_iters=paper.warmup_iters,
        ema_decay=paper.ema_decay,
        ema_warmup=paper.ema_warmup,
        stop_epoch=paper.stop_epoch,
        multi_scale=paper.multi_scale,
        lr_schedule="flat",
    )
    fields.update(recipe.train)
    flags = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        backbone_lr=args.backbone_lr,
        warmup_iters=args.warmup_iters,
        ema_decay=args.ema_decay,
        ema_warmup=args.ema_warmup,
        stop_epoch=args.stop_epoch,
        lr_schedule=args.lr_schedule,
        num_workers=args.workers,
    )
    fields.update({k: v for k, v in flags.items() if v is not None})
    fields.update(
        multi_scale=fields["multi_scale"] and not args.no_multi_scale,
        imgsz=args.imgsz,
        amp=args.amp or args.amp_force,
        amp_force=args.amp_force,
        accumulate=args.accumulate,
        seed=args.seed,
        freeze_backbone=args.freeze_backbone,
        device=args.device,
        out_dir=out,
        max_time_s=args.max_time,
        sync_bn=args.sync_bn,
        channels_last=not args.no_channels_last,
        compile=args.compile,
    )
    set_model, set_train = split_overrides(parse_overrides(args.set))
    model_overrides = {**recipe.model_overrides_for(model_name), **set_model}
    fields.update(set_train)
    fields.update(extra)
    return model_name, TrainConfig(**fields), model_overrides


def _train_config(args: argparse.Namespace, **extra) -> TrainConfig:
    """The TrainConfig ``rtdetr train`` runs with these flags (see :func:`_train_setup`)."""
    return _train_setup(args, **extra)[1]


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train.launch import train_for_budget

    model_name, config, model_overrides = _train_setup(args)
    resume = None
    if args.resume:
        resume = str(Path(config.out_dir) / "last.pt") if args.resume == "auto" else args.resume
        if not Path(resume).is_file():
            raise UserError(f"--resume: no checkpoint at {resume} (give the run's folder with --out, or the file)")
    # Resuming continues the run in its own folder; anything else gets a fresh folder
    # (runs/train2 ...) unless --exist-ok, so a finished run is never overwritten.
    exist_ok = args.exist_ok or (resume is not None and Path(resume).parent.resolve() == Path(config.out_dir).resolve())
    # --max-time is the whole wall time of training, counted from the start of this
    # command; with a cosine schedule and no --epochs the epoch count is sized to it.
    trainer = train_for_budget(
        model_name,
        args.data,
        config,
        fit_epochs=args.epochs is None and config.lr_schedule == "cosine",
        start=_STARTED,
        weights=args.weights,
        model_overrides=model_overrides,
        exist_ok=exist_ok,
        resume=resume,
    )
    history = trainer.history
    if trainer.dist.is_main and not history:
        print(f"nothing to train: {resume} has completed {trainer.epoch} of {config.epochs} epochs (raise --epochs)")
    elif trainer.dist.is_main:
        _print_metrics(trainer.last_metrics)
        print(f"checkpoints and logs: {trainer.out_dir}")
    return 0


def _print_metrics(metrics: dict) -> None:
    """The final evaluation, as ``rtdetr val`` prints it (summary, then per class)."""
    from .eval import format_metrics_table

    if metrics:
        print(format_metrics_table(metrics))


def _cmd_val(args: argparse.Namespace) -> int:
    from .data import resolve_dataset
    from .eval import format_metrics_table
    from .loader import load_model
    from .train.launch import validate

    spec = resolve_dataset(args.data)
    model = load_model(args.model, weights=args.weights, num_classes=spec.num_classes, trusted=args.trusted)
    metrics, evaluator = validate(
        model,
        args.data,
        split=args.split,
        imgsz=args.imgsz,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        amp=args.amp,
    )
    from .train.distributed import cleanup, is_main_process

    main_rank = is_main_process()  # under torchrun every rank evaluated a share; rank 0 reports
    cleanup()
    if not main_rank:
        return 0
    print(format_metrics_table(metrics))
    if args.save_json:
        evaluator.save_results(args.save_json)
        print(f"COCO results json: {args.save_json}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from .data import generate_synthetic_dataset

    try:
        low, high = (float(v) for v in args.object_size.split(","))
    except ValueError:
        raise UserError(
            f"--object-size: expected MIN_PX,MAX_FRACTION such as 12,0.5, got {args.object_size!r}"
        ) from None
    out = generate_synthetic_dataset(
        args.out,
        num_train=args.train,
        num_val=args.val,
        imgsz=args.imgsz,
        seed=args.seed,
        num_classes=args.classes,
        max_objects=args.max_objects,
        object_size=(low, high),
        image_format=args.format,
    )
    print(f"wrote synthetic COCO dataset to {out} ({args.train} train / {args.val} val images)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out=args.out, minutes=args.minutes, model_name=args.model, imgsz=args.imgsz, device=args.device)


def _cmd_convert(args: argparse.Namespace) -> int:
    from .weights import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, to=args.to, model_name=args.model, trusted=args.trusted)
    print(f"wrote {out}")
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="preset name (see `rtdetr info`); default: the recipe's (scratch: dfine_cspdarknet_n), else rtdetr_r18vd",
    )
    p.add_argument("--data", required=True, help="COCO folder, COCO yaml or YOLO data.yaml")
    p.add_argument(
        "--recipe",
        default="reference",
        choices=["reference", "scratch"],
        help="reference: the preset's paper recipe (fine-tuning); scratch: from random weights in minutes "
        "(full lr, cosine, short warm-up and EMA, no strong aug, 100 queries, 2 decoder layers); flags override either",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's recipe")
    p.add_argument("--batch-size", type=int, default=None, help="per process (default 4)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--lr", type=float, default=None, help="default: the preset's recipe")
    p.add_argument("--backbone-lr", type=float, default=None, help="default: the preset's recipe")
    p.add_argument("--warmup-iters", type=int, default=None, help="default: the preset's recipe")
    p.add_argument("--ema-warmup", type=int, default=None, help="default: the preset's recipe")
    p.add_argument("--ema-decay", type=float, default=None, help="default: the preset's recipe (0.9999)")
    p.add_argument("--lr-schedule", choices=["flat", "cosine"], default=None, help="default: the recipe's")
    p.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: fp16 on CUDA; bf16 on CPUs with native bf16 (AVX512-BF16/AMX), "
        "float32 with a warning on other CPUs, where bf16 is several times slower",
    )
    p.add_argument("--amp-force", action="store_true", help="--amp with bf16 even on a CPU without native bf16")
    p.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--stop-epoch", type=int, default=None, help="strong aug + multi-scale off from this epoch")
    p.add_argument("--no-multi-scale", action="store_true")
    p.add_argument("--freeze-backbone", action="store_true")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP on CUDA")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile backbone + encoder (slow first step; use a fixed --imgsz, --no-multi-scale)",
    )
    p.add_argument("--workers", type=int, default=None, help=_WORKERS_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--out",
        default=None,
        help="run directory (default runs/train; with --resume FILE, FILE's folder); "
        "one holding a run becomes OUT2, OUT3, ... unless --exist-ok",
    )
    p.add_argument("--exist-ok", action="store_true", help="write into --out even if it holds an earlier run")
    p.add_argument(
        "--max-time",
        type=float,
        default=None,
        help="wall-clock budget of training in seconds, from the command's start (set-up included; "
        "the final evaluation comes on top)",
    )
    p.add_argument("--weights", default=None, help="initialize from a checkpoint (class count may differ)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, help="resume from OUT/last.pt or a given file")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="training setting (a TrainConfig field) or model config override, e.g. num_queries=100 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtdetr", description="RT-DETR object detection")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="architecture summary: params, GFLOPs, output shapes")
    p.add_argument("models", nargs="*", help="preset name(s); none lists the presets")
    p.add_argument("--all", action="store_true", help="summary table of every preset")
    p.add_argument("--table", action="store_true", help="one table row per given model")
    p.add_argument("--imgsz", type=int, default=640, help="square input size (default 640)")
    p.add_argument("--num-classes", type=int, default=80)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train or fine-tune on a COCO / YOLO dataset (torchrun for several processes)")
    _add_train_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("val", help="COCO mAP of a model on a dataset split")
    p.add_argument("--model", required=True, help="preset name, training checkpoint or weights file/folder")
    p.add_argument("--weights", default=None, help="weights for a preset name")
    p.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=None, help=_WORKERS_HELP)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--save-json", default=None, help="write COCO results json here")
    p.set_defaults(func=_cmd_val)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("synth", help="write the synthetic COCO-format dataset")
    q.add_argument("out")
    q.add_argument("--train", type=int, default=500)
    q.add_argument("--val", type=int, default=100)
    q.add_argument("--imgsz", type=int, default=320)
    q.add_argument("--classes", type=int, default=6)
    q.add_argument("--max-objects", type=int, default=8, help="objects per image: 1..N (default 8)")
    q.add_argument(
        "--object-size",
        default="12,0.5",
        help="MIN_PX,MAX_FRACTION: object diameters log-uniform from MIN_PX pixels to MAX_FRACTION of the side",
    )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image files (default jpg)")
    q.set_defaults(func=_cmd_data_synth)

    p = sub.add_parser("convert", help="convert checkpoints between reference, Hugging Face and safetensors layouts")
    p.add_argument("src", help="checkpoint file, Hugging Face folder, registry tag or URL")
    p.add_argument("dst")
    p.add_argument("--to", choices=["reference", "hf", "safetensors"], required=True)
    p.add_argument("--model", default=None, help="preset name (inferred from the tensors when omitted)")
    p.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    p.set_defaults(func=_cmd_convert)

    add_predict_parser(sub)
    add_export_parser(sub)
    add_benchmark_parser(sub)
    add_serve_parser(sub)
    add_track_parser(sub)

    p = sub.add_parser("demo", help="synthetic data -> short CPU training -> evaluation -> annotated images")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--minutes", type=float, default=4.0, help="training budget")
    p.add_argument("--model", default=None, help="preset; default: the scratch recipe's (dfine_cspdarknet_n)")
    p.add_argument(
        "--imgsz", type=int, default=None, help="image side, generated and trained (default 320: DemoData.imgsz)"
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_demo)
    return parser


# Exceptions that mean "the input is wrong", answered with their message rather than a traceback.
# ValueError too: it is what bad values raise across this package and its libraries.
_USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError)


def _message(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{text}: {e.filename}"
    if isinstance(e, ModuleNotFoundError) and "pip install" not in text:
        text += f" (a feature you used needs it: pip install {e.name})"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run ``rtdetr`` with ``argv``; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        from .runtime import setup_cpu_runtime

        # Denormals made CPU training ~14x and inference ~17x slower; glibc handing freed
        # activations back to the kernel cost 5-10k page faults per training step.
        # The process is ours, so its malloc setting is too.
        setup_cpu_runtime(keep_memory=True)
        return args.func(args)
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except (*_USER_ERRORS, ModuleNotFoundError) as e:
        if args.verbose:
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    except SystemExit as e:
        if isinstance(e.code, str):  # raise SystemExit("message"): a user error too
            if args.verbose:
                raise
            print(f"error: {e.code}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
