"""Where a training run writes: never into a finished run's folder by accident.

``runs/train`` taken by an earlier run -> ``runs/train2``, then ``runs/train3`` ...
(the numbering Ultralytics users know). A folder counts as taken when it holds a
run's files (checkpoints or logs); an empty or missing folder is used as it is.
``exist_ok`` (``--exist-ok``, and ``--resume``, which continues the run there)
reuses the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["RUN_FILES", "holds_run", "next_run_dir"]

log = logging.getLogger(__name__)

# What a started run leaves in its folder (checkpoints first, then the per-epoch logs).
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "results.csv")


def holds_run(path: str | Path) -> bool:
    """Whether ``path`` holds files of a training run."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def next_run_dir(path: str | Path, exist_ok: bool = False) -> Path:
    """``path``, or the first of ``path2``, ``path3``, ... that holds no run.

    With ``exist_ok`` the folder is reused even if it holds a run (its files are
    overwritten as training goes).
    """
    path = Path(path)
    if exist_ok or not holds_run(path):
        return path
    # The number goes after the whole name, as Ultralytics does ("exp7" -> "exp72"), so a
    # name ending in digits (a date, a version) is never read as a counter.
    n = 2
    while holds_run(path.with_name(f"{path.name}{n}")):
        n += 1
    return path.with_name(f"{path.name}{n}")
