"""The Celery tasks: unpack the message, run one attempt, record or retry."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject

from kingtask import config, runners, schedule, shutdown
from kingtask.app import app
from kingtask.models import Outcome, Rpc, TaskSpec
from kingtask.releaser import ReleaserStep
from kingtask.store import Store

log = logging.getLogger(__name__)


@functools.cache
def store() -> Store:
    settings = config.current()
    return Store.from_settings(settings)


@functools.cache
def scheduler() -> schedule.Scheduler:
    return schedule.Scheduler(store())


@functools.cache
def heartbeat() -> schedule.Heartbeat:
    return schedule.Heartbeat(scheduler(), config.current().lease)


app.steps["worker"].add(ReleaserStep)
shutdown.bound_warm_shutdown(scheduler)


@app.task(name="kingtask.script", bind=True)
def script(self: Task, attempt: int = 0, **message: Any) -> None:
    """Run an executable from ``bin_path``."""
    attempt_task(TaskSpec.from_message("script", self.request.id, message), attempt)


@app.task(name="kingtask.rpc", bind=True)
def rpc(self: Task, attempt: int = 0, **message: Any) -> None:
    """Call a web API."""
    attempt_task(TaskSpec.from_message("rpc", self.request.id, message), attempt)


def attempt_task(spec: TaskSpec, attempt: int) -> None:
    """Run one attempt; when Redis stays out of reach, leave its message to come again.

    The message stays unacknowledged, so Celery delivers it again once Redis is
    back and the visibility timeout passed: the task is run again rather than lost.
    """
    try:
        _attempt(spec, attempt)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Reject(f"redis unavailable: {exc}", requeue=True) from exc


def _attempt(spec: TaskSpec, attempt: int) -> None:
    """Run one attempt, unless it is a duplicate; finish the task, or schedule a retry."""
    settings = config.current()
    with heartbeat().holding(spec, attempt) as mine:
        if not mine:
            return
        outcome = run(spec, settings, spec.max_run_time or settings.task_run_time)
        # The lease was renewed at most a third of it ago: while two thirds remain,
        # no other worker can take the attempt over, so its outcome is worth waiting
        # for through a Redis restart or a Sentinel failover.
        patiently(lambda: record(spec, attempt, outcome), settings.lease * 2 / 3)
    if settings.period:
        time.sleep(settings.period)


def record(spec: TaskSpec, attempt: int, outcome: Outcome) -> None:
    """Finish the task with the outcome of an attempt, or schedule its next attempt."""
    delay = schedule.retry_delay(spec.time_interval, attempt)
    if outcome.success or delay is None:
        store().finish(spec.uuid, outcome, datetime.now(UTC))
    else:
        scheduler().retry(spec, attempt + 1, time.time() + delay)


def patiently(action: Callable[[], None], patience: float) -> None:
    """Do ``action``, again while Redis cannot be reached, for up to ``patience`` seconds.

    Raises:
        redis.ConnectionError, redis.TimeoutError: Redis stayed away.
    """
    deadline = time.monotonic() + patience
    pause = 0.1
    while True:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("redis unavailable, trying again in %.1f s: %s", pause, exc)
            time.sleep(pause)
            pause = min(2 * pause, 1.0)


def run(spec: TaskSpec, settings: config.Settings, timeout: float) -> Outcome:
    job = spec.job
    if isinstance(job, Rpc):
        return runners.call_rpc(
            job.method,
            job.url,
            job.args,
            timeout=timeout,
            max_output_bytes=settings.max_output_bytes,
            allowed_hosts=settings.rpc_allowed_hosts,
        )
    return runners.run_script(
        settings.bin_path,
        job.bin_name,
        job.args,
        timeout=timeout,
        max_output_bytes=settings.max_output_bytes,
        env=runners.script_environment(settings.task_env),
    )
