"""The end-to-end demo: synthetic data -> short CPU training -> COCO evaluation -> annotated images.

Everything is generated locally; nothing is downloaded. ``rtdetr demo`` runs it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from .data import build_dataset, generate_synthetic_dataset, resolve_dataset
from .infer.draw import draw_detections
from .nn.postprocess import PostProcessor
from .train.recipes import get_recipe

__all__ = ["run_demo", "DEMO_SETTINGS", "DEMO_CONF"]

log = logging.getLogger(__name__)

# Detections drawn on the demo's pictures: the confidence they need.
DEMO_CONF = 0.3

# The demo trains with ``rtdetr train --recipe scratch``'s settings (rtdetr.train.recipes).
DEMO_SETTINGS = dict(get_recipe("scratch").train)


def run_demo(
    *,
    out: str | Path = "runs/demo",
    minutes: float = 4.0,
    model_name: str | None = None,
    imgsz: int = 320,
    device: str = "auto",
    num_train: int = 400,
    num_val: int = 50,
    num_shown: int = 8,
    model_overrides: dict | None = None,
) -> int:
    import time

    from .eval import format_metrics_table
    from .train.launch import train_for_budget
    from .train.train_config import TrainConfig

    start = time.perf_counter()  # the budget includes generating the data and building the model
    out = Path(out)
    data = out / "data"
    if not (data / "annotations" / "instances_val.json").exists():
        generate_synthetic_dataset(data, num_train=num_train, num_val=num_val, imgsz=imgsz, seed=0)
    recipe = get_recipe("scratch")
    model_name = model_name or recipe.default_model
    overrides = {**recipe.model_overrides_for(model_name), **(model_overrides or {})}
    cfg = TrainConfig(
        epochs=1, imgsz=imgsz, device=device, out_dir=str(out / "train"), max_time_s=minutes * 60, **recipe.train
    )
    trainer = train_for_budget(model_name, data, cfg, start=start, model_overrides=overrides)
    metrics = trainer.last_metrics or trainer.evaluate()
    table = format_metrics_table(metrics)
    (out / "metrics.md").write_text(table + "\n")
    print(table)

    written, with_boxes = _write_predictions(trainer, data, out / "predictions", num_shown, imgsz, DEMO_CONF)
    print(f"\nrun directory: {out}  (checkpoints in {trainer.out_dir})")
    print(
        f"{written} validation images drawn in {out / 'predictions'}: "
        f"{with_boxes} of {written} with detections at confidence >= {DEMO_CONF}"
    )
    if written and not with_boxes:
        print("no detection reached that confidence yet: train longer (--minutes) for boxes in the pictures")
    return 0


@torch.no_grad()
def _write_predictions(
    trainer, data: Path, dest: Path, count: int, imgsz: int, conf: float = DEMO_CONF
) -> tuple[int, int]:
    """Annotate the first ``count`` validation images with the EMA model's detections.

    Returns (images written, images with at least one detection at ``conf``).
    """
    from .data import build_transforms

    dest.mkdir(parents=True, exist_ok=True)
    spec = resolve_dataset(data)
    raw = build_dataset(spec, "val")
    tf = build_transforms(False, imgsz)
    model = trainer.eval_model().eval()
    post = PostProcessor(raw.num_classes, num_top_queries=100, score_threshold=conf)
    device = trainer.device
    with_boxes = 0
    for i in range(min(count, len(raw))):
        image, target = raw[i]
        x, _ = tf(image, target)
        w, h = int(target["orig_size"][0]), int(target["orig_size"][1])
        (det,) = post(model(x[None].to(device)), torch.tensor([[w, h]], device=device))
        with_boxes += int(len(det["scores"]) > 0)
        drawn = draw_detections(
            image.as_subclass(torch.Tensor), det["boxes"], det["labels"], det["scores"], class_names=raw.class_names
        )
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(dest / f"{i:03d}.png")  # [3,H,W] -> HWC
    return min(count, len(raw)), with_boxes
