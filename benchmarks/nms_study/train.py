"""The study's two detectors trained from scratch on the synthetic set for a wall-clock budget.

Ours with the demo's from-scratch settings (``rtdetr.demo.DEMO_SETTINGS``); YOLOv8n with
Ultralytics from its yaml (no downloaded weights) at batch 4 and 2 loader workers, the
setting ``docs/nms_study.md`` was recorded with (not Ultralytics' defaults: the study
compares postprocessing and latency, not training recipes). Both are scored by the same COCO
evaluator on the same validation images.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.train_synthetic import export_yolo_layout
from rtdetr.data import build_dataset, generate_synthetic_dataset, resolve_dataset
from rtdetr.demo import DEMO_SETTINGS
from rtdetr.train.launch import make_evaluator_for, train_for_budget
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
    # The budget ends the run; the run sizes its cosine schedule to the steps that fit.
    trainer = train_for_budget(model, data, cfg, model_overrides=overrides)
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
