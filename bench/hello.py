"""Flask hello-world: the baseline for the API's request overhead."""

from __future__ import annotations

from flask import Flask


def create_app() -> Flask:
    app = Flask("hello")

    @app.post("/")
    def hello() -> str:
        return "hello"

    return app
