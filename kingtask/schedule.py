"""When attempts run: the first at ``start_time``, each retry after its delay.

An attempt that is due now is pushed onto Celery's queue at once. Any other
waits in Redis, never in a worker: it is *parked* in a sorted set scored by its
due time, with its message fields beside it (a few hundred bytes). A releaser
beside every worker (:mod:`kingtask.releaser`) sleeps until the earliest due
time, or until a new, earlier one is parked, then *claims* the due entries with
a lease, publishes them and drops the claims. Claiming and publishing are each
one Lua script; an entry whose claim expires — its releaser died in between —
is released again. So waits of any length survive restarts of every process,
cost workers no memory, and are never redelivered by Celery's visibility
timeout.

Each attempt is guarded when it starts (:meth:`Scheduler.begin`) and holds a
lease while it runs (:class:`Heartbeat`): a duplicate delivery of an attempt
that finished, or of a task that finished, is dropped; one of an attempt still
running elsewhere is parked until that attempt's lease ends and looked at again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kingtask import keys, messages
from kingtask.app import app
from kingtask.messages import Publication
from kingtask.models import Outcome, TaskSpec
from kingtask.store import FINISH_FUNCTION, Store, day

log = logging.getLogger(__name__)

CLAIM_LEASE = 30.0
"""Seconds a releaser may take to publish what it claimed before others may take it."""
BATCH = 500
"""Entries claimed and published per round trip."""
IDLE = 1.0
"""Longest sleep of a releaser; it also wakes when an earlier attempt is parked."""

CANCELLED = "cancelled"

# Accept a task (ARGV[2] == '1') or require it to be undone, record its next
# attempt (ARGV[3], '' to leave the record), then push its message now or park
# its fields until ARGV[4]. A newly earliest entry wakes the releasers.
_ENQUEUE = """
local uuid = ARGV[1]
if ARGV[2] == '1' then
    redis.call('SADD', KEYS[1], uuid)
elseif redis.call('SISMEMBER', KEYS[1], uuid) == 0 then
    return 0
end
if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[4], uuid, ARGV[3])
end
if ARGV[6] ~= '' then
    redis.call('LPUSH', KEYS[5], ARGV[6])
    if ARGV[7] ~= '' then
        redis.call('PUBLISH', ARGV[7], ARGV[8])
    end
    return 1
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[2], ARGV[4], uuid)
redis.call('HSET', KEYS[3], uuid, ARGV[5])
if #first == 0 or tonumber(ARGV[4]) < tonumber(first[2]) then
    redis.call('PUBLISH', ARGV[9], ARGV[4])
end
return 1
"""

# When the next parked entry falls due, or the next claim expires ('' if none).
_NEXT_DUE = """
local function next_due(parked, claimed)
    local due = {}
    for _, key in ipairs({parked, claimed}) do
        local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        if #first > 0 then due[#due + 1] = tonumber(first[2]) end
    end
    if #due == 0 then return '' end
    return tostring(math.min(unpack(due)))
end
"""

# Put expired claims back, claim what is due (ARGV[1]) until ARGV[2] under token
# ARGV[4], and say when the next entry falls due (or a claim expires).
_CLAIM = (
    _NEXT_DUE
    + """
local now, limit = ARGV[1], tonumber(ARGV[3])
for _, uuid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', KEYS[2], uuid)
    redis.call('HDEL', KEYS[3], uuid)
    redis.call('ZADD', KEYS[1], now, uuid)
end
local claimed = {}
for _, uuid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', KEYS[1], uuid)
    redis.call('ZADD', KEYS[2], ARGV[2], uuid)
    redis.call('HSET', KEYS[3], uuid, ARGV[4])
    claimed[#claimed + 1] = uuid
    claimed[#claimed + 1] = redis.call('HGET', KEYS[4], uuid)
end
return {next_due(KEYS[1], KEYS[2]), claimed}
"""
)

# Publish claimed entries (uuid, message, topic, event from ARGV[2]) that still
# carry this releaser's token ARGV[1], drop their claims, and say what is due next.
_PUSH = (
    _NEXT_DUE
    + """
for i = 2, #ARGV, 4 do
    local uuid = ARGV[i]
    if redis.call('HGET', KEYS[2], uuid) == ARGV[1] then
        redis.call('HDEL', KEYS[2], uuid)
        redis.call('ZREM', KEYS[1], uuid)
        redis.call('HDEL', KEYS[3], uuid)
        redis.call('LPUSH', KEYS[4], ARGV[i + 1])
        if ARGV[i + 2] ~= '' then
            redis.call('PUBLISH', ARGV[i + 2], ARGV[i + 3])
        end
    end
end
return next_due(KEYS[1], KEYS[5])
"""
)

_LEASE = """
local function lease_of(record)
    if not record then return nil end
    local a, lease = string.match(record, '^(%d+):([%d%.]+)$')
    return tonumber(a), tonumber(lease)
end
"""

# Start attempt ARGV[2] of ARGV[1] with a lease until ARGV[4]: 0 to run it, -1
# to drop a duplicate, or the lease end of the same attempt running elsewhere.
_BEGIN = (
    _LEASE
    + """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
    return '-1'
end
local attempt, lease = lease_of(redis.call('HGET', KEYS[2], ARGV[1]))
if attempt and attempt > tonumber(ARGV[2]) then
    return '-1'
end
if attempt == tonumber(ARGV[2]) and lease > tonumber(ARGV[3]) then
    return tostring(lease)
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[4])
return '0'
"""
)

# Extend the lease of attempt ARGV[2] of ARGV[1], still running here, to ARGV[3].
_RENEW = (
    _LEASE
    + """
local attempt, lease = lease_of(redis.call('HGET', KEYS[1], ARGV[1]))
if attempt == tonumber(ARGV[2]) and lease > 0 then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
    return 1
end
return 0
"""
)

# Cancel a task that is not running: drop whatever waits for it and finish it
# as a failure. Returns 'cancelled', 'finished' or 'running'.
_CANCEL = (
    _LEASE
    + FINISH_FUNCTION
    + """
local uuid = ARGV[1]
if redis.call('SISMEMBER', KEYS[1], uuid) == 0 then
    return 'finished'
end
local attempt, lease = lease_of(redis.call('HGET', KEYS[6], uuid))
if attempt and lease > tonumber(ARGV[2]) then
    return 'running'
end
redis.call('ZREM', KEYS[2], uuid)
redis.call('ZREM', KEYS[3], uuid)
redis.call('HDEL', KEYS[4], uuid)
redis.call('HDEL', KEYS[5], uuid)
finish(KEYS[1], KEYS[7], KEYS[8], KEYS[6], uuid, '0', ARGV[3], ARGV[4])
return 'cancelled'
"""
)


def retry_delay(time_interval: tuple[int, ...], attempt: int) -> int | None:
    """Seconds to wait after attempt ``attempt`` (0 = the first) failed; None: no retry left."""
    return time_interval[attempt] if attempt < len(time_interval) else None


@dataclass(frozen=True)
class Parked:
    """An attempt as it waits in Redis: the task's message fields and the attempt number."""

    kind: str
    attempt: int
    message: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "attempt": self.attempt, **self.message})

    @classmethod
    def from_json(cls, text: str) -> Parked:
        fields = json.loads(text)
        return cls(fields.pop("kind"), fields.pop("attempt"), fields)


class Scheduler:
    """Puts attempts on the queue when they are due, and guards each one as it starts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self._enqueue = self.client.register_script(_ENQUEUE)
        self._claim = self.client.register_script(_CLAIM)
        self._push = self.client.register_script(_PUSH)
        self._begin = self.client.register_script(_BEGIN)
        self._renew = self.client.register_script(_RENEW)
        self._cancel = self.client.register_script(_CANCEL)

    # -- entering the schedule ---------------------------------------------------

    def submit(self, spec: TaskSpec) -> None:
        """Accept a new task: count it as undone, and queue or park its first attempt."""
        self._schedule(spec, 0, spec.start_time, accept=True, record="")

    def retry(self, spec: TaskSpec, attempt: int, due: float) -> None:
        """Schedule attempt ``attempt`` (≥ 1) of an undone task at ``due``."""
        self._schedule(spec, attempt, due, accept=False, record=f"{attempt}:0")

    def _schedule(
        self, spec: TaskSpec, attempt: int, due: float, *, accept: bool, record: str
    ) -> None:
        parked = Parked(spec.kind, attempt, spec.to_message())
        if due <= time.time():
            message, topic, event = self._publication(spec.uuid, parked).commands
            spec_json = ""
        else:
            message = topic = event = ""
            spec_json = parked.to_json()
        self._enqueue(
            keys=[keys.UNDO, keys.PARKED, keys.SPECS, keys.ATTEMPTS, messages.QUEUE],
            args=[spec.uuid, int(accept), record, due, spec_json, message, topic, event, keys.WAKE],
        )

    def _publication(self, uuid: str, parked: Parked) -> Publication:
        kwargs = {**parked.message, "attempt": parked.attempt}
        return messages.publication(app, self.client, f"kingtask.{parked.kind}", uuid, kwargs, None)

    # -- releasing ----------------------------------------------------------------

    def release_due(self) -> float | None:
        """Publish every parked attempt that is due; when the next one falls due."""
        while True:
            now = time.time()
            token = uuidlib.uuid4().hex
            next_due, claimed = self._claim(
                keys=[keys.PARKED, keys.CLAIMED, keys.CLAIMS, keys.SPECS],
                args=[now, now + CLAIM_LEASE, BATCH, token],
            )
            entries = []
            for uuid, fields in zip(claimed[::2], claimed[1::2], strict=True):
                entries += [uuid, *self._publication(uuid, Parked.from_json(fields)).commands]
            if entries:
                next_due = self._push(
                    keys=[keys.CLAIMED, keys.CLAIMS, keys.SPECS, messages.QUEUE, keys.PARKED],
                    args=[token, *entries],
                )
            if len(claimed) < 2 * BATCH:
                return float(next_due) if next_due else None

    # -- attempts -------------------------------------------------------------------

    def begin(self, spec: TaskSpec, attempt: int, lease: float) -> bool:
        """Whether to run this delivery of an attempt, holding it for ``lease`` seconds.

        A delivery of an attempt that already finished, or of a finished task, is
        dropped; one of an attempt running elsewhere is looked at again when that
        attempt's lease ends.
        """
        now = time.time()
        answer = float(
            self._begin(
                keys=[keys.UNDO, keys.ATTEMPTS], args=[spec.uuid, attempt, now, now + lease]
            )
        )
        if answer > 0:
            self._schedule(spec, attempt, answer, accept=False, record="")
        return answer == 0

    def renew(self, uuid: str, attempt: int, lease: float) -> None:
        """Extend the lease of an attempt running here to ``lease`` seconds from now."""
        self._renew(keys=[keys.ATTEMPTS], args=[uuid, attempt, time.time() + lease])

    def end_lease(self, uuid: str, attempt: int) -> None:
        """End the lease of an attempt that no longer runs, so its next delivery runs at once."""
        self.renew(uuid, attempt, 0)

    def cancel(self, uuid: str) -> str:
        """Cancel a task that has not started: ``cancelled``, ``finished`` or ``running``.

        A cancelled task never runs; its result is a failure, ``cancelled``,
        counted once. Cancelling it again answers ``cancelled`` and changes nothing.
        """
        outcome = Outcome(False, CANCELLED)
        when = datetime.now(UTC)
        answer = self._cancel(
            keys=[keys.UNDO, keys.PARKED, keys.CLAIMED, keys.CLAIMS, keys.SPECS, keys.ATTEMPTS,
                  keys.result(uuid), keys.daily("failure", day(when, self.store.zone))],
            args=[uuid, when.timestamp(), outcome.message, self.store.result_keep_time],
        )  # fmt: skip
        if answer == "finished" and self.store.result(uuid)["message"] == CANCELLED:
            return CANCELLED
        return str(answer)

    def scheduled_count(self) -> int:
        """Tasks whose next attempt waits for its time."""
        with self.client.pipeline(transaction=False) as pipeline:
            pipeline.zcard(keys.PARKED)
            pipeline.zcard(keys.CLAIMED)
            return sum(pipeline.execute())


class Heartbeat:
    """Holds the leases of the attempts running in this process, renewed from one thread.

    A worker that dies stops renewing: another runs the attempt once its lease
    ran out. One that lives renews every third of the lease, so however long an
    attempt runs, no other worker takes it over.
    """

    def __init__(self, scheduler: Scheduler, lease: float) -> None:
        self.scheduler = scheduler
        self.lease = lease
        self.running: dict[str, int] = {}
        self.lock = threading.Lock()
        self.pid = 0

    @contextmanager
    def holding(self, spec: TaskSpec, attempt: int) -> Iterator[bool]:
        """Begin an attempt and hold its lease while the body runs; yields whether to run it."""
        if not self.scheduler.begin(spec, attempt, self.lease):
            yield False
            return
        with self.lock:
            if self.pid != os.getpid():  # the first attempt in this (forked) process
                self.pid = os.getpid()
                threading.Thread(target=self._beat, name="kingtask-heartbeat", daemon=True).start()
            self.running[spec.uuid] = attempt
        try:
            yield True
        finally:
            with self.lock:
                self.running.pop(spec.uuid, None)

    def _beat(self) -> None:
        while True:
            time.sleep(self.lease / 3)
            with self.lock:
                held = list(self.running.items())
            for uuid, attempt in held:
                try:
                    self.scheduler.renew(uuid, attempt, self.lease)
                except Exception:
                    log.exception("cannot renew the lease of %s", uuid)
