"""examples/serve_client.py against a real ``rtdetr serve`` process (random weights, loopback)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import urllib.error

import pytest
from PIL import Image

from .conftest import load_example


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    port = _free_port()
    cmd = [sys.executable, "-m", "rtdetr.cli", "serve", "--model", "rtdetrv2_hgnetv2_n", "--imgsz", "320"]
    cmd += ["--port", str(port), "--workers-threads", "1", "--api-key", "k3y", "--no-access-log"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_client_waits_then_detects_and_draws(server, toy_yolo, tmp_path, capsys):
    url, proc = server
    client = load_example("serve_client")
    image = toy_yolo.parent / "images" / "val" / "0000.jpg"
    drawn = tmp_path / "boxes.png"
    argv = [str(image), "--url", url, "--api-key", "k3y", "--conf", "0", "--max-det", "5", "--wait", "120"]
    assert client.main([*argv, "--annotated", str(drawn)]) == 0, proc.poll()
    printed = capsys.readouterr().out
    assert f"{image}: 5 detections, [128, 128] px" in printed
    with Image.open(drawn) as im:
        assert im.format == "PNG" and im.size == (128, 128)


def test_detect_returns_json_and_http_errors_surface(server):
    url, _ = server
    client = load_example("serve_client")
    client.wait_until_ready(url, 120)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, format="PNG")
    answer = client.detect(url, buf.getvalue(), conf=0, max_det=3, classes=[1, 2], api_key="k3y")
    assert answer["image_size"] == [64, 48] and len(answer["boxes"]) <= 3
    assert set(answer["labels"]) <= {1, 2}
    with pytest.raises(urllib.error.HTTPError) as err:
        client.detect(url, b"not an image", api_key="k3y")
    assert err.value.code == 415
    with pytest.raises(urllib.error.HTTPError) as err:
        client.detect(url, buf.getvalue())  # no key
    assert err.value.code == 401
