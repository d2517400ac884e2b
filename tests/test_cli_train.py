"""The train / val / data CLI end to end on a tiny synthetic dataset (a few seconds of CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from rtdetr.cli import main

SMALL = [
    "--model",
    "rtdetrv2_hgnetv2_n",
    "--imgsz",
    "96",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "2",
    "--ema-warmup",
    "2",
    "--set",
    "num_queries=30",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", str(root / "six"), "--train", "8", "--val", "4", "--imgsz", "64"]) == 0
    assert (
        main(["data", "synth", str(root / "three"), "--train", "8", "--val", "4", "--imgsz", "64", "--classes", "3"])
        == 0
    )
    return root


def test_train_resume_val_and_finetune(synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(synth / "six"), "--epochs", "1", "--out", str(run), *SMALL]) == 0
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["class_names"][:2] == ["circle", "square"]
    assert ckpt["config"]["num_classes"] == 6
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == 1 and 0.0 <= records[-1]["AP"] <= 1.0
    assert (run / "results.csv").exists()

    # resume continues from the saved epoch to the new total
    assert main(["train", "--data", str(synth / "six"), "--epochs", "2", "--out", str(run), "--resume", *SMALL]) == 0
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 2

    capsys.readouterr()
    assert (
        main(
            [
                "val",
                "--model",
                str(run / "last.pt"),
                "--data",
                str(synth / "six"),
                "--imgsz",
                "96",
                "--workers",
                "0",
                "--save-json",
                str(tmp_path / "res.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "AP50" in out and "circle" in out
    assert isinstance(json.loads((tmp_path / "res.json").read_text()), list)

    # the checkpoint predicts at its training size, with its class names and dataset ids
    from rtdetr.infer import Detector

    detector = Detector.from_pretrained(run / "last.pt")
    assert detector.imgsz == 96 and detector.class_names[:2] == ["circle", "square"]
    (det,) = detector.predict(next((synth / "six" / "val").iterdir()), conf=0.0, max_det=3)
    assert len(det) == 3 and set(det.names) <= set(detector.class_names)
    assert {d["category_id"] for d in det.to_coco_json(0)} <= set(ckpt["category_ids"])

    # fine-tune the 6-class checkpoint on a 3-class dataset: heads are re-initialized
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "train",
                "--data",
                str(synth / "three"),
                "--epochs",
                "1",
                "--out",
                str(ft),
                "--weights",
                str(run / "last.pt"),
                *SMALL,
            ]
        )
        == 0
    )
    tuned = torch.load(ft / "last.pt", weights_only=False)
    assert tuned["config"]["num_classes"] == 3
    assert tuned["model"]["decoder.enc_score_head.weight"].shape[0] == 3
    # the backbone came from the checkpoint (moved by one epoch of training only)
    before = ckpt["ema"]["module"]["backbone.stem.stem1.conv.weight"]
    after = tuned["model"]["backbone.stem.stem1.conv.weight"]
    assert torch.allclose(before, after, atol=0.05)


def test_train_reports_a_missing_dataset(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--epochs", "1", "--out", str(tmp_path / "r"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope" in err and "Traceback" not in err
