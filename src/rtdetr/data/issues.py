"""Dataset problems: the error type, and a collector that reports them all at once.

Loading a dataset with a handful of bad annotations should fail *once* with a
message that says what is wrong, how often, and where (file names, annotation
ids), rather than on the first bad line or, worse, by quietly dropping data.
``IssueLog`` gathers problems while a dataset is parsed; at the end the fatal
ones become a single ``DatasetError`` and the tolerated ones a logged warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..errors import UserError

__all__ = ["DatasetError", "DatasetNotFoundError", "ImageReadError", "IssueLog"]

_MAX_EXAMPLES = 5


class DatasetError(UserError, ValueError):
    """A dataset is malformed. ``issues`` maps a problem description to (count, examples)."""

    def __init__(self, message: str, issues: dict[str, tuple[int, list[str]]] | None = None):
        super().__init__(message)
        self.issues: dict[str, tuple[int, list[str]]] = issues or {}


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset path, or a file its layout needs, does not exist (still a ``FileNotFoundError``)."""


class ImageReadError(DatasetError):
    """An image file exists but cannot be decoded (truncated, corrupt, unsupported)."""


@dataclass
class _Issue:
    count: int = 0
    examples: list[str] = field(default_factory=list)


class IssueLog:
    """Counts problems by kind, keeping the first few examples of each.

    Args:
        source: what is being parsed (a file or directory), named in every message.
    """

    def __init__(self, source: str):
        self.source = source
        self._fatal: dict[str, _Issue] = {}
        self._warn: dict[str, _Issue] = {}

    def error(self, kind: str, example: str) -> None:
        """Record a problem that makes the dataset unusable as it is."""
        self._add(self._fatal, kind, example)

    def warn(self, kind: str, example: str) -> None:
        """Record a problem that is repaired or skipped (and reported, never silently)."""
        self._add(self._warn, kind, example)

    @staticmethod
    def _add(table: dict[str, _Issue], kind: str, example: str) -> None:
        issue = table.setdefault(kind, _Issue())
        issue.count += 1
        if len(issue.examples) < _MAX_EXAMPLES:
            issue.examples.append(example)

    @property
    def has_errors(self) -> bool:
        return bool(self._fatal)

    def count(self, kind: str) -> int:
        """How many times ``kind`` was recorded (fatal or not)."""
        issue = self._fatal.get(kind) or self._warn.get(kind)
        return issue.count if issue else 0

    @staticmethod
    def _lines(table: dict[str, _Issue]) -> list[str]:
        lines = []
        for kind, issue in table.items():
            more = ", ..." if issue.count > len(issue.examples) else ""
            lines.append(f"  - {issue.count} x {kind} (e.g. {'; '.join(issue.examples)}{more})")
        return lines

    def far_boxes(self, far: list[str], checked: int, *, limit: str, max_share: float, expected: str) -> None:
        """Report boxes reaching further out of their image than ``limit``, out of ``checked``.

        A few are annotation slips (the reader clips them, as the reference loader clips
        every box): a warning. More than ``max_share`` of the boxes mean the file holds
        another box format: fatal, saying what the format should be (``expected``).
        """
        if len(far) > max(1.0, max_share * checked):
            kind = f"boxes outside the image by more than {limit} ({len(far)} of {checked} boxes, over {max_share:.0%}: {expected})"
            for example in far:
                self.error(kind, example)
        else:
            for example in far:
                self.warn(f"boxes reaching more than {limit} outside the image, clipped to it", example)

    def finish(self, logger: logging.Logger) -> None:
        """Log the tolerated problems, then raise one ``DatasetError`` for the fatal ones."""
        if self._warn:
            logger.warning("%s: repaired or skipped:\n%s", self.source, "\n".join(self._lines(self._warn)))
        if self._fatal:
            total = sum(issue.count for issue in self._fatal.values())
            message = f"invalid dataset {self.source}: {total} problem(s)\n" + "\n".join(self._lines(self._fatal))
            raise DatasetError(message, {k: (v.count, list(v.examples)) for k, v in self._fatal.items()})
