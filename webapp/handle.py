"""A handle on a job by its id, for Python code in the same deployment: scripts, views and tests.

It replaces Celery's ``AsyncResult(task_id).get(timeout=...)``::

    handle = JobHandle.fetch(job_id)          # inside an app context, or pass app=
    result = handle.wait(timeout=30)          # JobFailed, JobCancelled, ... or TimeoutError

A handle holds a snapshot of the job's record. Its properties read that
snapshot; ``ready()``, ``successful()``, ``failed()``, ``refresh()`` and
``wait()`` read the store again, as Celery's do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, current_app

from .service import Tasklight
from .store import CANCELLED, EXPIRED, FAILED, LOST, SUCCEEDED, Job

#: First pause between reads while waiting, and the longest one.
FIRST_DELAY, MAX_DELAY = 0.05, 1.0


class JobNotSucceeded(Exception):
    """The job ended without a result; ``message`` is safe to show to its owner."""

    def __init__(self, job: Job):
        self.job = job
        self.message = (job.error or {}).get("message") or f"The job ended {job.state}."
        super().__init__(self.message)


class JobFailed(JobNotSucceeded):
    """The job raised an error (its own message, or "the job failed (ref X)")."""


class JobLost(JobNotSucceeded):
    """The worker running the job stopped."""


class JobCancelled(JobNotSucceeded):
    """The job was cancelled."""


class JobExpired(JobNotSucceeded):
    """The job was not started in time (its state is ``expired``)."""


ENDINGS: dict[str, type[JobNotSucceeded]] = {
    FAILED: JobFailed,
    LOST: JobLost,
    CANCELLED: JobCancelled,
    EXPIRED: JobExpired,
}


def delays() -> Iterator[float]:
    """Pauses between reads: 50 ms, doubling, capped at 1 s, so waiting never hammers the store."""
    delay = FIRST_DELAY
    while True:
        yield delay
        delay = min(delay * 2, MAX_DELAY)


class JobHandle:
    """A job, looked up by id, that can be followed, waited on, cancelled and retried."""

    def __init__(self, tasklight: Tasklight, record: Job):
        self._tasklight = tasklight
        self.record = record

    @classmethod
    def fetch(cls, job_id: str, app: Flask | None = None, owner: str | None = None) -> JobHandle:
        """Look up a job now.

        :param app: the app whose store to use; the current app by default.
        :param owner: if given, a job owned by anyone else is not found.
        :raises JobNotFound: no such job (at once, without waiting).
        :raises JobPurged: the job's record was purged.
        """
        tasklight = (app or current_app).extensions["tasklight"]
        return cls(tasklight, tasklight.store.get_for(job_id, owner))

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.kind} {self.state}>"

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def progress(self) -> dict:
        return self.record.progress

    @property
    def result(self) -> Any:
        return self.record.result

    @property
    def error(self) -> dict | None:
        """``{"message": ..., "ref": ...}``, safe to show; never the traceback."""
        return self.record.error

    def ready(self) -> bool:
        """Whether the job has ended; reads the store, so ``while not job.ready()`` loops work."""
        return self.refresh().record.terminal

    def successful(self) -> bool:
        """Whether the job has succeeded (reads the store)."""
        return self.refresh().record.state == SUCCEEDED

    def failed(self) -> bool:
        """Whether the job has failed (reads the store)."""
        return self.refresh().record.state == FAILED

    def refresh(self) -> JobHandle:
        """Read the job's record again (one read); returns the handle for chaining."""
        self.record = self._tasklight.store.get(self.id)
        return self

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job ends and return its result.

        :raises JobNotSucceeded: one of its subclasses, when the job ends otherwise.
        :raises TimeoutError: the job has not ended after ``timeout`` seconds; it is left running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pauses = delays()
        while not self.ready():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {self.id} is still {self.state} after {timeout:g} s")
            pause = next(pauses)
            time.sleep(pause if left is None else min(pause, left))
        if self.state == SUCCEEDED:
            return self.result
        raise ENDINGS[self.state](self.record)

    def cancel(self) -> str:
        """Cancel the job if waiting, or ask it to stop if running; returns what happened."""
        message = self._tasklight.cancel(self.record)
        self.refresh()
        return message

    def retry(self) -> JobHandle:
        """Start a new job with the same inputs and return its handle.

        :raises NotRetryable: the job is not failed, lost, cancelled or expired.
        """
        self.refresh()
        new = self._tasklight.retry(self.record)
        self.refresh()
        return JobHandle(self._tasklight, new)
