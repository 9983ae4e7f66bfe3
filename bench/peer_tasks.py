"""No-op tasks for bench/peers.py: raw Huey, Celery and RQ, each returning the time it ran.

The workers import this module from the ``bench`` folder and read their store from the
environment (as Tasklight's do): ``REDIS_URL``, or else the SQLite file ``TASKLIGHT_DATABASE``
(raw Huey only). The benchmark itself builds its own instances with ``make_huey`` and
``make_celery``.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from huey import RedisHuey, SqliteHuey


def noop() -> float:
    """Do nothing; return when it ran."""
    return time.time()


def make_huey(redis_url: str, database: str):
    """A Huey set up as Tasklight's (same backend, default storage options) with results kept, and its task."""
    huey = RedisHuey("raw", url=redis_url) if redis_url else SqliteHuey("raw", filename=database)
    return huey, huey.task(name="noop")(noop)


def make_celery(redis_url: str) -> Celery:
    """A Celery app with a Redis broker and result backend that records when a task starts."""
    app = Celery("peers", broker=redis_url, backend=redis_url)
    app.conf.update(task_track_started=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    app.task(name="noop")(noop)
    return app


REDIS_URL = os.environ.get("REDIS_URL", "")
DATABASE = os.environ.get("TASKLIGHT_DATABASE", "")
# Only the workers get these from the environment; the benchmark process leaves them unset.
huey = make_huey(REDIS_URL, DATABASE)[0] if REDIS_URL or DATABASE else None
celery = make_celery(REDIS_URL) if REDIS_URL else None
