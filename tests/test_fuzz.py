"""Fuzzing the live API from its own OpenAPI document: no 5xx, every answer as documented.

Each parameter may come from the query string or from the body, which an
OpenAPI document can only describe loosely (a parameter "required" in the body
may come from the query instead); so the two checks that judge whether
generated data should have been accepted or refused are left out. Every other
check runs: no server error, status codes, content types, headers, and bodies
that match the document.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from kingtask.store import Store
from kingtask.web import create_app

from .conftest import forget_pending

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", create_app())


@pytest.fixture(autouse=True, scope="module")
def forget_generated_tasks(store: Store) -> Iterator[None]:
    """The tasks accepted here (random executables and URLs) must not reach a later worker."""
    yield
    forget_pending(store)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_every_generated_request_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(excluded_checks=[negative_data_rejection, positive_data_acceptance])


class Workflows(schema.as_state_machine()):  # type: ignore[misc]
    """Submit, then follow the document's links: read the result, cancel, read again."""

    def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
        case.validate_response(
            response, excluded_checks=[negative_data_rejection, positive_data_acceptance]
        )


TestWorkflows = Workflows.TestCase
TestWorkflows.settings = settings(
    max_examples=25, stateful_step_count=6, deadline=None, suppress_health_check=list(HealthCheck)
)
