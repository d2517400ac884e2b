"""The FastAPI application of ``rtdetr serve``: routes, limits, errors, lifecycle.

``create_app(detector, ...)`` returns an app ready for any ASGI server (the CLI
uses uvicorn). The detector runs only in the batching worker thread; handlers
read and decode uploads in the thread pool and await their batch result, so the
event loop stays free for health checks and metrics while the model is busy.

Status codes: 400 malformed request or undecodable image, 401 missing or wrong
API key, 413 body or image dimensions over the limit, 415 not an image,
422 invalid parameters, 503 queue full (with ``Retry-After``) or model not
serving, 500 only if the model itself fails.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from starlette.datastructures import UploadFile

from ..infer.results import DEFAULT_CONF
from .batcher import BatcherClosed, DetectorLike, DynamicBatcher, QueueFull
from .image_bytes import ImageRejected, decode_image, encode_png, probe_image
from .metrics import CONTENT_TYPE, ServeMetrics
from .middleware import MetricsMiddleware, UploadLimitMiddleware, UploadTooLarge
from .schemas import DETECT_REQUEST_BODY, DetectResponse, ErrorResponse, Health, ModelInfo, Readiness

__all__ = ["create_app", "API_KEY_HEADER"]

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
DETECT_PATH = "/v1/detect"
MAX_DET_LIMIT = 300
_KNOWN_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/v1/model", DETECT_PATH, "/openapi.json", "/docs", "/redoc")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed request or undecodable image"},
    413: {"model": ErrorResponse, "description": "body or image dimensions over the limit"},
    415: {"model": ErrorResponse, "description": "not a supported image format"},
    503: {"model": ErrorResponse, "description": "queue full (see Retry-After) or model not serving"},
}


def _page() -> str:
    return resources.files("rtdetr.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def _api_key_dependency(api_key: str | None) -> list:
    """Route dependencies enforcing ``X-API-Key`` when a key is configured (none otherwise)."""
    if not api_key:
        return []
    header = APIKeyHeader(
        name=API_KEY_HEADER, auto_error=False, description="the key given to `rtdetr serve --api-key`"
    )
    expected = api_key.encode()

    # (a default, not Annotated: the closure's ``header`` is invisible to string annotations)
    async def require_key(key: str | None = Security(header)) -> None:
        if key is None or not hmac.compare_digest(key.encode(), expected):
            raise HTTPException(
                401, f"missing or wrong {API_KEY_HEADER} header", headers={"WWW-Authenticate": "ApiKey"}
            )

    return [Depends(require_key)]


async def _read_upload(request: Request) -> bytes:
    """The image bytes: the ``file`` part of a multipart form, else the raw body."""
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith("multipart/form-data"):
        return await request.body()
    async with request.form(max_files=1, max_fields=16) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise HTTPException(400, "multipart upload has no file part (send the image as the 'file' field)")
        return await upload.read()


class _PixelBudget:
    """Decoded pixels held by requests in flight, capped (used from the event loop only).

    Upload size says little about memory: a 100 kB PNG of one colour can decode to
    100 MB. Requests reserve their image's pixel count (read from the header)
    before decoding and are refused with 503 when the budget is spent. One image
    is always admitted when nothing else is held.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def try_take(self, pixels: int) -> bool:
        if self.used and self.used + pixels > self.limit:
            return False
        self.used += pixels
        return True

    def give(self, pixels: int) -> None:
        self.used -= pixels


def _annotated_png(detections: Any, image: Any) -> bytes:
    return encode_png(detections.plot(image))


def create_app(
    detector: DetectorLike,
    *,
    model_name: str | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 5.0,
    queue_size: int = 64,
    api_key: str | None = None,
    max_upload_bytes: int = 20 * 1024 * 1024,
    max_image_pixels: int = 40_000_000,
    max_image_side: int = 20_000,
    max_pixels_in_flight: int | None = None,
    warmup: bool = True,
) -> FastAPI:
    """Build the detection service around a loaded detector.

    Args:
        detector: an :class:`rtdetr.infer.Detector` (or any object with its ``class_names``,
            ``imgsz``, ``warmup`` and ``predict_images``).
        model_name: shown by ``/v1/model`` and the page (default: the detector's ``name`` or class).
        max_batch: most images in one forward pass.
        max_wait_ms: longest wait to fill a batch.
        queue_size: most requests waiting for a batch; beyond it requests get 503 + ``Retry-After``.
        api_key: when set, ``/v1/*`` requires it in the ``X-API-Key`` header.
        max_upload_bytes: request body limit of ``/v1/detect`` (413 beyond).
        max_image_pixels: width x height limit, checked from the header before decoding (413 beyond).
        max_image_side: width or height limit, likewise.
        max_pixels_in_flight: decoded pixels that requests in flight may hold together (default
            4 x ``max_image_pixels``, ~0.5 GB of RGB at the defaults); beyond it 503 + ``Retry-After``.
        warmup: warm the model up in the worker before ``/readyz`` reports ready.
    """
    metrics: ServeMetrics
    batcher = DynamicBatcher(
        detector,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        on_batch=lambda n, s: metrics.observe_batch(n, s),
        warmup=warmup,
    )
    metrics = ServeMetrics(max_batch=max_batch, queue_depth=lambda: batcher.depth, model_ready=lambda: batcher.ready)
    class_names = list(detector.class_names)
    num_classes = int(getattr(detector, "num_classes", None) or len(class_names))
    name = model_name or str(getattr(detector, "name", None) or type(detector).__name__)
    page = _page()
    budget = _PixelBudget(max_pixels_in_flight or 4 * max_image_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        logger.info(
            "serving %s (%d classes), max batch %d, max wait %.1f ms", name, num_classes, max_batch, max_wait_ms
        )
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)

    app = FastAPI(
        title="rtdetr detection service",
        version="1",
        description="RT-DETR object detection over HTTP. POST an image to /v1/detect.",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.metrics, app.state.detector = batcher, metrics, detector
    protected = _api_key_dependency(api_key)

    @app.exception_handler(UploadTooLarge)
    async def _too_large(request: Request, exc: UploadTooLarge) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=413, headers={} if exc.drained else {"Connection": "close"}
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", response_model=Health, summary="liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Readiness,
        summary="readiness: model loaded and warmed up",
        responses={503: {"model": Readiness, "description": "warming up or failed"}},
    )
    async def readyz() -> JSONResponse:
        if batcher.ready:
            return JSONResponse({"status": "ready"})
        if batcher.error is not None:
            return JSONResponse({"status": "failed", "detail": str(batcher.error)}, status_code=503)
        return JSONResponse({"status": "warming_up"}, status_code=503, headers={"Retry-After": "1"})

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        summary="Prometheus metrics (text exposition format)",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/model", response_model=ModelInfo, dependencies=protected, summary="the model being served")
    async def model_info() -> dict:
        return {
            "model": name,
            "class_names": class_names,
            "num_classes": num_classes,
            "imgsz": int(getattr(detector, "imgsz", 0) or 0),
            "max_batch": max_batch,
            "max_upload_bytes": max_upload_bytes,
            "max_image_pixels": max_image_pixels,
        }

    async def _detect_image(
        data: bytes, conf: float, classes: list[int] | None, max_det: int, annotated: bool, start: float
    ) -> Response:
        """Decode, wait for the batch, and answer (JSON or PNG)."""
        try:
            image = await run_in_threadpool(decode_image, data, max_pixels=max_image_pixels, max_side=max_image_side)
        except ImageRejected as exc:
            raise HTTPException(exc.status_code, exc.detail) from None
        decoded = time.perf_counter()
        try:
            result = await batcher.detect(image, conf=conf, classes=classes, max_det=max_det)
        except QueueFull as exc:
            metrics.rejections.inc()
            headers = {"Retry-After": str(exc.retry_after_s)}
            raise HTTPException(503, "server busy: request queue full", headers=headers) from None
        except BatcherClosed as exc:
            raise HTTPException(503, str(exc)) from None
        except Exception as exc:  # the model failed on this batch (already logged by the batcher)
            raise HTTPException(500, f"inference failed: {type(exc).__name__}") from None

        timing = {
            "decode_ms": round((decoded - start) * 1000, 3),
            "queue_ms": round(result.queue_s * 1000, 3),
            "inference_ms": round(result.inference_s * 1000, 3),
            "batch_size": result.batch_size,
        }
        if annotated:
            png = await run_in_threadpool(_annotated_png, result.detections, image)
            total = (time.perf_counter() - start) * 1000
            server_timing = ", ".join(f"{k[:-3]};dur={v}" for k, v in timing.items() if k.endswith("_ms"))
            headers = {
                "Server-Timing": f"{server_timing}, total;dur={total:.3f}",
                "X-Detections": str(len(result.detections.scores)),
            }
            return Response(png, media_type="image/png", headers=headers)
        full = result.detections.to_dict()
        body = {key: full[key] for key in ("boxes", "scores", "labels", "names")}
        body["image_size"] = list(full["image_size"])
        body["timing"] = {**timing, "total_ms": round((time.perf_counter() - start) * 1000, 3)}
        return JSONResponse(body)

    @app.post(
        DETECT_PATH,
        response_model=DetectResponse,
        dependencies=protected,
        summary="detect objects in one image",
        openapi_extra=DETECT_REQUEST_BODY,
        responses={
            200: {"content": {"image/png": {}}, "description": "detections (JSON), or the annotated PNG"},
            **_ERRORS,
        },
    )
    async def detect(
        request: Request,
        conf: Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False, description="minimum score")] = DEFAULT_CONF,
        classes: Annotated[
            list[int] | None, Query(description="keep only these class indices (repeat the parameter)")
        ] = None,
        max_det: Annotated[int, Query(ge=1, le=MAX_DET_LIMIT, description="most detections returned")] = MAX_DET_LIMIT,
        annotated: Annotated[
            bool, Query(description="return the image with boxes drawn (PNG) instead of JSON")
        ] = False,
    ) -> Response:
        start = time.perf_counter()
        if classes is not None:
            bad = sorted({c for c in classes if not 0 <= c < num_classes})
            if bad:
                raise HTTPException(422, f"unknown class index(es) {bad}: the model has classes 0..{num_classes - 1}")
        if batcher.error is not None:
            raise HTTPException(503, f"model not serving: {batcher.error}")
        if batcher.is_full():  # refuse before reading and decoding the upload
            metrics.rejections.inc()
            raise HTTPException(
                503, "server busy: request queue full", headers={"Retry-After": str(batcher.retry_after_s())}
            )

        data = await _read_upload(request)
        try:
            _, width, height = probe_image(data, max_pixels=max_image_pixels, max_side=max_image_side)
        except ImageRejected as exc:
            raise HTTPException(exc.status_code, exc.detail) from None
        pixels = width * height
        if not budget.try_take(pixels):
            metrics.rejections.inc()
            retry = {"Retry-After": str(batcher.retry_after_s())}
            raise HTTPException(503, "server busy: too many image pixels in flight", headers=retry)
        try:
            return await _detect_image(data, conf, classes, max_det, annotated, start)
        finally:
            budget.give(pixels)

    app.add_middleware(UploadLimitMiddleware, max_bytes=max_upload_bytes, paths=[DETECT_PATH])
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=_KNOWN_PATHS)  # outermost: sees every status
    return app
