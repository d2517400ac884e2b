"""argparse ``type=`` validators for the command line's numeric flags.

A bad value is refused while the arguments are parsed, before any model loads or
any file is written: argparse then prints the usage and one line
``rtdetr CMD: error: argument --FLAG: must be ..., got VALUE`` and exits with code 2.
Each validator's message says what was expected, so the user knows what to type.
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "positive_int",
    "non_negative_int",
    "probability",
    "positive_float",
    "non_negative_float",
    "image_size",
    "port",
    "STRIDE",
]

STRIDE = 32  # the largest feature stride: input sides must be multiples of it


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, counts, thread numbers)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (1 or more), got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (class indices, warm-up runs)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (score thresholds)."""
    value = _finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (sizes in MB)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (waiting times)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def image_size(text: str) -> int:
    """A square input side: a positive multiple of 32."""
    value = _int(text)
    if value < STRIDE or value % STRIDE:
        lower = max(STRIDE, value // STRIDE * STRIDE)
        raise argparse.ArgumentTypeError(
            f"must be a positive multiple of {STRIDE} (the model's largest stride), got {text}; try {lower}"
        )
    return value


def port(text: str) -> int:
    """A TCP port number, 0..65535 (0: any free port)."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 0..65535, got {text}")
    return value
