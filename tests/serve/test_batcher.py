"""Dynamic batching without HTTP: grouping, waiting, per-request thresholds, back-pressure, failures."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from rtdetr.serve.batcher import BatcherClosed, DynamicBatcher, QueueFull, filter_detections

from .conftest import FakeDetector


def _image(h: int = 20, w: int = 30) -> torch.Tensor:
    return torch.zeros(3, h, w, dtype=torch.uint8)


def _results(futures, timeout: float = 10.0):
    return [f.result(timeout=timeout) for f in futures]


def test_queued_requests_share_forward_passes_up_to_max_batch():
    det = FakeDetector()
    batcher = DynamicBatcher(det, max_batch=4, max_wait_ms=50, queue_size=16)
    futures = [batcher.submit(_image(10 + i, 20)) for i in range(6)]  # queued before the worker starts
    batcher.start()
    results = _results(futures)
    batcher.close()
    assert det.warmups == [1, 4]
    assert det.batch_sizes == [4, 2]
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 2, 2]
    # each result belongs to its own image
    assert [r.detections.image_size for r in results] == [(20, 10 + i) for i in range(6)]
    assert all(r.inference_s >= 0 and r.queue_s >= 0 for r in results)


def test_lone_request_waits_at_most_max_wait():
    det = FakeDetector()
    batcher = DynamicBatcher(det, max_batch=8, max_wait_ms=80, queue_size=4, warmup=False)
    batcher.start()
    assert batcher.wait_ready(5)
    start = time.monotonic()
    result = batcher.submit(_image()).result(timeout=5)
    elapsed = time.monotonic() - start
    batcher.close()
    assert result.batch_size == 1
    assert 0.06 <= result.queue_s and elapsed < 1.0


def test_mixed_thresholds_one_pass_and_own_results():
    det = FakeDetector()
    batcher = DynamicBatcher(det, max_batch=8, max_wait_ms=10, queue_size=16, warmup=False)
    low = batcher.submit(_image(), conf=0.2)
    high = batcher.submit(_image(), conf=0.6, max_det=1)
    other_classes = batcher.submit(_image(), conf=0.2, classes=[1, 1])
    batcher.start()
    low_r, high_r, cls_r = _results([low, high, other_classes])
    batcher.close()
    # one pass for the two class-agnostic requests (loosest thresholds), one for the class filter
    assert det.calls == [
        {"n": 2, "conf": 0.2, "classes": None, "max_det": 300},
        {"n": 1, "conf": 0.2, "classes": [1], "max_det": 300},
    ]
    assert low_r.detections.scores.tolist() == pytest.approx([0.92, 0.71, 0.48, 0.30])
    assert high_r.detections.scores.tolist() == pytest.approx([0.92])
    assert high_r.detections.names == ["circle"]
    assert cls_r.detections.labels.tolist() == [1]


def test_filter_matches_direct_call():
    det = FakeDetector()
    full = det.detect_one(_image(), conf=0.0, classes=None, max_det=300)
    for conf, classes, max_det in [
        (0.0, None, 300),
        (0.5, None, 300),
        (0.1, [0, 2], 2),
        (0.95, None, 5),
        (0.3, [1], 1),
    ]:
        got = filter_detections(full, conf=conf, classes=classes, max_det=max_det)
        want = det.detect_one(_image(), conf=conf, classes=classes, max_det=max_det)
        assert got.to_dict() == want.to_dict(), (conf, classes, max_det)
    assert filter_detections(full, conf=0.0, classes=None, max_det=300) is full


def test_full_queue_raises_with_retry_after():
    batcher = DynamicBatcher(FakeDetector(), max_batch=1, max_wait_ms=0, queue_size=2)
    batcher.submit(_image())
    batcher.submit(_image())
    assert batcher.is_full() and batcher.depth == 2
    with pytest.raises(QueueFull, match="queue full") as info:
        batcher.submit(_image())
    assert info.value.retry_after_s >= 1
    batcher.start()
    batcher.close()


def test_cancelled_request_is_skipped():
    det = FakeDetector()
    batcher = DynamicBatcher(det, max_batch=4, max_wait_ms=0, queue_size=8, warmup=False)
    keep, drop = batcher.submit(_image()), batcher.submit(_image())
    assert drop.cancel()
    batcher.start()
    assert keep.result(timeout=5).batch_size == 1
    batcher.close()
    assert det.batch_sizes == [1]


def test_async_detect():
    det = FakeDetector()
    batcher = DynamicBatcher(det, max_batch=8, max_wait_ms=30, queue_size=16, warmup=False)
    batcher.start()

    async def many():
        return await asyncio.gather(*(batcher.detect(_image(), conf=0.5) for _ in range(5)))

    results = asyncio.run(many())
    batcher.close()
    assert len(results) == 5 and det.batch_sizes == [5]
    assert all(len(r.detections.scores) == 2 for r in results)


def test_forward_failure_fails_its_requests_only():
    det = FakeDetector(fail_predict=True)
    batcher = DynamicBatcher(det, max_batch=2, max_wait_ms=0, queue_size=8, warmup=False)
    batcher.start()
    with pytest.raises(RuntimeError, match="exploded"):
        batcher.submit(_image()).result(timeout=5)
    det.fail_predict = False
    assert batcher.submit(_image()).result(timeout=5).batch_size == 1
    assert batcher.ready
    batcher.close()


def test_warmup_failure_is_reported_and_refuses_work():
    batcher = DynamicBatcher(FakeDetector(fail_warmup=True), max_batch=2, queue_size=4)
    queued = batcher.submit(_image())
    batcher.start()
    assert not batcher.wait_ready(5)
    assert "warm-up exploded" in str(batcher.error)
    with pytest.raises(BatcherClosed, match="warm-up"):
        queued.result(timeout=5)
    with pytest.raises(BatcherClosed):
        batcher.submit(_image())
    batcher.close()


def test_close_serves_queued_requests_then_refuses_new_ones():
    gate = threading.Event()

    class Blocking(FakeDetector):
        def predict_images(self, images, **kw):
            gate.wait(5)
            return super().predict_images(images, **kw)

    batcher = DynamicBatcher(Blocking(), max_batch=1, max_wait_ms=0, queue_size=8, warmup=False)
    batcher.start()
    running = batcher.submit(_image())
    time.sleep(0.1)  # the worker is now inside predict_images
    waiting = batcher.submit(_image())
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.1)
    with pytest.raises(BatcherClosed):
        batcher.submit(_image())
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert running.result(timeout=5).batch_size == 1  # the running batch finishes
    assert waiting.result(timeout=5).batch_size == 1  # accepted before close: still served
    with pytest.raises(BatcherClosed):
        batcher.submit(_image())


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_wait_ms": -1}, {"queue_size": 0}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        DynamicBatcher(FakeDetector(), **kwargs)


def test_request_submitted_during_a_warmup_failure_is_failed_not_left_waiting():
    """A submit() that passed its error check before the warm-up failed must not be stranded.

    The interleaving is forced: the submit pauses between its check and its put (inside the
    queue's ``qsize``) until the worker has either drained the queue (the old, racy order) or
    is blocked on the submit lock (the fixed order). Before the fix the request landed after
    the drain and waited until shutdown.
    """
    batcher = DynamicBatcher(FakeDetector(fail_warmup=True), max_batch=1, queue_size=4)
    worker_moved = threading.Event()  # the worker drained the queue, or waits for the submit lock

    real_lock, real_fail_pending = batcher._submit_lock, batcher._fail_pending

    class ObservedLock:
        def __enter__(self):
            if threading.current_thread() is batcher._thread:
                worker_moved.set()
            return real_lock.__enter__()

        def __exit__(self, *exc):
            return real_lock.__exit__(*exc)

    def fail_pending(exc):
        real_fail_pending(exc)
        if threading.current_thread() is batcher._thread:
            worker_moved.set()

    class PausingQueue(type(batcher._queue)):
        armed = False

        def qsize(self):
            if self.armed:  # the submit passed its error check: let the worker fail warm-up now
                self.armed = False
                batcher.start()
                assert worker_moved.wait(10), "worker neither drained the queue nor waited for the lock"
            return super().qsize()

    batcher._submit_lock, batcher._fail_pending = ObservedLock(), fail_pending
    batcher._queue = PausingQueue()
    batcher._queue.armed = True
    future = batcher.submit(_image())
    try:
        with pytest.raises(BatcherClosed, match="warm-up"):
            future.result(timeout=5)  # before the fix: TimeoutError (stranded until close())
    finally:
        batcher.close()


def test_default_conf_is_the_one_constant_everywhere():
    import inspect

    from rtdetr.infer import Detector
    from rtdetr.infer.benchmark import benchmark_detector
    from rtdetr.infer.results import DEFAULT_CONF

    assert DEFAULT_CONF == 0.5
    for fn in (
        DynamicBatcher.submit,
        DynamicBatcher.detect,
        Detector.predict,
        Detector.stream,
        Detector.predict_images,
        benchmark_detector,
    ):
        assert inspect.signature(fn).parameters["conf"].default == DEFAULT_CONF, fn.__qualname__
    # Behaviour: a request without conf gets what Detector.predict gives by default (score >= 0.5).
    batcher = DynamicBatcher(FakeDetector(), max_batch=1, queue_size=4, warmup=False)
    batcher.start()
    try:
        scores = batcher.submit(_image()).result(timeout=5).detections.scores.tolist()
    finally:
        batcher.close()
    assert scores == pytest.approx([0.92, 0.71])
