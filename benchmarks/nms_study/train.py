"""The study's two detectors trained from scratch on the synthetic set for a wall-clock budget.

Ours with the demo's from-scratch settings (``rtdetr.demo.DEMO_SETTINGS``); YOLOv8n with
Ultralytics from its yaml (no downloaded weights) at batch 4 and 2 loader workers, the
setting ``docs/nms_study.md`` was recorded with (not Ultralytics' defaults: the study
compares postprocessing and latency, not training recipes). Both are scored by the same COCO
evaluator on the same validation images.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from rtdetr.data import build_dataset, generate_synthetic_dataset, resolve_dataset
from rtdetr.demo import DEMO_SETTINGS
from rtdetr.train.launch import build_trainer, epochs_for_budget, make_evaluator_for
from rtdetr.train.train_config import TrainConfig

# The demo's from-scratch settings with the warm-ups the recorded runs used.
FROM_SCRATCH = {**DEMO_SETTINGS, "warmup_iters": 50, "ema_warmup": 50, "progress": False}
YOLO_BATCH, YOLO_WORKERS = 4, 2


def ensure_data(root: Path, imgsz: int, num_train: int, num_val: int) -> Path:
    """The synthetic COCO-format set under ``root``, generated once (seed 0)."""
    if not (root / "annotations" / "instances_val.json").exists():
        generate_synthetic_dataset(root, num_train=num_train, num_val=num_val, imgsz=imgsz, seed=0)
    return root


def train_ours(
    data: Path, model: str, imgsz: int, budget_s: float, out: Path, overrides: dict, *, amp: bool = False
) -> dict:
    """Train preset ``model`` for ``budget_s`` seconds; AP, AP50, images/s, epochs, checkpoint path."""
    cfg = TrainConfig(epochs=1, imgsz=imgsz, out_dir=str(out), max_time_s=budget_s, amp=amp, **FROM_SCRATCH)
    # The epoch count only shapes the cosine schedule (the budget ends the run): sized
    # from the speed of a few probe steps.
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


def train_yolo(data: Path, imgsz: int, budget_s: float, out: Path, *, device: str = "cpu") -> dict:
    """Train YOLOv8n from its yaml for ``budget_s`` seconds under ``out/yolo``; AP and AP50 at conf 0.001."""
    from ultralytics import YOLO

    yaml_path = export_yolo_layout(data, out / "yolo_data")
    model = YOLO("yolov8n.yaml")
    t0 = time.perf_counter()
    model.train(
        data=str(yaml_path),
        epochs=1000,
        time=budget_s / 3600,
        imgsz=imgsz,
        device=device,
        workers=YOLO_WORKERS,
        batch=YOLO_BATCH,
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
        labels = torch.tensor([val.category_ids[int(c)] for c in r.boxes.cls], dtype=torch.int64)
        evaluator.update(
            [{"image_id": int(val.image_ids[i]), "boxes": r.boxes.xyxy, "scores": r.boxes.conf, "labels": labels}]
        )
    m = evaluator.compute()
    return {"model": "ultralytics YOLOv8n", "AP": m["AP"], "AP50": m["AP50"], "wall_s": elapsed}


def export_yolo_layout(data: Path, dest: Path) -> Path:
    """Write a COCO-format set as an Ultralytics YOLO dataset (symlinked images, txt labels); its data.yaml."""
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
