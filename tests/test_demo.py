"""The README's main job, shrunk: synthetic data -> seconds of training -> evaluation -> pictures."""

from __future__ import annotations

import re

from PIL import Image

from rtdetr import load_model
from rtdetr.config import get_config
from rtdetr.demo import DemoData, run_demo
from rtdetr.nn import CSPDarknet
from rtdetr.train.checkpoint import load_checkpoint
from rtdetr.train.recipes import get_recipe


def test_demo_writes_metrics_checkpoints_and_annotated_images(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = run_demo(
        out=out,
        minutes=0.05,
        imgsz=96,
        data_spec=DemoData(num_train=8, num_val=4),
        num_shown=2,
        device="cpu",
        model_overrides={"num_queries": 30},
    )
    assert rc == 0
    table = (out / "metrics.md").read_text()
    assert "AP50" in table and "circle" in table  # summary and per-class rows
    assert (out / "train" / "last.pt").exists() and (out / "train" / "metrics.jsonl").exists()
    # the demo trains the scratch recipe's preset (the CLI's help text names it too)
    config = load_checkpoint(out / "train" / "last.pt")["config"]
    assert config["name"] == get_recipe("scratch").default_model == "dfine_cspdarknet_n"
    assert config["decoder"]["box_refine"] == "fdr"
    # and the checkpoint loads back into that architecture (backbone fields travel as lists in the file)
    model = load_model(out / "train" / "last.pt")
    assert isinstance(model.backbone, CSPDarknet)
    assert model.config.backbone == get_config("dfine_cspdarknet_n").backbone
    pictures = sorted((out / "predictions").glob("*.png"))
    assert len(pictures) == 2
    with Image.open(pictures[0]) as im:
        assert im.size == (96, 96) and im.mode == "RGB"
    printed = capsys.readouterr().out
    assert "run directory" in printed
    # how many of the pictures show a box, and the advice when none does
    match = re.search(r"2 validation images drawn in .*: (\d) of 2 with detections at confidence >= 0.3", printed)
    assert match, printed
    assert (match.group(1) == "0") == ("train longer" in printed)


def test_demo_pictures_count_those_with_detections(tmp_path):
    """The summary line counts pictures with boxes drawn, not just pictures written."""
    from types import SimpleNamespace

    import torch

    from rtdetr.data import generate_synthetic_dataset
    from rtdetr.demo import DEMO_CONF, _write_predictions

    data = generate_synthetic_dataset(tmp_path / "data", num_train=1, num_val=3, imgsz=64)
    calls = {"n": 0}

    def model(x):
        # One confident query on the second image only; the others stay far below DEMO_CONF.
        calls["n"] += 1
        logits = torch.full((1, 5, 6), -10.0)
        if calls["n"] == 2:
            logits[0, 0, 1] = 10.0
        return {"pred_logits": logits, "pred_boxes": torch.full((1, 5, 4), 0.5)}

    model.eval = lambda: model
    trainer = SimpleNamespace(eval_model=lambda: model, device=torch.device("cpu"))
    written, with_boxes = _write_predictions(trainer, data, tmp_path / "pred", 3, 64, DEMO_CONF)
    assert (written, with_boxes) == (3, 1)
    assert len(list((tmp_path / "pred").glob("*.png"))) == 3


def test_demo_data_is_reused_only_when_generated_with_the_same_settings(tmp_path, monkeypatch):
    """A second demo reuses its dataset; one with other settings (or an older folder without
    the record) regenerates it instead of silently training on other data."""
    import json

    import rtdetr.demo as demo

    calls = []
    real = demo.generate_synthetic_dataset
    monkeypatch.setattr(demo, "generate_synthetic_dataset", lambda *a, **k: calls.append(k) or real(*a, **k))
    folder = tmp_path / "data"
    small = DemoData(imgsz=64, num_train=2, num_val=1)
    assert demo._ensure_data(folder, small) == folder
    assert len(calls) == 1 and calls[0]["num_train"] == 2 and calls[0]["imgsz"] == 64
    demo._ensure_data(folder, small)
    assert len(calls) == 1  # same settings: reused
    demo._ensure_data(folder, DemoData(imgsz=96, num_train=2, num_val=1))
    assert len(calls) == 2  # other image size
    images = json.loads((folder / "annotations" / "instances_train.json").read_text())["images"]
    assert {(im["width"], im["height"]) for im in images} == {(96, 96)}
    demo._ensure_data(folder, DemoData(imgsz=96, num_train=3, num_val=1))
    assert (
        len(calls) == 3
        and len(json.loads((folder / "annotations" / "instances_train.json").read_text())["images"]) == 3
    )
    (folder / "demo_data.json").unlink()  # a folder from before the record existed
    demo._ensure_data(folder, DemoData(imgsz=96, num_train=3, num_val=1))
    assert len(calls) == 4


def test_demo_help_names_the_default_image_side(capsys):
    import pytest

    from rtdetr.cli import main

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert f"default {DemoData().imgsz}: DemoData.imgsz" in " ".join(capsys.readouterr().out.split())
