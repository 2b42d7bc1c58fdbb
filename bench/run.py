"""kingtask's benchmark: every figure beside a baseline measured in the same run.

    python bench/run.py [--seconds 8] [--tasks 2000] [--rounds 2]

(a) submissions/s of ``POST /api/v1/task/script`` beside Flower's
    ``/api/task/async-apply`` and a Flask hello-world on the same gunicorn settings;
(b) end-to-end script tasks/s (HTTP submit → final result stored) beside plain
    Celery running the same executable with the same worker settings.

Everything runs against a private embedded Redis; nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from kingtask import keys  # noqa: E402
from kingtask.embedded import EmbeddedRedis  # noqa: E402
from kingtask.store import connect  # noqa: E402

SCRIPT = {"bin_name": "sum", "args": "12 34"}
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:kingtask.gunicorn_conf"]
CELERY = [sys.executable, "-m", "celery"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def started(
    argv: list[str], env: dict[str, str], log: Path, port: int | None = None
) -> Iterator[None]:
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        if port is not None:
            wait_until(lambda: listening(port), what=f"{argv[2:5]} on port {port}")
        else:
            wait_until(lambda: b" ready." in log.read_bytes(), what=f"{argv[2:5]}")
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Bench:
    def __init__(self, scratch: Path, redis: EmbeddedRedis, seconds: float) -> None:
        self.scratch = scratch
        self.seconds = seconds
        self.redis = connect(redis.url)
        self.env = {
            **os.environ,
            "KINGTASK_REDIS_URL": redis.url,
            "KINGTASK_BIN_PATH": str(ROOT / "bench" / "bin"),
            "KINGTASK_WEB_WORKERS": str(2 * (os.cpu_count() or 1) + 1),
            "KINGTASK_CONCURRENCY": str(os.cpu_count() or 1),
            "KINGTASK_LOG_LEVEL": "warning",
            "FLOWER_UNAUTHENTICATED_API": "true",
            "PYTHONPATH": str(ROOT),
        }

    def web(self, app: str, port: int) -> contextmanager:  # type: ignore[valid-type]
        env = {**self.env, "KINGTASK_ADDR": f"127.0.0.1:{port}"}
        return started([*GUNICORN, app], env, self.scratch / f"web-{port}.log", port)

    def worker(self, app: str, queue: str) -> contextmanager:  # type: ignore[valid-type]
        argv = [*CELERY, "-A", app, "worker", "-Q", queue, "--loglevel=INFO",
                "--without-mingle", "--without-gossip"]  # fmt: skip
        return started(argv, self.env, self.scratch / f"worker-{queue}.log")

    def rate(self, port: int, path: str, body: dict) -> float:
        load = loadgen.Load("127.0.0.1", port, "POST", path, json.dumps(body).encode())
        loadgen.rate(load, seconds=1.0)  # warm up
        self.redis.flushdb()
        per_second, failed = loadgen.rate(load, seconds=self.seconds)
        if failed:
            print(f"bench: {failed} requests to {path} failed", file=sys.stderr)
        self.redis.flushdb()
        return per_second

    def submissions(self) -> dict[str, float]:
        """(a) requests/s: kingtask's submit, Flower's async-apply, Flask hello-world."""
        figures = {}
        port = free_port()
        with self.web("kingtask.web:create_app()", port):
            figures["kingtask"] = self.rate(port, "/api/v1/task/script", SCRIPT)
        port = free_port()
        with self.web("bench.hello:create_app()", port):
            figures["hello"] = self.rate(port, "/", {})
        port = free_port()
        flower = [*CELERY, "-A", "kingtask", "flower", "--address=127.0.0.1", f"--port={port}"]
        with started(flower, self.env, self.scratch / "flower.log", port):
            body = {"kwargs": {"bin_name": "sum", "args": ["12", "34"]}}
            figures["flower"] = self.rate(port, "/api/task/async-apply/kingtask.script", body)
        return figures

    def kingtask_end_to_end(self, tasks: int) -> float:
        port = free_port()
        with self.worker("kingtask", "celery"), self.web("kingtask.web:create_app()", port):
            load = loadgen.Load(
                "127.0.0.1", port, "POST", "/api/v1/task/script", json.dumps(SCRIPT).encode()
            )
            begun = time.monotonic()
            answers = loadgen.send(load, tasks)
            uuids = [json.loads(a) for a in answers if a is not None]
            if len(uuids) != tasks:
                raise SystemExit(f"bench: {tasks - len(uuids)} submissions failed")
            wait_until(
                lambda: self.redis.scard(keys.UNDO) == 0, timeout=600, what="kingtask results"
            )
            elapsed = time.monotonic() - begun
            self.check_results([keys.result(u) for u in uuids], "kingtask")
        self.redis.flushdb()
        return tasks / elapsed

    def raw_end_to_end(self, tasks: int) -> float:
        from bench.raw_celery import app, run

        app.conf.broker_url = app.conf.result_backend = self.env["KINGTASK_REDIS_URL"]
        path = str(ROOT / "bench" / "bin" / "sum")
        with self.worker("bench.raw_celery", "raw"):
            begun = time.monotonic()
            ids = [run.apply_async((path, ["12", "34"])).id for _ in range(tasks)]
            meta = [f"celery-task-meta-{i}" for i in ids]
            wait_until(lambda: self.redis.exists(*meta) == tasks, timeout=600, what="raw results")
            elapsed = time.monotonic() - begun
        self.redis.flushdb()
        return tasks / elapsed

    def check_results(self, result_keys: list[str], what: str) -> None:
        pipe = self.redis.pipeline()
        for key in result_keys:
            pipe.hget(key, "message")
        messages = pipe.execute()
        wrong = sum(message != "46" for message in messages)
        if wrong:
            raise SystemExit(f"bench: {wrong} {what} results are wrong")


def table(rows: list[tuple[str, float, str, float, float]]) -> str:
    lines = [
        "| figure | kingtask | baseline | baseline value | ratio | target |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, value, baseline, base_value, target in rows:
        ratio = value / base_value
        verdict = "met" if ratio >= target else "MISSED"
        lines.append(
            f"| {name} | {value:,.0f} | {baseline} | {base_value:,.0f} "
            f"| {ratio:.2f}x | >= {target}x ({verdict}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each load run")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per end-to-end run")
    parser.add_argument("--rounds", type=int, default=2, help="end-to-end rounds (best is kept)")
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ktb-"))
    try:
        with EmbeddedRedis(scratch / "redis") as redis:
            bench = Bench(scratch, redis, options.seconds)
            print("bench: (a) submissions ...", file=sys.stderr)
            submit = bench.submissions()
            kt, raw = [], []
            for round_ in range(options.rounds):
                print(f"bench: (b) end to end, round {round_ + 1} ...", file=sys.stderr)
                raw.append(bench.raw_end_to_end(options.tasks))
                kt.append(bench.kingtask_end_to_end(options.tasks))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    python = f"Python {platform.python_version()}"
    print(f"\n{when}, {platform.node()}, {os.cpu_count()} cores, {python}")
    print(
        f"load: {options.seconds:g} s per run, 16 clients, new connection per request; "
        f"end to end: {options.tasks} tasks, best of {options.rounds}\n"
    )
    submit_name = "submit req/s (POST /api/v1/task/script)"
    rows = [
        (submit_name, submit["kingtask"], "Flower async-apply", submit["flower"], 2.0),
        (submit_name, submit["kingtask"], "Flask hello-world", submit["hello"], 0.5),
        ("end-to-end script tasks/s", max(kt), "raw Celery", max(raw), 0.9),
    ]
    print(table(rows))


if __name__ == "__main__":
    main()
