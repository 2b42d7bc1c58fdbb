"""The OpenAPI document: valid OpenAPI 3.0, and in step with the live API v1.

Neither ``openapi-spec-validator`` nor ``jsonschema`` is installed in the project's
environment, so the document is checked structurally against the OpenAPI 3.0.3
rules it relies on, and response bodies are validated by a small validator for
exactly the subset of JSON Schema the document uses (a test makes sure the
document uses nothing else).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from kingtask import config, keys, models
from kingtask.errors import InvalidRequest
from kingtask.models import Outcome, new_uuid
from kingtask.store import Store
from kingtask.web import create_app

DOCUMENT: dict[str, Any] = json.loads(
    resources.files("kingtask").joinpath("openapi.json").read_text()
)
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
COMPONENT_KINDS = (
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "securitySchemes",
    "links",
    "callbacks",
)
JSON = "application/json"

# -- resolving references -----------------------------------------------------


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (``#/components/<kind>/<name>``) until a real object is reached."""
    seen: set[str] = set()
    while "$ref" in node:
        ref = node["$ref"]
        assert ref not in seen, f"circular $ref {ref}"
        seen.add(ref)
        assert ref.startswith("#/"), f"only local references are used: {ref}"
        target: Any = DOCUMENT
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(target, dict) and part in target, f"unresolvable $ref {ref}"
            target = target[part]
        node = target
    return node


def operation(path: str, method: str) -> dict[str, Any]:
    return DOCUMENT["paths"][path][method]


def documented_response(path: str, method: str, status: int) -> dict[str, Any]:
    responses = operation(path, method)["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    return resolve(responses[str(status)])


# -- a validator for the subset of JSON Schema the document uses ---------------

TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}
UUID_FORMAT = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\Z")
VALIDATED_KEYWORDS = {
    "$ref",
    "type",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "anyOf",
    "oneOf",
}
ANNOTATION_KEYWORDS = {"description", "example", "title"}


def schema_errors(instance: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What is wrong with ``instance`` under ``schema``; empty when it is valid."""
    schema = resolve(schema)
    unknown = set(schema) - VALIDATED_KEYWORDS - ANNOTATION_KEYWORDS
    assert not unknown, f"the test validator does not implement {sorted(unknown)}"
    errors: list[str] = []
    if "type" in schema and not TYPES[schema["type"]](instance):
        return [f"{where}: {instance!r} is not of type {schema['type']}"]
    if "enum" in schema and not any(
        instance == value and type(instance) is type(value) for value in schema["enum"]
    ):
        errors.append(f"{where}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{where}: {instance!r} is too short")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{where}: {instance!r} is too long")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{where}: {instance!r} does not match {schema['pattern']}")
        if schema.get("format") == "uuid" and not UUID_FORMAT.match(instance):
            errors.append(f"{where}: {instance!r} is not a uuid")
    if TYPES["number"](instance):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{where}: {instance!r} is less than {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{where}: {instance!r} is more than {schema['maximum']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{where}: too few items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{where}: too many items")
        if "items" in schema:
            for index, item in enumerate(instance):
                errors += schema_errors(item, schema["items"], f"{where}[{index}]")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in instance:
                errors.append(f"{where}: {name!r} is required")
        for name, value in instance.items():
            if name in properties:
                errors += schema_errors(value, properties[name], f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: {name!r} is not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(value, schema["additionalProperties"], f"{where}.{name}")
    if "anyOf" in schema and all(
        schema_errors(instance, option, where) for option in schema["anyOf"]
    ):
        errors.append(f"{where}: {instance!r} matches none of anyOf")
    if "oneOf" in schema:
        matches = sum(not schema_errors(instance, option, where) for option in schema["oneOf"])
        if matches != 1:
            errors.append(f"{where}: {instance!r} matches {matches} of oneOf, not exactly one")
    return errors


def assert_documented(response: TestResponse, path: str, method: str) -> Any:
    """Check a live response against the document; return its decoded body."""
    documented = documented_response(path, method, response.status_code)
    assert response.mimetype in documented["content"], (
        f"{response.mimetype} is not documented for {response.status_code}"
    )
    body = json.loads(response.get_data())
    errors = schema_errors(body, documented["content"][response.mimetype]["schema"])
    assert not errors, errors
    return body


# -- walking the document ------------------------------------------------------


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def references(node: Any) -> Iterator[dict[str, Any]]:
    """Every object with a ``$ref`` anywhere below ``node``."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield node
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def subschemas(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``schema`` and every schema nested in it (references are not followed)."""
    yield where, schema
    for name, value in schema.get("properties", {}).items():
        yield from subschemas(value, f"{where}.properties.{name}")
    for keyword in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(keyword), dict):
            yield from subschemas(schema[keyword], f"{where}.{keyword}")
    for keyword in ("anyOf", "oneOf", "allOf"):
        for index, option in enumerate(schema.get(keyword, [])):
            yield from subschemas(option, f"{where}.{keyword}[{index}]")


def media_types() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every media type object of every request body and response."""
    for name, response in DOCUMENT["components"].get("responses", {}).items():
        for media, content in response.get("content", {}).items():
            yield f"components.responses.{name}.{media}", content
    for path, method, op in operations():
        body = resolve(op.get("requestBody", {}))
        for media, content in body.get("content", {}).items():
            yield f"{method} {path} request {media}", content
        for status, response in op["responses"].items():
            if "$ref" not in response:
                for media, content in response.get("content", {}).items():
                    yield f"{method} {path} {status} {media}", content


def parameters() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, parameter in DOCUMENT["components"].get("parameters", {}).items():
        yield f"components.parameters.{name}", parameter
    for path, method, op in operations():
        for index, parameter in enumerate(op.get("parameters", [])):
            if "$ref" not in parameter:
                yield f"{method} {path} parameters[{index}]", parameter


def all_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, schema in DOCUMENT["components"].get("schemas", {}).items():
        yield from subschemas(schema, f"components.schemas.{name}")
    for where, parameter in parameters():
        yield from subschemas(parameter["schema"], f"{where}.schema")
    for where, content in media_types():
        yield from subschemas(content["schema"], f"{where}.schema")


# -- (a) the document is served, and it is valid OpenAPI 3.0 --------------------


def test_the_document_is_served_as_json(client: FlaskClient) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == JSON
    assert response.get_json() == DOCUMENT
    assert_documented(response, "/api/v1/openapi.json", "get")


def test_the_document_declares_openapi_3_0_and_kingtask_v1() -> None:
    assert set(DOCUMENT) <= {
        "openapi",
        "info",
        "servers",
        "paths",
        "components",
        "security",
        "tags",
        "externalDocs",
    }
    assert re.fullmatch(r"3\.0\.\d+", DOCUMENT["openapi"])
    assert DOCUMENT["openapi"] == "3.0.3"
    info = DOCUMENT["info"]
    assert (info["title"], info["version"]) == ("kingtask", "1")
    assert set(info) <= {"title", "description", "termsOfService", "contact", "license", "version"}
    assert "license" not in info or isinstance(info["license"]["name"], str)
    assert DOCUMENT["servers"] == [{"url": "/"}]
    tags = [tag["name"] for tag in DOCUMENT.get("tags", [])]
    assert len(tags) == len(set(tags))


def test_every_operation_is_well_formed() -> None:
    operation_ids: list[str] = []
    declared_tags = {tag["name"] for tag in DOCUMENT.get("tags", [])}
    for path, item in DOCUMENT["paths"].items():
        assert path.startswith("/api/v1/"), path
        assert set(item) <= {"summary", "description", "servers", "parameters", "$ref"} | set(
            HTTP_METHODS
        ), path
    for path, method, op in operations():
        where = f"{method.upper()} {path}"
        assert set(op) <= {
            "tags",
            "summary",
            "description",
            "externalDocs",
            "operationId",
            "parameters",
            "requestBody",
            "responses",
            "callbacks",
            "deprecated",
            "security",
            "servers",
        }, where
        assert isinstance(op["summary"], str) and op["summary"], where
        assert isinstance(op["description"], str) and op["description"], where
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", op["operationId"]), where
        operation_ids.append(op["operationId"])
        assert set(op.get("tags", [])) <= declared_tags, where
        assert op["responses"], where
        for status, response in op["responses"].items():
            assert re.fullmatch(r"[1-5](\d\d|XX)|default", status), (where, status)
            assert isinstance(resolve(response)["description"], str), (where, status)
        if "requestBody" in op:
            body = resolve(op["requestBody"])
            assert set(body) <= {"description", "content", "required"}, where
            assert body["content"], where
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"


def test_path_templates_and_path_parameters_agree() -> None:
    for path, method, op in operations():
        in_path = set(re.findall(r"\{([^}/]+)\}", path))
        declared = [resolve(p) for p in op.get("parameters", [])]
        keys_ = [(p["name"], p["in"]) for p in declared]
        assert len(keys_) == len(set(keys_)), f"duplicate parameters in {method} {path}"
        path_parameters = {p["name"] for p in declared if p["in"] == "path"}
        assert path_parameters == in_path, f"{method} {path}"


def test_every_parameter_is_well_formed() -> None:
    for where, parameter in parameters():
        parameter = resolve(parameter)
        assert set(parameter) <= {
            "name",
            "in",
            "description",
            "required",
            "deprecated",
            "allowEmptyValue",
            "style",
            "explode",
            "allowReserved",
            "schema",
            "example",
            "examples",
        }, where
        assert isinstance(parameter["name"], str) and parameter["name"], where
        assert parameter["in"] in ("query", "header", "path", "cookie"), where
        if parameter["in"] == "path":
            assert parameter["required"] is True, where
        assert isinstance(parameter["schema"], dict), where


def test_every_media_type_is_well_formed() -> None:
    for where, content in media_types():
        assert set(content) <= {"schema", "example", "examples", "encoding"}, where
        assert not ("example" in content and "examples" in content), where
        for example in content.get("examples", {}).values():
            assert set(resolve(example)) <= {"summary", "description", "value", "externalValue"}
    for path, method, op in operations():
        body = resolve(op.get("requestBody", {}))
        for media in body.get("content", {}):
            assert re.fullmatch(r"[\w.+-]+/[\w.+-]+", media), (method, path, media)
        for response in op["responses"].values():
            for media in resolve(response).get("content", {}):
                assert re.fullmatch(r"[\w.+-]+/[\w.+-]+", media), (method, path, media)


def test_every_reference_resolves_into_components() -> None:
    kinds = "|".join(COMPONENT_KINDS)
    pattern = re.compile(rf"#/components/({kinds})/[A-Za-z0-9._-]+")
    found = list(references(DOCUMENT))
    assert found
    for node in found:
        assert pattern.fullmatch(node["$ref"]), node["$ref"]
        assert set(node) == {"$ref"}, f"siblings of $ref are ignored in OpenAPI 3.0: {node}"
        resolve(node)
    for kind, named in DOCUMENT["components"].items():
        assert kind in COMPONENT_KINDS, kind
        for name in named:
            assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name


def test_every_component_is_used() -> None:
    used = {node["$ref"] for node in references(DOCUMENT)}
    unused = [
        f"#/components/{kind}/{name}"
        for kind, named in DOCUMENT["components"].items()
        for name in named
        if f"#/components/{kind}/{name}" not in used
    ]
    # Unknown paths and methods cannot be tied to a documented operation.
    assert sorted(unused) == ["#/components/responses/MethodNotAllowed"]


def test_every_schema_is_an_openapi_3_0_schema() -> None:
    schemas = list(all_schemas())
    assert len(schemas) > 20
    for where, schema in schemas:
        if "$ref" in schema:
            continue
        unknown = set(schema) - VALIDATED_KEYWORDS - ANNOTATION_KEYWORDS
        assert not unknown, f"{where}: keywords outside the validated subset: {unknown}"
        if "type" in schema:
            assert schema["type"] in TYPES, f"{where}: OpenAPI 3.0 types are single names"
        if schema.get("type") == "array":
            assert "items" in schema, f"{where}: OpenAPI 3.0 requires items for arrays"
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                assert isinstance(schema[keyword], list) and schema[keyword], where
        if "required" in schema:
            required = schema["required"]
            assert required and len(required) == len(set(required)), where
            assert set(required) <= set(schema.get("properties", {})), where
        if "enum" in schema:
            assert schema["enum"], where
            for value in schema["enum"]:
                assert not schema_errors(value, {"type": schema["type"]}), where
        if "pattern" in schema:
            re.compile(schema["pattern"])
        for keyword in ("minLength", "maxLength", "minItems", "maxItems"):
            if keyword in schema:
                assert isinstance(schema[keyword], int) and schema[keyword] >= 0, where
        for keyword in ("minimum", "maximum"):
            if keyword in schema:
                assert TYPES["number"](schema[keyword]), where
        if "additionalProperties" in schema:
            assert isinstance(schema["additionalProperties"], bool | dict), where


def test_every_example_matches_its_schema() -> None:
    checked = 0
    for where, schema in all_schemas():
        if "example" in schema:
            assert not schema_errors(schema["example"], schema), where
            checked += 1
    for where, parameter in parameters():
        if "example" in parameter:
            assert not schema_errors(parameter["example"], parameter["schema"]), where
            checked += 1
    for where, content in media_types():
        values = [content["example"]] if "example" in content else []
        values += [resolve(e)["value"] for e in content.get("examples", {}).values()]
        for value in values:
            assert not schema_errors(value, content["schema"]), (where, value)
            checked += 1
    assert checked > 20


def test_the_validator_rejects_what_the_schemas_forbid() -> None:
    result = {"$ref": "#/components/schemas/Result"}
    assert not schema_errors({"is_result_exist": 1, "is_success": 0, "message": "x"}, result)
    assert schema_errors({"is_result_exist": 1, "is_success": 0, "message": "x", "e": 1}, result)
    assert schema_errors({"is_result_exist": 2, "is_success": 0, "message": "x"}, result)
    assert schema_errors({"is_result_exist": True, "is_success": 0, "message": "x"}, result)
    assert schema_errors({"is_result_exist": 1, "is_success": 0}, result)
    assert schema_errors(-1, {"$ref": "#/components/schemas/Count"})
    assert schema_errors("3", {"$ref": "#/components/schemas/Count"})
    assert schema_errors(403, {"$ref": "#/components/schemas/Error"})
    task_uuid = {"$ref": "#/components/schemas/TaskUuid"}
    assert not schema_errors(new_uuid(), task_uuid)
    assert schema_errors(new_uuid().upper(), task_uuid)
    assert schema_errors("db3e0b22a2494ed29532fc6318ccd321", task_uuid)
    start_time = {"$ref": "#/components/schemas/StartTime"}
    assert not schema_errors("1445562622", start_time)
    assert schema_errors("tomorrow", start_time)
    assert schema_errors(models.MAX_TIMESTAMP + 1, start_time)
    assert schema_errors(True, start_time)
    assert schema_errors(1, {"oneOf": [{"type": "integer"}, {"type": "number"}]})
    assert schema_errors({"bin_name": 5}, {"$ref": "#/components/schemas/ScriptTask"})


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


@dataclass(frozen=True)
class Call:
    """A request to the live API, and the documented operation it exercises."""

    template: str
    method: str
    url: str
    status: int
    send: dict[str, Any] = field(default_factory=dict)


UNKNOWN_UUID = new_uuid()
CALLS = {
    "a script submitted as JSON": Call(
        "/api/v1/task/script",
        "post",
        "/api/v1/task/script",
        200,
        {"json": {"bin_name": "example", "args": ["1", "2"], "start_time": 0, "max_run_time": 5}},
    ),
    "a script submitted as a form at /task": Call(
        "/api/v1/task",
        "post",
        "/api/v1/task",
        200,
        {"data": {"bin_name": "example", "args": "1 2", "time_interval": "1 2"}},
    ),
    "an rpc submitted as JSON": Call(
        "/api/v1/task/rpc",
        "post",
        "/api/v1/task/rpc",
        200,
        {"json": {"method": "get", "url": "http://127.0.0.1:1323/sum", "args": {"a": 1}}},
    ),
    "a script without bin_name": Call(
        "/api/v1/task/script", "post", "/api/v1/task/script", 403, {"json": {"args": "1"}}
    ),
    "a script at /task without bin_name": Call(
        "/api/v1/task", "post", "/api/v1/task", 403, {"data": {"args": "1"}}
    ),
    "an rpc without url": Call(
        "/api/v1/task/rpc", "post", "/api/v1/task/rpc", 403, {"json": {"method": "GET"}}
    ),
    "a body that is not a JSON object": Call(
        "/api/v1/task/rpc", "post", "/api/v1/task/rpc", 403, {"json": [1, 2]}
    ),
    "the result of an unknown uuid": Call(
        "/api/v1/task/result/{uuid}", "get", f"/api/v1/task/result/{UNKNOWN_UUID}", 200
    ),
    "the result of a uuid in upper case": Call(
        "/api/v1/task/result/{uuid}", "get", f"/api/v1/task/result/{UNKNOWN_UUID.upper()}", 200
    ),
    "the result of something that is not a uuid": Call(
        "/api/v1/task/result/{uuid}", "get", "/api/v1/task/result/not-a-uuid", 403
    ),
    "the result of a uuid with a slash": Call(
        "/api/v1/task/result/{uuid}", "get", "/api/v1/task/result/db3e0b22%2Fa249", 404
    ),
    "the undo count": Call("/api/v1/task/count/undo", "get", "/api/v1/task/count/undo", 200),
    "a daily success count": Call(
        "/api/v1/task/result/success/{date}", "get", "/api/v1/task/result/success/2015-10-30", 200
    ),
    "a daily failure count": Call(
        "/api/v1/task/result/failure/{date}", "get", "/api/v1/task/result/failure/1999-01-01", 200
    ),
    "a bad date": Call(
        "/api/v1/task/result/success/{date}", "get", "/api/v1/task/result/success/2015-13-01", 403
    ),
    "a date that is no day": Call(
        "/api/v1/task/result/failure/{date}", "get", "/api/v1/task/result/failure/today", 403
    ),
    "the document itself": Call("/api/v1/openapi.json", "get", "/api/v1/openapi.json", 200),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_live_responses_match_the_documented_schemas(client: FlaskClient, call: Call) -> None:
    response = client.open(call.url, method=call.method.upper(), **call.send)
    assert response.status_code == call.status, response.get_data(as_text=True)
    assert_documented(response, call.template, call.method)


def test_counts_match_the_documented_schema_when_tasks_are_counted(
    client: FlaskClient, store: Store
) -> None:
    store.client.set(keys.daily("failure", "2015-10-31"), 7)
    path = "/api/v1/task/result/failure/{date}"
    assert assert_documented(client.get("/api/v1/task/result/failure/2015-10-31"), path, "get") == 7
    uuid = new_uuid()
    store.client.sadd(keys.UNDO, uuid)
    try:
        response = client.get("/api/v1/task/count/undo")
        assert assert_documented(response, "/api/v1/task/count/undo", "get") >= 1
    finally:
        store.client.srem(keys.UNDO, uuid)


@pytest.mark.parametrize("success", [True, False])
def test_a_finished_result_matches_the_documented_schema(
    client: FlaskClient, store: Store, success: bool
) -> None:
    uuid = new_uuid()
    store.client.sadd(keys.UNDO, uuid)
    store.finish(uuid, Outcome(success, "46"), datetime.now().astimezone())
    response = client.get(f"/api/v1/task/result/{uuid}")
    body = assert_documented(response, "/api/v1/task/result/{uuid}", "get")
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
    ("method", "url", "template"),
    [
        ("POST", "/api/v1/task/script", "/api/v1/task/script"),
        ("POST", "/api/v1/task/rpc", "/api/v1/task/rpc"),
        ("GET", f"/api/v1/task/result/{UNKNOWN_UUID}", "/api/v1/task/result/{uuid}"),
        ("GET", "/api/v1/task/count/undo", "/api/v1/task/count/undo"),
        ("GET", "/api/v1/task/result/success/2015-10-30", "/api/v1/task/result/success/{date}"),
    ],
)
def test_an_unreachable_redis_matches_the_documented_503(
    settings: config.Settings, tmp_path: Path, method: str, url: str, template: str
) -> None:
    away = replace(settings, redis=f"redis+socket://{tmp_path / 'nothing.sock'}")
    client = create_app(away).test_client()
    body = {"bin_name": "example", "method": "GET", "url": "http://h/"}
    response = client.open(url, method=method, json=body if method == "POST" else None)
    assert response.status_code == 503
    assert_documented(response, template, method.lower())


def test_unknown_paths_and_methods_match_the_documented_error_responses(
    client: FlaskClient,
) -> None:
    for url, method, name in [
        ("/api/v1/nothing", "GET", "NotFound"),
        ("/api/v1/task/script", "GET", "MethodNotAllowed"),
        ("/api/v1/task/count/undo", "POST", "MethodNotAllowed"),
    ]:
        response = client.open(url, method=method)
        documented = DOCUMENT["components"]["responses"][name]
        assert response.status_code == {"NotFound": 404, "MethodNotAllowed": 405}[name]
        assert response.mimetype in documented["content"]
        schema = documented["content"][response.mimetype]["schema"]
        assert not schema_errors(json.loads(response.get_data()), schema)


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


def matches(schema: dict[str, Any], value: str) -> bool:
    return not schema_errors(value, schema)


@pytest.mark.parametrize("name", PATTERNS)
def test_the_documented_patterns_say_what_models_py_accepts(name: str) -> None:
    schema, parse, exact, samples = PATTERNS[name]
    assert "pattern" in schema
    for sample in samples:
        accepted, matched = accepts(parse, sample), matches(schema, sample)
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
