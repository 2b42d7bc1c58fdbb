"""The HTTP API v1, kingtask-compatible: ``create_app()`` for gunicorn."""

from __future__ import annotations

import hmac
import json
import logging
import uuid as uuidlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, request
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from kingtask import config, models
from kingtask.errors import InvalidRequest
from kingtask.schedule import Scheduler
from kingtask.store import Store

log = logging.getLogger(__name__)

v1 = Blueprint("v1", __name__, url_prefix="/api/v1")


@dataclass(frozen=True)
class Services:
    """What the views use, built once per application."""

    settings: config.Settings
    store: Store
    scheduler: Scheduler


def create_app(settings: config.Settings | None = None) -> Flask:
    """Build the API application.

    Args:
        settings: What to serve with; default the process's configuration.
    """
    settings = settings or config.current()
    app = Flask("kingtask")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    store = Store.from_settings(settings)
    app.extensions["kingtask"] = Services(settings, store, Scheduler(store))
    app.register_blueprint(v1)
    app.register_error_handler(Exception, handle_error)
    return app


def json_response(value: Any, status: int = 200) -> Response:
    """A compact JSON body without a trailing newline, as the seed answers."""
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status, content_type="application/json; charset=utf-8")


def handle_error(error: Exception) -> Response:
    """Every error as a JSON string: 403 for client errors, 503 when Redis is away."""
    if isinstance(error, InvalidRequest):
        return json_response(str(error), 403)
    if isinstance(error, redis.ConnectionError | redis.TimeoutError | OperationalError):
        log.warning("redis unavailable: %s", error)
        return json_response("redis is unavailable, try again later", 503)
    if isinstance(error, HTTPException):
        if error.code == 413:
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            return json_response(f"request body larger than {limit} bytes", 413)
        status = error.code or 500
        # v1 answers every malformed request with 403, as the seed does.
        response = json_response(error.name.lower(), 403 if status == 400 else status)
        for name, value in error.get_headers():  # e.g. Allow, on a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response
    log.exception("unhandled error")
    return json_response("internal error", 500)


def _services() -> Services:
    return current_app.extensions["kingtask"]


@v1.before_request
def require_token() -> Response | None:
    """With ``auth_token`` set, every endpoint but the OpenAPI document needs it."""
    token = _services().settings.auth_token
    if not token or request.endpoint == "v1.openapi":
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    response = json_response("missing or wrong bearer token", 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="kingtask"'
    return response


def request_params() -> dict[str, Any]:
    """Parameters from the query string and from a JSON object or a form body.

    A parameter given in both is refused rather than one silently winning.
    """
    query: dict[str, Any] = request.args.to_dict() if request.query_string else {}
    body = request.get_data(cache=True)
    mimetype = request.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json") or (body and not mimetype):
        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError:
            raise InvalidRequest("request body is not valid JSON") from None
        if not isinstance(document, dict):
            raise InvalidRequest("request body must be a JSON object")
    else:
        document = request.form.to_dict()
    twice = sorted(query.keys() & document.keys())
    if twice:
        raise InvalidRequest(f"{twice[0]} is given both in the query string and in the body")
    return {**query, **document}


def _submit(spec: models.TaskSpec) -> Response:
    _services().scheduler.submit(spec)
    return json_response(spec.uuid)


@v1.post("/task")
@v1.post("/task/script")
def submit_script() -> Response:
    return _submit(
        models.script_spec(
            request_params(), max_task_run_time=_services().settings.max_task_run_time
        )
    )


@v1.post("/task/rpc")
def submit_rpc() -> Response:
    return _submit(
        models.rpc_spec(request_params(), max_task_run_time=_services().settings.max_task_run_time)
    )


@v1.get("/task/result/<uuid>")
def result(uuid: str) -> Response:
    return json_response(_services().store.result(models.parse_uuid(uuid)))


@v1.get("/task/count/undo")
def count_undo() -> Response:
    return json_response(_services().store.undo_count())


@v1.delete("/task/<uuid:uuid>")
def cancel(uuid: uuidlib.UUID) -> Response:
    """Extension: cancel a task that waits for its start time or a retry, or is queued."""
    answer = _services().scheduler.cancel(str(uuid))
    if answer == "running":
        raise InvalidRequest("the task is running and cannot be cancelled")
    if answer == "finished":
        raise InvalidRequest("the task has finished, or is unknown")
    return json_response(_services().store.result(str(uuid)))


@v1.get("/task/count/scheduled")
def count_scheduled() -> Response:
    """Extension: tasks whose next attempt waits for its time."""
    return json_response(_services().scheduler.scheduled_count())


@v1.get("/task/result/<any(success, failure):outcome>/<date>")
def count_day(outcome: str, date: str) -> Response:
    return json_response(_services().store.daily_count(outcome, models.parse_date(date)))


@v1.get("/openapi.json")
def openapi() -> Response:
    document = resources.files("kingtask").joinpath("openapi.json").read_text()
    return Response(document, content_type="application/json; charset=utf-8")
