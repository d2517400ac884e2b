"""The Prometheus text format written by rtdetr.serve.metrics."""

from __future__ import annotations

import re
import threading

from rtdetr.serve.metrics import Counter, Histogram, ServeMetrics


def test_counter_labels_escaped_and_sorted():
    c = Counter("x_total", "help text", ("path", "status"))
    c.inc("/b", "200")
    c.inc("/a", '4"0\\4\n', amount=2)
    lines = c.render()
    assert lines[:2] == ["# HELP x_total help text", "# TYPE x_total counter"]
    assert lines[2] == 'x_total{path="/a",status="4\\"0\\\\4\\n"} 2'
    assert lines[3] == 'x_total{path="/b",status="200"} 1'


def test_histogram_cumulative_buckets_sum_count():
    h = Histogram("lat_seconds", "latency", [0.1, 1.0])
    for v in (0.05, 0.5, 0.5, 3.0):
        h.observe(v)
    text = "\n".join(h.render())
    assert 'lat_seconds_bucket{le="0.1"} 1' in text
    assert 'lat_seconds_bucket{le="1"} 3' in text  # integral bounds print as integers
    assert 'lat_seconds_bucket{le="+Inf"} 4' in text
    assert "lat_seconds_sum 4.05" in text and "lat_seconds_count 4" in text


def test_serve_metrics_render_and_thread_safety():
    depth = {"n": 3}
    m = ServeMetrics(max_batch=8, queue_depth=lambda: depth["n"], model_ready=lambda: True)

    def work():
        for _ in range(1000):
            m.observe_request("/v1/detect", "POST", 200, 0.01)
            m.observe_batch(4, 0.2)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = m.render()
    assert 'rtdetr_http_requests_total{path="/v1/detect",method="POST",status="200"} 4000' in text
    assert "rtdetr_batch_size_count 4000" in text and "rtdetr_batch_size_sum 16000" in text
    assert re.findall(r'rtdetr_batch_size_bucket\{le="([^"]+)"\}', text) == ["1", "2", "4", "8", "+Inf"]
    assert "rtdetr_queue_depth 3" in text and "rtdetr_model_ready 1" in text
    assert "rtdetr_queue_rejections_total 0" in text
    # every sample line is NAME{LABELS} VALUE or NAME VALUE
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(
            r"[a-z_]+(\{[^}]*\})? [-+0-9.eE]+|[a-z_]+(\{[^}]*\})? \+Inf", line
        ), line
