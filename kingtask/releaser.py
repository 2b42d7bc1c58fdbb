"""Releasing parked attempts when they fall due, beside every worker.

Each Celery worker starts ``kingtask release`` (:class:`ReleaserStep`), which
runs a :class:`Releaser`: it sleeps until the earliest due time, or until an
earlier attempt is parked, and has :meth:`Scheduler.release_due
<kingtask.schedule.Scheduler.release_due>` publish what is due. Every few
seconds it also looks for attempts lost on their way to a worker
(:class:`~kingtask.schedule.TransitWatch`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from typing import Any, ClassVar

from celery import bootsteps

from kingtask import keys, processes
from kingtask.schedule import IDLE, Scheduler, TransitWatch

log = logging.getLogger(__name__)

LOOK_EVERY = 2.0
"""Seconds between two looks for attempts lost in transit."""


class Releaser(threading.Thread):
    """Releases due attempts until stopped: ``kingtask release`` runs one beside each worker."""

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__(name="kingtask-releaser", daemon=True)
        self.scheduler = scheduler
        self.stopping = threading.Event()

    def run(self) -> None:
        transit = TransitWatch(self.scheduler)
        next_look = 0.0
        while not self.stopping.is_set():
            try:
                with self.scheduler.client.pubsub(ignore_subscribe_messages=True) as wake:
                    wake.subscribe(keys.WAKE)
                    while not self.stopping.is_set():
                        if time.monotonic() >= next_look:
                            transit.check()
                            next_look = time.monotonic() + LOOK_EVERY
                        next_due = self.scheduler.release_due()
                        pause = (
                            IDLE
                            if next_due is None
                            else min(max(next_due - time.time(), 0.0), IDLE)
                        )
                        if pause > 0:
                            wake.get_message(timeout=pause)
            except Exception:
                log.exception("releaser failed; starting again in 1 s")
                self.stopping.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


class ReleaserStep(bootsteps.StartStopStep):
    """Starts ``kingtask release`` beside every Celery worker, so timing needs no extra service.

    The releaser runs in a child process of the worker rather than a thread:
    building thousands of messages for a burst of due tasks would otherwise
    hold the interpreter lock that the worker's consumer needs to hand tasks to
    its pool. The child dies with the worker.
    """

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, worker: Any) -> None:
        self.process = processes.spawn([sys.executable, "-m", "kingtask.cli", "release"])

    def stop(self, worker: Any) -> None:
        processes.stop(self.process, timeout=5)
