"""Dynamic batching: concurrent requests share one forward pass, run in a worker thread.

Requests wait in a bounded queue. The worker takes the oldest one, then keeps
collecting until it holds ``max_batch`` requests or ``max_wait_ms`` have passed
since that oldest request *arrived* (a request that already waited while the
previous batch ran does not wait again), and calls ``detector.predict_images``
once for all of them. A full queue refuses new requests at once
(:class:`QueueFull`, answered 503 with ``Retry-After``) instead of letting the
backlog and the memory of its decoded images grow without bound.

Requests in one batch may ask for different ``conf`` / ``max_det``: the forward
pass runs with the loosest values (lowest ``conf``, largest ``max_det``) and each
request's own thresholds are applied to its result afterwards, which gives what a
direct call with its own values gives (detections come out score-sorted and
thresholded). Requests whose ``classes`` differ are split into separate forward
passes, because a class filter may change which candidates survive the top-k.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..infer.results import DEFAULT_CONF

__all__ = ["DetectorLike", "DynamicBatcher", "QueueFull", "BatcherClosed", "BatchResult", "filter_detections"]

logger = logging.getLogger(__name__)


class DetectorLike(Protocol):
    """What the batcher needs from :class:`rtdetr.infer.Detector`.

    ``predict_images`` returns one :class:`rtdetr.infer.Detections` per image: an
    object with ``scores``, ``labels`` and ``filter(index) -> Detections``.
    """

    class_names: list[str]

    def warmup(self, batch_size: int = 1) -> None: ...

    def predict_images(
        self,
        images: list[torch.Tensor],
        *,
        conf: float = DEFAULT_CONF,
        classes: list[int] | None = None,
        max_det: int = 300,
    ) -> list[Any]: ...


class QueueFull(RuntimeError):
    """The request queue is at capacity; ``retry_after_s`` is a hint for the client."""

    def __init__(self, depth: int, retry_after_s: int):
        super().__init__(f"request queue full ({depth} waiting); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class BatcherClosed(RuntimeError):
    """The batcher stopped (shutdown, or the model failed to warm up) before serving the request."""


@dataclass
class BatchResult:
    """One request's detections and where its time went."""

    detections: Any  # rtdetr.infer.Detections, thresholded with the request's own values
    queue_s: float  # arrival -> its batch started
    inference_s: float  # the batch's predict_images call
    batch_size: int  # requests in that forward pass


@dataclass
class _Request:
    image: torch.Tensor
    conf: float
    classes: tuple[int, ...] | None
    max_det: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    arrived: float = field(default_factory=time.monotonic)


_STOP = object()


def filter_detections(det: Any, *, conf: float, classes: Sequence[int] | None, max_det: int) -> Any:
    """``det`` keeping score >= conf, label in classes, the best ``max_det`` (via ``det.filter``)."""
    scores = det.scores
    keep = scores >= conf
    if classes is not None:
        keep &= torch.isin(det.labels, torch.as_tensor(list(classes), dtype=det.labels.dtype))
    idx = keep.nonzero().flatten()
    idx = idx[torch.argsort(scores[idx], descending=True, stable=True)][:max_det]
    if idx.numel() == scores.numel() and bool((idx == torch.arange(idx.numel())).all()):
        return det  # nothing dropped, order unchanged
    return det.filter(idx)


class DynamicBatcher:
    """Groups concurrent detection requests into batched ``predict_images`` calls.

    Args:
        detector: object with ``warmup`` and ``predict_images`` (see :class:`DetectorLike`).
        max_batch: most images in one forward pass.
        max_wait_ms: longest time the oldest waiting request is held back to fill a batch.
        queue_size: most requests waiting (not counting the batch being run).
        on_batch: called from the worker thread with (batch size, seconds) after each forward pass.
        warmup: run ``detector.warmup`` (batch 1 and ``max_batch``) before serving.
    """

    def __init__(
        self,
        detector: DetectorLike,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        queue_size: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
        warmup: bool = True,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.detector = detector
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._on_batch = on_batch
        self._do_warmup = warmup
        self._queue: queue.Queue = queue.Queue()  # bounded by submit(), so the stop sentinel always fits
        self._submit_lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._batch_time_ema: float | None = None

    # ---- state -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Warmed up and accepting work."""
        return self._ready.is_set() and not self._closed and self._error is None

    @property
    def error(self) -> BaseException | None:
        """Why the worker stopped serving (warm-up failure), if it did."""
        return self._error

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize()

    def is_full(self) -> bool:
        return self.depth >= self.queue_size

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained by one batch's worth (at least 1)."""
        per_batch = self._batch_time_ema or 1.0
        return max(1, math.ceil(per_batch * max(1, self.depth) / self.max_batch))

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (warm-up happens there; :attr:`ready` turns true after it)."""
        if self._thread is not None:
            raise RuntimeError("batcher already started")
        self._thread = threading.Thread(target=self._run, name="rtdetr-batcher", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking requests, serve those already queued, stop the worker.

        Requests still queued when ``timeout`` runs out (or when warm-up failed) fail
        with :class:`BatcherClosed`.
        """
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("batcher worker did not stop within %.0f s", timeout or 0)
        self._fail_pending(BatcherClosed("the service is shutting down"))

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until warmed up (True) or ``timeout`` passes / warm-up fails (False)."""
        self._ready.wait(timeout)
        return self.ready

    # ---- requests ----------------------------------------------------------------------------
    def submit(
        self,
        image: torch.Tensor,
        *,
        conf: float = DEFAULT_CONF,
        classes: Sequence[int] | None = None,
        max_det: int = 300,
    ) -> concurrent.futures.Future:
        """Queue one image; the future resolves to a :class:`BatchResult`.

        Raises:
            QueueFull: ``queue_size`` requests are already waiting.
            BatcherClosed: the batcher is shut down or failed to start.
        """
        key = None if classes is None else tuple(sorted(set(int(c) for c in classes)))
        request = _Request(image=image, conf=float(conf), classes=key, max_det=int(max_det))
        with self._submit_lock:
            if self._closed or self._error is not None:
                raise BatcherClosed(f"the detector is not serving: {self._error or 'shut down'}")
            depth = self._queue.qsize()
            if depth >= self.queue_size:
                raise QueueFull(depth, self.retry_after_s())
            self._queue.put(request)
        return request.future

    async def detect(
        self,
        image: torch.Tensor,
        *,
        conf: float = DEFAULT_CONF,
        classes: Sequence[int] | None = None,
        max_det: int = 300,
    ) -> BatchResult:
        """:meth:`submit` for asyncio callers (cancelling the await drops the request if not yet run)."""
        return await asyncio.wrap_future(self.submit(image, conf=conf, classes=classes, max_det=max_det))

    # ---- worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_flush_denormal(True)  # per thread; denormals make CPU inference crawl
        try:
            if self._do_warmup:
                t = time.perf_counter()
                with torch.inference_mode():
                    self.detector.warmup(batch_size=1)
                    if self.max_batch > 1:
                        self.detector.warmup(batch_size=self.max_batch)
                logger.info("model warmed up in %.1f s (batch 1 and %d)", time.perf_counter() - t, self.max_batch)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and to every request
            logger.exception("model warm-up failed; the service will answer 503")
            # Under the submit lock: a submit() that already passed its error check has put its
            # request by now (the drain below fails it), and every later submit() sees the error.
            # Set outside the lock, a request could land after the drain and wait until shutdown.
            with self._submit_lock:
                self._error = exc
            self._ready.set()
            self._fail_pending(BatcherClosed(f"model warm-up failed: {exc}"))
            return
        self._ready.set()
        while True:
            batch, stop = self._collect()
            if batch:
                self._process(batch)
            if stop:
                return

    def _collect(self) -> tuple[list[_Request], bool]:
        """Up to ``max_batch`` requests whose futures are still wanted, and whether to stop after them."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch, stop = [first], False
        deadline = first.arrived + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        # A request whose caller went away (cancelled future) costs nothing further.
        return [r for r in batch if r.future.set_running_or_notify_cancel()], stop

    def _process(self, batch: list[_Request]) -> None:
        groups: dict[tuple[int, ...] | None, list[_Request]] = {}
        for request in batch:
            groups.setdefault(request.classes, []).append(request)
        for classes, requests in groups.items():
            start = time.monotonic()
            try:
                with torch.inference_mode():
                    outputs = self.detector.predict_images(
                        [r.image for r in requests],
                        conf=min(r.conf for r in requests),
                        classes=None if classes is None else list(classes),
                        max_det=max(r.max_det for r in requests),
                    )
                if len(outputs) != len(requests):
                    raise RuntimeError(f"predict_images returned {len(outputs)} results for {len(requests)} images")
            except Exception as exc:  # noqa: BLE001 - the requests fail, the worker keeps serving
                logger.exception("forward pass of %d image(s) failed", len(requests))
                for r in requests:
                    r.future.set_exception(exc)
                continue
            elapsed = time.monotonic() - start
            self._batch_time_ema = (
                elapsed if self._batch_time_ema is None else 0.8 * self._batch_time_ema + 0.2 * elapsed
            )
            if self._on_batch is not None:
                try:
                    self._on_batch(len(requests), elapsed)
                except Exception:  # noqa: BLE001 - metrics must never break serving
                    logger.exception("on_batch callback failed")
            for r, det in zip(requests, outputs, strict=True):
                try:
                    det = filter_detections(det, conf=r.conf, classes=r.classes, max_det=r.max_det)
                    r.future.set_result(BatchResult(det, start - r.arrived, elapsed, len(requests)))
                except Exception as exc:  # noqa: BLE001
                    r.future.set_exception(exc)

    def _fail_pending(self, exc: BaseException) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item.future.set_running_or_notify_cancel():
                item.future.set_exception(exc)
