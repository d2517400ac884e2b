"""Hostile input: random parameters and bodies never produce a 5xx, and bad uploads leak no memory."""

from __future__ import annotations

import gc
import io
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from .conftest import image_bytes, png_claiming  # noqa: E402

DETECT = "/v1/detect"
EXPECTED = {200, 400, 413, 415, 422}

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(str),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["true", "false", "0", "1", "", "0.5", "1e-3", "-0", "300", "301", "nan", "inf"]),
    _text,
)
_params = st.dictionaries(
    st.one_of(st.sampled_from(["conf", "classes", "max_det", "annotated"]), _text.filter(bool)),
    st.lists(_value, min_size=1, max_size=3),
    max_size=4,
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["image", "truncated", "mutated", "bomb", "random", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=3000))
    if kind == "empty":
        return b""
    if kind == "bomb":
        return png_claiming(draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1)))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P"] if fmt in ("PNG", "TIFF", "WEBP") else ["RGB", "L"]))
    if fmt == "JPEG" and mode == "RGBA":
        mode = "RGB"
    data = image_bytes(
        draw(st.integers(1, 48)), draw(st.integers(1, 48)), fmt=fmt, seed=draw(st.integers(0, 99)), mode=mode
    )
    if kind == "truncated":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "mutated":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    return data


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=_params,
    body=_bodies(),
    multipart=st.booleans(),
    content_type=st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain", "", "foo/bar"]),
)
def test_random_requests_never_5xx(fake_server, params, body, multipart, content_type):
    url = f"{fake_server.url}{DETECT}"
    if multipart:
        res = httpx.post(
            url, params=params, files={"file": ("x", body, content_type or "application/octet-stream")}, timeout=30
        )
    else:
        res = httpx.post(
            url, params=params, content=body, headers={"content-type": content_type} if content_type else {}, timeout=30
        )
    assert res.status_code in EXPECTED, (res.status_code, res.text[:300])
    if res.status_code == 200 and res.headers["content-type"] == "application/json":
        out = res.json()
        n = len(out["boxes"])
        assert len(out["scores"]) == len(out["labels"]) == len(out["names"]) == n
    elif res.status_code != 200:
        assert res.json()["detail"]


def _rss_bytes() -> int:
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc/self/status (Linux) to read the resident set size")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS in /proc/self/status")


def test_bad_uploads_do_not_leak_memory(fake_server):
    url = f"{fake_server.url}{DETECT}"
    # A 2000x1500 JPEG cut in half: Pillow allocates the whole 9 MB frame before failing.
    ramp = np.linspace(0, 255, 2000 * 1500 * 3).astype(np.uint8).reshape(1500, 2000, 3)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="JPEG", quality=70)
    big_jpeg = buffer.getvalue()
    bad = [
        (b"", 400),
        (b"not an image" * 100, 415),
        (big_jpeg[: len(big_jpeg) // 2], 400),
        (png_claiming(60_000, 60_000), 413),
        (png_claiming(3000, 3000), 413),
        (b"\xff\xd8\xff" + bytes(random.Random(0).randbytes(5000)), 400),
        (b"\x00" * (1024 * 1024 + 1), 413),
    ]

    def round_trip(count: int) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(count):
                data, status = bad[i % len(bad)]
                res = client.post(url, content=data)
                assert res.status_code in (status, 415) if status == 400 else res.status_code == status, (i, res.text)

    round_trip(70)  # let allocator pools, caches and thread pools settle
    gc.collect()
    before = _rss_bytes()
    round_trip(280)
    gc.collect()
    growth = _rss_bytes() - before
    assert growth < 40 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 280 bad uploads"
    assert httpx.get(f"{fake_server.url}/healthz").status_code == 200
