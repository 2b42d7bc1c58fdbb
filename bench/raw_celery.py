"""Plain Celery running the same executable with the same worker settings: the baseline.

``celery -A bench.raw_celery worker`` starts it; the task stores its output as
a Celery result, as kingtask stores its own.
"""

from __future__ import annotations

import os
import subprocess

from celery import Celery

import celeryconfig

app = Celery("raw")
app.config_from_object(celeryconfig)
app.conf.task_ignore_result = False
app.conf.task_default_queue = "raw"


@app.task(name="raw.run")
def run(path: str, args: list[str]) -> str:
    done = subprocess.run([path, *args], capture_output=True, env={"PATH": os.environ["PATH"]})
    return done.stdout.decode()
