"""``rtdetr serve``: argument parsing and start-up of the HTTP detection service.

Importing this module needs neither FastAPI nor uvicorn (the CLI imports it to
list the command); they are imported when the service starts, with a clear
message naming the ``serve`` extra if they are missing.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from typing import Any

from ..argtypes import image_size, non_negative_float, port, positive_float, positive_int
from ..cli_options import EAGER_HELP, TRUSTED_HELP
from ..errors import UserError
from ..runtime import PRECISION_HELP, PRECISIONS

__all__ = ["add_serve_parser", "configure_parser", "run_serve"]

logger = logging.getLogger(__name__)

API_KEY_ENV = "RTDETR_API_KEY"


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``serve`` options to ``p``."""
    p.add_argument("--model", required=True, help="preset name, checkpoint file or .onnx model")
    p.add_argument("--weights", default=None, help="weights for a preset name (registry tag, file, hf:ORG/NAME)")
    p.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    p.add_argument("--imgsz", type=image_size, default=None, help="input side, multiple of 32 (default: the model's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--eager", action="store_true", help=EAGER_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=port, default=8000, help="TCP port, 0..65535 (default 8000)")
    p.add_argument("--max-batch", type=positive_int, default=8, help="most images per forward pass")
    p.add_argument("--max-wait-ms", type=non_negative_float, default=5.0, help="longest wait to fill a batch")
    p.add_argument("--queue-size", type=positive_int, default=64, help="waiting requests before 503 + Retry-After")
    p.add_argument(
        "--workers-threads", type=positive_int, default=None, metavar="N", help="torch intra-op threads for inference"
    )
    p.add_argument("--api-key", default=None, help=f"require this X-API-Key on /v1/* (default: ${API_KEY_ENV} if set)")
    p.add_argument("--max-upload-mb", type=positive_float, default=20.0, help="request body limit of /v1/detect")
    p.add_argument(
        "--max-image-pixels", type=positive_int, default=40_000_000, help="width x height limit, checked before decode"
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(func=run_serve)
    return p


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the CLI's subparsers (``argparse._SubParsersAction``)."""
    p = subparsers.add_parser("serve", help="HTTP detection service with dynamic batching (needs the serve extra)")
    return configure_parser(p)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    """Load the model, build the app and run uvicorn until interrupted."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise UserError(
            f"rtdetr serve needs the serve extra ({exc.name} is missing): pip install 'rtdetr[serve]'"
        ) from exc
    from ..cli_options import detector_from_args, resolve_device
    from ..runtime import setup_cpu_runtime

    # (flag values were checked by the parser's types, see rtdetr.argtypes)
    # keep_memory, before any thread allocates: batched activations above glibc's mmap
    # threshold would otherwise be page-faulted in again on every forward (10-20% per image
    # at batch 4-8 for R18 at 640), which would cancel what dynamic batching gains. Applied
    # for a CPU device only.
    setup_cpu_runtime(resolve_device(args.device), threads=args.workers_threads, keep_memory=True)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not _is_loopback(args.host) and not api_key:
        logger.warning(
            "binding %s without an API key: anyone who can reach it can use the model (set --api-key)", args.host
        )

    detector = detector_from_args(args)
    app = create_app(
        detector,
        model_name=args.model,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        api_key=api_key,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_image_pixels=args.max_image_pixels,
    )
    logger.info("rtdetr serve: http://%s:%d/ (API docs at /docs)", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, access_log=not args.no_access_log, log_level="info")
    return 0
