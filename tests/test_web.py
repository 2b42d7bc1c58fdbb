"""The HTTP API v1: every endpoint, every encoding, every class of bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from kingtask import config, keys
from kingtask.models import Outcome, new_uuid, parse_uuid
from kingtask.store import Store
from kingtask.web import create_app

from .conftest import queued

SCRIPT_PATHS = ["/api/v1/task", "/api/v1/task/script"]
QUEUE = "celery"


def submitted(response: Any) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "application/json; charset=utf-8"
    uuid = json.loads(response.get_data())
    assert response.get_data() == f'"{uuid}"'.encode()
    return parse_uuid(uuid)


@pytest.mark.parametrize("path", SCRIPT_PATHS)
def test_a_script_task_is_accepted_as_json_with_strings(
    client: Any, store: Store, path: str
) -> None:
    body = {
        "bin_name": "example",
        "args": "12 34",
        "start_time": "1445562622",
        "time_interval": "60 600 3600",
    }
    uuid = submitted(client.post(path, json=body))
    message = queued(store, uuid)
    assert message["task"] == "kingtask.script"
    assert (message["bin_name"], message["args"], message["time_interval"]) == (
        "example",
        ["12", "34"],
        [60, 600, 3600],
    )
    assert message["attempt"] == 0
    assert message["eta"] is None  # a past start_time means now
    assert store.client.sismember(keys.UNDO, uuid)


def test_json_numbers_and_lists_are_accepted(client: Any, store: Store) -> None:
    body = {
        "bin_name": "example",
        "args": ["12", "34"],
        "start_time": 0,
        "time_interval": [1, 2],
        "max_run_time": 5,
    }
    message = queued(store, submitted(client.post("/api/v1/task/script", json=body)))
    assert (message["args"], message["time_interval"], message["max_run_time"]) == (
        ["12", "34"],
        [1, 2],
        5,
    )


def test_a_form_is_accepted(client: Any, store: Store) -> None:
    uuid = submitted(client.post("/api/v1/task", data={"bin_name": "example", "args": "1 2"}))
    assert queued(store, uuid)["args"] == ["1", "2"]


def test_a_multipart_form_is_accepted(client: Any, store: Store) -> None:
    response = client.post(
        "/api/v1/task",
        data={"bin_name": "example", "args": "1 2"},
        content_type="multipart/form-data",
    )
    assert queued(store, submitted(response))["bin_name"] == "example"


def test_the_query_string_is_accepted(client: Any, store: Store) -> None:
    uuid = submitted(client.post("/api/v1/task/script?bin_name=example&args=3+4"))
    assert queued(store, uuid)["args"] == ["3", "4"]


def test_json_without_a_content_type_is_accepted(client: Any, store: Store) -> None:
    response = client.post("/api/v1/task", data=b'{"bin_name": "example"}', content_type="")
    assert queued(store, submitted(response))["bin_name"] == "example"


def test_a_future_start_time_parks_the_task_instead_of_queueing_it(
    client: Any, store: Store
) -> None:
    scheduled = client.get("/api/v1/task/count/scheduled").get_json()
    body = {"bin_name": "example", "start_time": 4102444800}
    uuid = submitted(client.post("/api/v1/task", json=body))
    assert store.client.zscore(keys.PARKED, uuid) == 4102444800
    with pytest.raises(AssertionError, match="not queued"):
        queued(store, uuid)
    assert client.get("/api/v1/task/count/scheduled").get_json() == scheduled + 1
    assert store.client.sismember(keys.UNDO, uuid)


def test_an_rpc_task_is_accepted(client: Any, store: Store) -> None:
    body = {"method": "post", "url": "http://127.0.0.1:1323/sum", "args": '{"a":132,"b":75}'}
    message = queued(store, submitted(client.post("/api/v1/task/rpc", json=body)))
    assert message["task"] == "kingtask.rpc"
    assert (message["method"], message["url"], message["args"]) == (
        "POST",
        "http://127.0.0.1:1323/sum",
        '{"a":132,"b":75}',
    )


def test_rpc_args_may_be_a_json_object(client: Any, store: Store) -> None:
    body = {"method": "GET", "url": "http://h/x", "args": {"a": 1}}
    assert queued(store, submitted(client.post("/api/v1/task/rpc", json=body)))["args"] == '{"a":1}'


BAD_REQUESTS = [
    ("/api/v1/task", {}, "bin_name is required"),
    ("/api/v1/task/script", {"bin_name": "../etc/passwd"}, "bin_name must not contain"),
    ("/api/v1/task/script", {"bin_name": "/bin/sh"}, "bin_name must be relative to bin_path"),
    (
        "/api/v1/task/script",
        {"bin_name": "x", "start_time": "tomorrow"},
        "start_time must be an integer",
    ),
    (
        "/api/v1/task/script",
        {"bin_name": "x", "time_interval": "1,2"},
        "each delay of time_interval must be an integer",
    ),
    (
        "/api/v1/task/script",
        {"bin_name": "x", "max_run_time": 10**9},
        "max_run_time must be between",
    ),
    ("/api/v1/task/script", {"bin_name": "x", "args": {"a": 1}}, "args must be a string"),
    ("/api/v1/task/rpc", {"url": "http://h/"}, "method is required"),
    (
        "/api/v1/task/rpc",
        {"method": "PATCH", "url": "http://h/"},
        "method must be GET, PUT, POST or DELETE",
    ),
    ("/api/v1/task/rpc", {"method": "GET"}, "url is required"),
    (
        "/api/v1/task/rpc",
        {"method": "GET", "url": "file:///etc/passwd"},
        "url must start with http:// or https://",
    ),
    (
        "/api/v1/task/rpc",
        {"method": "POST", "url": "http://h/", "args": "{a"},
        "args must be a JSON document",
    ),
    (
        "/api/v1/task/rpc",
        {"method": "GET", "url": "http://h/", "args": "[1]"},
        "args must be a JSON object for GET and DELETE",
    ),
]


@pytest.mark.parametrize(("path", "body", "message"), BAD_REQUESTS)
def test_bad_input_gets_403_with_a_message_and_stores_nothing(
    client: Any, store: Store, path: str, body: dict[str, Any], message: str
) -> None:
    encodings = [{"json": body}]
    if all(isinstance(value, str) for value in body.values()):
        encodings += [{"data": body}, {"query_string": body}]
    for send in encodings:
        undo, queue = store.undo_count(), store.client.llen(QUEUE)
        response = client.post(path, **send)
        assert response.status_code == 403
        assert response.content_type == "application/json; charset=utf-8"
        assert json.loads(response.get_data()).startswith(message)
        assert (store.undo_count(), store.client.llen(QUEUE)) == (undo, queue)


@pytest.mark.parametrize("data", [b"{", b"[1, 2]", b'"x"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_gets_403(client: Any, data: bytes) -> None:
    response = client.post("/api/v1/task", data=data, content_type="application/json")
    assert response.status_code == 403
    assert json.loads(response.get_data()).startswith("request body")


def test_a_body_over_the_limit_gets_413_and_stores_nothing(
    settings: config.Settings, store: Store
) -> None:
    client = create_app(replace(settings, max_body_bytes=1000)).test_client()
    undo = store.undo_count()
    response = client.post("/api/v1/task", json={"bin_name": "example", "args": "1 " * 1000})
    assert response.status_code == 413
    assert json.loads(response.get_data()) == "request body larger than 1000 bytes"
    assert store.undo_count() == undo


def test_the_result_of_a_finished_task_has_exactly_three_members(client: Any, store: Store) -> None:
    uuid = new_uuid()
    store.client.sadd(keys.UNDO, uuid)
    store.finish(uuid, Outcome(True, "46"), __import__("datetime").datetime.now().astimezone())
    response = client.get(f"/api/v1/task/result/{uuid}")
    assert response.status_code == 200
    assert response.get_data() == b'{"is_result_exist":1,"is_success":1,"message":"46"}'
    assert len(response.get_data()) == 51  # the seed's Content-Length


def test_an_unknown_or_unfinished_task_has_no_result(client: Any, store: Store) -> None:
    uuid = submitted(client.post("/api/v1/task", json={"bin_name": "example"}))
    for unknown in (uuid, new_uuid()):
        assert client.get(f"/api/v1/task/result/{unknown}").get_json() == {
            "is_result_exist": 0,
            "is_success": 0,
            "message": "",
        }


@pytest.mark.parametrize("bad", ["x", "123", "db3e0b22a2494ed29532fc6318ccd321", "success", ".."])
def test_a_result_for_something_that_is_not_a_uuid_gets_403(client: Any, bad: str) -> None:
    response = client.get(f"/api/v1/task/result/{bad}")
    assert (response.status_code, response.get_json()) == (403, "not a task uuid")


def test_the_undo_count_counts_accepted_unfinished_tasks(client: Any) -> None:
    before = client.get("/api/v1/task/count/undo").get_json()
    submitted(client.post("/api/v1/task", json={"bin_name": "example"}))
    submitted(client.post("/api/v1/task/rpc", json={"method": "GET", "url": "http://h/"}))
    response = client.get("/api/v1/task/count/undo")
    assert response.get_data() == str(before + 2).encode()


def test_daily_counts_are_plain_integers(client: Any, store: Store) -> None:
    store.client.set(keys.daily("success", "2015-10-30"), 3)
    store.client.set(keys.daily("failure", "2015-10-30"), 2)
    assert client.get("/api/v1/task/result/success/2015-10-30").get_data() == b"3"
    assert client.get("/api/v1/task/result/failure/2015-10-30").get_data() == b"2"
    assert client.get("/api/v1/task/result/success/1999-01-01").get_data() == b"0"


@pytest.mark.parametrize("bad", ["2015-13-01", "20151030", "today", "2015-10-30T00:00"])
def test_a_bad_date_gets_403(client: Any, bad: str) -> None:
    response = client.get(f"/api/v1/task/result/failure/{bad}")
    assert (response.status_code, response.get_json()) == (403, "date must be a day as YYYY-MM-DD")


def test_unknown_paths_and_methods_answer_json(client: Any) -> None:
    assert (
        client.get("/api/v1/nothing").status_code,
        client.get("/api/v1/nothing").get_json(),
    ) == (404, "not found")
    response = client.get("/api/v1/task/script")
    assert (response.status_code, response.get_json()) == (405, "method not allowed")
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


def test_with_an_auth_token_every_endpoint_needs_it(settings: config.Settings) -> None:
    client = create_app(replace(settings, auth_token="s3cret")).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        response = client.get("/api/v1/task/count/undo", headers=headers)
        assert (response.status_code, response.get_json()) == (401, "missing or wrong bearer token")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = client.post("/api/v1/task", json={"bin_name": "sum"})
    assert response.status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert client.get("/api/v1/task/count/undo", headers=good).status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200  # the document stays public


def test_internal_errors_show_no_trace_or_path(settings: config.Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"secret detail in {__file__}")

    response = app.test_client().get("/boom")
    assert (response.status_code, response.get_json()) == (500, "internal error")
    assert b"Traceback" not in response.get_data()


def test_a_parameter_given_in_the_query_and_the_body_gets_403(client: Any, store: Store) -> None:
    undo = store.undo_count()
    response = client.post("/api/v1/task?bin_name=sum", json={"bin_name": "example"})
    assert (response.status_code, response.get_json()) == (
        403,
        "bin_name is given both in the query string and in the body",
    )
    assert store.undo_count() == undo
