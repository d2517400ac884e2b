"""The end-to-end demo: synthetic data -> short CPU training -> COCO evaluation -> annotated images.

Everything is generated locally; nothing is downloaded. ``rtdetr demo`` runs it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from .data import build_dataset, generate_synthetic_dataset, resolve_dataset
from .infer.draw import draw_detections
from .nn.postprocess import PostProcessor
from .train.recipes import get_recipe

__all__ = ["run_demo", "DemoData", "DEMO_SETTINGS", "DEMO_CONF"]

log = logging.getLogger(__name__)

# Detections drawn on the demo's pictures: the confidence they need.
DEMO_CONF = 0.3

# The demo trains with ``rtdetr train --recipe scratch``'s settings (rtdetr.train.recipes).
DEMO_SETTINGS = dict(get_recipe("scratch").train)


@dataclass(frozen=True)
class DemoData:
    """The dataset the demo generates and trains on (:func:`rtdetr.data.generate_synthetic_dataset`
    keywords; the model trains at the images' side, ``imgsz``).

    Made to be learnt in minutes from random weights: 3 classes (circle, square, triangle,
    told apart by form only), up to 14 objects per image, 24 px .. 40% of the side. Four
    minutes are 350-600 optimizer steps on 2-core CPUs; after 400 these settings scored AP50
    0.48-0.51 (two seeds), the earlier 6-class data with up to 8 objects of 12 px .. 50% 0.15,
    and 3 classes with up to 8 objects of 12 px .. 50% 0.31 (at 500 steps). So early on the
    detector mostly finds the objects but confuses their classes, and more objects per image
    is more supervision per step (docs/convergence.md, tenth round). The benchmarks' sets
    are harder on purpose.
    """

    imgsz: int = 320
    num_train: int = 400
    num_val: int = 50
    num_classes: int = 3
    max_objects: int = 14
    object_size: tuple[float, float] = (24.0, 0.4)
    seed: int = 0


_DATA_RECORD = "demo_data.json"  # what the folder's dataset was generated with


def _ensure_data(folder: Path, spec: DemoData) -> Path:
    """Generate the demo's dataset into ``folder`` unless it already holds this one.

    A folder written by an earlier version or with other settings is regenerated: reusing
    it would train and score on other data than the run says.
    """
    wanted = {**asdict(spec), "object_size": list(spec.object_size)}
    record = folder / _DATA_RECORD
    try:
        if json.loads(record.read_text()) == wanted and (folder / "annotations" / "instances_val.json").exists():
            return folder
    except (OSError, ValueError):
        pass
    if folder.exists():
        log.info("regenerating the demo's dataset in %s (it was made with other settings)", folder)
    record.unlink(missing_ok=True)  # absent while the folder is being written: a crash leaves no false record
    generate_synthetic_dataset(folder, **asdict(spec))
    record.write_text(json.dumps(wanted))
    return folder


def run_demo(
    *,
    out: str | Path = "runs/demo",
    minutes: float = 4.0,
    model_name: str | None = None,
    imgsz: int | None = None,
    device: str = "auto",
    data_spec: DemoData = DemoData(),
    num_shown: int = 8,
    model_overrides: dict | None = None,
) -> int:
    """Generate ``data_spec`` under ``out/data`` (kept for the next run), train the scratch
    recipe on it for ``minutes`` of wall time (generation and set-up included), evaluate,
    and draw ``num_shown`` validation images; prints the results, returns the exit code.

    ``imgsz`` replaces ``data_spec.imgsz``: the images are generated at that side and the
    model trains at it."""
    import time

    from .eval import format_metrics_table
    from .train.launch import train_for_budget
    from .train.train_config import TrainConfig

    start = time.perf_counter()  # the budget includes generating the data and building the model
    out = Path(out)
    if imgsz is not None:
        data_spec = replace(data_spec, imgsz=imgsz)
    imgsz = data_spec.imgsz
    data = _ensure_data(out / "data", data_spec)
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
