"""Help texts of command-line options that several subcommands share.

Torch-free on purpose: the CLI imports it to build its parser, and ``rtdetr --help``
should not wait for PyTorch to load.
"""

from __future__ import annotations

__all__ = ["TRUSTED_HELP"]

TRUSTED_HELP = (
    "allow a .pt/.pth file that holds pickled Python objects; loading such a file can run "
    "arbitrary code, so use it only for files from a source you trust"
)
