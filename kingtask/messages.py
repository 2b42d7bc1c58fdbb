"""Celery task messages, written to Redis exactly as kombu's Redis transport writes them.

Building the message here, rather than through ``send_task``, lets kingtask put
it in the same Redis transaction as its own bookkeeping: a task is accepted
(counted and queued) all at once or not at all, in one round trip. Celery
builds the message itself (``app.amqp.as_task_v2``); only kombu's envelope is
written here, and a test compares it with what kombu writes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from celery import Celery
from celery.events import Event
from celery.utils.time import utcoffset

QUEUE = "celery"
"""The queue kingtask's tasks go to: Celery's default queue, a Redis list of that name."""
UNACKED = "unacked"
"""The hash where kombu keeps the messages delivered to workers and not yet acknowledged."""
EVENT_EXCHANGE = "celeryev"
_HOSTNAME = f"gen{os.getpid()}@{socket.gethostname()}"


@dataclass(frozen=True)
class Publication:
    """The Redis commands that publish one task: a push onto the queue, and its sent event."""

    queue: str
    message: str
    event_topic: str | None = None
    event: str | None = None

    @property
    def commands(self) -> list[str]:
        """Message, event topic and event, as the publishing Lua scripts take them."""
        return [self.message, self.event_topic or "", self.event or ""]


def _envelope(
    body: Any, headers: dict[str, Any], properties: dict[str, Any], routing: dict[str, str]
) -> str:
    encoded = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps(
        {
            "body": encoded,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_info": routing,
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def publication(
    app: Celery,
    client: redis.Redis,
    name: str,
    task_id: str,
    kwargs: dict[str, Any],
    eta: datetime | None,
) -> Publication:
    """What to write to Redis so that a worker runs task ``name`` with ``kwargs``.

    Args:
        app: The Celery app (its message protocol and settings).
        client: The broker's Redis (its database number names the event topic).
        name: The registered task name.
        task_id: The Celery task id.
        kwargs: The task's keyword arguments, JSON-ready.
        eta: When the worker should run it; None for now.
    """
    send_event = bool(app.conf.task_send_sent_event)
    headers, properties, body, sent = app.amqp.as_task_v2(
        task_id,
        name,
        args=(),
        kwargs=kwargs,
        eta=eta,
        create_sent_event=send_event,
        # kwargs are plain JSON data: repr is what Celery's safe repr would give, faster.
        argsrepr="()",
        kwargsrepr=repr(kwargs)[: app.amqp.kwargsrepr_maxsize],
    )
    properties = {**properties, "delivery_mode": 2}
    message = _envelope(body, headers, properties, {"exchange": "", "routing_key": QUEUE})
    if not send_event:
        return Publication(QUEUE, message)
    event = Event(
        "task-sent",
        hostname=_HOSTNAME,
        utcoffset=utcoffset(),
        pid=os.getpid(),
        clock=app.clock.forward(),
        **sent,
        queue=QUEUE,
        exchange="",
        routing_key=QUEUE,
    )
    routing_key = "task.sent"
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return Publication(
        QUEUE,
        message,
        f"/{db}.{EVENT_EXCHANGE}/{routing_key}",
        _envelope(
            event,
            {"hostname": _HOSTNAME},
            {"delivery_mode": 1},
            {"exchange": EVENT_EXCHANGE, "routing_key": routing_key},
        ),
    )
