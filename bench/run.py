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
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.harness import (
    CELERY,
    GUNICORN,
    ROOT,
    base_env,
    free_port,
    machine,
    ratio_row,
    started,
    table,
    wait_until,
)
from kingtask import keys
from kingtask.embedded import EmbeddedRedis
from kingtask.store import connect

SCRIPT = {"bin_name": "sum", "args": "12 34"}


class Bench:
    def __init__(self, scratch: Path, redis: EmbeddedRedis, seconds: float) -> None:
        self.scratch = scratch
        self.seconds = seconds
        self.redis = connect(redis.url)
        self.env = base_env(redis.url)

    def web(self, app: str, port: int) -> contextmanager:  # type: ignore[valid-type]
        env = {**self.env, "KINGTASK_ADDR": f"127.0.0.1:{port}"}
        return started([*GUNICORN, app], env, self.scratch / f"web-{port}.log", port)

    def worker(self, app: str, queue: str) -> contextmanager:  # type: ignore[valid-type]
        argv = [*CELERY, "-A", app, "worker", "-Q", queue, "--loglevel=INFO",
                "--without-mingle", "--without-gossip"]  # fmt: skip
        return started(argv, self.env, self.scratch / f"worker-{queue}.log", " ready.")

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

    print(f"\n{machine()}")
    print(
        f"load: {options.seconds:g} s per run, 16 clients, new connection per request; "
        f"end to end: {options.tasks} tasks, best of {options.rounds}\n"
    )
    submit_name = "submit req/s (POST /api/v1/task/script)"
    rows = [
        ratio_row(submit_name, submit["kingtask"], "Flower async-apply", submit["flower"], 2.0),
        ratio_row(submit_name, submit["kingtask"], "Flask hello-world", submit["hello"], 0.5),
        ratio_row("end-to-end script tasks/s", max(kt), "raw Celery", max(raw), 0.9),
    ]
    print(table(rows))


if __name__ == "__main__":
    main()
