"""Every Redis key kingtask uses, in one place."""

from __future__ import annotations

PREFIX = "kingtask:"

UNDO = PREFIX + "undo"
"""Set of uuids accepted and not yet finished; its size is the undo count."""


def result(uuid: str) -> str:
    """The final result of a task, a hash that expires after ``result_keep_time``."""
    return f"{PREFIX}result:{uuid}"


def daily(outcome: str, date: str) -> str:
    """Counter of tasks finished with ``outcome`` (success or failure) on ``date``."""
    return f"{PREFIX}count:{outcome}:{date}"
