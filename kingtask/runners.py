"""Run one attempt of a task: a script or an HTTP call, ending in an Outcome.

Plain functions with no Celery in them. Each enforces its own deadline: a
script's whole process group is terminated, then killed; an HTTP exchange is
abandoned when its time is up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping
from urllib.parse import urljoin, urlsplit

import requests

from kingtask.models import Outcome, query_params

KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL when a script's time is up."""
DRAIN_TIME = 1.0
"""Seconds to collect output still buffered in the pipes after the group is killed."""
USER_AGENT = "kingtask"
MAX_REDIRECTS = 5


class NotRunnable(Exception):
    """Raised when ``bin_name`` does not name an executable inside ``bin_path``."""


def resolve_executable(bin_path: str, bin_name: str) -> str:
    """The real path of ``bin_name`` inside ``bin_path``.

    Symbolic links are followed, and the target must still lie inside
    ``bin_path`` and be an executable regular file.

    Raises:
        NotRunnable: with the failure message for the task.
    """
    root = os.path.realpath(bin_path)
    path = os.path.realpath(os.path.join(root, bin_name))
    if os.path.isabs(bin_name) or os.path.commonpath([root, path]) != root:
        raise NotRunnable(f"bin_name outside bin_path: {bin_name}")
    if not os.path.isfile(path):
        raise NotRunnable(f"bin_name not found: {bin_name}")
    if not os.access(path, os.X_OK):
        raise NotRunnable(f"bin_name not executable: {bin_name}")
    return path


def script_environment(
    names: Iterable[str], source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a script sees: only the allowed variables of ``source``."""
    source = os.environ if source is None else source
    return {name: source[name] for name in names if name in source}


def run_script(
    bin_path: str,
    bin_name: str,
    args: Iterable[str],
    *,
    timeout: float,
    max_output_bytes: int,
    env: Mapping[str, str],
) -> Outcome:
    """Run ``bin_path/bin_name args…`` (no shell) and judge it by the kingtask rule.

    Success is exit status 0 with nothing on stderr; its message is stdout.
    A failure's message is stderr, or what happened when stderr is empty.
    """
    try:
        path = resolve_executable(bin_path, bin_name)
        process = subprocess.Popen(
            [path, *args],
            cwd=os.path.realpath(bin_path),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except NotRunnable as exc:
        return Outcome(False, str(exc))
    except OSError as exc:
        return Outcome(False, f"cannot run {bin_name}: {exc.strerror}")
    with process:
        stdout, stderr, timed_out = _communicate(process, timeout, max_output_bytes)
        status = process.wait()
    return judge_script(status, stdout, stderr, timed_out=timed_out, timeout=timeout)


def judge_script(
    status: int, stdout: bytes, stderr: bytes, *, timed_out: bool, timeout: float
) -> Outcome:
    """The kingtask rule: success is exit status 0, no timeout and empty stderr."""
    if status == 0 and not stderr and not timed_out:
        return Outcome(True, _text(stdout))
    if stderr:
        return Outcome(False, _text(stderr))
    if timed_out:
        return Outcome(False, f"killed after {timeout:g} s")
    if status < 0:
        return Outcome(False, f"killed by signal {signal.Signals(-status).name}")
    return Outcome(False, f"exit status {status}")


def _text(output: bytes) -> str:
    return output.decode("utf-8", "replace").rstrip("\r\n")


class _Capped:
    """Collects up to ``limit`` bytes and drops the rest, so a pipe never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - self.size
        if room > 0:
            self.chunks.append(chunk[:room])
            self.size += min(room, len(chunk))

    def value(self) -> bytes:
        return b"".join(self.chunks)


def _communicate(
    process: subprocess.Popen[bytes], timeout: float, cap: int
) -> tuple[bytes, bytes, bool]:
    """Read both pipes until the process exits or its time is up.

    When the main process exits, or after SIGTERM and the grace, the whole
    process group gets SIGKILL, so no grandchild outlives its task.
    """
    assert process.stdout is not None and process.stderr is not None
    out, err = _Capped(cap), _Capped(cap)
    exited = os.pidfd_open(process.pid)
    with selectors.DefaultSelector() as selector:
        for stream, sink in ((process.stdout, out), (process.stderr, err)):
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ, sink)
        selector.register(exited, selectors.EVENT_READ, None)
        try:
            deadline = time.monotonic() + timeout
            timed_out = not _pump(selector, deadline)
            if timed_out:
                _signal_group(process.pid, signal.SIGTERM)
                _pump(selector, time.monotonic() + KILL_GRACE)
            _signal_group(process.pid, signal.SIGKILL)
            selector.unregister(exited)
            _pump(selector, time.monotonic() + DRAIN_TIME)
        finally:
            os.close(exited)
    return out.value(), err.value(), timed_out


def _pump(selector: selectors.BaseSelector, deadline: float) -> bool:
    """Move pipe output into the sinks until the process exits (True) or the deadline.

    With no process to watch, returns True once every pipe reached end of file.
    """
    while True:
        if not selector.get_map():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        for key, _ in selector.select(remaining):
            if key.data is None:
                return True
            chunk = os.read(key.fd, 65536)
            if chunk:
                key.data.add(chunk)
            else:
                selector.unregister(key.fileobj)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # The leader is not reaped before this, so its pid cannot name another group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


class Refused(Exception):
    """Raised when a URL is not one an rpc task may call; the message says why."""


def check_url(url: str, allowed_hosts: Collection[str] = ()) -> None:
    """Refuse what an rpc task may not call, before connecting and at every redirect.

    Only http and https. With ``allowed_hosts``, only those hosts; without, any
    host but one that resolves to a link-local address (169.254.0.0/16,
    fe80::/10: where cloud metadata services answer).

    Raises:
        Refused: with the failure message for the task.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise Refused(f"url not allowed: {url[:200]}: only http:// and https:// URLs")
    if allowed_hosts:
        if host not in allowed_hosts:
            raise Refused(f"url not allowed: host {host} is not in rpc_allowed_hosts")
        return
    try:
        found = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"request failed: cannot resolve {host}: {exc}") from None
    for *_, address in found:
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if ip.is_link_local or (mapped is not None and mapped.is_link_local):
            raise Refused(f"url not allowed: {host} is a link-local address")


class _CheckedSession(requests.Session):
    """A session that checks every redirect target and ignores the environment."""

    def __init__(self, allowed_hosts: Collection[str]) -> None:
        super().__init__()
        self.allowed_hosts = allowed_hosts
        self.max_redirects = MAX_REDIRECTS
        self.trust_env = False  # never send proxy settings or .netrc credentials

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target:
            check_url(urljoin(resp.url, target), self.allowed_hosts)
        return target


def call_rpc(
    method: str,
    url: str,
    args: str,
    *,
    timeout: float,
    max_output_bytes: int,
    allowed_hosts: Collection[str] = (),
) -> Outcome:
    """Call a web API; a 2xx status is success and the body is the message.

    POST and PUT send ``args`` as a JSON body; GET and DELETE send its members
    as query parameters. ``timeout`` bounds connecting, waiting and reading.
    See :func:`check_url` for what may be called.
    """
    request: dict[str, object] = {"headers": {"User-Agent": USER_AGENT}}
    if method in ("GET", "DELETE"):
        request["params"] = query_params(args)
    elif args:
        request["data"] = args.encode()
        request["headers"] = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
    deadline = time.monotonic() + timeout
    try:
        check_url(url, allowed_hosts)
        with (
            _CheckedSession(allowed_hosts) as session,
            session.request(method, url, timeout=timeout, stream=True, **request) as response,
        ):
            body = _read_body(response, deadline, max_output_bytes)
    except Refused as exc:
        return Outcome(False, str(exc))
    except (_Expired, requests.Timeout):
        return Outcome(False, f"timed out after {timeout:g} s")
    except requests.RequestException as exc:
        return Outcome(False, f"request failed: {_reason(exc)}")
    text = body.decode(response.encoding or "utf-8", "replace")
    if 200 <= response.status_code < 300:
        return Outcome(True, text)
    start = text[:512].strip()
    return Outcome(False, f"HTTP {response.status_code}" + (f": {start}" if start else ""))


class _Expired(Exception):
    pass


def _read_body(response: requests.Response, deadline: float, cap: int) -> bytes:
    body = _Capped(cap)
    for chunk in response.iter_content(65536):
        body.add(chunk)
        if time.monotonic() > deadline:
            raise _Expired
        if body.size >= cap:
            break
    return body.value()


def _reason(exc: requests.RequestException) -> str:
    """The innermost cause of a requests error, without the library's wrapping."""
    cause: BaseException = exc
    while cause.__context__ is not None and not isinstance(cause, OSError):
        cause = cause.__context__
    return str(cause) or type(cause).__name__
