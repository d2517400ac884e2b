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

__all__ = ["SharedEpoch"]

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
