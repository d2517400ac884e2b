"""Latency measurement that counts everything: decode, preprocess, model, postprocess.

Two scopes, as the paper argues they must be reported:

* ``model``: the backend call on an already preprocessed batch (network + the in-graph
  top-K, which is RT-DETR's whole postprocess);
* ``end_to_end``: JPEG bytes -> decoded RGB -> resized tensor -> backend -> per-image
  detections above the score threshold, i.e. what a user's ``predict`` call costs.
"""

from __future__ import annotations

import io
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.image_io import pil_to_tensor
from .predictor import Detector, preprocess
from .results import DEFAULT_CONF

__all__ = ["LatencyStats", "time_callable", "benchmark_detector", "detector_calls", "synthetic_jpeg", "decode_jpeg"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock statistics of one measured call (a whole batch)."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    batch: int

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.median_ms / 1e3)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "images_per_s": self.images_per_s}

    @classmethod
    def from_times(cls, times_ms: list[float], batch: int = 1) -> LatencyStats:
        """Statistics of measured call times (milliseconds, any order)."""
        times = sorted(times_ms)
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        return cls(statistics.median(times), p90, statistics.fmean(times), len(times), batch)


def time_callable(
    fn: Callable[[], object], *, warmup: int = 3, runs: int = 20, batch: int = 1, sync: Callable[[], None] | None = None
) -> LatencyStats:
    """Median / p90 / mean of ``fn()`` over ``runs`` calls after ``warmup`` calls.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs after each call so asynchronous
    devices are timed to completion.
    """
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t) * 1e3)
    return LatencyStats.from_times(times, batch)


def synthetic_jpeg(width: int = 1280, height: int = 720, *, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-sized JPEG with smooth gradients and shapes (decode cost like a real photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1) * 200
    for _ in range(12):
        x0, y0 = rng.integers(0, width - 100), rng.integers(0, height - 100)
        w, h = rng.integers(40, 300), rng.integers(40, 300)
        base[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def detector_calls(
    detector: Detector, *, batch: int = 1, conf: float = DEFAULT_CONF, jpeg: bytes | None = None
) -> dict[str, Callable[[], object]]:
    """The two timed calls: ``{"model": ..., "end_to_end": ...}`` (see the module docstring)."""
    jpeg = jpeg if jpeg is not None else synthetic_jpeg()
    images, sizes = preprocess([decode_jpeg(jpeg) for _ in range(batch)], detector.imgsz)

    def model() -> object:
        return detector.backend(images, sizes)

    def end_to_end() -> object:
        return detector.predict_images([decode_jpeg(jpeg) for _ in range(batch)], conf=conf)

    return {"model": model, "end_to_end": end_to_end}


def benchmark_detector(
    detector: Detector,
    *,
    batch: int = 1,
    runs: int = 20,
    warmup: int = 3,
    conf: float = DEFAULT_CONF,
    jpeg: bytes | None = None,
) -> dict[str, LatencyStats]:
    """Time ``detector`` in both scopes; returns ``{"model": ..., "end_to_end": ...}``."""
    device = getattr(detector.backend, "device", torch.device("cpu"))
    sync = torch.cuda.synchronize if isinstance(device, torch.device) and device.type == "cuda" else None
    detector.warmup(batch_size=batch, runs=0)  # steady state: on a CPU, the traced graph
    calls = detector_calls(detector, batch=batch, conf=conf, jpeg=jpeg)
    return {scope: time_callable(fn, warmup=warmup, runs=runs, batch=batch, sync=sync) for scope, fn in calls.items()}


def decode_jpeg(data: bytes) -> Tensor:
    """Encoded image bytes -> uint8 [3, H, W] RGB, as ``predict`` decodes files."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return pil_to_tensor(im).as_subclass(Tensor)
