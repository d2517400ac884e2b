"""Fine-tune RT-DETR on a dataset in YOLO format, then detect with the result.

    python examples/finetune_yolo.py path/to/data.yaml --weights coco --epochs 20 --imgsz 640
    python examples/finetune_yolo.py --toy runs/toy_yolo     # writes a tiny YOLO set first (no download)

A YOLO (Ultralytics) dataset is a ``data.yaml`` naming the image folders and the classes::

    path: /data/parts          # root of the relative paths below
    train: images/train        # labels in labels/train/<image name>.txt
    val: images/val
    names: {0: bolt, 1: nut}

with one ``class cx cy w h`` line per object (normalized to [0, 1]). A COCO folder
(``annotations/instances_{train,val}.json`` + ``train/``, ``val/``) works the same way.

``--weights coco`` starts from the authors' COCO checkpoint (downloaded once; the class
heads are re-initialized for your classes), which is what makes a few epochs enough.
The run folder (``--out``, never overwritten: ``runs/finetune2`` etc. when taken) holds
``last.pt`` (resumable), ``best.pt`` (EMA weights, best val AP), ``metrics.jsonl`` and
``results.csv``. The command-line equivalent::

    rtdetr train --model rtdetr_r18vd --data path/to/data.yaml --weights coco --epochs 20 --out runs/finetune
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

import rtdetr
from rtdetr.data import build_dataset, resolve_dataset
from rtdetr.train.launch import build_trainer
from rtdetr.train.train_config import TrainConfig

TOY_CLASSES = ["red box", "blue box"]


def write_toy_yolo_dataset(root: Path, *, num_train: int = 8, num_val: int = 4, size: int = 128) -> Path:
    """A tiny YOLO-format set (coloured rectangles on grey); returns its ``data.yaml``."""
    rng = random.Random(0)
    colours = [(220, 40, 40), (40, 60, 220)]
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = Image.new("RGB", (size, size), (128, 128, 128))
            draw, lines = ImageDraw.Draw(image), []
            for _ in range(rng.randint(1, 3)):
                cls = rng.randrange(len(TOY_CLASSES))
                w, h = rng.randint(size // 6, size // 2), rng.randint(size // 6, size // 2)
                x, y = rng.randint(0, size - w), rng.randint(0, size - h)
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colours[cls])
                lines.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            image.save(root / "images" / split / f"{i:04d}.jpg", quality=95)
            (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(TOY_CLASSES))
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return yaml_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", help="YOLO data.yaml (or a COCO folder)")
    p.add_argument("--toy", type=Path, metavar="DIR", help="write a tiny YOLO dataset to DIR and train on it")
    p.add_argument("--model", default="rtdetr_r18vd", help="preset name (rtdetr.list_models())")
    p.add_argument("--weights", help="start from these weights: 'coco', a checkpoint file (default: random)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--lr", type=float, default=1e-4, help="1e-4 (the paper's) for fine-tuning; 4e-4 from scratch")
    p.add_argument("--out", default="runs/finetune")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="model override, e.g. num_queries=100"
    )
    args = p.parse_args(argv)
    if args.toy:
        args.data = write_toy_yolo_dataset(args.toy)
    if args.data is None:
        p.error("give a data.yaml (or --toy DIR)")
    overrides = {k: int(v) if v.isdigit() else v for k, v in (s.split("=", 1) for s in args.set)}

    # The paper's optimizer settings (AdamW, EMA, clipping), shortened for a small dataset:
    # a backbone lr 10x lower than the rest, a warm-up of ~1 epoch, no multi-scale.
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        imgsz=args.imgsz,
        lr=args.lr,
        backbone_lr=args.lr / 10,
        warmup_iters=50,
        ema_warmup=50,
        multi_scale=False,
        out_dir=args.out,
        progress=False,
    )
    trainer = build_trainer(args.model, args.data, config, weights=args.weights, model_overrides=overrides)
    trainer.fit()
    metrics = trainer.last_metrics or trainer.evaluate()
    print(
        f"trained {trainer.epoch} epochs -> {trainer.out_dir}: val AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f}"
    )

    # The checkpoint carries its preset, input size and class names: nothing else to pass.
    best = trainer.out_dir / ("best.pt" if (trainer.out_dir / "best.pt").exists() else "last.pt")
    detector = rtdetr.Detector.from_pretrained(best)
    val = build_dataset(resolve_dataset(args.data), "val")
    for result in detector.predict([val.image_path(i) for i in range(min(2, len(val)))], conf=0.3):
        print(f"{Path(result.source).name}: {', '.join(result.names) or 'nothing above 0.3'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
