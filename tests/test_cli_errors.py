"""Bad input to train / val / export / convert / info / data: one clear message and exit code 2.

The contract for every case: ``rtdetr.cli.main`` returns 2 (argparse's own usage errors
exit with 2 too), stderr holds a short ``error: ...`` message naming what is wrong, no
traceback, and nothing the user had is written over. (predict / benchmark / serve have
their own corpus in tests/infer and tests/serve.)
"""

from __future__ import annotations

import hashlib
import pathlib
from pathlib import Path

import pytest
import torch

from rtdetr.cli import main

TINY = ["--model", "rtdetrv2_hgnetv2_n", "--imgsz", "64", "--workers", "0", "--set", "num_queries=10"]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "pwned")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 6-class dataset, an empty one, a run folder with a 3-class checkpoint, junk and crafted files."""
    root = tmp_path_factory.mktemp("bad_input")
    assert main(["data", "synth", str(root / "six"), "--train", "4", "--val", "2", "--imgsz", "64"]) == 0
    for split in ("train", "val"):
        (root / "empty" / split).mkdir(parents=True)
    from rtdetr.train.checkpoint import save_checkpoint
    from rtdetr.train.launch import build_trainer
    from rtdetr.train.train_config import TrainConfig

    assert (
        main(["data", "synth", str(root / "three"), "--train", "4", "--val", "2", "--imgsz", "64", "--classes", "3"])
        == 0
    )
    trainer = build_trainer(
        "rtdetrv2_hgnetv2_n",
        root / "three",
        TrainConfig(epochs=1, batch_size=2, imgsz=64, num_workers=0, out_dir=str(root / "run"), progress=False),
        model_overrides={"num_queries": 10},
    )
    save_checkpoint(trainer.state(), root / "run" / "last.pt")
    (root / "junk.pt").write_bytes(b"not a checkpoint at all")
    state = torch.load(root / "run" / "last.pt", weights_only=False)
    state["notes"] = _Payload(root / "payload_ran")
    torch.save(state, root / "evil.pt")
    return root


def _cases(root: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, text the message must contain)."""
    six, run, ckpt = str(root / "six"), root / "run", str(root / "run" / "last.pt")
    out = str(root / "out")
    return {
        "train: missing dataset": (["train", "--data", str(root / "nope"), *TINY, "--out", out], "nope"),
        "train: dataset without images": (["train", "--data", str(root / "empty"), *TINY, "--out", out], "empty"),
        "train: batch size 0": (["train", "--data", six, *TINY, "--batch-size", "0", "--out", out], "batch"),
        "train: unknown preset": (["train", "--data", six, "--model", "rtdetr_r19", "--out", out], "rtdetr_r19"),
        "train: missing weights": (["train", "--data", six, *TINY, "--weights", "gone.pth", "--out", out], "gone.pth"),
        "train: crafted weights": (
            ["train", "--data", six, *TINY, "--weights", str(root / "evil.pt"), "--out", out],
            "--trusted",
        ),
        "train: junk weights": (
            ["train", "--data", six, *TINY, "--weights", str(root / "junk.pt"), "--out", out],
            "junk.pt",
        ),
        "train: missing resume file": (["train", "--data", six, *TINY, "--resume", "gone.pt", "--out", out], "gone.pt"),
        "train: unknown --set field": (
            ["train", "--data", six, *TINY, "--set", "num_quries=5", "--out", out],
            "num_quries",
        ),
        "train: --set without =": (["train", "--data", six, *TINY, "--set", "num_queries", "--out", out], "KEY=VALUE"),
        "train: other preset's checkpoint as weights": (
            ["train", "--data", six, "--model", "rtdetr_r18vd", "--imgsz", "64", "--weights", ckpt, "--out", out],
            "--model " + ckpt,
        ),
        "val: missing checkpoint": (["val", "--model", str(run / "best.pt"), "--data", six], "best.pt"),
        "val: unknown preset": (["val", "--model", "rtdetr_r18", "--data", six], "did you mean"),
        "val: missing dataset": (["val", "--model", ckpt, "--data", str(root / "nope")], "nope"),
        "val: class count differs from the dataset": (
            ["val", "--model", ckpt, "--data", six, "--workers", "0"],
            "classes",
        ),
        "val: junk checkpoint": (["val", "--model", str(root / "junk.pt"), "--data", six], "junk.pt"),
        "export: missing model file": (["export", "--model", "gone.pt", "--out", str(root / "m.onnx")], "gone.pt"),
        "export: imgsz not a multiple of 32": (
            ["export", "--model", ckpt, "--imgsz", "100", "--out", str(root / "m.onnx")],
            "32",
        ),
        "export: int8 without calibration images": (
            ["export", "--model", ckpt, "--int8", "--out", str(root / "m.onnx")],
            "--calib",
        ),
        "export: weights with a checkpoint file": (["export", "--model", ckpt, "--weights", "coco"], "preset names"),
        "export: crafted checkpoint": (
            ["export", "--model", str(root / "evil.pt"), "--out", str(root / "m.onnx")],
            "--trusted",
        ),
        "convert: missing source": (
            ["convert", "gone.pth", str(root / "c.safetensors"), "--to", "safetensors"],
            "gone.pth",
        ),
        "convert: junk source": (
            ["convert", str(root / "junk.pt"), str(root / "c.safetensors"), "--to", "safetensors"],
            "junk.pt",
        ),
        "convert: crafted source": (
            ["convert", str(root / "evil.pt"), str(root / "c.safetensors"), "--to", "safetensors"],
            "--trusted",
        ),
        "info: unknown preset": (["info", "rtdetr_nope"], "unknown model"),
        "predict: missing model file": (["predict", six, "--model", "gone.pt", "--out", out], "gone.pt"),
        "predict: crafted checkpoint": (["predict", six, "--model", str(root / "evil.pt"), "--out", out], "--trusted"),
        "benchmark: unknown preset": (["benchmark", "--model", "rtdetr_r18", "--runs", "1"], "did you mean"),
    }


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


CASE_NAMES = list(_cases(Path("/")))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_message_and_exit_2(files, name, capsys):
    argv, needle = _cases(files)[name]
    before = _digest(files)
    capsys.readouterr()
    assert main(argv) == 2, name
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]
    assert message, f"no 'error:' line in {err!r}"
    assert needle in err, f"{name}: {needle!r} not in {err!r}"
    assert len(err.splitlines()) <= 8, err
    assert not (files / "payload_ran").exists()
    after = _digest(files)
    assert {k: v for k, v in after.items() if k in before} == before, "a file the user had was changed"


def test_traceback_with_verbose(files, capsys):
    with pytest.raises(FileNotFoundError):
        main(["-v", "val", "--model", "gone.pt", "--data", str(files / "six")])


def test_corpus_is_large_enough():
    assert len(CASE_NAMES) >= 25
