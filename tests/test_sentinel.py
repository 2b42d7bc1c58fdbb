"""Redis Sentinel: a master, a replica and three sentinels on loopback ports.

kingtask's API, worker and store find the master through the sentinels; when the
master dies, the sentinels promote the replica and kingtask follows it: submissions
succeed again within seconds and the tasks accepted before the failover finish.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.sentinel
import requests

from kingtask.store import Store, connect

from .conftest import SCRATCH, Process, start_redis, start_web, start_worker, wait_for, wait_result

MASTER = "kingtask"
LEASE = 15  # a worker waits up to 10 s (two thirds) to record an outcome


@dataclass
class Group:
    """The Redis servers of a sentinel group; ``url`` names its sentinels as kingtask takes it."""

    master: Process
    master_port: int
    replica_port: int
    sentinel_ports: list[int]
    processes: list[Process]

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports)

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], decode_responses=True, socket_timeout=1)

    def master_address(self) -> tuple[str, int]:
        host, port = self.sentinel().sentinel_get_master_addr_by_name(MASTER)
        return host, int(port)

    def replicated(self) -> bool:
        """Whether the replica holds everything the master wrote."""
        master = redis.Redis(port=self.master_port, socket_timeout=1).info("replication")
        replica = master.get("slave0")
        return bool(replica) and replica["offset"] == master["master_repl_offset"]


@pytest.fixture
def group() -> Iterator[Group]:
    processes = []
    master, master_port = start_redis("sentinel-master")
    processes.append(master)
    replica, replica_port = start_redis(
        "sentinel-replica", "--replicaof", "127.0.0.1", str(master_port)
    )
    processes.append(replica)
    sentinel_ports = []
    for index in range(3):
        conf = SCRATCH / f"sentinel-{index}.conf"
        conf.write_text(
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
        )
        sentinel, port = start_redis(f"sentinel-{index}", str(conf), "--sentinel")
        processes.append(sentinel)
        sentinel_ports.append(port)
    group = Group(master, master_port, replica_port, sentinel_ports, processes)
    # Ready when every sentinel knows the replica and the two other sentinels.
    for index in range(3):
        wait_for(lambda i=index: _knows_all(group.sentinel(i)), timeout=30)
    try:
        yield group
    finally:
        for process in processes:
            process.kill()


def _knows_all(sentinel: redis.Redis) -> bool:
    state = sentinel.sentinel_master(MASTER)
    return state["num-other-sentinels"] == 2 and state["num-slaves"] == 1


def test_kingtask_follows_a_sentinel_failover_and_runs_every_task_once(
    group: Group, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "KINGTASK_REDIS_URL": group.url,
        "KINGTASK_SENTINEL_MASTER": MASTER,
        "KINGTASK_LEASE": str(LEASE),
    }
    worker = start_worker("sentinel-worker", env=env, concurrency=2)
    web, url = start_web("sentinel-web", env=env)
    api = f"{url}/api/v1"
    store = Store(connect(group.url, MASTER), result_keep_time=60, zone=None)
    try:
        record = tmp_path / "record"
        before = [submit(api, bin_name="record", args=f"{record} now-{i} 2") for i in range(4)]
        later = int(time.time()) + 3
        before += [
            submit(api, bin_name="record", args=f"{record} later-{i}", start_time=later)
            for i in range(4)
        ]
        wait_for(group.replicated)
        group.master.kill()
        killed_at = time.monotonic()

        after = wait_for(lambda: _try_submit(api, bin_name="sum", args="1 2"), timeout=30)
        recovered_in = time.monotonic() - killed_at
        assert group.master_address() == ("127.0.0.1", group.replica_port)
        assert recovered_in < 30

        for uuid in [*before, after]:
            assert wait_result(store, uuid, timeout=60)["is_success"] == 1, uuid
        # Attempts that ended during the failover recorded their outcome afterwards:
        # every task ran exactly once.
        ran = sorted(line.split()[2] for line in record.read_text().splitlines() if "start" in line)
        assert ran == sorted([f"now-{i}" for i in range(4)] + [f"later-{i}" for i in range(4)])
    finally:
        web.stop()
        worker.stop()


def submit(api: str, **params: object) -> str:
    response = requests.post(f"{api}/task", json=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _try_submit(api: str, **params: object) -> str | None:
    """A uuid once the API accepts a task again; None while it answers 503."""
    response = requests.post(f"{api}/task", json=params, timeout=10)
    assert response.status_code in (200, 503), response.text
    return response.json() if response.status_code == 200 else None


def test_sentinels_that_ask_for_a_password(tmp_path: Path) -> None:
    master, master_port = start_redis("auth-master")
    conf = SCRATCH / "sentinel-auth.conf"
    conf.write_text(f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\nrequirepass s3cret\n")
    sentinel, port = start_redis("sentinel-auth", str(conf), "--sentinel", password="s3cret")
    url = f"sentinel://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KINGTASK_REDIS_URL": url,
        "KINGTASK_SENTINEL_MASTER": MASTER,
        "KINGTASK_SENTINEL_PASSWORD": "s3cret",
    }
    worker = start_worker("sentinel-auth-worker", env=env, concurrency=1)
    web, api = start_web("sentinel-auth-web", env=env)
    try:
        uuid = submit(f"{api}/api/v1", bin_name="sum", args="20 22")
        store = Store(connect(url, MASTER, "s3cret"), result_keep_time=60, zone=None)
        assert wait_result(store, uuid)["message"] == "42"
        with pytest.raises(redis.sentinel.MasterNotFoundError, match="AuthenticationError"):
            connect(url, MASTER).ping()  # without the password the sentinel says no
    finally:
        web.stop()
        worker.stop()
        sentinel.kill()
        master.kill()
