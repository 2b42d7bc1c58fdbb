"""What the benchmarks share: child processes, waiting, memory readings, the table."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from kingtask.processes import descendants

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:kingtask.gunicorn_conf"]
CELERY = [sys.executable, "-m", "celery"]
KINGTASK = [sys.executable, "-m", "kingtask.cli"]


def base_env(redis_url: str | None) -> dict[str, str]:
    """The environment of every process a benchmark starts: same settings for all."""
    env = {
        **os.environ,
        "KINGTASK_BIN_PATH": str(ROOT / "bench" / "bin"),
        "KINGTASK_WEB_WORKERS": str(2 * (os.cpu_count() or 1) + 1),
        "KINGTASK_CONCURRENCY": str(os.cpu_count() or 1),
        "KINGTASK_LOG_LEVEL": "warning",
        "FLOWER_UNAUTHENTICATED_API": "true",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("KINGTASK_REDIS_URL", None)
    if redis_url:
        env["KINGTASK_REDIS_URL"] = redis_url
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def launch(
    argv: list[str], env: dict[str, str], log: Path, ready: str | int
) -> subprocess.Popen[bytes]:
    """Start a child process; return once ``ready`` (a port) listens or (a text) is in its log."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        if isinstance(ready, int):
            wait_until(lambda: listening(ready), what=f"{argv[2:5]} on port {ready}")
        else:
            wait_until(lambda: ready.encode() in log.read_bytes(), what=f"{argv[2:5]}")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


@contextmanager
def started(
    argv: list[str], env: dict[str, str], log: Path, ready: str | int
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process from :func:`launch`, stopped when the block ends."""
    process = launch(argv, env, log, ready)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, in MiB."""
    total = 0
    for member in descendants(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def machine() -> str:
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    return f"{when}, {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(rows: list[tuple[str, str, str, str]]) -> str:
    """A Markdown table of (figure, measured, baseline or target, verdict)."""
    lines = ["| figure | measured | against | verdict |", "|---|---:|---|---|"]
    lines += [
        f"| {figure} | {value} | {against} | {verdict} |"
        for figure, value, against, verdict in rows
    ]
    return "\n".join(lines)


def ratio_row(
    figure: str, value: float, baseline: str, base: float, target: float
) -> tuple[str, str, str, str]:
    """A row comparing ``value`` with a baseline measured in the same run."""
    ratio = value / base
    verdict = f"{ratio:.2f}x, target >= {target}x: " + ("met" if ratio >= target else "MISSED")
    return figure, f"{value:,.0f}", f"{baseline}: {base:,.0f}", verdict
