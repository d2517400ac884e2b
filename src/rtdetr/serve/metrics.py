"""Prometheus metrics of the detection service, rendered in the text exposition format (0.0.4).

The format is small enough to write directly, which keeps the service free of a
metrics dependency. Everything is thread-safe: HTTP handlers update counters on
the event loop while the batching worker records batch sizes from its thread.

Exposed series (all prefixed ``rtdetr_``):

* ``http_requests_total{path,method,status}``: counter of finished requests;
* ``http_request_duration_seconds{path}``: latency histogram;
* ``batch_size``: histogram of images per forward pass;
* ``inference_duration_seconds``: histogram of forward-pass times;
* ``queue_depth``: gauge of requests waiting for a batch;
* ``queue_rejections_total``: counter of requests refused with 503 because the queue was full;
* ``model_ready``: gauge, 1 once the model is warmed up.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

__all__ = ["Counter", "Histogram", "Gauge", "ServeMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    """Monotonic counter with a fixed set of label names."""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()):
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labelvalues}")
        with self._lock:
            self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def value(self, *labelvalues: str) -> float:
        with self._lock:
            return self._values.get(labelvalues, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        lines += [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]
        return lines


class Histogram:
    """Cumulative-bucket histogram with a fixed set of label names."""

    def __init__(self, name: str, help: str, buckets: Sequence[float], labelnames: Sequence[str] = ()):
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets)) + (math.inf,)
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., sum, count
        self._lock = threading.Lock()

    def observe(self, value: float, *labelvalues: str) -> None:
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labelvalues}")
        with self._lock:
            series = self._series.setdefault(labelvalues, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def count(self, *labelvalues: str) -> int:
        with self._lock:
            series = self._series.get(labelvalues)
            return int(series[-1]) if series else 0

    def sum(self, *labelvalues: str) -> float:
        with self._lock:
            series = self._series.get(labelvalues)
            return series[-2] if series else 0.0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        if not items and not self.labelnames:
            items = [((), [0.0] * (len(self.buckets) + 2))]
        for key, series in items:
            for bound, n in zip(self.buckets, series[: len(self.buckets)], strict=True):
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {_number(n)}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(series[-2])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {_number(series[-1])}")
        return lines


class Gauge:
    """A value read at scrape time from a callback."""

    def __init__(self, name: str, help: str, read: Callable[[], float]):
        self.name, self.help, self._read = name, help, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_number(float(self._read()))}",
        ]


class ServeMetrics:
    """The service's metric families; ``render()`` is the body of ``GET /metrics``.

    Args:
        max_batch: sets the batch-size histogram's buckets (1, 2, 4, ... max_batch).
        queue_depth: callback giving the requests waiting now.
        model_ready: callback giving whether the model is warmed up.
    """

    def __init__(self, *, max_batch: int, queue_depth: Callable[[], int], model_ready: Callable[[], bool]):
        self.requests = Counter(
            "rtdetr_http_requests_total", "HTTP requests by path, method and status.", ("path", "method", "status")
        )
        self.latency = Histogram(
            "rtdetr_http_request_duration_seconds", "HTTP request latency.", LATENCY_BUCKETS, ("path",)
        )
        size_buckets = sorted({min(2**i, max_batch) for i in range(max(1, max_batch).bit_length() + 1)})
        self.batch_size = Histogram("rtdetr_batch_size", "Images per forward pass.", size_buckets)
        self.inference = Histogram(
            "rtdetr_inference_duration_seconds", "Forward pass time (whole batch).", LATENCY_BUCKETS
        )
        self.rejections = Counter(
            "rtdetr_queue_rejections_total", "Requests refused with 503 because the queue was full."
        )
        self._families = [
            self.requests,
            self.latency,
            self.batch_size,
            self.inference,
            Gauge("rtdetr_queue_depth", "Requests waiting for a batch.", lambda: queue_depth()),
            self.rejections,
            Gauge("rtdetr_model_ready", "1 once the model is loaded and warmed up.", lambda: float(model_ready())),
        ]

    def observe_request(self, path: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc(path, method, str(status))
        self.latency.observe(seconds, path)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families:
            lines += family.render()
        return "\n".join(lines) + "\n"
