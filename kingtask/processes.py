"""Child processes of kingtask: tied to their parent's life, stopped in two steps."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess

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
    """SIGTERM, and SIGKILL to the child's whole process group after ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
