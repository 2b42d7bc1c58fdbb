"""The Procfile: web, worker and flower under honcho, against an external Redis."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import requests

from .conftest import ROOT, SCRATCH, Process, free_port, wait_for


def test_honcho_runs_the_same_contract(redis_server) -> None:  # type: ignore[no-untyped-def]
    port, flower_port = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "KINGTASK_ADDR": f"127.0.0.1:{port}",
        "KINGTASK_WEB_WORKERS": "2",
        "KINGTASK_CONCURRENCY": "2",
        "FLOWER_PORT": str(flower_port),
    }
    honcho = Process(
        [sys.executable, "-m", "honcho", "start"], SCRATCH / "honcho.log", env=env, cwd=ROOT
    )
    try:
        honcho.wait_for_output(" ready.", timeout=60)
        api = f"http://127.0.0.1:{port}/api/v1"
        wait_for(lambda: _get(f"{api}/task/count/undo"))
        uuid = requests.post(f"{api}/task", data={"bin_name": "sum", "args": "12 34"}).json()
        result = wait_for(
            lambda: (r := requests.get(f"{api}/task/result/{uuid}").json())["is_result_exist"] and r
        )
        assert result == {"is_result_exist": 1, "is_success": 1, "message": "46"}
        assert wait_for(lambda: _get(f"http://127.0.0.1:{flower_port}/"))
    finally:
        honcho.stop(signal.SIGTERM, timeout=60)
    output = honcho.output()
    for process in ("web.1", "worker.1", "flower.1"):
        assert f"{process} started" in output
        assert f"{process} stopped" in output


def _get(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.ConnectionError:
        return False
