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


PARKED = PREFIX + "parked"
"""Sorted set of uuids whose next attempt waits for its time, scored by due time."""

CLAIMED = PREFIX + "claimed"
"""Sorted set of uuids a releaser is publishing, scored by when its claim expires."""

CLAIMS = PREFIX + "claims"
"""Hash: uuid → token of the releaser that claimed it."""

SPECS = PREFIX + "specs"
"""Hash: uuid → the parked attempt (the task's message fields and attempt number, JSON)."""

ATTEMPTS = PREFIX + "attempts"
"""Hash: uuid → ``attempt:lease_until`` of its latest attempt (lease 0: not started)."""

SEQUENCE = PREFIX + "sequence"
"""Counter: the sequence number of the latest publication of a message onto the queue."""

SENT = PREFIX + "sent"
"""Sorted set of uuids whose latest attempt was published and not yet begun, scored
by the publication's sequence number."""

SENT_SPECS = PREFIX + "sent-specs"
"""Hash: uuid → the attempt published and not yet begun (as in ``SPECS``)."""

WAKE = PREFIX + "wake"
"""Pub/sub channel: a parked attempt became the earliest one."""
