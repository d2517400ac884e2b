"""The one exception type for problems with what a user gave us.

A :class:`UserError` is a bad file, flag, dataset or checkpoint, not a bug: its
message alone says what is wrong and what to do (name the file or field and
what was expected). ``rtdetr`` (the CLI) prints that message on one line and exits
with code 2; ``-v`` adds the traceback. Library callers catch it like any error.
Subsystems subclass it (``WeightsError``, ``DatasetError``) so one ``except``
covers them all.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user (file, flag, dataset, checkpoint); the message says what to change."""
