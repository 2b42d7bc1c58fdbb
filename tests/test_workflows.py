"""Stateful property test of the API: any sequence of submissions, cancellations and
reads keeps the counts, results and the queue consistent with a simple model.

Hypothesis drives the API (through Flask's test client, against the real private
Redis, with no worker) and checks the invariants after every step.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from kingtask.store import Store, day
from kingtask.web import create_app

from .conftest import forget_pending

CANCELLED = {"is_result_exist": 1, "is_success": 0, "message": "cancelled"}
NO_RESULT = {"is_result_exist": 0, "is_success": 0, "message": ""}


class ApiWorkflows(RuleBasedStateMachine):
    """A model of accepted tasks: which wait, which are queued, which were cancelled."""

    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self.app = create_app()
        self.client = self.app.test_client()
        self.store: Store = self.app.extensions["kingtask"].store
        forget_pending(self.store)
        self.base = self.counts()
        self.waiting: set[str] = set()
        self.queued: set[str] = set()
        self.cancelled: set[str] = set()

    def counts(self) -> tuple[int, int, int, int]:
        """Undo, scheduled, today's failures, queued messages."""
        today = day(datetime.now().astimezone(), self.store.zone)
        return (
            self.get("/api/v1/task/count/undo"),
            self.get("/api/v1/task/count/scheduled"),
            self.get(f"/api/v1/task/result/failure/{today}"),
            self.store.client.llen("celery"),
        )

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        assert response.status_code == 200, response.get_data()
        return response.get_json()

    @rule(target=tasks, later=st.sampled_from([0, 0, 60, 3600, 86400 * 30]), form=st.booleans())
    def submit(self, later: int, form: bool) -> str:
        params: dict[str, Any] = {"bin_name": "sum", "args": "1 2"}
        if later:
            params["start_time"] = int(time.time()) + later
        response = (
            self.client.post("/api/v1/task", data=params)
            if form
            else self.client.post("/api/v1/task", json=params)
        )
        assert response.status_code == 200, response.get_data()
        uuid = response.get_json()
        (self.waiting if later else self.queued).add(uuid)
        return uuid

    @rule(uuid=tasks)
    def cancel(self, uuid: str) -> None:
        response = self.client.delete(f"/api/v1/task/{uuid}")
        # Nothing runs here: a task waiting or queued is cancelled, and again gives the same.
        assert (response.status_code, response.get_json()) == (200, CANCELLED)
        self.cancelled.add(uuid)

    @rule(uuid=tasks)
    def read_result(self, uuid: str) -> None:
        result = self.get(f"/api/v1/task/result/{uuid}")
        assert result == (CANCELLED if uuid in self.cancelled else NO_RESULT)

    @rule(
        fields=st.fixed_dictionaries(
            {}, optional={"args": st.text(max_size=8), "start_time": st.integers(0, 2**40)}
        ),
        wrong=st.sampled_from([{"bin_name": "../sum"}, {"bin_name": ""}, {"bin_name": "/bin/sh"},
                               {"time_interval": "1,x"}, {"start_time": "soon"},
                               {"max_run_time": -1}, {"bin_name": None}]),
    )  # fmt: skip
    def submit_something_wrong(self, fields: dict[str, Any], wrong: dict[str, Any]) -> None:
        """A refused submission changes nothing."""
        before = self.counts()
        response = self.client.post("/api/v1/task", json={"bin_name": "sum", **fields, **wrong})
        assert response.status_code == 403, response.get_data()
        assert self.counts() == before

    @invariant()
    def counts_match_the_model(self) -> None:
        undo, scheduled, failures, queued = self.counts()
        assert undo == self.base[0] + len((self.waiting | self.queued) - self.cancelled)
        assert scheduled == self.base[1] + len(self.waiting - self.cancelled)
        assert failures == self.base[2] + len(self.cancelled)
        # A cancelled message stays queued: the worker that takes it drops it.
        assert queued == self.base[3] + len(self.queued)

    def teardown(self) -> None:
        forget_pending(self.store)


TestApiWorkflows = ApiWorkflows.TestCase
TestApiWorkflows.settings = settings(
    max_examples=30, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)
)
