"""Training images/s of one model step, ours vs YOLOv8n, at equal batch sizes, steps interleaved.

    python benchmarks/train_step_vs_yolo.py                          # batches 4 and 16, this machine's threads
    python benchmarks/train_step_vs_yolo.py --batches 4,8 --threads 1 --steps 10

What ``train_synthetic.py --compare yolo`` cannot tell apart: its images/s mix each
trainer's step with its data pipeline (YOLOv8n's mosaic and augmentation, ours in-process
loading) and each model's own batch size (16 vs our recipe's 4). Here both models take
the same pre-loaded batches (the recipe's data loader, converted to Ultralytics' batch
format), and one step is what each trainer does per batch: forward, loss, backward,
gradient clipping, optimizer step (and ours the EMA update). Ours: the ``--recipe``'s preset
and settings (``build_trainer``, channels-last as the Trainer runs it). YOLOv8n:
``DetectionModel("yolov8n.yaml")`` with its own loss and default hyper-parameters and
AdamW at the learning rate Ultralytics' "auto" optimizer picks for runs this short (under
10k iterations), fp32.
The two alternate step by step on the same batches, so a slow phase of the machine hits
both; medians over ``--steps``. Needs the ``bench`` extra (ultralytics).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from rtdetr.runtime import cpu_description, setup_cpu_runtime


def yolo_batch(images: torch.Tensor, targets: list[dict]) -> dict:
    """Our collated batch (cxcywh normalized boxes, 0-based labels) in Ultralytics' layout."""
    return {
        "img": images,
        "batch_idx": torch.cat([torch.full((len(t["labels"]),), float(i)) for i, t in enumerate(targets)]),
        "cls": torch.cat([t["labels"].float() for t in targets]).view(-1, 1),
        "bboxes": torch.cat([t["boxes"] for t in targets]),
    }


def measure(data: Path, batch: int, steps: int, recipe_name: str, imgsz: int) -> dict:
    """Median step seconds of ours and YOLOv8n at ``batch``, alternating on the same batches."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from rtdetr.train.launch import build_trainer
    from rtdetr.train.recipes import get_recipe
    from rtdetr.train.train_config import TrainConfig

    recipe = get_recipe(recipe_name)
    cfg = TrainConfig(
        imgsz=imgsz,
        out_dir=str(data.parent / "step_vs_yolo_run"),
        progress=False,
        **{**recipe.train, "batch_size": batch},
    )
    trainer = build_trainer(recipe.default_model, data, cfg, model_overrides=dict(recipe.model), exist_ok=True)
    loader = iter(trainer._train_loader(0))
    batches = [next(loader) for _ in range(4)]
    model = trainer.model

    def ours(images: torch.Tensor, targets: list[dict]) -> None:
        trainer.train_step(images, targets)  # what the Trainer runs per batch

    num_classes = model.config.num_classes
    yolo = DetectionModel("yolov8n.yaml", nc=num_classes, verbose=False).train()
    yolo.args = get_cfg()  # its default loss gains (box 7.5, cls 0.5, dfl 1.5)
    lr_fit = round(0.002 * 5 / (4 + num_classes), 6)  # Ultralytics' "auto" choice below 10k iterations
    yolo_opt = torch.optim.AdamW(yolo.parameters(), lr=lr_fit, betas=(0.9, 0.999), weight_decay=0.0005)
    yolo_batches = [yolo_batch(images.clone(), targets) for images, targets in batches]

    def theirs(b: dict) -> None:
        loss, _ = yolo.loss(b)
        loss.sum().backward()
        nn.utils.clip_grad_norm_(yolo.parameters(), 10.0)  # what Ultralytics' trainer clips to
        yolo_opt.step()
        yolo_opt.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {"ours": [], "yolo": []}
    for k in range(3 + steps):  # 3 warm-up steps each
        t0 = time.perf_counter()
        ours(*batches[k % 4])
        t1 = time.perf_counter()
        theirs(yolo_batches[k % 4])
        t2 = time.perf_counter()
        if k >= 3:
            times["ours"].append(t1 - t0)
            times["yolo"].append(t2 - t1)
    ours_s, yolo_s = statistics.median(times["ours"]), statistics.median(times["yolo"])
    return {
        "batch": batch,
        "ours_model": recipe.default_model,
        "ours_step_s": ours_s,
        "yolo_step_s": yolo_s,
        "ours_img_s": batch / ours_s,
        "yolo_img_s": batch / yolo_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/bench/shapes", help="COCO folder (generated as set a when missing)")
    p.add_argument("--batches", default="4,16", help="comma list of batch sizes")
    p.add_argument("--steps", type=int, default=8, help="timed steps per model and batch size")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--recipe", default="scratch")
    p.add_argument("--imgsz", type=int, default=320)
    args = p.parse_args()
    setup_cpu_runtime(threads=args.threads, keep_memory=True)
    data = Path(args.data)
    if not (data / "annotations" / "instances_train.json").exists():
        from benchmarks.train_synthetic import ensure_data

        data = ensure_data(data, "a")
    rows = [measure(data, int(b), args.steps, args.recipe, args.imgsz) for b in args.batches.split(",")]
    print(
        f"one training step, fp32, {torch.get_num_threads()} threads, {args.imgsz} px, "
        f"median of {args.steps}, data loading excluded; {cpu_description()}"
    )
    print("| batch | ours (" + rows[0]["ours_model"] + ") img/s | YOLOv8n img/s | ours / YOLOv8n |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['ours_img_s']:.1f} | {r['yolo_img_s']:.1f} | {r['ours_img_s'] / r['yolo_img_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
