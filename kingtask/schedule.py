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

Every published attempt is tracked *in transit* until it begins. A worker takes
a message off the queue before it records it as unacknowledged; killed in
between, it takes the message with it. The releasers watch for attempts that
left the queue a while ago and were neither recorded nor begun, and publish
them again (:class:`TransitWatch`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid as uuidlib
from collections import deque
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

_SENDING = [keys.SEQUENCE, keys.SENT, keys.SENT_SPECS]
"""The keys of ``send`` in the Lua scripts, after the queue."""
ENQUEUE_KEYS = [keys.UNDO, keys.PARKED, keys.SPECS, keys.ATTEMPTS, messages.QUEUE, *_SENDING]
"""The keys of the enqueue script (:meth:`Scheduler.submit`, :meth:`Scheduler.retry`)."""
CLAIM_KEYS = [keys.PARKED, keys.CLAIMED, keys.CLAIMS, keys.SPECS]
"""The keys of the claim script (:meth:`Scheduler.release_due`, first step)."""
PUSH_KEYS = [keys.CLAIMED, keys.CLAIMS, keys.SPECS, messages.QUEUE, keys.PARKED, *_SENDING]
"""The keys of the push script (:meth:`Scheduler.release_due`, second step)."""

CLAIM_LEASE = 30.0
"""Seconds a releaser may take to publish what it claimed before others may take it."""
BATCH = 500
"""Entries claimed and published per round trip."""
IDLE = 1.0
"""Longest sleep of a releaser; it also wakes when an earlier attempt is parked."""
TRANSIT_GRACE = 10.0
"""Seconds a message that left the queue may take to be recorded as delivered or begun."""

CANCELLED = "cancelled"

# Push a message onto the queue, publish its sent event (unless topic is ''),
# and track it as in transit until a worker begins it: the message's sequence
# number in SENT, its attempt (spec) in SENT_SPECS.
_SEND = """
local function send(sequence, sent, sent_specs, queue, uuid, spec, message, topic, event)
    if spec then
        redis.call('ZADD', sent, redis.call('INCR', sequence), uuid)
        redis.call('HSET', sent_specs, uuid, spec)
    end
    redis.call('LPUSH', queue, message)
    if topic ~= '' then
        redis.call('PUBLISH', topic, event)
    end
end
"""

# Accept a task (ARGV[2] == '1') or require it to be undone, record its next
# attempt (ARGV[3], '' to leave the record), then push its message now or park
# its fields (ARGV[5]) until ARGV[4]. A newly earliest entry wakes the releasers.
_ENQUEUE = (
    _SEND
    + """
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
    send(KEYS[6], KEYS[7], KEYS[8], KEYS[5], uuid, ARGV[5], ARGV[6], ARGV[7], ARGV[8])
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
)

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
    + _SEND
    + """
for i = 2, #ARGV, 4 do
    local uuid = ARGV[i]
    if redis.call('HGET', KEYS[2], uuid) == ARGV[1] then
        local spec = redis.call('HGET', KEYS[3], uuid)
        redis.call('HDEL', KEYS[2], uuid)
        redis.call('ZREM', KEYS[1], uuid)
        redis.call('HDEL', KEYS[3], uuid)
        send(KEYS[6], KEYS[7], KEYS[8], KEYS[4], uuid, spec, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    end
end
return next_due(KEYS[1], KEYS[5])
"""
)

# Publish again attempts lost in transit: those still tracked under the sequence
# numbers the caller saw (uuid and sequence number from ARGV[1], then message,
# event topic and event), and forget those of tasks no longer undone (cancelled
# while their message was lost). Returns how many were published.
_RESEND = (
    _SEND
    + """
local sent = 0
for i = 1, #ARGV, 5 do
    local uuid = ARGV[i]
    local seq = redis.call('ZSCORE', KEYS[1], uuid)
    if seq and tonumber(seq) == tonumber(ARGV[i + 1]) then
        if redis.call('SISMEMBER', KEYS[5], uuid) == 1 then
            local spec = redis.call('HGET', KEYS[2], uuid)
            send(KEYS[4], KEYS[1], KEYS[2], KEYS[3], uuid, spec, ARGV[i + 2], ARGV[i + 3],
                 ARGV[i + 4])
            sent = sent + 1
        else
            redis.call('ZREM', KEYS[1], uuid)
            redis.call('HDEL', KEYS[2], uuid)
        end
    end
end
return sent
"""
)

# The transit frontier: every message published with a smaller sequence number
# has left the queue. The queue is first in, first out, so it is the number of
# the message next to leave (the tail); all when the queue is empty; 0 when the
# tail's number is unknown (a message handed back after its attempt began).
_FRONTIER = """
local tail = redis.call('LINDEX', KEYS[1], -1)
if not tail then
    return tonumber(redis.call('GET', KEYS[3]) or '0') + 1
end
local ok, message = pcall(cjson.decode, tail)
if not ok or type(message['headers']) ~= 'table' or not message['headers']['id'] then
    return 0
end
return tonumber(redis.call('ZSCORE', KEYS[2], message['headers']['id']) or '0')
"""

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
local sent = redis.call('HGET', KEYS[4], ARGV[1])
if sent and tonumber(string.match(sent, '"attempt": (%d+)')) == tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[4], ARGV[1])
    redis.call('ZREM', KEYS[3], ARGV[1])
end
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
        self._resend = self.client.register_script(_RESEND)
        self._frontier = self.client.register_script(_FRONTIER)

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
        else:
            message = topic = event = ""
        self._enqueue(
            keys=ENQUEUE_KEYS,
            args=[spec.uuid, int(accept), record, due, parked.to_json(), message, topic, event,
                  keys.WAKE],
        )  # fmt: skip

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
                keys=CLAIM_KEYS,
                args=[now, now + CLAIM_LEASE, BATCH, token],
            )
            entries = []
            for uuid, fields in zip(claimed[::2], claimed[1::2], strict=True):
                entries += [uuid, *self._publication(uuid, Parked.from_json(fields)).commands]
            if entries:
                next_due = self._push(
                    keys=PUSH_KEYS,
                    args=[token, *entries],
                )
            if len(claimed) < 2 * BATCH:
                return float(next_due) if next_due else None

    # -- messages lost in transit ----------------------------------------------------

    def frontier(self) -> int:
        """Messages with a smaller sequence number than this have left the queue."""
        return int(self._frontier(keys=[messages.QUEUE, keys.SENT, keys.SEQUENCE]))

    def resend_lost(self, frontier: int) -> int:
        """Publish again the attempts that left the queue before ``frontier`` and vanished.

        A worker takes a message off the queue and only then records it as
        unacknowledged; one killed in between loses it. An attempt that left the
        queue, is not unacknowledged and has not begun is such a loss. Returns how
        many were published again.
        """
        leaving = self.client.zrangebyscore(
            keys.SENT, "-inf", f"({frontier}", start=0, num=BATCH, withscores=True
        )
        if not leaving:
            return 0
        delivered = {
            json.loads(raw)[0]["headers"]["id"] for raw in self.client.hvals(messages.UNACKED)
        }
        lost = [(uuid, seq) for uuid, seq in leaving if uuid not in delivered]
        specs = self.client.hmget(keys.SENT_SPECS, [uuid for uuid, _ in lost]) if lost else []
        entries = []
        for (uuid, seq), spec in zip(lost, specs, strict=True):
            if spec:
                publication = self._publication(uuid, Parked.from_json(spec))
                entries += [uuid, str(int(seq)), *publication.commands]
        if not entries:
            return 0
        sent = int(
            self._resend(keys=[keys.SENT, keys.SENT_SPECS, messages.QUEUE, keys.SEQUENCE,
                               keys.UNDO], args=entries)
        )  # fmt: skip
        if sent:
            log.warning("published again %d attempt(s) lost on the way to a worker", sent)
        return sent

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
                keys=[keys.UNDO, keys.ATTEMPTS, keys.SENT, keys.SENT_SPECS],
                args=[spec.uuid, attempt, now, now + lease],
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


class TransitWatch:
    """Finds attempts lost between the queue and a worker, and publishes them again.

    It notes the transit frontier each time it looks; an attempt still in transit
    below a frontier seen ``grace`` seconds ago left the queue that long ago and
    was neither recorded as delivered nor begun: its worker died holding it.
    """

    def __init__(self, scheduler: Scheduler, grace: float = TRANSIT_GRACE) -> None:
        self.scheduler = scheduler
        self.grace = grace
        self.seen: deque[tuple[float, int]] = deque()

    def check(self) -> int:
        """Look once; how many attempts were published again."""
        now = time.monotonic()
        self.seen.append((now, self.scheduler.frontier()))
        frontier = 0
        while self.seen and self.seen[0][0] <= now - self.grace:
            frontier = self.seen.popleft()[1]
        return self.scheduler.resend_lost(frontier) if frontier else 0


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
