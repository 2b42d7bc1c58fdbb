"""Timed tasks: parking, releasing, claims and leases, the attempt guard, cancelling.

These talk to the real Redis with no worker running, and drive releases by hand
(or from other processes), so that each step can be watched.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from kingtask import keys, schedule
from kingtask.models import Outcome, Script, TaskSpec, new_uuid
from kingtask.releaser import Releaser
from kingtask.schedule import Scheduler
from kingtask.store import Store, day

from .conftest import ROOT, forget_pending, queued, queued_messages, wait_for


@pytest.fixture
def scheduler(store: Store) -> Iterator[Scheduler]:
    """A scheduler over an empty schedule and queue, emptied again after the test."""
    forget_pending(store)
    yield Scheduler(store)
    forget_pending(store)


def spec(start_time: float = 0, time_interval: tuple[int, ...] = ()) -> TaskSpec:
    return TaskSpec(new_uuid(), Script("sum", ("1", "2")), int(start_time), time_interval)


def soon(seconds: int = 1) -> int:
    """A start_time (whole seconds) at least ``seconds`` from now."""
    return int(time.time()) + seconds + 1


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()) + 0.05)


def today() -> str:
    return day(datetime.now().astimezone(), None)


@pytest.mark.parametrize(
    ("attempt", "intervals", "expected"),
    [
        (0, (), None),
        (0, (60, 600, 3600), 60),
        (2, (60, 600, 3600), 3600),
        (3, (60, 600, 3600), None),
    ],
)
def test_retry_delay_is_the_delay_after_each_failed_attempt(
    attempt: int, intervals: tuple[int, ...], expected: int | None
) -> None:
    assert schedule.retry_delay(intervals, attempt) == expected


def test_a_task_due_now_is_queued_at_once(scheduler: Scheduler, store: Store) -> None:
    task = spec()
    scheduler.submit(task)
    assert queued(store, task.uuid)["attempt"] == 0
    assert store.client.sismember(keys.UNDO, task.uuid)
    assert scheduler.scheduled_count() == 0


def test_a_task_due_later_is_parked_not_queued(scheduler: Scheduler, store: Store) -> None:
    task = spec(start_time=time.time() + 3600)
    scheduler.submit(task)
    assert queued_messages(store) == []
    assert store.client.zscore(keys.PARKED, task.uuid) == task.start_time
    assert scheduler.scheduled_count() == 1
    assert store.client.sismember(keys.UNDO, task.uuid)
    assert scheduler.release_due() == task.start_time  # nothing due; the next one's time


def test_a_parked_task_costs_redis_well_under_a_kilobyte(
    scheduler: Scheduler, store: Store
) -> None:
    task = spec(start_time=time.time() + 3600)
    scheduler.submit(task)
    fields = store.client.hget(keys.SPECS, task.uuid)
    assert len(fields) + 2 * len(task.uuid) < 400


def test_due_attempts_are_released_once_and_later_ones_stay(
    scheduler: Scheduler, store: Store
) -> None:
    start = soon()
    due = [spec(start_time=start) for _ in range(3)]
    later = spec(start_time=start + 3600)
    for task in [*due, later]:
        scheduler.submit(task)
    assert queued_messages(store) == []
    sleep_until(start)
    assert scheduler.release_due() == later.start_time
    assert sorted(m["id"] for m in queued_messages(store)) == sorted(t.uuid for t in due)
    assert scheduler.release_due() == later.start_time
    assert len(queued_messages(store)) == 3
    assert scheduler.scheduled_count() == 1


def test_a_release_publishes_more_than_one_batch(scheduler: Scheduler, store: Store) -> None:
    start = soon()
    tasks = [spec(start_time=start) for _ in range(schedule.BATCH * 2 + 7)]
    for task in tasks:
        scheduler.submit(task)
    assert queued_messages(store) == []
    sleep_until(start)
    assert scheduler.release_due() is None
    assert len(queued_messages(store)) == len(tasks)


def test_two_releasers_on_the_same_due_set_publish_each_task_once(
    scheduler: Scheduler, store: Store
) -> None:
    start = soon()
    tasks = [spec(start_time=start) for _ in range(2000)]
    for task in tasks:
        scheduler.submit(task)
    assert queued_messages(store) == []
    sleep_until(start)
    others = [Scheduler(store) for _ in range(3)]
    threads = [threading.Thread(target=other.release_due) for other in [scheduler, *others]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = collections.Counter(m["id"] for m in queued_messages(store))
    assert set(counts) == {t.uuid for t in tasks}
    assert set(counts.values()) == {1}


CLAIM_AND_DIE = """
import os, signal, time
from kingtask import schedule
from kingtask.store import Store, connect
from kingtask import config
store = Store(connect(config.current().redis_url), result_keep_time=60, zone=None)
scheduler = schedule.Scheduler(store)
now = time.time()
claimed = scheduler._claim(keys=schedule.CLAIM_KEYS,
                           args=[now, now + {lease}, 1000, "doomed"])
print(len(claimed[1]) // 2, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # dies between claiming and publishing
"""


def test_a_releaser_killed_after_claiming_loses_nothing(scheduler: Scheduler, store: Store) -> None:
    start = soon()
    tasks = [spec(start_time=start) for _ in range(5)]
    for task in tasks:
        scheduler.submit(task)
    sleep_until(start)
    code = CLAIM_AND_DIE.replace("{lease}", "1.0")
    died = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert died.returncode == -signal.SIGKILL
    assert died.stdout.strip() == "5"
    assert store.client.zcard(keys.CLAIMED) == 5
    assert scheduler.release_due() is not None  # claimed elsewhere: wait for the lease
    assert queued_messages(store) == []
    assert scheduler.scheduled_count() == 5  # still counted as waiting
    time.sleep(1.1)
    assert scheduler.release_due() is None
    counts = collections.Counter(m["id"] for m in queued_messages(store))
    assert counts == {t.uuid: 1 for t in tasks}
    assert store.client.zcard(keys.CLAIMED) == store.client.hlen(keys.CLAIMS) == 0


def test_a_slow_releaser_whose_claim_expired_publishes_nothing(
    scheduler: Scheduler, store: Store
) -> None:
    task = spec(start_time=soon())
    scheduler.submit(task)
    sleep_until(task.start_time)
    now = time.time()
    scheduler._claim(keys=schedule.CLAIM_KEYS, args=[now, now + 0.2, 10, "slow"])
    time.sleep(0.3)
    assert scheduler.release_due() is None  # the claim expired: released by another
    scheduler._push(
        keys=schedule.PUSH_KEYS,
        args=["slow", task.uuid, "late", "", ""],
    )
    assert [m["id"] for m in queued_messages(store)] == [task.uuid]


def test_a_retry_waits_for_its_delay_and_carries_its_attempt_number(
    scheduler: Scheduler, store: Store
) -> None:
    task = spec(time_interval=(1, 1))
    scheduler.submit(task)
    store.client.delete("celery")
    assert scheduler.begin(task, 0, lease=60)
    scheduler.retry(task, 1, time.time() + 0.5)
    assert queued_messages(store) == []
    time.sleep(0.6)
    scheduler.release_due()
    assert queued(store, task.uuid)["attempt"] == 1


def test_a_retry_without_delay_is_queued_at_once(scheduler: Scheduler, store: Store) -> None:
    task = spec(time_interval=(0,))
    scheduler.submit(task)
    store.client.delete("celery")
    scheduler.retry(task, 1, time.time())
    assert queued(store, task.uuid)["attempt"] == 1


def test_the_guard_runs_each_attempt_once(scheduler: Scheduler, store: Store) -> None:
    task = spec(time_interval=(5,))
    scheduler.submit(task)
    assert scheduler.begin(task, 0, lease=60)
    # The same attempt delivered again while it runs: not run, looked at again later.
    assert not scheduler.begin(task, 0, lease=60)
    assert 55 < store.client.zscore(keys.PARKED, task.uuid) - time.time() <= 60
    scheduler.retry(task, 1, time.time() + 3600)
    # A delivery of the finished attempt 0 after attempt 1 was scheduled: dropped.
    assert not scheduler.begin(task, 0, lease=60)
    assert scheduler.begin(task, 1, lease=60)
    store.finish(task.uuid, Outcome(True, "3"), datetime.now().astimezone())
    # Any delivery of a finished task: dropped.
    assert not scheduler.begin(task, 1, lease=60)
    assert not store.client.hexists(keys.ATTEMPTS, task.uuid)


def test_an_attempt_whose_lease_ran_out_may_run_again(scheduler: Scheduler) -> None:
    task = spec()
    scheduler.submit(task)
    assert scheduler.begin(task, 0, lease=0.2)  # its worker dies with it
    time.sleep(0.3)
    assert scheduler.begin(task, 0, lease=60)


def test_cancelling_a_waiting_task_finishes_it_once_as_cancelled(
    scheduler: Scheduler, store: Store
) -> None:
    task = spec(start_time=time.time() + 3600)
    scheduler.submit(task)
    failures = store.daily_count("failure", today())
    assert scheduler.cancel(task.uuid) == "cancelled"
    assert store.result(task.uuid) == {
        "is_result_exist": 1,
        "is_success": 0,
        "message": "cancelled",
    }
    assert scheduler.scheduled_count() == 0
    assert not store.client.sismember(keys.UNDO, task.uuid)
    assert scheduler.cancel(task.uuid) == "cancelled"  # again: nothing changes
    assert store.daily_count("failure", today()) == failures + 1
    assert not scheduler.begin(task, 0, lease=60)  # a copy queued earlier never runs


def test_a_task_waiting_for_a_retry_can_be_cancelled(scheduler: Scheduler, store: Store) -> None:
    task = spec(time_interval=(3600,))
    scheduler.submit(task)
    assert scheduler.begin(task, 0, lease=60)
    scheduler.retry(task, 1, time.time() + 3600)
    assert scheduler.cancel(task.uuid) == "cancelled"
    assert scheduler.scheduled_count() == 0


def test_a_running_or_finished_task_is_not_cancelled(scheduler: Scheduler, store: Store) -> None:
    running = spec()
    scheduler.submit(running)
    assert scheduler.begin(running, 0, lease=60)
    assert scheduler.cancel(running.uuid) == "running"
    store.finish(running.uuid, Outcome(True, "3"), datetime.now().astimezone())
    assert scheduler.cancel(running.uuid) == "finished"
    assert store.result(running.uuid)["message"] == "3"
    assert scheduler.cancel(new_uuid()) == "finished"


def test_the_api_cancels_and_counts_waiting_tasks(client: Any, store: Store) -> None:
    uuid = client.post(
        "/api/v1/task", json={"bin_name": "sum", "start_time": int(time.time()) + 3600}
    ).get_json()
    scheduled = client.get("/api/v1/task/count/scheduled").get_json()
    response = client.delete(f"/api/v1/task/{uuid}")
    assert response.status_code == 200
    assert response.get_data() == b'{"is_result_exist":1,"is_success":0,"message":"cancelled"}'
    assert client.delete(f"/api/v1/task/{uuid}").get_data() == response.get_data()
    assert client.get("/api/v1/task/count/scheduled").get_json() == scheduled - 1
    answer = client.delete(f"/api/v1/task/{new_uuid()}")
    assert (answer.status_code, answer.get_json()) == (403, "the task has finished, or is unknown")
    assert client.delete("/api/v1/task/x").status_code == 404  # not a uuid: no such resource


def test_a_releaser_thread_wakes_for_an_earlier_task(scheduler: Scheduler, store: Store) -> None:
    releaser = Releaser(scheduler)
    releaser.start()
    try:
        later = spec(start_time=time.time() + 3600)
        scheduler.submit(later)
        time.sleep(0.2)  # the releaser now sleeps up to its idle time
        soon = TaskSpec(new_uuid(), Script("sum"), 0)
        store.client.sadd(keys.UNDO, soon.uuid)  # as if its first attempt had failed
        due = time.time() + 0.3
        scheduler.retry(soon, 1, due)
        released_at = wait_for(
            lambda: queued_messages(store) and time.time(), timeout=5, interval=0.005
        )
        assert due <= released_at < due + 0.5
    finally:
        releaser.stop()
    assert not releaser.is_alive()


def take_off_the_queue(store: Store) -> str:
    """What a worker does first with a message: take it off the queue (the oldest)."""
    return store.client.rpop("celery")


def test_an_attempt_lost_on_the_way_to_a_worker_is_published_again(
    scheduler: Scheduler, store: Store
) -> None:
    lost, queued_ = spec(), spec()
    scheduler.submit(lost)
    scheduler.submit(queued_)
    take_off_the_queue(store)  # ... and the worker dies before recording it as delivered
    watch = schedule.TransitWatch(scheduler, grace=0.2)
    assert watch.check() == 0  # too early to tell
    time.sleep(0.3)
    assert watch.check() == 1
    assert [m["id"] for m in queued_messages(store)] == [queued_.uuid, lost.uuid]
    assert queued(store, lost.uuid)["attempt"] == 0
    time.sleep(0.3)
    assert watch.check() == 0  # published once


def test_attempts_delivered_or_begun_are_not_published_again(
    scheduler: Scheduler, store: Store
) -> None:
    delivered, begun = spec(), spec()
    scheduler.submit(delivered)
    scheduler.submit(begun)
    # kombu records a message it took as unacknowledged: [message, exchange, routing key].
    store.client.hset(
        "unacked", "tag", json.dumps([json.loads(take_off_the_queue(store)), "", "celery"])
    )
    take_off_the_queue(store)
    assert scheduler.begin(begun, 0, lease=60)
    watch = schedule.TransitWatch(scheduler, grace=0)
    assert watch.check() == 0
    store.client.hdel("unacked", "tag")  # restored by kombu, or acknowledged and gone
    assert watch.check() == 1


def test_a_lost_attempt_of_a_task_cancelled_meanwhile_is_forgotten(
    scheduler: Scheduler, store: Store
) -> None:
    task = spec()
    scheduler.submit(task)
    take_off_the_queue(store)
    assert scheduler.cancel(task.uuid) == schedule.CANCELLED
    assert schedule.TransitWatch(scheduler, grace=0).check() == 0
    assert (queued_messages(store), store.client.zcard(keys.SENT)) == ([], 0)
