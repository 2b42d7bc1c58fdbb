"""The OpenAPI document: valid OpenAPI 3.0, and in step with the live API v1.

``openapi-spec-validator`` checks the document itself; ``jsonschema`` checks live
response bodies and the document's examples against the document's schemas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft4Validator, FormatChecker
from openapi_spec_validator import validate
from werkzeug.test import TestResponse

from kingtask import config, keys, models
from kingtask.errors import InvalidRequest
from kingtask.models import Outcome, new_uuid
from kingtask.store import Store
from kingtask.web import create_app

DOCUMENT: dict[str, Any] = json.loads(
    resources.files("kingtask").joinpath("openapi.json").read_text()
)
JSON = "application/json"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow local references (``#/components/<kind>/<name>``) to a real object."""
    while "$ref" in node:
        ref, node = node["$ref"], DOCUMENT
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """What is wrong with ``instance`` under ``schema``, one of the document's schemas."""
    # An OpenAPI 3.0 schema is JSON Schema draft 4 with extra annotations; its
    # "#/components/..." references resolve against the components carried along.
    root = {**schema, "components": DOCUMENT["components"]}
    validator = Draft4Validator(root, format_checker=FormatChecker())
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(instance)]


def assert_documented(response: TestResponse, url: str, method: str) -> Any:
    """Check a live response to ``method url`` against the document; return its body."""
    paths = [p for p in DOCUMENT["paths"] if re.fullmatch(re.sub(r"{\w+}", "[^/]+", p), url)]
    assert paths, f"{url} is under no documented path"
    path = paths[0]
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method.upper()} {path} does not document {status}"
    content = resolve(responses[status])["content"]
    assert response.mimetype in content, f"{response.mimetype} is not documented for {status}"
    body = json.loads(response.get_data())
    errors = schema_errors(body, content[response.mimetype]["schema"])
    assert not errors, errors
    return body


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def nodes(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) for every object of the document, except inside example values."""
    if isinstance(node, list):
        for index, value in enumerate(node):
            yield from nodes(value, f"{where}/{index}")
    elif isinstance(node, dict):
        named = where.endswith("/properties")  # its keys are property names, not keywords
        if not named:
            yield where, node
        for key, value in node.items():
            if named or key not in ("example", "value"):
                yield from nodes(value, f"{where}/{key}")


def examples() -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(where, value, schema) for every example of a schema, a parameter or a media type."""
    for where, node in nodes(DOCUMENT):
        schema = node.get("schema", node)
        if "example" in node:
            yield f"{where}/example", node["example"], schema
        for name, example in node.get("examples", {}).items():
            yield f"{where}/examples/{name}", resolve(example)["value"], schema


# -- (a) the document is served, and it is valid OpenAPI 3.0 --------------------


def test_the_document_is_served_as_json(client: FlaskClient) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == JSON
    assert response.get_json() == DOCUMENT
    assert_documented(response, "/api/v1/openapi.json", "get")


def test_the_document_is_valid_openapi_3_0_3_for_kingtask_v1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.0.3"
    assert (DOCUMENT["info"]["title"], DOCUMENT["info"]["version"]) == ("kingtask", "1")
    assert DOCUMENT["servers"] == [{"url": "/"}]


def test_every_operation_has_a_summary_a_description_and_declared_tags() -> None:
    declared = {tag["name"] for tag in DOCUMENT["tags"]}
    for path, method, op in operations():
        assert op["summary"] and op["description"], f"{method} {path}"
        assert op["tags"] and set(op["tags"]) <= declared, f"{method} {path}"


def test_every_array_has_items_and_every_required_property_is_declared() -> None:
    # OpenAPI 3.0 rules that openapi-spec-validator does not check.
    for where, node in nodes(DOCUMENT):
        if node.get("type") == "array":
            assert "items" in node, where
        if isinstance(node.get("required"), list):
            assert set(node["required"]) <= set(node.get("properties", {})), where


def test_every_component_is_used() -> None:
    used = {node["$ref"] for _, node in nodes(DOCUMENT) if "$ref" in node}
    # Security schemes are named in security requirements, not referenced.
    used |= {
        f"#/components/securitySchemes/{name}" for need in DOCUMENT["security"] for name in need
    }
    unused = [
        f"#/components/{kind}/{name}"
        for kind, named in DOCUMENT["components"].items()
        for name in named
        if f"#/components/{kind}/{name}" not in used
    ]
    # Unknown paths and methods cannot be tied to a documented operation.
    assert sorted(unused) == ["#/components/responses/MethodNotAllowed"]


def test_every_example_matches_its_schema() -> None:
    found = list(examples())
    assert len(found) > 20
    for where, value, schema in found:
        errors = schema_errors(value, schema)
        assert not errors, (where, errors)


# -- (b) the document and the routes of the app never drift apart ---------------

VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<arguments>[^)]*)\))?:)?(?P<name>\w+)>")


def openapi_paths(rule: str) -> list[str]:
    """The OpenAPI paths of a Flask rule: ``<uuid>`` is ``{uuid}``, ``any(...)`` expands."""
    paths = [""]
    position = 0
    for match in VARIABLE.finditer(rule):
        literal = rule[position : match.start()]
        if match["converter"] == "any":
            options = [o.strip().strip("'\"") for o in match["arguments"].split(",")]
        else:
            options = [f"{{{match['name']}}}"]
        paths = [path + literal + option for path in paths for option in options]
        position = match.end()
    return [path + rule[position:] for path in paths]


def app_operations(app: Flask) -> set[tuple[str, str]]:
    """(path, method) of every route the app serves under /api/v1."""
    served: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or not rule.rule.startswith("/api/v1/"):
            continue
        for path in openapi_paths(rule.rule):
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                served.add((path, method.lower()))
    return served


def documented_operations() -> set[tuple[str, str]]:
    return {(path, method) for path, method, _ in operations()}


def test_flask_rules_are_translated_to_openapi_paths() -> None:
    assert openapi_paths("/api/v1/task/result/<uuid>") == ["/api/v1/task/result/{uuid}"]
    assert openapi_paths("/api/v1/task/result/<any(success, failure):outcome>/<date>") == [
        "/api/v1/task/result/success/{date}",
        "/api/v1/task/result/failure/{date}",
    ]
    assert openapi_paths("/api/v1/x/<int:id>/<path:rest>") == ["/api/v1/x/{id}/{rest}"]


def test_every_route_is_documented(app: Flask) -> None:
    served = app_operations(app)
    assert ("/api/v1/task/result/failure/{date}", "get") in served
    undocumented = served - documented_operations()
    assert not undocumented, f"routes missing from openapi.json: {sorted(undocumented)}"


def test_every_documented_operation_is_served(app: Flask) -> None:
    unserved = documented_operations() - app_operations(app)
    assert not unserved, f"documented but not served: {sorted(unserved)}"


def test_the_app_serves_nothing_outside_api_v1_but_static_files(app: Flask) -> None:
    outside = [
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.rule.startswith("/api/v1/")
    ]
    assert outside == []


# -- (c) live responses match the documented schemas -----------------------------

UNKNOWN_UUID = new_uuid()
CALLS: dict[str, tuple[str, str, int, dict[str, Any]]] = {
    # what: (method, url, status, what to send)
    "a script submitted as JSON": (
        "POST",
        "/api/v1/task/script",
        200,
        {"json": {"bin_name": "example", "args": ["1", "2"], "start_time": 0, "max_run_time": 5}},
    ),
    "a script submitted as a form at /task": (
        "POST",
        "/api/v1/task",
        200,
        {"data": {"bin_name": "example", "args": "1 2", "time_interval": "1 2"}},
    ),
    "an rpc submitted as JSON": (
        "POST",
        "/api/v1/task/rpc",
        200,
        {"json": {"method": "get", "url": "http://127.0.0.1:1323/sum", "args": {"a": 1}}},
    ),
    "a script without bin_name": ("POST", "/api/v1/task/script", 403, {"json": {"args": "1"}}),
    "a script at /task without bin_name": ("POST", "/api/v1/task", 403, {"data": {"args": "1"}}),
    "an rpc without url": ("POST", "/api/v1/task/rpc", 403, {"json": {"method": "GET"}}),
    "a body that is not a JSON object": ("POST", "/api/v1/task/rpc", 403, {"json": [1, 2]}),
    "the result of an unknown uuid": ("GET", f"/api/v1/task/result/{UNKNOWN_UUID}", 200, {}),
    "the result of a uuid in upper case": (
        "GET",
        f"/api/v1/task/result/{UNKNOWN_UUID.upper()}",
        200,
        {},
    ),
    "the result of something that is not a uuid": (
        "GET",
        "/api/v1/task/result/not-a-uuid",
        403,
        {},
    ),
    "the result of a uuid with a slash": ("GET", "/api/v1/task/result/db3e0b22%2Fa249", 404, {}),
    "the undo count": ("GET", "/api/v1/task/count/undo", 200, {}),
    "a daily success count": ("GET", "/api/v1/task/result/success/2015-10-30", 200, {}),
    "a daily failure count": ("GET", "/api/v1/task/result/failure/1999-01-01", 200, {}),
    "a bad date": ("GET", "/api/v1/task/result/success/2015-13-01", 403, {}),
    "a date that is no day": ("GET", "/api/v1/task/result/failure/today", 403, {}),
    "the document itself": ("GET", "/api/v1/openapi.json", 200, {}),
}


@pytest.mark.parametrize(("method", "url", "status", "send"), CALLS.values(), ids=CALLS.keys())
def test_live_responses_match_the_documented_schemas(
    client: FlaskClient, method: str, url: str, status: int, send: dict[str, Any]
) -> None:
    response = client.open(url, method=method, **send)
    assert response.status_code == status, response.get_data(as_text=True)
    assert_documented(response, url, method)


def test_counts_match_the_documented_schema_when_tasks_are_counted(
    client: FlaskClient, store: Store
) -> None:
    store.client.set(keys.daily("failure", "2015-10-31"), 7)
    url = "/api/v1/task/result/failure/2015-10-31"
    assert assert_documented(client.get(url), url, "get") == 7
    uuid = new_uuid()
    store.client.sadd(keys.UNDO, uuid)
    try:
        url = "/api/v1/task/count/undo"
        assert assert_documented(client.get(url), url, "get") >= 1
    finally:
        store.client.srem(keys.UNDO, uuid)


@pytest.mark.parametrize("success", [True, False])
def test_a_finished_result_matches_the_documented_schema(
    client: FlaskClient, store: Store, success: bool
) -> None:
    uuid = new_uuid()
    store.client.sadd(keys.UNDO, uuid)
    store.finish(uuid, Outcome(success, "46"), datetime.now().astimezone())
    url = f"/api/v1/task/result/{uuid}"
    body = assert_documented(client.get(url), url, "get")
    assert body == {"is_result_exist": 1, "is_success": int(success), "message": "46"}


@pytest.mark.parametrize("path", ["/api/v1/task", "/api/v1/task/script", "/api/v1/task/rpc"])
def test_a_body_over_the_limit_matches_the_documented_413(
    settings: config.Settings, path: str
) -> None:
    client = create_app(replace(settings, max_body_bytes=100)).test_client()
    response = client.post(path, json={"bin_name": "example", "args": "1 " * 100})
    assert response.status_code == 413
    assert_documented(response, path, "post")


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/api/v1/task/script"),
        ("POST", "/api/v1/task/rpc"),
        ("GET", f"/api/v1/task/result/{UNKNOWN_UUID}"),
        ("GET", "/api/v1/task/count/undo"),
        ("GET", "/api/v1/task/result/success/2015-10-30"),
    ],
)
def test_an_unreachable_redis_matches_the_documented_503(
    settings: config.Settings, tmp_path: Path, method: str, url: str
) -> None:
    away = replace(settings, redis=f"redis+socket://{tmp_path / 'nothing.sock'}")
    client = create_app(away).test_client()
    body = {"bin_name": "example", "method": "GET", "url": "http://h/"}
    response = client.open(url, method=method, json=body if method == "POST" else None)
    assert response.status_code == 503
    assert_documented(response, url, method)


@pytest.mark.parametrize(
    ("method", "url", "status", "name"),
    [
        ("GET", "/api/v1/nothing", 404, "NotFound"),
        ("GET", "/api/v1/task/script", 405, "MethodNotAllowed"),
        ("POST", "/api/v1/task/count/undo", 405, "MethodNotAllowed"),
    ],
)
def test_unknown_paths_and_methods_match_the_documented_error_responses(
    client: FlaskClient, method: str, url: str, status: int, name: str
) -> None:
    response = client.open(url, method=method)
    assert response.status_code == status
    content = DOCUMENT["components"]["responses"][name]["content"]
    assert response.mimetype in content
    assert not schema_errors(json.loads(response.get_data()), content[response.mimetype]["schema"])


def request_examples() -> Iterator[tuple[str, str, str, Any]]:
    for path, method, op in operations():
        for media, content in resolve(op.get("requestBody", {})).get("content", {}).items():
            yield method, path, media, content["example"]


@pytest.mark.parametrize(("method", "path", "media", "example"), list(request_examples()))
def test_every_documented_request_example_is_accepted(
    client: FlaskClient, store: Store, method: str, path: str, media: str, example: Any
) -> None:
    if media == JSON:
        response = client.open(path, method=method.upper(), json=example)
    else:
        response = client.open(path, method=method.upper(), data=example, content_type=media)
    assert response.status_code == 200, response.get_data(as_text=True)
    uuid = assert_documented(response, path, method)
    assert store.client.sismember(keys.UNDO, uuid)


# -- the documented patterns say what models.py says -----------------------------


def accepts(parse: Callable[[str], Any], value: str) -> bool:
    try:
        parse(value)
    except InvalidRequest:
        return False
    return True


def component_schema(kind: str, name: str) -> dict[str, Any]:
    node = DOCUMENT["components"][kind][name]
    return node["schema"] if kind == "parameters" else node


PATTERNS: dict[str, tuple[dict[str, Any], Callable[[str], Any], bool, list[str]]] = {
    # name: (schema, what models.py does, whether pattern and models agree exactly, samples)
    "uuid": (
        component_schema("parameters", "TaskUuid"),
        models.parse_uuid,
        True,
        [
            "db3e0b22-a249-4ed2-9532-fc6318ccd321",
            "DB3E0B22-A249-4ED2-9532-FC6318CCD321",
            "db3e0b22a2494ed29532fc6318ccd321",
            "{db3e0b22-a249-4ed2-9532-fc6318ccd321}",
            "db3e0b22-a249-4ed2-9532-fc6318ccd32",
            "db3e0b22-a249-4ed2-9532-fc6318ccd321x",
            "success",
            "x",
        ],
    ),
    "date": (
        component_schema("parameters", "Date"),
        models.parse_date,
        False,
        ["2015-10-30", "2016-02-29", "2015-02-29", "2015-13-01", "20151030", "today", "2015-1-1"],
    ),
    "bin_name": (
        component_schema("schemas", "BinName"),
        models.parse_bin_name,
        True,
        [
            "example",
            "tools/backup",
            "a b",
            " x",
            ".hidden",
            "..x",
            "...",
            "x.sh",
            "",
            "   ",
            "/bin/sh",
            "../etc/passwd",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            ".",
            "..",
            "a\x00b",
        ],
    ),
    "start_time": (
        component_schema("schemas", "StartTimeText"),
        models.parse_start_time,
        False,
        ["1445562622", " 12 ", "+5", "0", "", "  ", "-1", "tomorrow", "1.5", "1e3", "0x10"],
    ),
    "max_run_time": (
        component_schema("schemas", "MaxRunTimeText"),
        lambda value: models.parse_max_run_time(value, 3600),
        False,
        ["30", " 30 ", "", "0", "99999", "-1", "1.5", "soon"],
    ),
    "time_interval": (
        component_schema("schemas", "TimeIntervalText"),
        models.parse_time_interval,
        False,
        ["60 600 3600", " 1  2 ", "1\t2", "", "  ", "-5", "1,2", "1 a", "1.5", "5 " * 101],
    ),
    "url": (
        component_schema("schemas", "Url"),
        models.parse_url,
        False,
        [
            "http://h/",
            "HTTPS://h:8443/x?y=1",
            " http://h/x ",
            "http://[::1]:80/",
            "file:///etc/passwd",
            "ftp://h/",
            "http://",
            "http://h/a b",
            "http://h/\x01",
            "h/x",
            "http://h/" + "x" * 9000,
        ],
    ),
}


@pytest.mark.parametrize("name", PATTERNS)
def test_the_documented_patterns_say_what_models_py_accepts(name: str) -> None:
    schema, parse, exact, samples = PATTERNS[name]
    assert "pattern" in schema
    for sample in samples:
        accepted, matched = accepts(parse, sample), not schema_errors(sample, schema)
        if exact:
            assert matched == accepted, (name, sample, matched, accepted)
        else:
            # The pattern describes the shape; models.py checks ranges on top of it.
            assert matched or not accepted, (name, sample, matched, accepted)
    assert any(accepts(parse, s) for s in samples) and not all(accepts(parse, s) for s in samples)


def test_the_documented_limits_are_those_of_models_py() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["StartTime"]["anyOf"][0]["maximum"] == models.MAX_TIMESTAMP
    interval_list = schemas["TimeInterval"]["anyOf"][1]
    assert interval_list["maxItems"] == models.MAX_RETRIES
    assert interval_list["items"]["anyOf"][0]["maximum"] == models.MAX_DELAY
    assert schemas["Url"]["maxLength"] == models.MAX_URL_LENGTH
    assert all(m in schemas["Method"]["description"] for m in models.METHODS)
