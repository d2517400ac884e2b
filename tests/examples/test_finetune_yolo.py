"""examples/finetune_yolo.py: a YOLO-format folder in, a trained checkpoint that detects out."""

from __future__ import annotations

import json

import rtdetr
from rtdetr.data import build_dataset, resolve_dataset

from .conftest import load_example


def test_toy_dataset_is_a_valid_yolo_folder(toy_yolo):
    spec = resolve_dataset(toy_yolo)
    assert spec.class_names == ["red box", "blue box"]
    val = build_dataset(spec, "val")
    assert len(val) == 4 and len(build_dataset(spec, "train")) == 8
    _, target = val[0]
    boxes = target["boxes"]
    assert len(boxes) >= 1 and bool(((boxes >= 0) & (boxes <= 128)).all())


def test_finetune_writes_a_checkpoint_that_loads_and_predicts(toy_yolo, tmp_path, capsys):
    example = load_example("finetune_yolo")
    out = tmp_path / "ft"
    argv = [str(toy_yolo), "--model", "rtdetrv2_hgnetv2_n", "--imgsz", "128", "--epochs", "1"]
    assert example.main([*argv, "--set", "num_queries=30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"trained 1 epochs -> {out}: val AP" in printed
    assert "0000.jpg:" in printed and "0001.jpg:" in printed  # predictions on two val images
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert rows and any("AP" in row or "AP" in row.get("metrics", {}) for row in rows)
    model = rtdetr.load_model(out / "best.pt")
    assert model.class_names == ["red box", "blue box"] and model.config.decoder.num_queries == 30
