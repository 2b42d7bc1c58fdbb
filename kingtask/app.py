"""The Celery application, configured by the top-level ``celeryconfig`` module."""

from __future__ import annotations

from celery import Celery

app = Celery("kingtask")
app.config_from_object("celeryconfig")
app.conf.include = ["kingtask.tasks"]
