"""End to end through a real Celery worker: the API, the tasks, retries and timing."""

from __future__ import annotations

import itertools
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from kingtask import keys
from kingtask.embedded import EmbeddedRedis
from kingtask.store import Store, connect, day

from .conftest import SCRATCH, Process, start_web, start_worker, starts, wait_result


@pytest.fixture(autouse=True)
def _worker(worker: Process) -> None:
    """Every test here needs the session's worker."""


def submit(client: Any, path: str = "/api/v1/task", **params: Any) -> str:
    response = client.post(path, json=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def today() -> str:
    return day(datetime.now().astimezone(), None)


def test_the_seeds_script_example_gives_46(client: Any, store: Store) -> None:
    uuid = submit(client, bin_name="sum", args="12 34")
    assert wait_result(store, uuid) == {"is_result_exist": 1, "is_success": 1, "message": "46"}
    assert (
        client.get(f"/api/v1/task/result/{uuid}").get_data()
        == b'{"is_result_exist":1,"is_success":1,"message":"46"}'
    )


def test_the_seeds_rpc_example_gives_207(client: Any, store: Store, http_server: str) -> None:
    uuid = submit(
        client, "/api/v1/task/rpc", method="POST", url=f"{http_server}/sum", args='{"a":132,"b":75}'
    )
    assert wait_result(store, uuid) == {"is_result_exist": 1, "is_success": 1, "message": "207"}


def test_a_failed_task_is_counted_once_as_a_failure(client: Any, store: Store) -> None:
    failures = store.daily_count("failure", today())
    successes = store.daily_count("success", today())
    uuid = submit(client, bin_name="warn")
    assert wait_result(store, uuid) == {
        "is_result_exist": 1,
        "is_success": 0,
        "message": "something went wrong",
    }
    assert store.daily_count("failure", today()) == failures + 1
    assert store.daily_count("success", today()) == successes
    assert not store.client.sismember(keys.UNDO, uuid)


def test_a_failing_task_is_retried_after_each_delay_until_it_succeeds(
    client: Any, store: Store, tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    successes = store.daily_count("success", today())
    uuid = submit(client, bin_name="flaky", args=f"{counter} 3", time_interval="1 1 1")
    time.sleep(0.5)
    assert store.result(uuid)["is_result_exist"] == 0  # a retry is pending: no result yet
    assert store.client.sismember(keys.UNDO, uuid)
    assert wait_result(store, uuid) == {"is_result_exist": 1, "is_success": 1, "message": "3"}
    attempts = [float(line) for line in counter.read_text().split()]
    assert len(attempts) == 3
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(attempts))
    assert store.daily_count("success", today()) == successes + 1


def test_a_task_that_fails_every_retry_ends_with_its_last_failure(
    client: Any, store: Store, tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    uuid = submit(client, bin_name="flaky", args=f"{counter} 10", time_interval="0 0")
    assert wait_result(store, uuid) == {
        "is_result_exist": 1,
        "is_success": 0,
        "message": "run 3 failed",
    }
    time.sleep(0.5)
    assert len(counter.read_text().split()) == 3


def test_no_time_interval_means_no_retry(client: Any, store: Store, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    uuid = submit(client, bin_name="flaky", args=f"{counter} 2")
    assert wait_result(store, uuid)["message"] == "run 1 failed"
    time.sleep(0.5)
    assert len(counter.read_text().split()) == 1


def test_a_task_starts_at_its_start_time_not_before(
    client: Any, store: Store, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    start_time = int(time.time()) + 2
    uuid = submit(client, bin_name="record", args=f"{record} timed", start_time=start_time)
    time.sleep(1)
    assert not record.exists()
    assert wait_result(store, uuid)["is_success"] == 1
    assert start_time <= starts(record)[0] < start_time + 1.5


def test_max_run_time_kills_a_task_that_runs_too_long(client: Any, store: Store) -> None:
    started = time.monotonic()
    uuid = submit(client, bin_name="sleep", args="30", max_run_time=1)
    assert wait_result(store, uuid) == {
        "is_result_exist": 1,
        "is_success": 0,
        "message": "killed after 1 s",
    }
    assert time.monotonic() - started < 10


def test_the_worker_default_run_time_applies_when_max_run_time_is_absent(
    client: Any, store: Store
) -> None:
    # conftest sets task_run_time to 10 s; the sleep asks for 12.
    uuid = submit(client, bin_name="sleep", args="12")
    assert wait_result(store, uuid, timeout=30)["message"] == "killed after 10 s"


def test_a_missing_executable_is_a_failure_result(client: Any, store: Store) -> None:
    uuid = submit(client, bin_name="mytask", args="12 hello")
    assert wait_result(store, uuid) == {
        "is_result_exist": 1,
        "is_success": 0,
        "message": "bin_name not found: mytask",
    }


def test_period_pauses_each_worker_process_after_each_task(tmp_path: Path) -> None:
    # A Redis, worker and API of their own, so that the session's worker takes none of these tasks.
    with EmbeddedRedis(SCRATCH / "period") as private:
        env = {**os.environ, "KINGTASK_REDIS_URL": private.url, "KINGTASK_PERIOD": "1.5"}
        paced = start_worker("paced", env=env, concurrency=1)
        try:
            web, url = start_web("paced-web", env=env)
            record = tmp_path / "record"
            uuids = [
                requests.post(
                    f"{url}/api/v1/task", data={"bin_name": "record", "args": f"{record} {i}"}
                ).json()
                for i in range(2)
            ]
            private_store = Store(connect(private.url), result_keep_time=60, zone=None)
            for uuid in uuids:
                wait_result(private_store, uuid)
            events = record.read_text().splitlines()
            first_end, second_start = float(events[1].split()[1]), float(events[2].split()[1])
            assert second_start - first_end >= 1.4
            web.stop()
        finally:
            paced.stop()
