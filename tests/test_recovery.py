"""Dead workers: their attempts run again within the lease, and long attempts never twice.

Workers here have a 4 s lease, and so a 4 s visibility timeout: Celery's Redis
transport looks for unacknowledged messages to deliver again every second.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kingtask.embedded import EmbeddedRedis
from kingtask.processes import descendants, kill
from kingtask.schedule import TRANSIT_GRACE
from kingtask.store import Store, connect

from .conftest import SCRATCH, start_web, start_worker, starts, wait_for, wait_result

LEASE = 4
RESTORE_EVERY = 1  # a quarter of the lease


@pytest.fixture(scope="module")
def system() -> Iterator[tuple[str, Store, dict[str, str]]]:
    with EmbeddedRedis(SCRATCH / "recovery") as redis_server:
        env = {**os.environ, "KINGTASK_REDIS_URL": redis_server.url, "KINGTASK_LEASE": str(LEASE)}
        web, url = start_web("recovery-web", env=env)
        try:
            yield (
                f"{url}/api/v1",
                Store(connect(redis_server.url), result_keep_time=60, zone=None),
                env,
            )
        finally:
            web.stop()


def submit(api: str, **params: object) -> str:
    return requests.post(f"{api}/task", json=params, timeout=10).json()


def test_a_task_whose_whole_worker_was_killed_runs_again_within_the_lease(
    system: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    api, store, env = system
    doomed = start_worker("doomed", env=env, concurrency=1)
    record = tmp_path / "record"
    uuid = submit(api, bin_name="record", args=f"{record} task 4")
    wait_for(lambda: starts(record))
    kill(descendants(doomed.pid))  # the machine dies: worker, pool, the running script
    killed_at = time.time()
    rescuer = start_worker("rescuer", env=env, concurrency=1)
    try:
        assert wait_result(store, uuid, timeout=40)["is_success"] == 1
        again = starts(record)[1]
        assert again - killed_at < LEASE + RESTORE_EVERY + 5
        time.sleep(1)
        assert len(starts(record)) == 2
    finally:
        rescuer.stop()


def test_a_task_whose_pool_process_was_killed_runs_again_after_the_lease(
    system: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    api, store, env = system
    worker = start_worker("pool", env=env, concurrency=2)
    try:
        record = tmp_path / "record"
        uuid = submit(api, bin_name="record", args=f"{record} task 1")
        wait_for(lambda: starts(record))
        script = next(pid for pid in descendants(worker.pid) if "bin/record" in _cmdline(pid))
        runner = _parent(script)  # the pool process running the task
        assert runner != worker.pid
        os.kill(runner, signal.SIGKILL)
        killed_at = time.time()
        assert wait_result(store, uuid, timeout=30)["is_success"] == 1
        assert len(starts(record)) == 2
        assert starts(record)[1] - killed_at < LEASE + 3
    finally:
        worker.stop()


def test_an_attempt_longer_than_the_lease_runs_once(
    system: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    api, store, env = system
    worker = start_worker("long", env=env, concurrency=2)
    try:
        record = tmp_path / "record"
        seconds = LEASE + RESTORE_EVERY + 3  # Celery delivers it again meanwhile
        uuid = submit(api, bin_name="record", args=f"{record} long {seconds}", max_run_time=60)
        assert wait_result(store, uuid, timeout=60)["is_success"] == 1
        time.sleep(LEASE + 1)
        assert len(starts(record)) == 1
        deliveries = worker.output().count(f"kingtask.script[{uuid}] received")
        assert deliveries >= 2, "the visibility timeout should have delivered it again"
    finally:
        worker.stop()


def test_a_message_lost_by_a_worker_that_took_it_off_the_queue_runs_once(
    system: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    api, store, env = system
    record = tmp_path / "record"
    uuid = submit(api, bin_name="record", args=f"{record} lost")
    # A worker takes the message off the queue and is killed before it records it.
    assert json.loads(store.client.rpop("celery"))["headers"]["id"] == uuid
    worker = start_worker("finder", env=env, concurrency=1)
    try:
        assert wait_result(store, uuid, timeout=TRANSIT_GRACE + 20)["is_success"] == 1
        assert len(starts(record)) == 1
    finally:
        worker.stop()


def test_sigterm_lets_running_attempts_finish_and_leaves_the_queue_to_others(
    system: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    api, store, env = system
    worker = start_worker("graceful", env={**env, "KINGTASK_SHUTDOWN_GRACE": "20"}, concurrency=1)
    record = tmp_path / "record"
    running = submit(api, bin_name="record", args=f"{record} running 2")
    waiting = submit(api, bin_name="record", args=f"{record} waiting")
    wait_for(lambda: starts(record))
    assert worker.stop(signal.SIGTERM) == 0
    assert store.result(running)["is_success"] == 1  # finished before the worker exited
    assert len(starts(record)) == 1  # the waiting one was left in the queue
    successor = start_worker("successor", env=env, concurrency=1)
    try:
        assert wait_result(store, waiting)["is_success"] == 1
        assert len(starts(record)) == 2
    finally:
        successor.stop()


def test_sigterm_hands_back_attempts_still_running_after_the_grace_time(
    system: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    api, store, env = system
    # A lease far longer than the test: the task can only run again because it was handed back.
    env = {**env, "KINGTASK_SHUTDOWN_GRACE": "1", "KINGTASK_LEASE": "120"}
    worker = start_worker("impatient", env=env, concurrency=1)
    record = tmp_path / "record"
    uuid = submit(api, bin_name="record", args=f"{record} handed-back 9.31")
    wait_for(lambda: starts(record))
    stopping_at = time.monotonic()
    worker.stop(signal.SIGTERM)
    assert time.monotonic() - stopping_at < 6
    assert not _running(str(record)) and not _running("sleep 9.31"), "script and child are gone"
    assert store.result(uuid)["is_result_exist"] == 0
    successor = start_worker("heir", env=env, concurrency=1)
    try:
        assert wait_result(store, uuid, timeout=30)["is_success"] == 1
        assert len(starts(record)) == 2
    finally:
        successor.stop()


def _running(text: str) -> list[int]:
    """Processes whose command line holds ``text``."""
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and text in _cmdline(int(p.name))
    ]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize(
    ("lease", "outage", "runs"),
    [
        # Back within two thirds of the lease: the worker records the outcome then.
        (15, 3, 1),
        # Away for longer: the message comes again, and the attempt runs again.
        (LEASE, 15, 2),
    ],
)
def test_a_task_whose_redis_went_away_mid_attempt_is_not_lost(
    tmp_path: Path, lease: int, outage: float, runs: int
) -> None:
    data = SCRATCH / f"outage-{lease}"
    redis_server = EmbeddedRedis(data)
    redis_server.start()
    env = {**os.environ, "KINGTASK_REDIS_URL": redis_server.url, "KINGTASK_LEASE": str(lease)}
    worker = start_worker(f"outage-{lease}", env=env, concurrency=1)
    try:
        store = Store(connect(redis_server.url), result_keep_time=60, zone=None)
        web, url = start_web(f"outage-web-{lease}", env=env)
        record = tmp_path / "record"
        uuid = requests.post(
            f"{url}/api/v1/task", json={"bin_name": "record", "args": f"{record} task 2"}
        ).json()
        web.stop()
        wait_for(lambda: starts(record))
        time.sleep(1.2)  # the append-only file has the task
        redis_server.stop()  # Redis goes away while the attempt runs, and its finish fails
        time.sleep(outage)
        redis_server.start()
        assert wait_result(store, uuid, timeout=60)["is_success"] == 1
        time.sleep(1)
        assert len(starts(record)) == runs
    finally:
        worker.stop()
        redis_server.stop()
