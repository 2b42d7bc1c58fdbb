"""Results, daily counters and the backlog, as atomic Redis operations."""

from __future__ import annotations

from datetime import datetime, tzinfo

import redis
import redis.sentinel

from kingtask import config, keys
from kingtask.models import Outcome

NO_RESULT = {"is_result_exist": 0, "is_success": 0, "message": ""}

FINISH_FUNCTION = """
local function finish(undo, result, counter, attempts, uuid, success, message, keep)
    if redis.call('SREM', undo, uuid) == 0 then
        return 0
    end
    redis.call('HSET', result, 'is_success', success, 'message', message)
    if tonumber(keep) > 0 then
        redis.call('EXPIRE', result, keep)
    end
    redis.call('INCR', counter)
    redis.call('HDEL', attempts, uuid)
    return 1
end
"""
"""Lua: finishing is one step — drop the task from the backlog, write its result,
count it, forget its attempts. A task no longer in the backlog was finished
already: nothing changes."""

_FINISH = FINISH_FUNCTION + "return finish(KEYS[1], KEYS[2], KEYS[3], KEYS[4], unpack(ARGV))"


# Bounded waits: with Redis away the API answers 503 in seconds, never hangs.
_TIMEOUTS = {"socket_connect_timeout": 5, "socket_timeout": 30}


def connect(url: str, sentinel_master: str = "", sentinel_password: str = "") -> redis.Redis:
    """A Redis client for a URL as Celery takes it (``redis+socket://`` included).

    For ``sentinel://`` URLs the client talks to the master that the sentinels name
    ``sentinel_master``, and asks them again after a failover; ``sentinel_password``
    is the sentinels' own, if they ask for one.
    """
    if url.startswith("sentinel://"):
        sentinels = config.parse_sentinels(url)
        ask = {**_TIMEOUTS, "socket_timeout": 5, "password": sentinel_password or None}
        manager = redis.sentinel.Sentinel(list(sentinels.nodes), sentinel_kwargs=ask)
        return manager.master_for(
            sentinel_master,
            db=sentinels.db,
            username=sentinels.username,
            password=sentinels.password,
            decode_responses=True,
            health_check_interval=30,
            **_TIMEOUTS,
        )
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30, **_TIMEOUTS)


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

    @classmethod
    def from_settings(cls, settings: config.Settings) -> Store:
        """The store of a configured kingtask, with a client of its own."""
        return cls(
            connect(settings.redis_url, settings.sentinel_master, settings.sentinel_password),
            result_keep_time=settings.result_keep_time,
            zone=settings.zone,
        )

    def finish(self, uuid: str, outcome: Outcome, when: datetime) -> bool:
        """Record a task's final outcome, once; False when it was finished already."""
        outcome_name = "success" if outcome.success else "failure"
        return bool(
            self._finish(
                keys=[
                    keys.UNDO,
                    keys.result(uuid),
                    keys.daily(outcome_name, day(when, self.zone)),
                    keys.ATTEMPTS,
                ],
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
