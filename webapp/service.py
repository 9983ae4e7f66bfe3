"""Submit, cancel and retry jobs: the web side's only writers of job records."""

from __future__ import annotations

import contextlib
import logging

from flask import current_app

from .forms import Upload
from .kinds import KINDS, Kind
from .queue import JobQueue
from .store import (
    CANCELLED,
    RUNNING,
    WAITING,
    Job,
    JobStore,
    new_id,
)

logger = logging.getLogger("tasklight")


class NotRetryable(ValueError):
    """Only a job that ended without a result can be retried."""

    def __init__(self, job: Job):
        super().__init__(f"Only a failed, lost, cancelled or expired job can be retried; this one is {job.state}.")


class UploadGone(LookupError):
    """The job's uploaded file is no longer kept, so the job cannot run again as it was."""


class OverLimit(Exception):
    """An owner is at one of the fair-use limits; ``message`` says which and what to do."""


#: What a bulk action does, in the words of its confirmation.
BULK_ACTIONS = {"cancel": "cancel", "retry": "run again", "purge": "purge (delete with their uploads)"}


class Tasklight:
    """The store and the queue, with the operations that keep them in step."""

    def __init__(self, store: JobStore, queue: JobQueue, max_active_jobs: int, max_stored_upload_bytes: int):
        self.store = store
        self.queue = queue
        self.max_active_jobs = max_active_jobs
        self.max_stored_upload_bytes = max_stored_upload_bytes

    def close(self) -> None:
        """Release the connections of the store and the queue (on Redis they share one pool)."""
        self.store.close()
        self.queue.storage.close()

    def submit(
        self,
        kind: Kind,
        owner: str,
        inputs: dict,
        options: dict | None = None,
        upload: Upload | None = None,
        retry_of: str | None = None,
        label: str = "",
        scheduled_for: float | None = None,
    ) -> Job:
        """Record a job as queued and enqueue its task under the same id, in one transaction.

        Both backends write the record and the task together (Redis in one
        MULTI/EXEC, SQLite in one transaction on the file that holds Huey's
        queue too), so a submit cannot stop half-way: either the job is
        recorded and queued, or nothing is.

        :raises OverLimit: the owner is at a fair-use limit; nothing was recorded.
        :raises StoreUnavailable: nothing could be recorded or queued.
        """
        self.check_limits(owner, len(upload.content) if upload else 0)
        options = kind.options(options)
        now = self.store.now()
        job = Job(
            id=new_id(),
            kind=kind.name,
            owner=owner,
            inputs=inputs,
            options=options,
            max_attempts=kind.retries + 1,
            created_at=now,
            retry_of=retry_of,
            # The start deadline counts from the scheduled time.
            start_by=(scheduled_for or now) + options["start_within"] if options["start_within"] else None,
            scheduled_for=scheduled_for,
            upload_name=upload.name if upload else None,
            upload_size=len(upload.content) if upload else None,
            label=label,
            enqueued=True,
        )
        return self.store.create(job, upload.content if upload else None, self.queue.push_command(job))

    def check_limits(self, owner: str, upload_bytes: int) -> None:
        """Refuse a new job that would take ``owner`` past a fair-use limit.

        :raises OverLimit: with a message that names the limit.
        """
        active, stored = self.store.usage(owner)
        if active >= self.max_active_jobs:
            raise OverLimit(
                f"You already have {active} jobs waiting or running, the most one person may have at once. "
                "Wait for one to finish, or cancel one, and try again."
            )
        if upload_bytes and stored + upload_bytes > self.max_stored_upload_bytes:
            limit = self.max_stored_upload_bytes / 1048576
            raise OverLimit(
                f"Your jobs' uploads would take more than {limit:.0f} MiB, the most kept for one person. "
                "Uploads are deleted with their jobs when those expire; until then, choose a smaller file."
            )

    def cancel(self, job: Job) -> str:
        """Cancel a waiting job at once, or ask a running one to stop; return what happened."""
        error = job.cancellation()
        if self.store.finish(job.id, CANCELLED, {"error": error}, states=WAITING):
            return "The job was cancelled before it ran."
        if self.store.update(
            job.id, {"cancel_requested": True, "event": {"event": "cancel_requested"}}, states={RUNNING}
        ):
            return "Cancelling: the job stops at its next progress report."
        current = self.store.get(job.id)
        return f"The job has already ended ({current.state}); nothing was changed."

    def retry(self, job: Job) -> Job:
        """Submit a new job with the same inputs and upload, linked both ways to ``job``.

        :raises NotRetryable: the job did not end without a result.
        """
        if not job.retryable:
            raise NotRetryable(job)
        return self.rerun(job, job.inputs, job.options, self.kept_upload(job), job.label)

    def rerun(
        self,
        job: Job,
        inputs: dict,
        options: dict,
        upload: Upload | None,
        label: str = "",
        scheduled_for: float | None = None,
    ) -> Job:
        """Submit a job that runs ``job`` again, with these inputs, linked to it both ways."""
        new = self.submit(KINDS[job.kind], job.owner, inputs, options, upload, job.id, label, scheduled_for)
        self.store.update(job.id, {"retried_by": new.id})
        return new

    def act_on_all(self, action: str, jobs: list[Job]) -> int:
        """Cancel, retry or purge each of ``jobs`` that the action applies to; return how many it acted on."""
        done = 0
        for job in jobs:
            if action == "cancel" and not job.terminal:
                self.cancel(job)
            elif action == "retry" and job.retryable and not job.retried_by:
                with contextlib.suppress(UploadGone, OverLimit):
                    self.retry(job)
            elif action == "purge":
                self.store.purge(job.id)
            else:
                continue
            done += 1
        return done

    def kept_upload(self, job: Job) -> Upload | None:
        """The file uploaded with ``job``, to run it again.

        :raises UploadGone: the job had a file, but it is no longer kept.
        """
        if job.upload_size is None:
            return None
        content = self.store.upload_content(job.id)
        if content is None:
            raise UploadGone("The file uploaded with this job is no longer kept. Start a new job with the file.")
        return Upload(job.upload_name, content)


def service() -> Tasklight:
    """The current app's Tasklight."""
    return current_app.extensions["tasklight"]
