"""The service around a real (small, randomly initialized) ``rtdetr.infer.Detector``.

Asserts consistency, not accuracy: a request answers exactly what a direct
``predict_images`` call answers, batched requests agree with unbatched ones, and
the annotated PNG comes back at the image's size.
"""

from __future__ import annotations

import concurrent.futures
import io

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from rtdetr.infer import Detector  # noqa: E402
from rtdetr.serve.app import create_app  # noqa: E402
from rtdetr.serve.image_bytes import decode_image  # noqa: E402

from .conftest import LiveServer, image_bytes, wait_ready  # noqa: E402

PARAMS = {"conf": 0.0, "max_det": 10}


@pytest.fixture(scope="module")
def real_server():
    torch.manual_seed(0)
    detector = Detector.from_pretrained("rtdetrv2_hgnetv2_n", imgsz=320, num_classes=6)
    app = create_app(detector, model_name="rtdetrv2_hgnetv2_n", max_batch=4, max_wait_ms=200, warmup=False)
    with LiveServer(app) as server:
        wait_ready(server.url)
        server.detector = detector
        yield server


def _post(url: str, data: bytes, **params) -> httpx.Response:
    return httpx.post(f"{url}/v1/detect", params={**PARAMS, **params}, content=data, timeout=120)


def test_response_equals_direct_predict(real_server):
    data = image_bytes(150, 100, fmt="PNG", seed=1)
    res = _post(real_server.url, data)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["timing"]["batch_size"] == 1
    direct = real_server.detector.predict_images([decode_image(data)], **PARAMS)[0].to_dict()
    for key in ("boxes", "scores", "labels", "names", "image_size"):
        assert body[key] == direct[key], key
    assert len(body["boxes"]) == 10 and body["image_size"] == [150, 100]
    info = httpx.get(f"{real_server.url}/v1/model").json()
    assert info["num_classes"] == 6 and info["imgsz"] == 320 and len(info["class_names"]) == 6


def test_batched_requests_agree_with_single_images(real_server):
    images = [image_bytes(96 + 8 * i, 80, fmt="JPEG", seed=10 + i) for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda d: _post(real_server.url, d), images))
    assert all(r.status_code == 200 for r in responses)
    bodies = [r.json() for r in responses]
    assert max(b["timing"]["batch_size"] for b in bodies) > 1
    for data, body in zip(images, bodies, strict=True):
        single = real_server.detector.predict_images([decode_image(data)], **PARAMS)[0]
        assert body["image_size"] == list(single.image_size)
        # Batched kernels may round differently; near-tied scores of a random model may swap places.
        assert sorted(body["scores"]) == pytest.approx(sorted(single.scores.tolist()), abs=2e-3)


def test_annotated_png_and_class_filter(real_server):
    data = image_bytes(120, 90, fmt="PNG", seed=3)
    res = _post(real_server.url, data, annotated="true")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(res.content)).size == (120, 90)
    body = _post(real_server.url, data, classes=[1, 4]).json()
    assert set(body["labels"]) <= {1, 4}
    assert _post(real_server.url, data, classes=[6]).status_code == 422
