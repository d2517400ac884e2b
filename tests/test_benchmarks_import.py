"""Every benchmark script still imports: they run outside the suite, so an API change could break them unseen."""

import importlib
import pkgutil
from pathlib import Path

import pytest

import benchmarks

MODULES = sorted(
    f"benchmarks.{m.name}"
    for m in pkgutil.iter_modules([str(Path(benchmarks.__file__).parent)])
    if not m.name.startswith("_")
) + [f"benchmarks.nms_study.{m}" for m in ("ops", "detectors", "measure", "report", "study", "train")]


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring saying what it measures"


def test_train_synthetic_steps_span_epochs(tmp_path):
    """``--steps N`` beyond one pass over the data must not be cut to one epoch's length."""
    from benchmarks.train_synthetic import _steps_per_epoch
    from rtdetr.data import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "data", num_train=9, num_val=1, imgsz=32, seed=0)
    assert _steps_per_epoch(data, [], "scratch") == 2  # batch 4, the short last batch dropped
    assert _steps_per_epoch(data, ["lr=1e-3", "batch_size=3"], "scratch") == 3


def test_train_synthetic_latency_interleaves_contenders(tmp_path):
    """The latency child times every contender on every image of every pass, in one process."""
    import argparse
    import json

    from benchmarks.train_synthetic import LATENCY_ROUNDS, latency_child
    from rtdetr.data import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "data", num_train=1, num_val=3, imgsz=64, seed=0)
    args = argparse.Namespace(
        data=str(data),
        checkpoint="rtdetrv2_hgnetv2_n",  # a preset with random weights: only the timing protocol is under test
        yolo_checkpoint=None,
        imgsz=320,  # the preset's 300 queries need enough encoder tokens
        threads=1,
        latency_images=3,
        result=str(tmp_path / "latency.json"),
    )
    latency_child(args)
    rows = json.loads((tmp_path / "latency.json").read_text())
    assert [r["what"].split(", conf")[0].split("), ")[1] for r in rows] == ["fp32", "auto", "fp32, eager"]
    for r in rows:
        assert r["images"] == 3 and r["runs"] == 3 * LATENCY_ROUNDS and r["threads"] == 1
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]


def test_step_vs_yolo_hands_yolo_the_same_boxes():
    """Ultralytics' batch layout: one row per box with its image index, class and cxcywh box."""
    import torch

    from benchmarks.train_step_vs_yolo import yolo_batch

    images = torch.rand(3, 3, 8, 8)
    targets = [
        {"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.2, 0.1, 0.1]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.7, 0.6, 0.3, 0.4]])},
    ]
    b = yolo_batch(images, targets)
    assert b["img"] is images
    assert b["batch_idx"].tolist() == [0.0, 0.0, 2.0]
    assert b["cls"].tolist() == [[2.0], [0.0], [1.0]]
    assert torch.equal(b["bboxes"], torch.cat([targets[0]["boxes"], targets[2]["boxes"]]))
