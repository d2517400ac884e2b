"""``rtdetr predict`` and ``rtdetr benchmark`` refuse bad input with one line and exit code 2.

Each case runs the real CLI in-process from a scratch folder and checks the contract
(see ``cli_contract``): code 2, one ``error:`` line naming the flag or file and what was
expected, no traceback, and nothing under the folder created or written over.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rtdetr
import rtdetr.infer.command as infer_command

from .cli_contract import run_bad, snapshot

MODEL = ["--model", "rtdetrv2_hgnetv2_n", "--device", "cpu"]


@pytest.fixture
def workdir(tmp_path, monkeypatch, detector):
    """A scratch cwd holding imgs/a.png, an earlier run's out/predictions.json, an empty/ folder
    and a file notes.txt; the model is the small test detector (5 classes)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(infer_command, "detector_from_args", lambda args: detector)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "predictions.json").write_text("[]")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")
    return tmp_path


PREDICT_CASES = {
    "conf above 1": (["imgs", "--conf", "1.5"], ["--conf", "between 0 and 1", "1.5"]),
    "conf below 0": (["imgs", "--conf", "-0.1"], ["--conf", "between 0 and 1"]),
    "conf nan": (["imgs", "--conf", "nan"], ["--conf", "finite"]),
    "batch size 0": (["imgs", "--batch-size", "0"], ["--batch-size", "positive"]),
    "batch size not a number": (["imgs", "--batch-size", "two"], ["--batch-size", "whole number", "'two'"]),
    "max det 0": (["imgs", "--max-det", "0"], ["--max-det", "positive"]),
    "imgsz not a multiple of 32": (["imgs", "--imgsz", "100"], ["--imgsz", "multiple of 32", "try 96"]),
    "imgsz 0": (["imgs", "--imgsz", "0"], ["--imgsz", "multiple of 32"]),
    "negative class": (["imgs", "--classes", "1", "-1"], ["--classes", "0 or more", "-1"]),
    "class beyond the model": (["imgs", "--classes", "2", "7"], ["--classes 7", "classes 0..4"]),
    "missing file": (["imgs", "nope/missing.jpg"], ["no such file or folder", "nope/missing.jpg"]),
    "empty folder": (["empty"], ["no images or videos found in empty"]),
    "glob without matches": (["imgs/*.jpg"], ["no files match", "imgs/*.jpg"]),
    "out is a file": (["imgs", "--out", "notes.txt"], ["--out notes.txt is a file"]),
}


@pytest.mark.parametrize("argv, expected", PREDICT_CASES.values(), ids=PREDICT_CASES.keys())
def test_predict_bad_input(workdir, capsys, argv, expected):
    before = snapshot(workdir)
    out = [] if "--out" in argv else ["--out", "out"]
    line = run_bad(["predict", *argv, *MODEL, *out], capsys)
    for fragment in expected:
        assert fragment in line, line
    assert snapshot(workdir) == before


BENCHMARK_CASES = {
    "batch 0": (["--batch", "0"], ["--batch", "positive"]),
    "runs 0": (["--runs", "0"], ["--runs", "positive"]),
    "negative warmup": (["--warmup", "-1"], ["--warmup", "0 or more"]),
    "threads 0": (["--threads", "0"], ["--threads", "positive"]),
    "imgsz 33": (["--imgsz", "33"], ["--imgsz", "multiple of 32", "try 32"]),
}


@pytest.mark.parametrize("argv, expected", BENCHMARK_CASES.values(), ids=BENCHMARK_CASES.keys())
def test_benchmark_bad_input(workdir, capsys, argv, expected):
    before = snapshot(workdir)
    line = run_bad(["benchmark", *argv, *MODEL, "--runs" if "--runs" not in argv else "--warmup", "1"], capsys)
    for fragment in expected:
        assert fragment in line, line
    assert snapshot(workdir) == before


def test_predict_parser_defaults_are_the_library_defaults():
    from rtdetr.cli import build_parser
    from rtdetr.infer.results import DEFAULT_CONF

    args = build_parser().parse_args(["predict", "x.jpg", "--model", "m"])
    assert (args.conf, args.batch_size, args.max_det, args.strict) == (DEFAULT_CONF, 1, 300, False)


def test_predict_missing_source_in_a_fresh_process(tmp_path):
    """The installed entry point's behaviour end to end: code 2, one line, before any model loads."""
    src = str(Path(rtdetr.__file__).resolve().parents[1])  # this checkout's package, whatever the cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(
        [sys.executable, "-m", "rtdetr.cli", "predict", "missing.jpg", "--model", "no_such_model"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    (line,) = [line for line in res.stderr.splitlines() if "error:" in line]
    assert "no such file or folder: missing.jpg" in line
    assert list(tmp_path.iterdir()) == []
