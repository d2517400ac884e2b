"""Exceptions raised while fetching, reading or loading weights: one clear message each."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

__all__ = [
    "WeightsError",
    "WeightsDownloadError",
    "WeightsFormatError",
    "WeightsMismatchError",
    "UnsafeCheckpointError",
]


class WeightsError(UserError, RuntimeError):
    """Base class of the weights errors."""


class WeightsDownloadError(WeightsError):
    """A download failed or the network is unreachable.

    Attributes:
        url: what could not be fetched.
        cache_path: where the file (or folder) can be placed by hand so that
            loading works offline.
        reason: the underlying cause, in words.
    """

    def __init__(
        self,
        url: str,
        cache_path: Path | str,
        reason: str,
        hint: str = "",
        place: str = "fetch that file on a connected machine and place it at",
    ) -> None:
        self.url = url
        self.cache_path = Path(cache_path)
        self.reason = reason
        msg = f"could not download {url}\n  reason: {reason}\n  to load it offline, {place}:\n    {self.cache_path}"
        if hint:
            msg += f"\n  {hint}"
        super().__init__(msg)


class WeightsFormatError(WeightsError):
    """The file is not a checkpoint this package can read."""


class UnsafeCheckpointError(WeightsFormatError):
    """A torch file holds pickled Python objects (which could run code) and ``trusted`` was not given."""


class WeightsMismatchError(WeightsError):
    """The checkpoint does not fit the model (missing / unexpected keys or shape mismatches)."""

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[str] | None = None,
    ) -> None:
        self.missing_keys = list(missing or [])
        self.unexpected_keys = list(unexpected or [])
        self.mismatched_keys = list(mismatched or [])
        super().__init__(message)
