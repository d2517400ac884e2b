"""Training checkpoints: written atomically, holding everything needed to resume exactly.

Layout (a superset of the reference's, so released-weight loaders read ours):
``model`` (state dict), ``ema`` ({``module``, ``updates``, ...}), ``optimizer``,
``lr_scheduler``, ``scaler``, ``epoch`` (the next epoch to run), ``step``
(optimizer steps so far), ``rng`` (python / numpy / torch / cuda states),
``config`` and ``train_config`` (as dicts), ``class_names``, ``category_ids``,
``metrics`` (latest evaluation).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng_state", "restore_rng_state"]

log = logging.getLogger(__name__)


def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_plain(obj: Any) -> Any:
    """Dataclasses -> nested dicts, so checkpoints unpickle without this package's classes."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            "__type__": type(obj).__name__,
            **{f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)},
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def _temp_glob(name: str) -> str:
    return f".{name}.*.tmp"


def remove_stale_temp_files(directory: str | Path, name: str | None = None) -> list[Path]:
    """Delete temp files that an interrupted :func:`save_checkpoint` left in ``directory``.

    ``name`` limits the clean-up to one checkpoint's temp files (``last.pt``); None
    removes those of every checkpoint. Only one process writes a run's checkpoints,
    so any temp file found before it writes is left over from a killed process.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for tmp in directory.glob(_temp_glob(name or "*")):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError as e:  # someone else's file, or already gone: not worth failing a run for
            log.debug("could not remove %s: %s", tmp, e)
    if removed:
        log.info("removed %d unfinished checkpoint temp file(s) in %s", len(removed), directory)
    return removed


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same directory, fsync, rename.

    A crash mid-write leaves the previous checkpoint intact, never a truncated file;
    the temp file a killed process leaves behind is removed by the next save.
    The file gets the usual permissions (0666 less the umask, 0644 typically).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent, path.name)
    # os.open with mode 0o666 applies the umask (tempfile.mkstemp would force 0600).
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("saved checkpoint %s", path)
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, trusted: bool = False
) -> dict[str, Any]:
    """Read a training checkpoint without running code from it.

    Our checkpoints hold only tensors, plain containers and numpy RNG arrays, so they
    load with ``torch.load(weights_only=True)``; a file holding other Python objects
    (which unpickling could execute) is refused unless ``trusted=True``.

    Raises:
        FileNotFoundError: no such file.
        WeightsFormatError: not a torch file, or not one of our training checkpoints
            (:class:`~rtdetr.weights.errors.UnsafeCheckpointError` when refused as unsafe).
    """
    from ..weights.errors import WeightsFormatError
    from ..weights.formats import torch_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch_load(path, map_location=map_location, trusted=trusted)
    if not isinstance(state, dict) or "model" not in state:
        raise WeightsFormatError(f"{path} is not an rtdetr training checkpoint (no 'model' entry)")
    return state
