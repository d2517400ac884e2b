"""``rtdetr serve`` refuses bad flags with one line and exit code 2, before loading a model or binding a port.

``run_serve`` is replaced by a recorder in the flag cases: a flag the parser lets through
would otherwise start a real service (and block the test), so "got through" shows up as
exit code 0 instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rtdetr
import rtdetr.serve.command as serve_command
from tests.infer.cli_contract import run_bad, snapshot

CASES = {
    "port above 65535": (["--port", "70000"], ["--port", "0..65535", "70000"]),
    "negative port": (["--port", "-1"], ["--port", "0..65535"]),
    "port not a number": (["--port", "http"], ["--port", "whole number"]),
    "max batch 0": (["--max-batch", "0"], ["--max-batch", "positive"]),
    "queue size 0": (["--queue-size", "0"], ["--queue-size", "positive"]),
    "negative max wait": (["--max-wait-ms", "-5"], ["--max-wait-ms", "0 or more"]),
    "infinite max wait": (["--max-wait-ms", "inf"], ["--max-wait-ms", "finite"]),
    "workers threads 0": (["--workers-threads", "0"], ["--workers-threads", "positive"]),
    "upload limit 0": (["--max-upload-mb", "0"], ["--max-upload-mb", "greater than 0"]),
    "image pixel limit 0": (["--max-image-pixels", "0"], ["--max-image-pixels", "positive"]),
    "imgsz not a multiple of 32": (["--imgsz", "300"], ["--imgsz", "multiple of 32", "try 288"]),
}


@pytest.mark.parametrize("argv, expected", CASES.values(), ids=CASES.keys())
def test_serve_bad_flag(tmp_path, monkeypatch, capsys, argv, expected):
    started = []
    monkeypatch.setattr(serve_command, "run_serve", lambda args: started.append(args) or 0)
    monkeypatch.chdir(tmp_path)
    line = run_bad(["serve", "--model", "rtdetrv2_hgnetv2_n", *argv], capsys)
    for fragment in expected:
        assert fragment in line, line
    assert not started and snapshot(tmp_path) == {}


def test_serve_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # importing it now raises ImportError
    line = run_bad(["serve", "--model", "rtdetrv2_hgnetv2_n", "--device", "cpu"], capsys)
    assert "pip install 'rtdetr[serve]'" in line and "uvicorn" in line


def test_python_m_rtdetr_serve_has_the_same_contract(tmp_path):
    src = str(Path(rtdetr.__file__).resolve().parents[1])  # this checkout's package, whatever the cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(
        [sys.executable, "-m", "rtdetr.serve", "--model", "rtdetrv2_hgnetv2_n", "--port", "99999"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    (line,) = [line for line in res.stderr.splitlines() if "error:" in line]
    assert "--port" in line and "99999" in line
    assert list(tmp_path.iterdir()) == []
