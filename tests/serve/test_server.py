"""The service over real HTTP (uvicorn on a loopback port): every endpoint and every bad input."""

from __future__ import annotations

import concurrent.futures
import io
import re

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from rtdetr.serve.app import create_app  # noqa: E402

from .conftest import CLASS_NAMES, FAKE_BOXES, FakeDetector, LiveServer, image_bytes, png_claiming, wait_ready  # noqa: E402

DETECT = "/v1/detect"


def _post_file(url: str, data: bytes, params: dict | None = None, **kw) -> httpx.Response:
    return httpx.post(f"{url}{DETECT}", params=params, files={"file": ("img.png", data, "image/png")}, timeout=30, **kw)


def _metric(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


# ---- the simple endpoints ------------------------------------------------------------------------
def test_health_ready_model_page_openapi(fake_server):
    url = fake_server.url
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    info = httpx.get(f"{url}/v1/model").json()
    assert info["model"] == "fake" and info["class_names"] == CLASS_NAMES and info["max_batch"] == 4
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="drop"' in page.text and 'id="conf"' in page.text and "/v1/detect" in page.text
    schema = httpx.get(f"{url}/openapi.json").json()
    detect = schema["paths"][DETECT]["post"]
    assert {"multipart/form-data", "image/png", "application/octet-stream"} <= set(detect["requestBody"]["content"])
    assert {p["name"] for p in detect["parameters"]} == {"conf", "classes", "max_det", "annotated"}
    assert {"200", "413", "415", "422", "503"} <= set(detect["responses"])
    assert httpx.get(f"{url}/docs").status_code == 200


def test_metrics_prometheus_text(fake_server):
    url = fake_server.url
    _post_file(url, image_bytes())
    httpx.post(f"{url}{DETECT}", content=b"not an image")
    res = httpx.get(f"{url}/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = res.text
    assert _metric(text, 'rtdetr_http_requests_total{path="/v1/detect",method="POST",status="200"}') >= 1
    assert _metric(text, 'rtdetr_http_requests_total{path="/v1/detect",method="POST",status="415"}') >= 1
    assert _metric(text, 'rtdetr_http_request_duration_seconds_count{path="/v1/detect"}') >= 2
    assert _metric(text, "rtdetr_batch_size_count") >= 1
    for family in (
        "rtdetr_queue_depth",
        "rtdetr_model_ready",
        "rtdetr_inference_duration_seconds_sum",
        "rtdetr_queue_rejections_total",
    ):
        assert re.search(rf"^{family} ", text, re.M), family
    httpx.get(f"{url}/no/such/path")
    assert (
        _metric(httpx.get(f"{url}/metrics").text, 'rtdetr_http_requests_total{path="other",method="GET",status="404"}')
        >= 1
    )


# ---- detection -----------------------------------------------------------------------------------
def test_detect_multipart_json(fake_server):
    res = _post_file(fake_server.url, image_bytes(200, 100))
    assert res.status_code == 200, res.text
    body = res.json()
    expected = [b for b in FAKE_BOXES if b[1] >= 0.5]  # the default conf
    assert body["image_size"] == [200, 100]
    assert body["scores"] == pytest.approx([s for _, s, _ in expected])
    assert body["labels"] == [c for _, _, c in expected]
    assert body["names"] == [CLASS_NAMES[c] for _, _, c in expected]
    x1, y1, x2, y2 = expected[0][0]
    assert body["boxes"][0] == pytest.approx([x1 * 200, y1 * 100, x2 * 200, y2 * 100])
    assert set(body["timing"]) == {"decode_ms", "queue_ms", "inference_ms", "total_ms", "batch_size"}
    assert body["timing"]["total_ms"] >= body["timing"]["inference_ms"] > 0


@pytest.mark.parametrize(
    "content_type", ["image/jpeg", "application/octet-stream", "application/x-www-form-urlencoded", None]
)
def test_detect_raw_body(fake_server, content_type):
    headers = {"content-type": content_type} if content_type else {}
    res = httpx.post(f"{fake_server.url}{DETECT}", content=image_bytes(64, 32, fmt="JPEG"), headers=headers)
    assert res.status_code == 200, res.text
    assert res.json()["image_size"] == [64, 32]


def test_detect_parameters(fake_server):
    url, data = fake_server.url, image_bytes()
    assert _post_file(url, data, {"conf": 0.6}).json()["scores"] == pytest.approx([0.92, 0.71])
    assert _post_file(url, data, {"conf": 0.0}).json()["labels"] == [0, 1, 2, 0, 1]
    assert _post_file(url, data, {"conf": 0.1, "classes": [0, 2]}).json()["labels"] == [0, 2, 0]
    assert _post_file(url, data, {"conf": 0.1, "max_det": 2}).json()["labels"] == [0, 1]
    assert _post_file(url, data, {"conf": 1.0}).json()["boxes"] == []


def test_detect_annotated_png(fake_server):
    res = _post_file(fake_server.url, image_bytes(120, 80), {"annotated": "true"})
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert res.headers["x-detections"] == "2" and "inference;dur=" in res.headers["server-timing"]
    png = Image.open(io.BytesIO(res.content))
    assert png.format == "PNG" and png.size == (120, 80)


def test_concurrent_requests_are_batched(fake_server):
    det, url = fake_server.detector, fake_server.url
    before = len(det.batch_sizes)
    data = image_bytes(48, 48)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: _post_file(url, data), range(12)))
    assert all(r.status_code == 200 for r in responses)
    sizes = det.batch_sizes[before:]
    assert sum(sizes) == 12 and max(sizes) > 1 and max(sizes) <= 4
    assert max(r.json()["timing"]["batch_size"] for r in responses) > 1


# ---- bad input -----------------------------------------------------------------------------------
def test_over_size_limit_is_413(fake_server):
    big = b"\x89PNG" + b"\x00" * (1024 * 1024 + 10)
    res = httpx.post(f"{fake_server.url}{DETECT}", content=big, headers={"content-type": "image/png"})
    assert res.status_code == 413 and "limit" in res.json()["detail"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"\x00" * 65536

    res = httpx.post(f"{fake_server.url}{DETECT}", content=chunks(), headers={"content-type": "image/png"})
    assert res.status_code == 413
    res = _post_file(fake_server.url, big)
    assert res.status_code == 413


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", 400, "empty"),
        (b"this is plain text, not an image", 415, "not a supported image"),
        (b"GIF89a" + b"\x00" * 4, 415, "not a supported image"),
        (image_bytes(64, 64)[:300], 400, "cannot decode"),
        (png_claiming(100_000, 100_000), 413, "too large"),
        (png_claiming(3000, 3000), 413, "exceed the limit"),  # 9 MP > the 4 MP limit of this server
    ],
    ids=["zero-byte", "text", "broken-header", "truncated", "bomb", "over-pixel-limit"],
)
def test_bad_images(fake_server, data, status, words):
    for res in (_post_file(fake_server.url, data), httpx.post(f"{fake_server.url}{DETECT}", content=data)):
        assert res.status_code == status, res.text
        assert words in res.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"conf": "abc"},
        {"conf": 2},
        {"conf": -0.1},
        {"conf": "nan"},
        {"max_det": 0},
        {"max_det": "many"},
        {"max_det": 10**6},
        {"classes": "dog"},
        {"classes": 7},
        {"classes": -1},
        {"annotated": "perhaps"},
    ],
)
def test_wrong_parameters_are_422(fake_server, params):
    res = _post_file(fake_server.url, image_bytes(), params)
    assert res.status_code == 422, res.text
    assert res.json()["detail"]


def test_multipart_without_file_is_400(fake_server):
    res = httpx.post(
        f"{fake_server.url}{DETECT}", data={"note": "no file"}, files={"other": ("x.txt", b"", "text/plain")}
    )
    assert res.status_code in (400, 415)
    res = httpx.post(
        f"{fake_server.url}{DETECT}",
        data={"note": "no file"},
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert res.status_code == 400
    res = httpx.post(
        f"{fake_server.url}{DETECT}",
        content=b"--xyz\r\ngarbage",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert res.status_code == 400


def test_wrong_method_and_path(fake_server):
    assert httpx.get(f"{fake_server.url}{DETECT}").status_code == 405
    assert httpx.get(f"{fake_server.url}/v2/detect").status_code == 404


# ---- other configurations ------------------------------------------------------------------------
def test_full_queue_is_503_with_retry_after():
    det = FakeDetector(delay_s=0.4)
    app = create_app(det, max_batch=1, max_wait_ms=0, queue_size=1, warmup=False)
    with LiveServer(app) as server:
        wait_ready(server.url)
        data = image_bytes()
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: _post_file(server.url, data), range(6)))
        statuses = sorted(r.status_code for r in responses)
        busy = [r for r in responses if r.status_code == 503]
        assert statuses.count(200) >= 2 and busy, statuses
        assert all(int(r.headers["retry-after"]) >= 1 and "queue full" in r.json()["detail"] for r in busy)
        text = httpx.get(f"{server.url}/metrics").text
        assert _metric(text, "rtdetr_queue_rejections_total") == len(busy)
        assert _metric(text, 'rtdetr_http_requests_total{path="/v1/detect",method="POST",status="503"}') == len(busy)
        assert _post_file(server.url, data).status_code == 200  # recovers once the queue drains


def test_api_key():
    app = create_app(FakeDetector(), api_key="s3cret", warmup=False)
    with LiveServer(app) as server:
        url, data = server.url, image_bytes()
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/").status_code == 200
        assert _post_file(url, data).status_code == 401
        assert _post_file(url, data, headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert _post_file(url, data, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{url}/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        schema = httpx.get(f"{url}/openapi.json").json()
        assert "APIKeyHeader" in schema["components"]["securitySchemes"]


def test_failed_warmup_not_ready_and_503():
    app = create_app(FakeDetector(fail_warmup=True))
    with LiveServer(app) as server:
        for _ in range(200):
            res = httpx.get(f"{server.url}/readyz")
            if res.json()["status"] != "warming_up":
                break
        assert res.status_code == 503 and res.json()["status"] == "failed" and "exploded" in res.json()["detail"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert _post_file(server.url, image_bytes()).status_code == 503
        assert "rtdetr_model_ready 0" in httpx.get(f"{server.url}/metrics").text


def test_model_failure_is_500_and_service_survives():
    det = FakeDetector(fail_predict=True)
    app = create_app(det, warmup=False)
    with LiveServer(app) as server:
        res = _post_file(server.url, image_bytes())
        assert res.status_code == 500 and res.json()["detail"] == "inference failed: RuntimeError"
        det.fail_predict = False
        assert _post_file(server.url, image_bytes()).status_code == 200


def test_pixel_budget_bounds_decoded_memory():
    # A one-colour 1000x1000 PNG is a few kB on the wire and 3 MB decoded; the budget admits one at a time.
    det = FakeDetector(delay_s=0.5)
    app = create_app(det, max_batch=1, max_image_pixels=1_000_000, max_pixels_in_flight=1_500_000, warmup=False)
    flat = io.BytesIO()
    Image.new("RGB", (1000, 1000), (9, 9, 9)).save(flat, format="PNG")
    with LiveServer(app) as server:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda _: _post_file(server.url, flat.getvalue()), range(3)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) >= 1 and 503 in statuses, statuses
        busy = [r for r in responses if r.status_code == 503]
        assert all("pixels in flight" in r.json()["detail"] and r.headers["retry-after"] for r in busy)
        assert _post_file(server.url, flat.getvalue()).status_code == 200  # released afterwards
        assert _post_file(server.url, image_bytes(10, 10)).status_code == 200
