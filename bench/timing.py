"""Timed tasks: lateness, bursts, a million waiting tasks, and a kill -9 of everything.

    python bench/timing.py [--spread-tasks 2000] [--burst 10000] [--waiting 1000000]
                           [--eta 50000] [--crash-waiting 10000] [--crash-retries 1000]

(a) lateness (real start - due time) of tasks due at times spread over 10 s;
(b) a burst of tasks due in the same second, against end-to-end throughput
    measured in the same run;
(c) a million tasks waiting a day: worker memory, Redis memory per task, submit
    throughput beside the same run with none waiting, and plain Celery holding
    ETA tasks as the baseline;
(d) kill -9 of the whole ``kingtask run`` tree with tasks waiting and retries
    pending: after a restart each runs exactly once.

Every process runs against a private Redis; nothing else is touched.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.harness import (
    CELERY,
    GUNICORN,
    KINGTASK,
    base_env,
    free_port,
    machine,
    ratio_row,
    rss_mib,
    started,
    table,
    wait_until,
)
from kingtask import keys, messages
from kingtask.embedded import EmbeddedRedis
from kingtask.models import Script, TaskSpec, new_uuid
from kingtask.processes import descendants, kill
from kingtask.schedule import ENQUEUE_KEYS, Parked, Scheduler
from kingtask.store import Store, connect

WORKER = [*CELERY, "-A", "kingtask", "worker", "--loglevel=INFO"]
Row = tuple[str, str, str, str]


def check(figure: str, measured: str, target: str, ok: bool) -> Row:
    return figure, measured, target, "met" if ok else "MISSED"


def stamps(record: Path) -> dict[str, float]:
    """Start time of each task that ran, by the name it was given."""
    if not record.exists():
        return {}
    found = {}
    for line in record.read_text().splitlines():
        name, _, when = line.partition(" ")
        found[name] = float(when)
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Timing:
    def __init__(self, scratch: Path, redis: EmbeddedRedis) -> None:
        self.scratch = scratch
        self.env = base_env(redis.url)
        self.store = Store(connect(redis.url), result_keep_time=3600, zone=None)
        self.scheduler = Scheduler(self.store)

    def stamp_task(self, record: Path, name: str, due: float) -> TaskSpec:
        # A due time with a fraction of a second, as a retry's is; start_time has whole seconds.
        return TaskSpec(new_uuid(), Script("stamp", (str(record), name)), due)  # type: ignore[arg-type]

    def lateness(self, count: int, spread: float) -> list[Row]:
        """(a) Tasks due at evenly spread times; how late each really started."""
        record = self.scratch / "lateness"
        with started(WORKER, self.env, self.scratch / "worker-a.log", " ready."):
            begin = time.time() + 2.0
            due = {str(i): begin + spread * i / count for i in range(count)}
            for name, moment in due.items():
                self.scheduler.submit(self.stamp_task(record, name, moment))
            done = lambda: len(stamps(record)) >= count  # noqa: E731
            wait_until(done, timeout=spread + 120, what="lateness runs")
        late = [(stamps(record)[name] - moment) * 1000 for name, moment in due.items()]
        early = sum(value < 0 for value in late)
        p50, p99 = percentile(late, 0.5), percentile(late, 0.99)
        what = f"{count} tasks due over {spread:g} s"
        return [
            check(f"lateness p50, {what}", f"{p50:.1f} ms", "target <= 20 ms", p50 <= 20),
            check(f"lateness p99, {what}", f"{p99:.1f} ms", "target <= 100 ms", p99 <= 100),
            check("tasks started before their due time", str(early), "target 0", not early),
        ]

    def burst(self, count: int) -> list[Row]:
        """(b) ``count`` tasks due now (throughput), then ``count`` due in the same second."""
        drain, burst = self.scratch / "drain", self.scratch / "burst"
        with started(WORKER, self.env, self.scratch / "worker-b.log", " ready."):
            began = time.time()
            for i in range(count):
                self.scheduler.submit(self.stamp_task(drain, str(i), 0))
            wait_until(lambda: len(stamps(drain)) >= count, timeout=600, what="drain runs")
            throughput = count / (max(stamps(drain).values()) - began)
            due = float(int(time.time()) + 3)
            for i in range(count):
                self.scheduler.submit(self.stamp_task(burst, str(i), due))
            wait_until(lambda: len(stamps(burst)) >= count, timeout=600, what="burst runs")
        last = max(stamps(burst).values()) - due
        allowed = count / throughput + 1
        return [
            ("end-to-end throughput, tasks due now", f"{throughput:,.0f} tasks/s", "", ""),
            check(
                f"last start of {count:,} tasks due in one second",
                f"{last:.2f} s after due",
                f"target <= {count:,} / throughput + 1 s = {allowed:.2f} s",
                last <= allowed,
            ),
        ]

    def park_many(self, count: int, due: float) -> None:
        """Park ``count`` tasks as submissions do (same script), pipelined for speed."""
        spec_text = Parked(
            "script", 0, TaskSpec("", Script("stamp", ("x", "y"))).to_message()
        ).to_json()
        with self.store.client.pipeline(transaction=False) as pipeline:
            for i in range(count):
                args = [new_uuid(), 1, "", due, spec_text, "", "", "", keys.WAKE]
                self.scheduler._enqueue(keys=ENQUEUE_KEYS, args=args, client=pipeline)
                if i % 2000 == 1999:
                    pipeline.execute()
            pipeline.execute()

    def submit_rate(self, port: int, seconds: float) -> float:
        body = json.dumps({"bin_name": "sum", "args": "1 2"}).encode()
        rate, _ = loadgen.rate(
            loadgen.Load("127.0.0.1", port, "POST", "/api/v1/task/script", body), seconds=seconds
        )
        # Forget them: the tasks were only there to be submitted.
        self.store.client.delete(messages.QUEUE, keys.UNDO, keys.SENT, keys.SENT_SPECS)
        return rate

    def waiting(self, count: int, eta_count: int, seconds: float) -> list[Row]:
        """(c) A million tasks due in a day, and plain Celery holding ETA tasks."""
        port = free_port()
        env = {**self.env, "KINGTASK_ADDR": f"127.0.0.1:{port}"}
        web = [*GUNICORN, "kingtask.web:create_app()"]
        with (
            started(WORKER, env, self.scratch / "worker-c.log", " ready.") as worker,
            started(web, env, self.scratch / "web-c.log", port),
        ):
            time.sleep(5)
            idle = rss_mib(worker.pid)
            empty = self.submit_rate(port, seconds)
            memory_before = self.store.client.info("memory")["used_memory"]
            self.park_many(count, time.time() + 86400)
            per_task = (self.store.client.info("memory")["used_memory"] - memory_before) / count
            time.sleep(10)  # the releasers look at the schedule a few times
            loaded = rss_mib(worker.pid)
            full = self.submit_rate(port, seconds)
        self.store.client.flushdb()
        eta = self.naive_eta(eta_count)
        growth = loaded - idle
        return [
            check(
                f"worker RSS, {count:,} tasks waiting",
                f"{loaded:.0f} MiB (+{growth:.1f})",
                f"idle {idle:.0f} MiB; target growth < 20 MiB",
                growth < 20,
            ),
            (
                f"plain Celery worker RSS, {eta_count:,} ETA tasks waiting",
                f"{eta:.0f} MiB",
                f"kingtask with {count:,} waiting: {loaded:.0f} MiB",
                f"{eta / loaded:.1f}x kingtask's",
            ),
            check(
                "Redis memory per waiting task",
                f"{per_task:.0f} bytes",
                "target <= 1024 bytes",
                per_task <= 1024,
            ),
            ratio_row(f"submit req/s, {count:,} waiting", full, "none waiting", empty, 0.9),
        ]

    def naive_eta(self, count: int) -> float:
        """RSS of a plain Celery worker holding ``count`` tasks with a one-hour countdown."""
        from bench.raw_celery import app, run

        app.conf.broker_url = app.conf.result_backend = self.env["KINGTASK_REDIS_URL"]
        argv = [*CELERY, "-A", "bench.raw_celery", "worker", "-Q", "raw", "--loglevel=INFO",
                "--without-mingle", "--without-gossip"]  # fmt: skip
        with started(argv, self.env, self.scratch / "worker-eta.log", " ready.") as worker:
            with app.producer_or_acquire() as producer:
                for _ in range(count):
                    run.apply_async(("/bin/true", []), countdown=3600, producer=producer)
            wait_until(lambda: self.store.client.llen("raw") == 0, timeout=600, what="ETA prefetch")
            time.sleep(5)
            return rss_mib(worker.pid)

    def crash(self, waiting: int, retries: int) -> list[Row]:
        """(d) kill -9 of the whole ``kingtask run`` tree; then every task runs exactly once."""
        record, failing = self.scratch / "crash-waiting", self.scratch / "crash-retries"
        data_dir = self.scratch / "crash-var"
        port = free_port()
        env = {
            **base_env(None),
            "KINGTASK_DATA_DIR": str(data_dir),
            "KINGTASK_ADDR": f"127.0.0.1:{port}",
            "KINGTASK_FLOWER_ADDR": "",
        }
        api = loadgen.Load("127.0.0.1", port, "POST", "/api/v1/task")

        def submit(bodies: list[dict[str, object]]) -> None:
            answers = loadgen.send_each(api, [json.dumps(b).encode() for b in bodies])
            if any(answer is None for answer in answers):
                raise SystemExit("bench: a submission failed")

        with started([*KINGTASK, "run"], env, self.scratch / "run-1.log", "Press Ctrl-C") as first:
            start_time = int(time.time()) + 30 + waiting // 500
            submit([{"bin_name": "stamp", "args": f"{record} w{i}", "start_time": start_time}
                    for i in range(waiting)])  # fmt: skip
            submit([{"bin_name": "fail_once", "args": f"{failing} r{i}", "time_interval": "20"}
                     for i in range(retries)])  # fmt: skip
            wait_until(lambda: failing.exists() and len(failing.read_text().split()) >= retries,
                       timeout=300, what="first attempts")  # fmt: skip
            time.sleep(1.5)  # the embedded Redis writes its append-only file every second
            killed = descendants(first.pid)
            kill(killed)
        with started([*KINGTASK, "run"], env, self.scratch / "run-2.log", "Press Ctrl-C"):
            store = Store(
                connect(f"redis+socket://{data_dir / 'redis.sock'}"), result_keep_time=1, zone=None
            )
            wait_until(lambda: store.undo_count() == 0, timeout=900, what="every task to finish")
        ran = collections.Counter(line.split()[0] for line in record.read_text().splitlines())
        attempts = collections.Counter(failing.read_text().split())
        once = sum(ran[f"w{i}"] == 1 for i in range(waiting))
        twice = sum(attempts[f"r{i}"] == 2 for i in range(retries))
        return [
            check(
                f"waiting tasks run exactly once after kill -9 of {len(killed)} processes",
                f"{once:,} of {waiting:,}",
                "target: all",
                once == waiting,
            ),
            check(
                "pending retries run exactly once after the kill -9",
                f"{twice:,} of {retries:,}",
                "target: all",
                twice == retries,
            ),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spread-tasks", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=10000)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--eta", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each submit load run")
    parser.add_argument("--crash-waiting", type=int, default=10_000)
    parser.add_argument("--crash-retries", type=int, default=1_000)
    parser.add_argument("--only", default="abcd", help="which parts to run, e.g. 'b' or 'ad'")
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ktt-"))
    rows: list[Row] = []
    try:
        with EmbeddedRedis(scratch / "redis") as redis:
            timing = Timing(scratch, redis)
            for name, measure in (
                ("(a) lateness", lambda: timing.lateness(options.spread_tasks, options.spread)),
                ("(b) burst", lambda: timing.burst(options.burst)),
                (
                    "(c) waiting",
                    lambda: timing.waiting(options.waiting, options.eta, options.seconds),
                ),
                ("(d) crash", lambda: timing.crash(options.crash_waiting, options.crash_retries)),
            ):
                if name[1] not in options.only:
                    continue
                print(f"bench: {name} ...", file=sys.stderr)
                rows += measure()
                timing.store.client.flushdb()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
