"""The ``kingtask`` command: ``kingtask run`` starts the whole system in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kingtask import config, processes
from kingtask.embedded import EmbeddedRedis
from kingtask.errors import KingtaskError

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Pause before restarting a child that died, growing while it keeps dying young."""
STEADY_AFTER = 30.0
"""A child that ran this long before dying is restarted at once."""
STOP_TIMEOUT = 30.0
"""Seconds a child may take to stop after SIGTERM before it is killed."""
POLL_INTERVAL = 0.2
WEB_APP = "kingtask.web:create_app()"


@dataclass
class Child:
    """One supervised process; ``spawn`` starts it and returns it running."""

    name: str
    spawn: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    stop_timeout: float = STOP_TIMEOUT

    def start(self) -> None:
        self.process = self.spawn()
        self.started_at = time.monotonic()
        self.restart_at = None

    def check(self, now: float, say: Callable[[str], None]) -> None:
        """Notice a death and restart after a delay that grows while it keeps dying young."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                say(f"restarting {self.name}")
                self.start()
            return
        assert self.process is not None
        status = self.process.poll()
        if status is None:
            return
        self.quick_deaths = 0 if now - self.started_at > STEADY_AFTER else self.quick_deaths + 1
        delay = 0.0
        if self.quick_deaths:
            delay = RESTART_DELAYS[min(self.quick_deaths, len(RESTART_DELAYS)) - 1]
        say(f"{self.name} exited with status {status}; restarting in {delay:g} s")
        self.restart_at = now + delay

    def stop(self) -> None:
        processes.stop(self.process, self.stop_timeout)


@dataclass
class Supervisor:
    """Starts children in order, restarts any that dies, stops them in reverse order."""

    children: list[Child]
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    stopping: bool = False

    def say(self, message: str) -> None:
        print(f"kingtask: {message}", file=self.out, flush=True)

    def request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self, ready: Callable[[], None]) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.request_stop)
        try:
            for child in self.children:
                child.start()
            ready()
            while not self.stopping:
                time.sleep(POLL_INTERVAL)
                for child in self.children:
                    child.check(time.monotonic(), self.say)
        finally:
            self.say("stopping")
            for child in reversed(self.children):
                child.stop()
            self.say("stopped")
        return 0


def _spawner(
    argv: list[str], env: dict[str, str], log: Path | None
) -> Callable[[], subprocess.Popen[bytes]]:
    def spawn() -> subprocess.Popen[bytes]:
        if log is None:
            return processes.spawn(argv, env=env)
        with log.open("ab") as output:
            return processes.spawn(argv, env=env, stdout=output, stderr=subprocess.STDOUT)

    return spawn


def _wait_for_port(addr: str, timeout: float = 30.0) -> bool:
    host, port = config.parse_addr(addr)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        time.sleep(0.1)
    return False


def run(files: Sequence[str]) -> int:
    """``kingtask run``: the API, worker(s), Flower and, when needed, the embedded Redis."""
    settings = config.load(files)
    env = dict(os.environ)
    if files:
        env[config.CONFIG_ENV] = os.pathsep.join(str(Path(f).resolve()) for f in files)
    log_dir = Path(settings.log_path) if settings.log_path else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)

    def log(name: str) -> Path | None:
        return log_dir / f"{name}.log" if log_dir else None

    children: list[Child] = []
    if settings.uses_embedded_redis:
        embedded = EmbeddedRedis(settings.data_dir)
        env["KINGTASK_REDIS_URL"] = embedded.url
        children.append(Child("redis", embedded.start))
    celery = [sys.executable, "-m", "celery", "-A", "kingtask"]
    level = settings.log_level.upper()
    worker = [*celery, "worker", f"--loglevel={level}"]
    web = [sys.executable, "-m", "gunicorn", "-c", "python:kingtask.gunicorn_conf", WEB_APP]
    worker_stop_timeout = settings.shutdown_grace + STOP_TIMEOUT
    children.append(
        Child("worker", _spawner(worker, env, log("worker")), stop_timeout=worker_stop_timeout)
    )
    children.append(Child("web", _spawner(web, env, log("web"))))
    if settings.flower_addr:
        host, port = config.parse_addr(settings.flower_addr)
        flower = [*celery, "flower", f"--address={host}", f"--port={port}"]
        children.append(Child("flower", _spawner(flower, env, log("flower"))))

    supervisor = Supervisor(children)

    def ready() -> None:
        if not _wait_for_port(settings.addr):
            supervisor.say(f"the API did not open {settings.addr} in time; see the web log")
        redis_text = env.get("KINGTASK_REDIS_URL", settings.redis_url)
        if settings.uses_embedded_redis:
            redis_text += f" (embedded, data in {Path(settings.data_dir).resolve()})"
        supervisor.say("running")
        lines = [
            f"  API     http://{settings.addr}/api/v1",
            f"  Flower  http://{settings.flower_addr}" if settings.flower_addr else "  Flower  off",
            f"  Redis   {redis_text}",
            f"  Tasks   {Path(settings.bin_path).resolve()}",
            "  Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), file=supervisor.out, flush=True)

    return supervisor.run(ready)


def release() -> int:
    """``kingtask release``: publish timed attempts as they fall due, until SIGTERM.

    Every Celery worker starts one of these beside itself; more are harmless.
    """
    from kingtask.releaser import Releaser
    from kingtask.tasks import scheduler

    logging.basicConfig(
        level=config.current().log_level.upper(),
        format="[%(asctime)s: %(levelname)s/releaser] %(message)s",
    )
    releaser = Releaser(scheduler())
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: releaser.stopping.set())
    releaser.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kingtask", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the whole system in the foreground")
    run_parser.add_argument(
        "-c", "--config", action="append", default=[], metavar="FILE",
        help="a YAML config file (repeatable; later files override earlier ones)",
    )  # fmt: skip
    commands.add_parser("release", help="publish timed tasks when due (each worker starts one)")
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            return release()
        return run(args.config)
    except KingtaskError as exc:
        print(f"kingtask: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
