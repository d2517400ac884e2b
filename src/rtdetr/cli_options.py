"""Command-line options that several subcommands share, and what they turn into.

Importing it loads no PyTorch (the CLI imports it to build its parser, and ``rtdetr
--help`` should not wait); the functions import what they need when called.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .runtime import resolve_device

if TYPE_CHECKING:
    from .infer.predictor import Detector

__all__ = ["TRUSTED_HELP", "EAGER_HELP", "resolve_device", "detector_from_args"]

TRUSTED_HELP = (
    "allow a .pt/.pth file that holds pickled Python objects; loading such a file can run "
    "arbitrary code, so use it only for files from a source you trust"
)

EAGER_HELP = (
    "run the model eagerly; by default a CPU input size called often (or warmed up, as serve "
    "does) runs as a frozen TorchScript graph (less latency; checked against the eager output)"
)


def detector_from_args(args: argparse.Namespace) -> Detector:
    """The Detector that ``--model``, ``--weights``, ``--trusted``, ``--device``, ``--precision``,
    ``--imgsz`` and (where the command has them) ``--eager`` and ``--set`` describe (predict,
    benchmark, serve)."""
    from .config import parse_overrides
    from .infer.predictor import Detector

    return Detector.from_pretrained(
        args.model,
        weights=args.weights,
        device=resolve_device(args.device),
        precision=args.precision,
        imgsz=args.imgsz,
        trusted=getattr(args, "trusted", False),
        graph="eager" if getattr(args, "eager", False) else "auto",
        **parse_overrides(getattr(args, "set", None)),
    )
