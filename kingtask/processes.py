"""Child processes of kingtask: tied to their parent's life, stopped in two steps."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: have Linux send it SIGTERM when its parent dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: list[str], **options: object) -> subprocess.Popen[bytes]:
    """Start a child in a session of its own that dies with its parent.

    Its own session keeps a terminal's Ctrl-C away from it: the parent decides
    when and in which order its children stop.
    """
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
        **options,  # type: ignore[call-overload]
    )


def stop(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, and after ``timeout`` seconds SIGKILL to the child and all below it.

    Everything below it is killed too, not only its process group: task scripts
    run in sessions of their own.
    """
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(descendants(process.pid))
        process.wait()


def kill(pids: set[int]) -> None:
    """SIGKILL to all of ``pids`` at once, as if their machine died.

    All are stopped first: a worker must not see its task's script die and
    record that as the task's outcome before it is killed itself.
    """
    for signum in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def descendants(pid: int) -> set[int]:
    """``pid`` and every living process below it, read from ``/proc``."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name in parentheses may hold spaces: the parent comes after it.
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found
