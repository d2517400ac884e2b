"""``python -m rtdetr.serve --model NAME ...``: the same as ``rtdetr serve``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    # Through the CLI's main, so bad input gets the same one-line error and exit code 2.
    from ..cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = [a for a in args if a in ("-v", "--verbose")]  # the CLI takes it before the command
    return cli_main([*verbose, "serve", *(a for a in args if a not in verbose)])


if __name__ == "__main__":
    sys.exit(main())
