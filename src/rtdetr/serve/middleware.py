"""ASGI middleware of the detection service: request metrics and the upload size limit.

Both are plain ASGI callables (no ``BaseHTTPMiddleware``), so they add no task or
buffering per request and see every response, including Starlette's own errors.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .metrics import ServeMetrics

__all__ = ["UploadTooLarge", "UploadLimitMiddleware", "MetricsMiddleware"]

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class UploadTooLarge(Exception):
    """The request body passed the limit while it was being read.

    ``drained`` tells whether the rest of the body was read (and dropped): if not,
    the response must close the connection.
    """

    def __init__(self, limit: int, drained: bool):
        super().__init__(f"request body larger than the {limit} byte limit")
        self.limit = limit
        self.drained = drained


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and drop the rest of a request body, up to ``budget`` bytes; True if it ended.

    Answering before the client has sent its whole body and then closing makes the
    kernel reset the connection, and many clients then report the reset instead of
    our 413; reading what is left (without keeping it) lets the answer arrive.
    """
    while budget >= 0:
        message = await receive()
        if message["type"] != "http.request":
            return False  # client disconnected
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


async def _send_json(send: Send, status: int, body: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class UploadLimitMiddleware:
    """Caps the request body of ``paths`` at ``max_bytes``.

    A declared ``Content-Length`` over the limit is answered 413 without keeping
    any of the body; otherwise the body is counted as it streams in (chunked
    uploads have no declared length) and :class:`UploadTooLarge` is raised into
    the endpoint, which the app turns into 413, as soon as the count passes the
    limit. Either way up to ``drain_bytes`` more are read and dropped so the client
    gets the 413 rather than a connection reset; beyond that the connection closes.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, paths: Iterable[str], drain_bytes: int | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.paths = frozenset(paths)
        self.drain_bytes = max(64 * 2**20, 2 * max_bytes) if drain_bytes is None else drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                    return
                if declared > self.max_bytes:
                    drained = declared <= self.drain_bytes and await _drain(receive, self.drain_bytes)
                    detail = {"detail": f"upload of {declared} bytes exceeds the {self.max_bytes} byte limit"}
                    await _send_json(send, 413, detail, [] if drained else [(b"connection", b"close")])
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    drained = not message.get("more_body", False) or await _drain(receive, self.drain_bytes)
                    raise UploadTooLarge(self.max_bytes, drained)
            return message

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    """Counts every HTTP request by path, method and status, and times it.

    Paths outside ``known_paths`` are counted as ``other`` so clients cannot grow
    the number of series. An exception escaping the app is counted as 500.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServeMetrics, known_paths: Iterable[str]):
        self.app = app
        self.metrics = metrics
        self.known_paths = frozenset(known_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.known_paths else "other"
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.observe_request(path, scope.get("method", ""), status, time.perf_counter() - start)
