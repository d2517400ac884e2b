"""Fixtures for the service tests: a fake detector, a live uvicorn server on a free loopback port, images."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.infer.draw import draw_detections

CLASS_NAMES = ["circle", "square", "triangle"]
# (x1, y1, x2, y2) as fractions of the image, score, label: what FakeDetector finds in every image.
FAKE_BOXES = [
    ((0.10, 0.10, 0.40, 0.50), 0.92, 0),
    ((0.50, 0.20, 0.90, 0.70), 0.71, 1),
    ((0.20, 0.55, 0.45, 0.95), 0.48, 2),
    ((0.60, 0.75, 0.80, 0.90), 0.30, 0),
    ((0.05, 0.70, 0.15, 0.80), 0.12, 1),
]


@dataclass
class FakeDetections:
    """The parts of ``rtdetr.infer.Detections`` that the service uses."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    image_size: tuple[int, int]
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))

    @property
    def names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels.tolist()]

    def filter(self, keep: torch.Tensor) -> FakeDetections:
        return FakeDetections(self.boxes[keep], self.scores[keep], self.labels[keep], self.image_size, self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "labels": self.labels.tolist(),
            "names": self.names,
            "image_size": list(self.image_size),
            "source": None,
        }

    def plot(self, image: torch.Tensor) -> torch.Tensor:
        return draw_detections(image, self.boxes, self.labels, self.scores, class_names=self.class_names)


@dataclass
class FakeDetector:
    """Deterministic stand-in for ``rtdetr.infer.Detector``: FAKE_BOXES scaled to each image.

    ``delay_s`` sleeps in every forward pass (to make batching and back-pressure observable),
    ``fail_predict`` / ``fail_warmup`` raise, and every call is recorded.
    """

    delay_s: float = 0.0
    fail_predict: bool = False
    fail_warmup: bool = False
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    imgsz: int = 64
    num_classes: int = len(CLASS_NAMES)
    batch_sizes: list[int] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    warmups: list[int] = field(default_factory=list)

    def warmup(self, batch_size: int = 1) -> None:
        if self.fail_warmup:
            raise RuntimeError("warm-up exploded")
        self.warmups.append(batch_size)

    def predict_images(
        self, images: list[torch.Tensor], *, conf: float = 0.5, classes: list[int] | None = None, max_det: int = 300
    ) -> list[FakeDetections]:
        self.batch_sizes.append(len(images))
        self.calls.append({"n": len(images), "conf": conf, "classes": classes, "max_det": max_det})
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_predict:
            raise RuntimeError("forward pass exploded")
        return [self.detect_one(image, conf=conf, classes=classes, max_det=max_det) for image in images]

    def detect_one(
        self, image: torch.Tensor, *, conf: float, classes: list[int] | None, max_det: int
    ) -> FakeDetections:
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
        h, w = image.shape[1:]
        rows = [(b, s, c) for b, s, c in FAKE_BOXES if s >= conf and (classes is None or c in classes)][:max_det]
        boxes = torch.tensor(
            [[b[0] * w, b[1] * h, b[2] * w, b[3] * h] for b, _, _ in rows], dtype=torch.float32
        ).reshape(-1, 4)
        return FakeDetections(
            boxes=boxes,
            scores=torch.tensor([s for _, s, _ in rows], dtype=torch.float32),
            labels=torch.tensor([c for _, _, c in rows], dtype=torch.int64),
            image_size=(int(w), int(h)),
        )


class LiveServer:
    """uvicorn serving ``app`` in a background thread on a free 127.0.0.1 port (a context manager)."""

    def __init__(self, app: Any):
        import uvicorn

        # Port 0: the kernel picks a free port when uvicorn binds (no race with other tests).
        # (Handing uvicorn a pre-bound socket instead leaves Nagle on: +40 ms per request.)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def wait_ready(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise TimeoutError("service never became ready")


def image_bytes(width: int = 64, height: int = 48, fmt: str = "PNG", seed: int = 0, mode: str = "RGB") -> bytes:
    """A random image file of the given size and format."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    data = bytearray(image_bytes(8, 8))
    ihdr = 8  # signature, then the IHDR chunk: length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


@pytest.fixture(scope="module")
def fake_server():
    """A live service around a FakeDetector: max batch 4, 20 ms wait, queue 32, 1 MiB uploads, 4 MP images."""
    pytest.importorskip("fastapi")
    from rtdetr.serve.app import create_app

    detector = FakeDetector(delay_s=0.01)
    app = create_app(
        detector,
        model_name="fake",
        max_batch=4,
        max_wait_ms=20,
        queue_size=32,
        max_upload_bytes=1024 * 1024,
        max_image_pixels=4_000_000,
        max_image_side=8000,
    )
    with LiveServer(app) as server:
        wait_ready(server.url)
        server.detector = detector
        yield server
