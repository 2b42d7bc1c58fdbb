"""Results, daily counters and the backlog, as atomic Redis operations."""

from __future__ import annotations

from datetime import datetime, tzinfo

import redis

from kingtask import keys
from kingtask.messages import Publication
from kingtask.models import Outcome

NO_RESULT = {"is_result_exist": 0, "is_success": 0, "message": ""}

# Finishing is one step: drop the task from the backlog, write its result and
# count it. A task no longer in the backlog was finished already: nothing changes.
_FINISH = """
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('HSET', KEYS[2], 'is_success', ARGV[2], 'message', ARGV[3])
if tonumber(ARGV[4]) > 0 then
    redis.call('EXPIRE', KEYS[2], ARGV[4])
end
redis.call('INCR', KEYS[3])
return 1
"""


# Publishing a Celery message as kombu's Redis transport does (LPUSH, and the
# task-sent event), counting the task as undone in the same step when accepting.
_PUBLISH = """
if ARGV[1] ~= '' then
    redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('LPUSH', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
    redis.call('PUBLISH', ARGV[3], ARGV[4])
end
"""


def connect(url: str) -> redis.Redis:
    """A Redis client for a URL as Celery takes it (``redis+socket://`` included)."""
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


def day(when: datetime, zone: tzinfo | None) -> str:
    """The day ``when`` falls on in ``zone`` (None: the local zone), as ``2006-01-02``."""
    return when.astimezone(zone).strftime("%Y-%m-%d")


class Store:
    """kingtask's own state in Redis: what is undone, and how tasks ended."""

    def __init__(self, client: redis.Redis, *, result_keep_time: int, zone: tzinfo | None) -> None:
        self.client = client
        self.result_keep_time = result_keep_time
        self.zone = zone
        self._finish = client.register_script(_FINISH)
        self._publish = client.register_script(_PUBLISH)

    def accept(self, uuid: str, first: Publication) -> None:
        """Count a new task as undone and publish its first attempt, both or neither."""
        self._publish(keys=[keys.UNDO, first.queue], args=[uuid, *first.script_args])

    def publish(self, attempt: Publication) -> None:
        """Hand an attempt to the workers."""
        self._publish(keys=[keys.UNDO, attempt.queue], args=["", *attempt.script_args])

    def finish(self, uuid: str, outcome: Outcome, when: datetime) -> bool:
        """Record a task's final outcome, once; False when it was finished already."""
        outcome_name = "success" if outcome.success else "failure"
        return bool(
            self._finish(
                keys=[keys.UNDO, keys.result(uuid), keys.daily(outcome_name, day(when, self.zone))],
                args=[uuid, int(outcome.success), outcome.message, self.result_keep_time],
            )
        )

    def result(self, uuid: str) -> dict[str, int | str]:
        """The seed's result object: ``is_result_exist``, ``is_success``, ``message``."""
        stored = self.client.hgetall(keys.result(uuid))
        if not stored:
            return dict(NO_RESULT)
        return {
            "is_result_exist": 1,
            "is_success": int(stored["is_success"]),
            "message": stored["message"],
        }

    def undo_count(self) -> int:
        return int(self.client.scard(keys.UNDO))

    def daily_count(self, outcome: str, date: str) -> int:
        """Tasks that finished with ``outcome`` (success or failure) on ``date``."""
        return int(self.client.get(keys.daily(outcome, date)) or 0)
