"""The bad-input contract of the command line, shared by the predict / benchmark / serve tests.

A bad invocation exits with code 2 and says what is wrong in one ``error:`` line on
stderr, prints no traceback, and leaves the files it was pointed at as they were.
"""

from __future__ import annotations

from pathlib import Path

from rtdetr.cli import main


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders): to compare before and after."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run_bad(argv: list[str], capsys) -> str:
    """Run ``rtdetr ARGV`` in-process; assert exit code 2, no traceback, one error line; return that line."""
    capsys.readouterr()  # drop what came before
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 2, f"exit code {rc}; stderr:\n{err}"
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]
