"""Messages kingtask writes to Redis are the ones kombu would write."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from kingtask import messages
from kingtask.app import app
from kingtask.store import Store

KWARGS = {"bin_name": "sum", "args": ["1", "2"], "attempt": 0}
VARYING = {"id", "root_id", "origin", "ignore_result", "delivery_tag", "reply_to", "correlation_id"}


def decoded(raw: str) -> dict[str, Any]:
    envelope = json.loads(raw)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


def comparable(envelope: dict[str, Any]) -> dict[str, Any]:
    body = envelope["body"]
    if isinstance(body, dict):  # an event
        body = {
            k: v
            for k, v in body.items()
            if k not in ("uuid", "root_id", "timestamp", "clock", "hostname", "pid")
        }
    return {
        **envelope,
        "body": body,
        "headers": {
            k: v for k, v in envelope["headers"].items() if k not in VARYING | {"hostname"}
        },
        "properties": {k: v for k, v in envelope["properties"].items() if k not in VARYING},
    }


def written_by_kombu(store: Store) -> tuple[str, str]:
    pubsub = store.client.pubsub()
    pubsub.psubscribe("*celeryev*")
    pubsub.get_message(timeout=1)
    store.client.delete(messages.QUEUE)
    app.send_task("kingtask.script", kwargs=KWARGS, task_id="kombu")
    queued = store.client.lpop(messages.QUEUE)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        event = pubsub.get_message(timeout=1)
        if event and event["type"] == "pmessage":
            pubsub.close()
            return queued, event["data"]
    raise AssertionError("no task-sent event")


def test_a_task_message_matches_the_one_kombu_writes(store: Store) -> None:
    queued, _ = written_by_kombu(store)
    ours = messages.publication(app, store.client, "kingtask.script", "ours", KWARGS, None)
    assert ours.queue == messages.QUEUE
    assert comparable(decoded(ours.message)) == comparable(decoded(queued))
    assert decoded(ours.message)["headers"]["id"] == "ours"


def test_the_sent_event_matches_the_one_celery_publishes(store: Store) -> None:
    _, event = written_by_kombu(store)
    ours = messages.publication(app, store.client, "kingtask.script", "ours", KWARGS, None)
    assert ours.event is not None
    assert comparable(decoded(ours.event)) == comparable(decoded(event))
    assert ours.event_topic == "/0.celeryev/task.sent"
