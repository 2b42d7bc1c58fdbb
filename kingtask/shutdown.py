"""Graceful shutdown: SIGTERM lets running attempts finish, for a grace time.

Celery's warm shutdown stops taking messages and waits for the running ones,
however long they take. kingtask bounds that wait by ``shutdown_grace``: then it
kills the attempts still running (their scripts with them), ends their leases so
another worker may start them at once, and Celery hands their messages back to
the queue (a worker lost with late acknowledgement rejects them for redelivery).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import signals
from celery.worker import state

from kingtask import config, processes
from kingtask.schedule import Scheduler

log = logging.getLogger(__name__)


def bound_warm_shutdown(scheduler: Callable[[], Scheduler]) -> None:
    """Have every warm shutdown of a worker of this process end after ``shutdown_grace``."""

    def on_shutting_down(how: str = "", **_: Any) -> None:
        if how == "Warm":
            grace = config.current().shutdown_grace
            timer = threading.Timer(grace, hand_back, args=(scheduler(),))
            timer.daemon = True
            timer.start()

    signals.worker_shutting_down.connect(on_shutting_down, weak=False)


def hand_back(scheduler: Scheduler) -> None:
    """Stop the attempts still running in this worker and let them run elsewhere."""
    running = [request for request in tuple(state.active_requests) if request.worker_pid]
    if not running:
        return
    log.warning("shutdown grace time over: handing back %d running task(s)", len(running))
    pool = {request.worker_pid for request in running}
    processes.kill(set().union(*map(processes.descendants, pool)))
    for request in running:
        scheduler.end_lease(request.id, request.kwargs.get("attempt", 0))
