"""When attempts run: the first at ``start_time``, each retry after its delay.

Every wait goes through :func:`enqueue`; nothing else knows how waiting works.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from kingtask import messages
from kingtask.app import app
from kingtask.messages import Publication
from kingtask.models import TaskSpec
from kingtask.store import Store


def retry_delay(time_interval: tuple[int, ...], attempt: int) -> int | None:
    """Seconds to wait after attempt ``attempt`` (0 = the first) failed; None: no retry left."""
    return time_interval[attempt] if attempt < len(time_interval) else None


def submit(store: Store, spec: TaskSpec) -> None:
    """Accept a new task: count it as undone and hand its first attempt to the workers."""
    store.accept(spec.uuid, _publication(store, spec, attempt=0, due=spec.start_time))


def enqueue(store: Store, spec: TaskSpec, *, attempt: int, due: float) -> None:
    """Run attempt ``attempt`` of ``spec`` at ``due`` (unix seconds; past means now)."""
    store.publish(_publication(store, spec, attempt=attempt, due=due))


def _publication(store: Store, spec: TaskSpec, *, attempt: int, due: float) -> Publication:
    eta = datetime.fromtimestamp(due, UTC) if due > time.time() else None
    kwargs = {**spec.to_message(), "attempt": attempt}
    return messages.publication(app, store.client, f"kingtask.{spec.kind}", spec.uuid, kwargs, eta)
