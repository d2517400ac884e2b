"""Response models of the HTTP API (they define the OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["Timing", "DetectResponse", "ModelInfo", "Health", "Readiness", "ErrorResponse", "DETECT_REQUEST_BODY"]


class Timing(BaseModel):
    """Where one request's time went, in milliseconds."""

    decode_ms: float = Field(description="reading and decoding the upload")
    queue_ms: float = Field(description="waiting for its batch to start")
    inference_ms: float = Field(description="the batch's forward pass and postprocessing")
    total_ms: float = Field(description="from the request's arrival to its response")
    batch_size: int = Field(description="images in the forward pass that served this request")


class DetectResponse(BaseModel):
    """Detections of one image, best score first."""

    boxes: list[list[float]] = Field(description="[x1, y1, x2, y2] in pixels of the uploaded image")
    scores: list[float]
    labels: list[int] = Field(description="contiguous class indices")
    names: list[str] = Field(description="class name of each detection")
    image_size: list[int] = Field(description="[width, height] of the uploaded image (after EXIF rotation)")
    timing: Timing


class ModelInfo(BaseModel):
    """The model being served and the service's limits."""

    model: str
    class_names: list[str]
    num_classes: int
    imgsz: int
    max_batch: int
    max_upload_bytes: int
    max_image_pixels: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready, warming_up or failed")
    detail: str | None = None


class ErrorResponse(BaseModel):
    detail: str


_IMAGE_BINARY = {"schema": {"type": "string", "format": "binary"}}

# The detect endpoint reads its body itself (multipart or raw), so its schema is spelled out here.
DETECT_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image: a multipart form with a `file` part, or the raw file as the body",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/jpeg": _IMAGE_BINARY,
            "image/png": _IMAGE_BINARY,
            "image/webp": _IMAGE_BINARY,
            "application/octet-stream": _IMAGE_BINARY,
        },
    }
}
