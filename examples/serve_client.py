"""Send images to a running ``rtdetr serve`` and print what it found (standard library only).

Start a server, then ask it::

    rtdetr serve --model rtdetr_r18vd --weights coco            # http://127.0.0.1:8000
    python examples/serve_client.py street.jpg                   # boxes, scores, class names
    python examples/serve_client.py street.jpg --conf 0.4 --classes 0 2 --annotated boxes.png
    python examples/serve_client.py *.jpg --url http://10.0.0.5:8000 --api-key KEY --wait 60

The image travels as the raw request body (a multipart ``file`` part works too, e.g. from
``curl -F file=@street.jpg``). The service answers JSON: ``boxes`` (xyxy, pixels of the
uploaded image), ``scores``, ``labels``, ``names``, ``image_size`` [w, h] and ``timing``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def wait_until_ready(url: str, timeout_s: float) -> None:
    """Poll ``GET /readyz`` until the model is loaded and warmed up (503 until then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as res:
                if res.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet, or 503 while warming up
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready after {timeout_s:g} s")
        time.sleep(0.5)


def detect(
    url: str,
    image: bytes,
    *,
    conf: float = 0.5,
    classes: list[int] | None = None,
    max_det: int = 300,
    annotated: bool = False,
    api_key: str | None = None,
    timeout_s: float = 120,
) -> dict[str, Any] | bytes:
    """``POST /v1/detect`` with the encoded image (JPEG, PNG, WebP, BMP, GIF or TIFF bytes).

    Returns the JSON answer as a dict, or the PNG bytes with boxes drawn when ``annotated``.
    Raises ``urllib.error.HTTPError`` on 4xx/5xx (the body says why, e.g. 415 for a non-image).
    """
    params: list[tuple[str, str]] = [("conf", str(conf)), ("max_det", str(max_det))]
    params += [("classes", str(c)) for c in classes or []]
    if annotated:
        params.append(("annotated", "true"))
    headers = {"Content-Type": "application/octet-stream"}
    if api_key:
        headers["X-API-Key"] = api_key
    request = urllib.request.Request(
        f"{url}/v1/detect?{urllib.parse.urlencode(params)}", data=image, headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as res:
        body = res.read()
    return body if annotated else json.loads(body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--conf", type=float, default=0.5, help="score threshold")
    p.add_argument("--classes", type=int, nargs="*", help="keep only these class indices")
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--api-key", help="when the server was started with --api-key")
    p.add_argument("--annotated", type=Path, help="also save the image with boxes drawn (PNG) here")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the server to become ready")
    args = p.parse_args(argv)
    url = args.url.rstrip("/")
    if args.wait:
        wait_until_ready(url, args.wait)
    common = dict(conf=args.conf, classes=args.classes, max_det=args.max_det, api_key=args.api_key)
    try:
        for path in args.images:
            data = path.read_bytes()
            answer = detect(url, data, **common)
            ms = answer["timing"]["total_ms"]
            print(f"{path}: {len(answer['boxes'])} detections, {answer['image_size']} px, {ms:.0f} ms")
            for box, score, name in zip(answer["boxes"], answer["scores"], answer["names"]):
                print(f"  {name:>12} {score:.2f} [{', '.join(f'{v:.0f}' for v in box)}]")
            if args.annotated:
                out = (
                    args.annotated
                    if len(args.images) == 1
                    else args.annotated.with_stem(f"{args.annotated.stem}_{path.stem}")
                )
                out.write_bytes(detect(url, data, annotated=True, **common))
                print(f"  drawn: {out}")
    except urllib.error.HTTPError as e:
        print(f"error: {e.code} from {e.url}: {e.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
