"""Timed tasks end to end, through a real worker whose visibility timeout is 1 s.

Celery would deliver a message waiting longer than its visibility timeout again
and again; kingtask parks waits in Redis, so each runs exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kingtask.embedded import EmbeddedRedis
from kingtask.store import Store, connect

from .conftest import SCRATCH, Process, start_web, start_worker, starts, wait_result


@pytest.fixture(scope="module")
def system() -> Iterator[tuple[str, Store]]:
    with EmbeddedRedis(SCRATCH / "timing") as redis_server:
        env = {
            **os.environ,
            "KINGTASK_REDIS_URL": redis_server.url,
            "KINGTASK_VISIBILITY_TIMEOUT": "1",
        }
        processes: list[Process] = [start_worker("timing", env=env)]
        try:
            web, url = start_web("timing-web", env=env)
            processes.append(web)
            yield f"{url}/api/v1", Store(connect(redis_server.url), result_keep_time=60, zone=None)
        finally:
            for process in processes:
                process.stop()


def submit(api: str, path: str = "/task", **params: object) -> str:
    response = requests.post(f"{api}{path}", json=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_wait_longer_than_the_visibility_timeout_runs_once(
    system: tuple[str, Store], tmp_path: Path
) -> None:
    api, store = system
    record = tmp_path / "record"
    start_time = int(time.time()) + 4
    uuid = submit(api, bin_name="record", args=f"{record} once", start_time=start_time)
    assert wait_result(store, uuid)["is_success"] == 1
    time.sleep(3)  # several visibility timeouts more
    assert len(starts(record)) == 1
    assert start_time <= starts(record)[0] < start_time + 1


def test_a_retry_delay_longer_than_the_visibility_timeout_runs_once(
    system: tuple[str, Store], tmp_path: Path
) -> None:
    api, store = system
    counter = tmp_path / "runs"
    uuid = submit(api, bin_name="flaky", args=f"{counter} 2", time_interval="3 3")
    assert wait_result(store, uuid) == {"is_result_exist": 1, "is_success": 1, "message": "2"}
    time.sleep(3)
    runs = [float(line) for line in counter.read_text().split()]
    assert len(runs) == 2
    assert 3 <= runs[1] - runs[0] < 4.5


def test_a_cancelled_waiting_task_never_runs(system: tuple[str, Store], tmp_path: Path) -> None:
    api, store = system
    record = tmp_path / "record"
    uuid = submit(
        api, bin_name="record", args=f"{record} cancelled", start_time=int(time.time()) + 2
    )
    assert requests.delete(f"{api}/task/{uuid}", timeout=10).json()["message"] == "cancelled"
    time.sleep(3)
    assert not record.exists()
    assert store.result(uuid) == {"is_result_exist": 1, "is_success": 0, "message": "cancelled"}


def test_a_task_queued_before_it_was_cancelled_is_dropped_by_the_worker(
    system: tuple[str, Store], tmp_path: Path
) -> None:
    api, store = system
    blocker = [
        submit(api, bin_name="sleep", args="2") for _ in range(2)
    ]  # both pool processes busy
    record = tmp_path / "record"
    uuid = submit(api, bin_name="record", args=f"{record} queued")
    assert requests.delete(f"{api}/task/{uuid}", timeout=10).status_code == 200
    for other in blocker:
        wait_result(store, other)
    time.sleep(1)
    assert not record.exists()
    assert requests.delete(f"{api}/task/{blocker[0]}", timeout=10).status_code == 403
