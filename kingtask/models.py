"""Task specs and results; the one place where client input is validated.

The API hands every accepted encoding (JSON numbers or strings, forms, query
strings) to :func:`script_spec` or :func:`rpc_spec` as a plain mapping; what comes
back is a :class:`TaskSpec` that everything behind the API trusts.
"""

from __future__ import annotations

import json
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from kingtask.errors import InvalidRequest

MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
MAX_DELAY = 10 * 366 * 24 * 3600
MAX_RETRIES = 100
MAX_URL_LENGTH = 8192
METHODS = ("GET", "PUT", "POST", "DELETE")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


@dataclass(frozen=True)
class Script:
    """Run ``bin_path/bin_name`` with ``args``."""

    bin_name: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rpc:
    """Call ``method url``; ``args`` is a JSON document, or empty."""

    method: str
    url: str
    args: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """A task as accepted: what to run, when, how often to retry, for how long."""

    uuid: str
    job: Script | Rpc
    start_time: int = 0
    """Unix seconds; 0 means now."""
    time_interval: tuple[int, ...] = ()
    """Retry delays in seconds, one per retry."""
    max_run_time: int | None = None
    """Seconds; None means the worker's ``task_run_time``."""

    @property
    def kind(self) -> str:
        return "script" if isinstance(self.job, Script) else "rpc"

    def to_message(self) -> dict[str, Any]:
        """The task as JSON-ready keyword arguments (what Flower shows)."""
        job = self.job
        if isinstance(job, Script):
            fields: dict[str, Any] = {"bin_name": job.bin_name, "args": list(job.args)}
        else:
            fields = {"method": job.method, "url": job.url, "args": job.args}
        return {
            **fields,
            "start_time": self.start_time,
            "time_interval": list(self.time_interval),
            "max_run_time": self.max_run_time,
        }

    @classmethod
    def from_message(cls, kind: str, uuid: str, message: Mapping[str, Any]) -> TaskSpec:
        """Rebuild a spec from :meth:`to_message` output (trusted input)."""
        fields = dict(message)
        common = {
            "start_time": fields.pop("start_time", 0),
            "time_interval": tuple(fields.pop("time_interval", ())),
            "max_run_time": fields.pop("max_run_time", None),
        }
        job: Script | Rpc
        if kind == "script":
            job = Script(fields["bin_name"], tuple(fields.get("args", ())))
        else:
            job = Rpc(fields["method"], fields["url"], fields.get("args", ""))
        return cls(uuid=uuid, job=job, **common)


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended."""

    success: bool
    message: str


def new_uuid() -> str:
    return str(uuidlib.uuid4())


# -- the parameters shared by both kinds -------------------------------------


def script_spec(params: Mapping[str, Any], *, max_task_run_time: int) -> TaskSpec:
    """Validate the parameters of ``POST /api/v1/task/script``.

    Raises:
        InvalidRequest: A parameter is missing or malformed.
    """
    job = Script(parse_bin_name(params.get("bin_name")), parse_script_args(params.get("args")))
    return _spec(job, params, max_task_run_time)


def rpc_spec(params: Mapping[str, Any], *, max_task_run_time: int) -> TaskSpec:
    """Validate the parameters of ``POST /api/v1/task/rpc``.

    Raises:
        InvalidRequest: A parameter is missing or malformed.
    """
    method = parse_method(params.get("method"))
    job = Rpc(method, parse_url(params.get("url")), parse_rpc_args(params.get("args"), method))
    return _spec(job, params, max_task_run_time)


def _spec(job: Script | Rpc, params: Mapping[str, Any], max_task_run_time: int) -> TaskSpec:
    return TaskSpec(
        uuid=new_uuid(),
        job=job,
        start_time=parse_start_time(params.get("start_time")),
        time_interval=parse_time_interval(params.get("time_interval")),
        max_run_time=parse_max_run_time(params.get("max_run_time"), max_task_run_time),
    )


def _is_absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _integer(name: str, value: Any, *, low: int, high: int) -> int:
    """An integer from a JSON number or a decimal string, within ``low..high``."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        raise InvalidRequest(f"{name} must be an integer")
    if not low <= number <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return number


def parse_start_time(value: Any) -> int:
    """Unix seconds to start at; absent, empty or 0 mean now (0)."""
    if _is_absent(value):
        return 0
    return _integer("start_time", value, low=0, high=MAX_TIMESTAMP)


def parse_time_interval(value: Any) -> tuple[int, ...]:
    """Retry delays: ``"60 600 3600"`` or a JSON list of integers."""
    if _is_absent(value):
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split()
    elif isinstance(value, list):
        items = value
    else:
        raise InvalidRequest("time_interval must be delays in seconds separated by spaces")
    if len(items) > MAX_RETRIES:
        raise InvalidRequest(f"time_interval allows at most {MAX_RETRIES} retries")
    return tuple(
        _integer("each delay of time_interval", item, low=0, high=MAX_DELAY) for item in items
    )


def parse_max_run_time(value: Any, limit: int) -> int | None:
    """Seconds a task may run; absent, empty or 0 mean the worker's default."""
    if _is_absent(value):
        return None
    seconds = _integer("max_run_time", value, low=0, high=limit)
    return seconds or None


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    if "\x00" in value:
        raise InvalidRequest(f"{name} must not contain NUL characters")
    return value


# -- script parameters --------------------------------------------------------


def parse_bin_name(value: Any) -> str:
    """An executable's path relative to ``bin_path``; it may name a subfolder.

    Absolute paths and ``.``/``..`` or empty components are refused here; the
    worker also checks where the name resolves to (symbolic links).
    """
    if _is_absent(value):
        raise InvalidRequest("bin_name is required")
    name = _text("bin_name", value)
    if name.startswith("/"):
        raise InvalidRequest("bin_name must be relative to bin_path")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidRequest("bin_name must not contain '.', '..' or empty path components")
    return name


def parse_script_args(value: Any) -> tuple[str, ...]:
    """Arguments: a string separated by spaces, or a JSON list of strings."""
    if _is_absent(value):
        return ()
    if isinstance(value, list):
        return tuple(_text("each element of args", item) for item in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = json.dumps(value)
    return tuple(_text("args", value).split())


# -- rpc parameters -----------------------------------------------------------


def parse_method(value: Any) -> str:
    if _is_absent(value):
        raise InvalidRequest("method is required")
    method = _text("method", value).strip().upper()
    if method not in METHODS:
        raise InvalidRequest("method must be GET, PUT, POST or DELETE")
    return method


def parse_url(value: Any) -> str:
    """An ``http://`` or ``https://`` URL with a host."""
    if _is_absent(value):
        raise InvalidRequest("url is required")
    url = _text("url", value).strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"url must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidRequest("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidRequest("url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidRequest("url must start with http:// or https://")
    if not host:
        raise InvalidRequest("url must name a host")
    return url


def parse_rpc_args(value: Any, method: str) -> str:
    """A JSON document as text; for GET and DELETE it must be an object."""
    if _is_absent(value):
        return ""
    if isinstance(value, dict | list):
        document = value
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = _text("args", value)
        try:
            document = json.loads(text)
        except ValueError:
            raise InvalidRequest("args must be a JSON document") from None
    if method in ("GET", "DELETE") and not isinstance(document, dict):
        raise InvalidRequest("args must be a JSON object for GET and DELETE")
    return text


def query_params(args: str) -> dict[str, str]:
    """The query parameters a GET or DELETE sends for ``args`` (a JSON object)."""
    if not args:
        return {}
    return {
        key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for key, value in json.loads(args).items()
    }


# -- path parameters ----------------------------------------------------------


def parse_uuid(value: str) -> str:
    if not _UUID.fullmatch(value):
        raise InvalidRequest("not a task uuid")
    return value.lower()


def parse_date(value: str) -> str:
    """A day as ``2006-01-02``."""
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest("date must be a day as YYYY-MM-DD") from None
    return value
