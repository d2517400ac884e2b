"""The web page at ``/`` in headless Chromium: upload, drag-drop, slider, boxes drawn, table == JSON API.

Uses Debian's ``chromium`` (``.ci/run`` installs it) driven by Playwright through
``executable_path``; no browser is downloaded. Skips with the reason when either
is missing. Set ``RTDETR_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from rtdetr.serve.app import create_app  # noqa: E402

from .conftest import FakeDetector, LiveServer, wait_ready  # noqa: E402

IMAGE_BG = (40, 90, 160)


def _chromium() -> str:
    for candidate in (os.environ.get("RTDETR_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = candidate and shutil.which(candidate)
        if path:
            return path
    pytest.skip("no Chromium found (apt-get install chromium, or set RTDETR_CHROMIUM)")


def _synthetic_png(width: int = 320, height: int = 240) -> bytes:
    import io

    from PIL import Image

    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:] = IMAGE_BG
    array[60:140, 40:150] = (230, 200, 40)  # a "shape" so the picture is not flat
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _expected_rows(api: dict) -> list[list[str]]:
    """Table text the page should show for an API response (same formatting as index.html)."""
    return [
        [str(i + 1), api["names"][i], str(api["labels"][i]), f"{api['scores'][i]:.3f}", *(f"{v:.1f}" for v in box)]
        for i, box in enumerate(api["boxes"])
    ]


def _page_rows(page) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#detections tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )


def _api(url: str, data: bytes, conf: str) -> dict:
    res = httpx.post(f"{url}/v1/detect", params={"conf": conf}, files={"file": ("s.png", data, "image/png")})
    assert res.status_code == 200, res.text
    return res.json()


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
        except Exception as exc:  # noqa: BLE001 - a broken browser install is an environment problem
            pytest.skip(f"cannot start {executable}: {exc}")
        yield browser
        browser.close()


def test_page_upload_slider_and_drop(browser, tmp_path: Path):
    app = create_app(FakeDetector(), model_name="fake-model", max_batch=4, warmup=False)
    data = _synthetic_png()
    shots = Path(os.environ.get("RTDETR_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with LiveServer(app) as server:
        wait_ready(server.url)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/")
        page.wait_for_function("document.getElementById('model').textContent.includes('fake-model')")

        # 1. upload through the file input at the default confidence
        page.set_input_files("#file", files=[{"name": "synthetic.png", "mimeType": "image/png", "buffer": data}])
        page.wait_for_selector("body[data-state=done]")
        api = _api(server.url, data, "0.5")
        assert len(api["boxes"]) == 2
        assert _page_rows(page) == _expected_rows(api)
        assert "2 detection(s)" in page.inner_text("#status")

        # the boxes are drawn: the canvas has the image's size and a stroke where the first box's left edge is
        size = page.evaluate("[document.getElementById('canvas').width, document.getElementById('canvas').height]")
        assert size == api["image_size"]
        x1, y1, _, y2 = api["boxes"][0]
        edge = page.evaluate(
            "([x, y]) => Array.from(document.getElementById('canvas').getContext('2d').getImageData(x, y, 1, 1).data)",
            [round(x1), round((y1 + y2) / 2)],
        )
        assert tuple(edge[:3]) != IMAGE_BG and edge[3] == 255
        page.screenshot(path=str(shots / "serve_page_conf050.png"), full_page=True)

        # 2. the slider re-queries the server; the table follows
        page.eval_on_selector("#conf", "el => { el.value = '0.25'; el.dispatchEvent(new Event('input')); }")
        page.wait_for_selector("body[data-state=done][data-conf='0.25']")
        api = _api(server.url, data, "0.25")
        assert len(api["boxes"]) == 4
        assert _page_rows(page) == _expected_rows(api)
        page.screenshot(path=str(shots / "serve_page.png"), full_page=True)

        # 3. drag and drop a file onto the drop zone
        page.evaluate("document.body.dataset.state = 'idle'")
        page.evaluate(
            """async (b64) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
                document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
            }""",
            base64.b64encode(_synthetic_png(160, 120)).decode(),
        )
        page.wait_for_selector("body[data-state=done]")
        assert "160x120" in page.inner_text("#status")
        assert _page_rows(page) == _expected_rows(_api(server.url, _synthetic_png(160, 120), "0.25"))

        # 4. a file that is not an image shows the server's message
        page.evaluate("document.body.dataset.state = 'idle'")
        page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
        page.wait_for_selector("body[data-state=error]")
        assert page.inner_text("#status")
        assert not errors, errors
        page.close()
