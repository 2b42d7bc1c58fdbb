"""``kingtask run``: the whole system in one command, supervised, stopped cleanly."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kingtask.processes import descendants, kill

from .conftest import ROOT, SCRATCH, Process, free_port, wait_for


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def http(*args: str) -> str:
    """httpie, as the seed's README uses it."""
    command = [str(Path(sys.executable).parent / "http"), "--ignore-stdin", "--body", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


def start_run(name: str, *options: str, **env: str) -> tuple[Process, str]:
    port = free_port()
    environment = {
        **os.environ,
        "KINGTASK_ADDR": f"127.0.0.1:{port}",
        "KINGTASK_FLOWER_ADDR": f"127.0.0.1:{free_port()}",
        "KINGTASK_WEB_WORKERS": "2",
        "KINGTASK_CONCURRENCY": "2",
        "FLOWER_UNAUTHENTICATED_API": "true",  # lets the test read Flower's task list
        **env,
    }
    environment.pop("KINGTASK_REDIS_URL")  # the embedded default
    command = [sys.executable, "-m", "kingtask.cli", "run", *options]
    process = Process(command, SCRATCH / f"{name}.log", env=environment, cwd=ROOT)
    process.wait_for_output("Press Ctrl-C to stop.", timeout=60)
    return process, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def system() -> Iterator[tuple[Process, str]]:
    process, addr = start_run("run", KINGTASK_DATA_DIR=str(SCRATCH / "run-var"))
    yield process, addr
    process.stop()


def test_it_prints_where_everything_listens(system: tuple[Process, str]) -> None:
    process, addr = system
    output = process.output()
    assert f"API     http://{addr}/api/v1" in output
    assert "Flower  http://127.0.0.1:" in output
    assert f"Redis   redis+socket://{SCRATCH}/run-var/redis.sock (embedded" in output


def test_the_seeds_httpie_commands_give_the_seeds_outputs(
    system: tuple[Process, str], http_server: str
) -> None:
    _, addr = system
    uuid = json.loads(http("POST", f"{addr}/api/v1/task", "bin_name=sum", "args=12 34"))
    result_url = f"{addr}/api/v1/task/result/{uuid}"
    result = wait_for(lambda: (r := json.loads(http("GET", result_url)))["is_result_exist"] and r)
    assert result == {"is_result_exist": 1, "is_success": 1, "message": "46"}

    sum_url = f"{http_server}/sum"
    rpc = http(
        "POST", f"{addr}/api/v1/task/rpc", "method=POST", f"url={sum_url}", 'args={"a":132,"b":75}'
    )
    result_url = f"{addr}/api/v1/task/result/{json.loads(rpc)}"
    result = wait_for(lambda: (r := json.loads(http("GET", result_url)))["is_result_exist"] and r)
    assert result == {"is_result_exist": 1, "is_success": 1, "message": "207"}
    assert http("GET", f"{addr}/api/v1/task/count/undo").strip() == "0"


def test_flower_shows_kingtasks_tasks(system: tuple[Process, str]) -> None:
    process, addr = system
    flower = process.output().split("Flower  ")[1].split()[0]
    uuid = requests.post(
        f"http://{addr}/api/v1/task", data={"bin_name": "sum", "args": "1 2"}
    ).json()

    def shown() -> dict | None:
        tasks = requests.get(f"{flower}/api/tasks", timeout=5).json()
        return tasks.get(uuid) if tasks.get(uuid, {}).get("state") == "SUCCESS" else None

    task = wait_for(shown, timeout=30, interval=0.5)
    assert task["name"] == "kingtask.script"
    assert "'bin_name': 'sum'" in task["kwargs"]


def test_a_child_that_dies_is_restarted(system: tuple[Process, str]) -> None:
    process, addr = system
    workers = [
        pid
        for pid in descendants(process.pid)
        if "worker" in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    main_worker = min(workers)
    os.kill(main_worker, signal.SIGKILL)
    process.wait_for_output("worker exited with status -9", timeout=10)
    process.wait_for_output("restarting worker", timeout=10)
    uuid = requests.post(
        f"http://{addr}/api/v1/task", data={"bin_name": "sum", "args": "2 3"}
    ).json()
    result = wait_for(
        lambda: (
            (r := requests.get(f"http://{addr}/api/v1/task/result/{uuid}").json())[
                "is_result_exist"
            ]
            and r
        ),
        timeout=30,
    )
    assert result["message"] == "5"


def test_sigterm_stops_every_child(tmp_path: Path) -> None:
    config = tmp_path / "kingtask.yaml"
    config.write_text(f"bin_path: {ROOT / 'tests' / 'bin'}\nlog_level: warning\n")
    process, _ = start_run("stop", "-c", str(config), KINGTASK_DATA_DIR=str(SCRATCH / "stop-var"))
    children = descendants(process.pid)
    assert len(children) >= 4  # redis, worker, web, flower (and their own children)
    assert process.stop(signal.SIGTERM, timeout=60) == 0
    assert "kingtask: stopped" in process.output()
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10)


def kill_tree(process: Process) -> None:
    """kill -9 of kingtask run and every process below it, the embedded Redis included."""
    tree = descendants(process.pid)
    kill(tree)
    wait_for(lambda: not any(alive(pid) for pid in tree), timeout=10)


def test_waiting_tasks_and_retries_survive_a_kill_9_of_everything(tmp_path: Path) -> None:
    data_dir = str(SCRATCH / "crash-var")
    first, addr = start_run("crash-1", KINGTASK_DATA_DIR=data_dir)
    api = f"http://{addr}/api/v1"
    start_time = int(time.time()) + 6

    def submit(bin_name: str, args: str, **more: object) -> str:
        body = {"bin_name": bin_name, "args": args, **more}
        return requests.post(f"{api}/task", data=body, timeout=10).json()

    waiting = [
        submit("record", f"{tmp_path / 'record'} {i}", start_time=start_time) for i in range(20)
    ]
    retrying = [submit("flaky", f"{tmp_path / f'runs{i}'} 2", time_interval=5) for i in range(5)]
    wait_for(lambda: all((tmp_path / f"runs{i}").exists() for i in range(5)))
    time.sleep(1.5)  # the embedded Redis writes its append-only file every second
    assert requests.get(f"{api}/task/count/scheduled").json() == 25
    kill_tree(first)
    assert Path(data_dir, "redis.sock").exists()  # left behind by the crash

    second, addr = start_run("crash-2", KINGTASK_DATA_DIR=data_dir)
    api = f"http://{addr}/api/v1"
    try:
        for uuid in [*waiting, *retrying]:
            result = wait_for(
                lambda u=uuid: (
                    (r := requests.get(f"{api}/task/result/{u}").json())["is_result_exist"] and r
                ),
                timeout=30,
            )
            assert result["is_success"] == 1, result
        time.sleep(1)
        record = (tmp_path / "record").read_text().splitlines()
        runs = collections.Counter(line.split()[2] for line in record if line.startswith("start"))
        assert runs == {str(i): 1 for i in range(20)}
        assert all(len((tmp_path / f"runs{i}").read_text().split()) == 2 for i in range(5))
        assert requests.get(f"{api}/task/count/undo").json() == 0
    finally:
        second.stop(timeout=60)


def test_a_bad_config_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("redis: nowhere\n")
    env = {k: v for k, v in os.environ.items() if k != "KINGTASK_REDIS_URL"}
    command = [sys.executable, "-m", "kingtask.cli", "run", "-c", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "kingtask: redis: expected host:port[/db] or a redis:// URL, got 'nowhere'\n"
    )
