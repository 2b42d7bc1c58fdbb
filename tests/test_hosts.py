"""Several hosts: workers in two network namespaces share the work of one Redis.

Each namespace is a host of its own, with its own interfaces and loopback,
joined to the tests' namespace by a veth pair on a bridge. Redis listens on the
bridge's address only, so the workers reach it over the virtual network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kingtask.store import Store, connect

from .conftest import start_redis, start_web, start_worker, wait_result

SUBNET = "10.213.47"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@pytest.fixture
def hosts() -> Iterator[list[str]]:
    """Two network namespaces on a bridge at ``SUBNET.1``, hosts ``SUBNET.2`` and ``.3``."""
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is missing: no network namespaces")
    tag = str(os.getpid() % 100000)
    names = [f"kt-{tag}-a", f"kt-{tag}-b"]
    bridge = f"ktbr{tag}"
    created = ip("netns", "add", names[0], check=False)
    if created.returncode:
        pytest.skip(f"network namespaces cannot be created here: {created.stderr.strip()}")
    try:
        ip("netns", "add", names[1])
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{SUBNET}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for number, name in enumerate(names, start=2):
            outside = f"ktv{tag}{number}"
            ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("link", "set", outside, "master", bridge, "up")
            ip("-n", name, "addr", "add", f"{SUBNET}.{number}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names:
            ip("netns", "del", name, check=False)
        ip("link", "del", bridge, check=False)


def test_workers_on_two_hosts_both_take_work_from_one_redis(hosts: list[str]) -> None:
    server, port = start_redis("hosts-redis", host=f"{SUBNET}.1")
    env = {**os.environ, "KINGTASK_REDIS_URL": f"redis://{SUBNET}.1:{port}/0"}
    workers = [
        start_worker(f"host-{name}", env=env, concurrency=1, via=("ip", "netns", "exec", name))
        for name in hosts
    ]
    web, url = start_web("hosts-web", env=env)
    try:
        host_of = {Path(f"/proc/{w.pid}/ns/net").readlink().name: w for w in workers}
        assert len(host_of) == 2 and Path("/proc/self/ns/net").readlink().name not in host_of
        uuids = [
            requests.post(f"{url}/api/v1/task", json={"bin_name": "netns", "args": "0.3"}).json()
            for _ in range(12)
        ]
        store = Store(connect(env["KINGTASK_REDIS_URL"]), result_keep_time=60, zone=None)
        ran_on = [wait_result(store, uuid)["message"] for uuid in uuids]
        assert set(ran_on) == set(host_of), "each host ran tasks, and only the two hosts did"
    finally:
        web.stop()
        for worker in workers:
            worker.stop()
        server.kill()
