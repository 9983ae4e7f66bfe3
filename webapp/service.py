"""Submit, cancel and retry jobs: the web side's only writers of job records."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import current_app
from huey.api import Huey

from .kinds import KINDS, Kind
from .store import CANCELLED, FAILED, QUEUED, RETRYING, RUNNING, Job, JobStore, StoreUnavailable, new_id
from .worker import enqueue_job

logger = logging.getLogger("tasklight")

#: States a job can be retried from.
RETRYABLE = frozenset({"failed", "lost", "cancelled", "expired"})


@dataclass
class Upload:
    name: str
    content: bytes


class Tasklight:
    """The store and the queue, with the operations that keep them in step."""

    def __init__(self, store: JobStore, huey: Huey):
        self.store = store
        self.huey = huey

    def close(self) -> None:
        """Release the connections of the store and the queue (on Redis they share one pool)."""
        self.store.close()
        self.huey.storage.close()

    def submit(
        self,
        kind: Kind,
        owner: str,
        inputs: dict,
        options: dict | None = None,
        upload: Upload | None = None,
        retry_of: str | None = None,
    ) -> Job:
        """Record a job as queued, then enqueue it under the same id.

        :raises StoreUnavailable: nothing could be recorded, or the record
            could not be enqueued (it is then marked failed, so it is not
            left waiting forever).
        """
        options = {
            "retry_delay": kind.retry_delay,
            "time_limit": kind.time_limit,
            "queue_expiry": kind.queue_expiry,
            **(options or {}),
        }
        now = time.time()
        job = Job(
            id=new_id(),
            kind=kind.name,
            owner=owner,
            inputs=inputs,
            options=options,
            max_attempts=kind.retries + 1,
            created_at=now,
            retry_of=retry_of,
            start_by=now + options["queue_expiry"] if options["queue_expiry"] else None,
            upload={"name": upload.name, "size": len(upload.content)} if upload else None,
        )
        self.store.create(job, upload.content if upload else None)
        try:
            enqueue_job(self.huey, job)
        except Exception as exc:
            logger.exception("could not enqueue job %s", job.id)
            error = {"message": "The job could not be queued. Please try again.", "ref": job.id[:8]}
            try:
                self.store.finish(job.id, FAILED, {"error": error}, states={QUEUED})
            except StoreUnavailable:
                pass
            raise StoreUnavailable("enqueue failed") from exc
        return job

    def cancel(self, job: Job) -> str:
        """Cancel a waiting job at once, or ask a running one to stop; return what happened."""
        if self.store.finish(job.id, CANCELLED, states={QUEUED, RETRYING}):
            return "The job was cancelled before it ran."
        if self.store.update(job.id, {"cancel_requested": True}, states={RUNNING}):
            return "Cancelling: the job stops at its next progress report."
        current = self.store.get(job.id)
        return f"The job has already ended ({current.state}); nothing was changed."

    def retry(self, job: Job) -> Job:
        """Submit a new job with the same inputs and upload, linked both ways to ``job``.

        :raises ValueError: the job is not in a state that can be retried.
        """
        if job.state not in RETRYABLE:
            raise ValueError(f"A {job.state} job cannot be retried.")
        upload = None
        if job.upload is not None:
            upload = Upload(job.upload["name"], self.store.upload(job.id) or b"")
        new = self.submit(KINDS[job.kind], job.owner, job.inputs, job.options, upload, retry_of=job.id)
        self.store.update(job.id, {"retried_by": new.id})
        return new


def service() -> Tasklight:
    """The current app's Tasklight."""
    return current_app.extensions["tasklight"]
