"""Settings: the seed's YAML keys, kingtask's own keys, and environment overrides.

Files are read in order, later keys replacing earlier ones, so the seed's
``broker.yaml`` and ``worker.yaml`` can both be given. Every key can then be
overridden by an environment variable ``KINGTASK_<KEY>`` (``KINGTASK_BIN_PATH``);
``KINGTASK_REDIS_URL`` or ``REDIS_URL`` set ``redis``, and ``PORT`` (Heroku) sets
``addr`` to ``0.0.0.0:$PORT`` unless ``KINGTASK_ADDR`` is given.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from kingtask.errors import ConfigError

CONFIG_ENV = "KINGTASK_CONFIG"
"""Environment variable naming config files (separated by ``os.pathsep``)."""

_HOST_PORT = re.compile(
    r"^(?P<host>[^:/\s]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})(?:/(?P<db>\d+))?$"
)
EMBEDDED_SOCKET = "redis.sock"
"""The embedded Redis's Unix socket, in ``data_dir``."""
_URL_SCHEMES = ("redis://", "rediss://", "redis+socket://", "unix://", "sentinel://")


@dataclass(frozen=True)
class Settings:
    """Everything kingtask reads from configuration, with its default."""

    # Seed keys (broker.yaml and worker.yaml).
    addr: str = "127.0.0.1:9595"
    """Where the HTTP API listens, ``host:port``."""
    redis: str = ""
    """``host:port[/db]``, a URL, or ``sentinel://host:port;sentinel://…``; empty means
    the embedded Redis in ``data_dir``."""
    log_path: str = ""
    """Folder for log files; empty logs to standard error."""
    log_level: str = "info"
    bin_path: str = "bin"
    """Folder holding the executables that script tasks may run."""
    period: float = 0.0
    """Pause in seconds after each task, per worker process."""
    result_keep_time: int = 7 * 24 * 3600
    """How long a final result stays readable, in seconds."""
    task_run_time: int = 300
    """Default ``max_run_time`` of a task, in seconds."""

    # kingtask's own keys.
    data_dir: str = "var"
    """Folder for the embedded Redis (data, socket) and other local state."""
    timezone: str = ""
    """IANA zone for daily statistics; empty means the server's local zone."""
    max_task_run_time: int = 24 * 3600
    """The largest ``max_run_time`` a client may ask for, in seconds."""
    max_output_bytes: int = 1024 * 1024
    """Cap on each of a script's stdout and stderr, and on an rpc response body."""
    max_body_bytes: int = 1024 * 1024
    """Cap on an HTTP request body sent to the API."""
    task_env: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")
    """Environment variables passed from the worker to scripts; nothing else is."""
    concurrency: int = 0
    """Worker processes per worker; 0 means one per CPU core."""
    rpc_allowed_hosts: tuple[str, ...] = ()
    """Hosts rpc tasks may call; empty: any host but link-local addresses."""
    auth_token: str = ""
    """When set, the API requires ``Authorization: Bearer <auth_token>``."""
    lease: int = 60
    """Seconds after which the attempt of a dead worker runs again; running attempts
    renew their lease, so a long one never runs twice."""
    shutdown_grace: int = 20
    """Seconds a worker told to stop (SIGTERM) lets running attempts go on; then it
    stops them and hands their tasks back, to run again elsewhere."""
    visibility_timeout: int = 0
    """Seconds before Celery delivers an unacknowledged message again; 0: ``lease``."""
    web_workers: int = 0
    """gunicorn worker processes; 0 means two per CPU core, plus one."""
    sentinel_master: str = ""
    """The name under which Redis Sentinel knows the master, when ``redis`` names sentinels."""
    sentinel_password: str = ""
    """The sentinels' own password, when they ask for one (their ``requirepass``)."""
    flower_addr: str = "127.0.0.1:5555"
    """Where ``kingtask run`` starts Flower, ``host:port``; empty disables it."""

    @property
    def redis_url(self) -> str:
        """The Redis URL for Celery (broker and backend), resolved from ``redis``."""
        return redis_url(self.redis, self.data_dir)

    @property
    def sentinels(self) -> Sentinels | None:
        """The sentinels to ask for the master, when ``redis`` names them."""
        url = self.redis_url
        return parse_sentinels(url) if url.startswith("sentinel://") else None

    @property
    def uses_embedded_redis(self) -> bool:
        return not self.redis

    @property
    def zone(self) -> tzinfo | None:
        """The zone of daily statistics; None is the server's local zone."""
        if not self.timezone:
            return None
        try:
            return ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ConfigError(f"timezone: unknown time zone {self.timezone!r}") from None


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def redis_url(value: str, data_dir: str) -> str:
    """Turn a configured ``redis`` value into a URL Celery and kombu accept.

    Args:
        value: The seed's ``host:port[/db]``, a URL, or empty for the embedded server.
        data_dir: Where the embedded server keeps its socket.

    Raises:
        ConfigError: The value is neither ``host:port[/db]`` nor a supported URL.
    """
    if not value:
        return f"redis+socket://{Path(data_dir).resolve() / EMBEDDED_SOCKET}"
    if value.startswith("unix://"):
        return "redis+socket://" + value.removeprefix("unix://")
    if value.startswith(_URL_SCHEMES):
        return value
    match = _HOST_PORT.match(value)
    if not match:
        raise ConfigError(f"redis: expected host:port[/db] or a redis:// URL, got {value!r}")
    return f"redis://{match['host']}:{match['port']}/{match['db'] or 0}"


@dataclass(frozen=True)
class Sentinels:
    """``sentinel://[[user]:password@]host:port[/db];sentinel://…``, taken apart.

    As in Celery, the database and the credentials of the first URL are the master's.
    """

    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinels(url: str) -> Sentinels:
    """Split a ``;``-separated list of ``sentinel://`` URLs.

    Raises:
        ConfigError: A part is not ``sentinel://host:port[/db]``.
    """
    parts = []
    for chunk in url.split(";"):
        part = urllib.parse.urlsplit(chunk.strip())
        try:
            port = part.port
            db = int(part.path.strip("/") or 0)
        except ValueError:
            port = db = None
        if part.scheme != "sentinel" or not part.hostname or port is None or db is None:
            raise ConfigError(f"redis: expected sentinel://host:port[/db], got {chunk!r}")
        parts.append((part, port, db))
    first, _, db = parts[0]
    return Sentinels(
        tuple((part.hostname or "", port) for part, port, _ in parts),
        db,
        urllib.parse.unquote(first.username) if first.username else None,
        urllib.parse.unquote(first.password) if first.password else None,
    )


def load(
    files: Iterable[str | os.PathLike[str]] = (), env: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from YAML files, then the environment.

    Args:
        files: YAML files in order; when empty, those named by ``KINGTASK_CONFIG``.
        env: The environment to read (default ``os.environ``).

    Raises:
        ConfigError: A file is missing or malformed, a key is unknown, or a value
            has the wrong type.
    """
    env = os.environ if env is None else env
    paths = list(files) or [p for p in env.get(CONFIG_ENV, "").split(os.pathsep) if p]
    raw: dict[str, Any] = {}
    for path in paths:
        raw.update(_read_yaml(Path(path)))
    raw.update(_from_env(env))
    values = {name: _coerce(name, value) for name, value in raw.items()}
    settings = Settings(**values)
    # Refuse what would only fail later, in a child process.
    settings.zone  # noqa: B018
    if settings.sentinels and not settings.sentinel_master:
        raise ConfigError("redis names sentinels: set sentinel_master, the master's name")
    parse_addr(settings.addr)
    if settings.flower_addr:
        parse_addr(settings.flower_addr)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    unknown = sorted(set(map(str, data)) - _FIELDS.keys())
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]!r}")
    return {str(k): v for k, v in data.items() if v is not None}


def _from_env(env: Mapping[str, str]) -> dict[str, str]:
    values = {
        name: env[f"KINGTASK_{name.upper()}"]
        for name in _FIELDS
        if f"KINGTASK_{name.upper()}" in env
    }
    redis = env.get("KINGTASK_REDIS_URL") or env.get("REDIS_URL")
    if redis:
        values["redis"] = redis
    if "addr" not in values and env.get("PORT"):
        values["addr"] = f"0.0.0.0:{env['PORT']}"
    return values


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    try:
        if kind == "str":
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if kind == "int":
            number = int(value) if not isinstance(value, float | bool) else None
            if number is None or number < 0:
                raise ValueError
            return number
        if kind == "float":
            number = float(value)
            if isinstance(value, bool) or not number >= 0:
                raise ValueError
            return number
        # tuple[str, ...]: a YAML list, or a comma/space separated string.
        items = value if isinstance(value, list) else re.split(r"[,\s]+", str(value))
        return tuple(str(item) for item in items if str(item))
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: invalid value {value!r} (expected {kind})") from None


def parse_addr(addr: str) -> tuple[str, int]:
    """Split ``host:port`` into its parts.

    Raises:
        ConfigError: ``addr`` is not ``host:port`` with a port from 0 to 65535.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"expected host:port, got {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


@functools.cache
def current() -> Settings:
    """The settings of this process: files named by ``KINGTASK_CONFIG``, then the environment."""
    return load()
