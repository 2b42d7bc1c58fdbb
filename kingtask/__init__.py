"""kingtask: an asynchronous, timed task system on Celery and Redis.

``celery -A kingtask worker`` finds the Celery application here.
"""

from __future__ import annotations

from kingtask.app import app

__all__ = ["app"]
