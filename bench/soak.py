"""Soak: load at 80% of capacity for a minute while workers are killed.

    python bench/soak.py [--seconds 60] [--work 0.05] [--capacity-tasks 600]

Two workers (two processes each), the API on gunicorn and a private embedded
Redis. First the capacity is measured: script tasks drained per second. Then
tasks are submitted at 80% of it for ``--seconds`` while, in turn, a pool
process of one worker is killed, the other worker is killed whole (SIGKILL of
the worker, its pool, its scripts) and started again, and the same once more
the other way round. When the backlog is empty, every accepted uuid must have
exactly one final result, a success, counted once; every task must have run at
least once (executions >= results). The script appends its task's number to a
file each time it runs, so executions are counted outside kingtask.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CELERY,
    GUNICORN,
    base_env,
    free_port,
    launch,
    machine,
    started,
    table,
    wait_until,
)
from kingtask import keys
from kingtask.embedded import EmbeddedRedis
from kingtask.processes import descendants, kill
from kingtask.store import connect

LEASE = 10
"""The soak's lease: how soon the attempt of a killed worker runs again."""
CLIENTS = 8
Row = tuple[str, str, str, str]


class Worker:
    """A Celery worker that can be killed like a machine dying, and started again."""

    def __init__(self, name: str, env: dict[str, str], scratch: Path) -> None:
        self.name, self.env, self.scratch = name, env, scratch
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        log = self.scratch / f"worker-{self.name}-{self.starts}.log"
        argv = [*CELERY, "-A", "kingtask", "worker", "--loglevel=INFO",
                f"--hostname={self.name}-{self.starts}@%h"]  # fmt: skip
        self.process = launch(argv, self.env, log, " ready.")

    def kill_whole(self) -> None:
        assert self.process is not None
        kill(descendants(self.process.pid))
        self.process.wait()

    def kill_pool_process(self) -> None:
        """SIGKILL one pool process, preferably one running a script."""
        assert self.process is not None
        pool = [pid for pid in _children(self.process.pid) if "celery" in _cmdline(pid)]
        busy = [pid for pid in pool if _children(pid)]
        kill({(busy or pool)[0]})

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_whole()


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Soak:
    def __init__(self, scratch: Path, redis: EmbeddedRedis, work: float) -> None:
        self.scratch = scratch
        self.redis = connect(redis.url)
        self.env = {**base_env(redis.url), "KINGTASK_LEASE": str(LEASE),
                    "KINGTASK_CONCURRENCY": "2"}  # fmt: skip
        self.work = work
        self.record = scratch / "executions"
        self.workers = [Worker(name, self.env, scratch) for name in ("a", "b")]
        self.api = ""

    def submit(self, count: int, rate: float | None) -> tuple[dict[str, int], int]:
        """Submit ``count`` tasks, at ``rate`` per second or at once; uuid → number, refused."""
        numbers = itertools.count()
        accepted: dict[str, int] = {}
        refused = 0
        lock = threading.Lock()
        begun = time.monotonic()

        def client() -> None:
            nonlocal refused
            session = requests.Session()
            while (number := next(numbers)) < count:
                if rate:
                    time.sleep(max(0.0, begun + number / rate - time.monotonic()))
                body = {"bin_name": "soak", "args": f"{self.record} {number} {self.work}"}
                try:
                    response = session.post(f"{self.api}/task", json=body, timeout=10)
                    uuid = response.json() if response.status_code == 200 else None
                except requests.RequestException:
                    uuid = None
                with lock:
                    if uuid:
                        accepted[uuid] = number
                    else:
                        refused += 1

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return accepted, refused

    def drain(self, timeout: float) -> float:
        begun = time.monotonic()
        try:
            wait_until(lambda: self.redis.scard(keys.UNDO) == 0, timeout, "the backlog to empty")
        except SystemExit:
            self.explain_backlog()
            raise
        return time.monotonic() - begun

    def explain_backlog(self) -> None:
        """Where the tasks still undone are, for the report of a failed soak."""
        queued = "\n".join(self.redis.lrange("celery", 0, -1))
        unacked = "\n".join(self.redis.hvals("unacked"))
        for uuid in sorted(self.redis.smembers(keys.UNDO))[:10]:
            print(
                f"bench: undone {uuid}: attempt {self.redis.hget(keys.ATTEMPTS, uuid)}, "
                f"parked {self.redis.zscore(keys.PARKED, uuid)}, "
                f"claimed {self.redis.zscore(keys.CLAIMED, uuid)}, "
                f"queued {uuid in queued}, unacked {uuid in unacked}",
                file=sys.stderr,
            )

    def capacity(self, tasks: int) -> float:
        begun = time.monotonic()
        self.submit(tasks, None)
        self.drain(300)
        rate = tasks / (time.monotonic() - begun)
        self.redis.flushdb()
        self.record.unlink(missing_ok=True)
        return rate

    def faults(self, seconds: float, log: list[str]) -> None:
        """Kill a pool process, a whole worker, a pool process, a whole worker, in turn."""
        a, b = self.workers
        plan = [(0.2, a.kill_pool_process, "pool process of a"), (0.35, b, "worker b"),
                (0.5, b.kill_pool_process, "pool process of b"), (0.65, a, "worker a")]  # fmt: skip
        begun = time.monotonic()
        for at, fault, what in plan:
            time.sleep(max(0.0, begun + at * seconds - time.monotonic()))
            if isinstance(fault, Worker):
                fault.kill_whole()
                fault.start()
            else:
                fault()
            log.append(f"{what} at {time.monotonic() - begun:.0f} s")

    def run(self, seconds: float, capacity_tasks: int) -> list[Row]:
        port = free_port()
        env = {**self.env, "KINGTASK_ADDR": f"127.0.0.1:{port}"}
        web = [*GUNICORN, "kingtask.web:create_app()"]
        with started(web, env, self.scratch / "web.log", port):
            self.api = f"http://127.0.0.1:{port}/api/v1"
            for worker in self.workers:
                worker.start()
            try:
                capacity = self.capacity(capacity_tasks)
                rate = 0.8 * capacity
                injected: list[str] = []
                faults = threading.Thread(target=self.faults, args=(seconds, injected))
                faults.start()
                accepted, refused = self.submit(int(rate * seconds), rate)
                faults.join()
                drained = self.drain(10 * LEASE + 300)
            finally:
                for worker in self.workers:
                    worker.stop()
        return self.verdict(capacity, rate, seconds, accepted, refused, drained, injected)

    def verdict(
        self,
        capacity: float,
        rate: float,
        seconds: float,
        accepted: dict[str, int],
        refused: int,
        drained: float,
        injected: list[str],
    ) -> list[Row]:
        pipe = self.redis.pipeline()
        for uuid in accepted:
            pipe.hget(keys.result(uuid), "is_success")
        results = pipe.execute()
        successes = sum(result == "1" for result in results)
        counted = sum(int(self.redis.get(k) or 0) for k in self.redis.keys(keys.daily("*", "*")))
        runs = collections.Counter(line.strip() for line in self.record.read_text().splitlines())
        never_ran = sum(runs[str(number)] == 0 for number in accepted.values())
        executions = sum(runs[str(number)] for number in accepted.values())
        once = successes == counted == len(accepted) and never_ran == 0
        resent = sum(
            int(match)
            for log in self.scratch.glob("worker-*.log")
            for match in re.findall(rb"published again (\d+) attempt", log.read_bytes())
        )
        return [
            ("capacity, 2 workers x 2 processes", f"{capacity:.0f} tasks/s", "", ""),
            ("load: 80% of capacity", f"{rate:.0f} tasks/s for {seconds:g} s", "", ""),
            ("faults", "; ".join(injected), "pool process x2, whole worker x2",
             "met" if len(injected) == 4 else "MISSED"),
            ("accepted / refused", f"{len(accepted):,} / {refused}", "refused: 0",
             "met" if refused == 0 else "MISSED"),
            ("final results (success), counted", f"{successes:,}, {counted:,}",
             "one per accepted uuid", "met" if once else "MISSED"),
            ("executions (runs again)", f"{executions:,} ({executions - successes})",
             ">= results", "met" if executions >= successes and never_ran == 0 else "MISSED"),
            ("lost on the way to a worker, published again", f"{resent}", "", ""),
            ("backlog empty after the load", f"{drained:.1f} s", f"lease {LEASE} s", ""),
        ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load")
    parser.add_argument("--work", type=float, default=0.05, help="seconds each task works")
    parser.add_argument("--capacity-tasks", type=int, default=600, help="tasks to measure with")
    options = parser.parse_args()
    # Stopped from outside, it still stops its workers, API and Redis on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: stopped"))

    scratch = Path(tempfile.mkdtemp(prefix="kts-"))
    with EmbeddedRedis(scratch / "redis") as redis:
        try:
            rows = Soak(scratch, redis, options.work).run(options.seconds, options.capacity_tasks)
        except SystemExit:
            print(f"bench: logs kept in {scratch}", file=sys.stderr)
            raise
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{machine()}\n")
    print(table(rows))
    if any(verdict == "MISSED" for *_, verdict in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
