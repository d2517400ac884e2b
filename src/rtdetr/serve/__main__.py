"""``python -m rtdetr.serve --model NAME ...``: the same as ``rtdetr serve``."""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from .command import configure_parser


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(
        argparse.ArgumentParser(prog="python -m rtdetr.serve", description="RT-DETR HTTP detection service")
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not torch.cuda.is_available():
        torch.set_flush_denormal(True)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
