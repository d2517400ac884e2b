"""``rtdetr serve`` options, and the real command serving a small model in a child process."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from rtdetr.serve.command import add_serve_parser

from .conftest import image_bytes


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rtdetr")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_defaults_bind_loopback():
    args = _parse("--model", "rtdetr_r18vd")
    assert (args.host, args.port, args.max_batch, args.max_wait_ms, args.queue_size) == ("127.0.0.1", 8000, 8, 5.0, 64)
    assert args.workers_threads is None and args.api_key is None and callable(args.func)
    args = _parse(
        "--model", "m.onnx", "--host", "0.0.0.0", "--max-batch", "1", "--workers-threads", "2", "--api-key", "k"
    )
    assert (args.host, args.max_batch, args.workers_threads, args.api_key) == ("0.0.0.0", 1, 2, "k")
    with pytest.raises(SystemExit):
        _parse("--model", "x", "--max-batch", "many")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_command_serves_a_model_and_stops_on_sigint():
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "rtdetr.serve",
        "--model",
        "rtdetrv2_hgnetv2_n",
        "--imgsz",
        "320",
        "--device",
        "cpu",
        "--port",
        str(port),
        "--max-batch",
        "2",
        "--workers-threads",
        "1",
        "--no-access-log",
    ]
    env = {**os.environ, "RTDETR_API_KEY": "from-env"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.2)
        data = image_bytes(64, 48)
        assert httpx.post(f"{url}/v1/detect", content=data, timeout=60).status_code == 401  # key from the environment
        res = httpx.post(
            f"{url}/v1/detect", content=data, params={"conf": 0}, headers={"X-API-Key": "from-env"}, timeout=60
        )
        assert res.status_code == 200 and res.json()["image_size"] == [64, 48]
        assert httpx.get(f"{url}/v1/model", headers={"X-API-Key": "from-env"}).json()["model"] == "rtdetrv2_hgnetv2_n"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "warmed up" in out and "Shutting down" in out
