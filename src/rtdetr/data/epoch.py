"""An epoch counter that DataLoader worker processes can see.

Transforms and collate functions run inside DataLoader workers, which hold
copies of them; with ``persistent_workers=True`` those copies live across epochs,
so a plain ``self.epoch = n`` set in the main process would never reach them.
The counter lives in a shared-memory tensor instead: ``set`` in the main process
before ``iter(loader)`` is seen by every worker.
"""

from __future__ import annotations

import logging

import torch

__all__ = ["SharedEpoch", "EpochSchedule"]

logger = logging.getLogger(__name__)


class SharedEpoch:
    """Holds the current epoch (an int) in shared memory."""

    def __init__(self, epoch: int = 0):
        value = torch.full((1,), int(epoch), dtype=torch.int64)
        try:
            value.share_memory_()
        except (RuntimeError, OSError) as exc:  # no /dev/shm: still correct with non-persistent workers
            logger.warning("epoch counter not shared with DataLoader workers (%s)", exc)
        self._value = value

    def set(self, epoch: int) -> None:
        self._value.fill_(int(epoch))

    def get(self) -> int:
        return int(self._value.item())

    def __repr__(self) -> str:
        return f"SharedEpoch({self.get()})"


class EpochSchedule:
    """Base for objects that switch behaviour at ``stop_epoch`` (transforms, collators).

    ``active`` is True while ``epoch < stop_epoch`` (always when ``stop_epoch`` is None).
    """

    def __init__(self, stop_epoch: int | None = None) -> None:
        self.stop_epoch = stop_epoch
        self._epoch = SharedEpoch(0)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Set the current epoch (call before iterating the DataLoader for that epoch)."""
        self._epoch.set(epoch)

    @property
    def before_stop_epoch(self) -> bool:
        return self.stop_epoch is None or self.epoch < self.stop_epoch
