"""Celery settings for kingtask, derived from kingtask's own configuration.

kingtask keeps results and statistics itself (``kingtask.store``), so Celery
stores no task results; Redis is broker and store.
"""

from __future__ import annotations

from kingtask import config
from kingtask.runners import KILL_GRACE

_settings = config.current()

broker_url = _settings.redis_url
result_backend = _settings.redis_url
task_ignore_result = True
broker_connection_retry_on_startup = True

task_serializer = "json"
accept_content = ["json"]
enable_utc = True

# A task is acknowledged when it is done, so one whose worker dies is delivered again.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_concurrency = _settings.concurrency or None

# Runners enforce max_run_time themselves; this only stops a worker that hangs.
task_time_limit = _settings.max_task_run_time + KILL_GRACE + 60

# Nothing waits in Celery (kingtask.schedule parks every wait in Redis), so a
# message is unacknowledged only while its attempt runs. When its worker dies,
# Celery delivers it again after the visibility timeout (the lease) and a sweep
# (every quarter lease, at most 10 s); kingtask's attempt lease, renewed while
# the attempt runs, keeps a long attempt from running twice.
_visibility_timeout = _settings.visibility_timeout or _settings.lease
broker_transport_options = {
    "visibility_timeout": _visibility_timeout,
    "unacked_restore_interval": max(1, min(10, _visibility_timeout // 4)),
    "unacked_restore_throttle": 1,
}

# With Redis Sentinel, Celery too asks the sentinels for the master.
if _settings.sentinels:
    _sentinel_options: dict[str, object] = {"master_name": _settings.sentinel_master}
    if _settings.sentinel_password:
        _sentinel_options["sentinel_kwargs"] = {"password": _settings.sentinel_password}
    broker_transport_options.update(_sentinel_options)
    result_backend_transport_options = _sentinel_options

# Flower shows tasks with their names and arguments.
worker_send_task_events = True
task_send_sent_event = True
