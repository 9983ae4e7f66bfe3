"""The worker side: the Huey instance, the one task that runs every job, and
the signal handlers and heartbeats that keep each job's record truthful.

Every kind of job runs through the single Huey task ``run_job(job_id)``. It
reads the job's record, runs the kind's function with a ``JobContext`` and
writes the outcome back. Huey's signals cover what the task itself cannot see:
unexpected errors and retries, queue expiry and a consumer being stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable

from huey import RedisHuey, SqliteHuey, signals
from huey.api import Huey, Task
from huey.exceptions import TaskTimeout
from huey.utils import normalize_time

from .config import Settings
from .store import CANCELLED, FAILED, RETRYING, RUNNING, SUCCEEDED, Job, JobStore, open_store

logger = logging.getLogger("tasklight.worker")

#: Job functions by kind, filled in by ``@job_kind`` in tasks.py.
JOB_FUNCTIONS: dict[str, Callable] = {}


def job_kind(name: str) -> Callable[[Callable], Callable]:
    """Register a function as the body of the jobs of kind ``name``."""

    def register(func: Callable) -> Callable:
        JOB_FUNCTIONS[name] = func
        return func

    return register


class JobError(Exception):
    """A failure whose message is written for the job's owner and shown as is."""


class JobCancelled(Exception):
    """Raised inside a job at a progress report once its owner asked it to stop."""


class Superseded(Exception):
    """This attempt no longer owns the job (it was marked lost or re-queued)."""


class JobContext:
    """What a running job sees: its upload, progress reporting and cancellation."""

    #: Progress writes closer together than this are skipped (the last one never is).
    min_interval = 0.1

    def __init__(self, store: JobStore, job_id: str, attempt: int, task: Task | None = None):
        self.store = store
        self.job_id = job_id
        self.attempt = attempt
        self.task = task
        self._last_write = 0.0

    def report(self, done: float, total: float | None = None, message: str = "") -> None:
        """Record progress, and stop the job here if it was cancelled or ran out of time.

        :raises JobCancelled: the owner asked the job to stop.
        :raises TaskTimeout: the kind's time limit has passed.
        """
        if self.task is not None:
            self.task.check_timeout()
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - self._last_write < self.min_interval and not finished:
            return
        self._last_write = now
        progress = {"done": done, "total": total, "message": message}
        job = self.store.update(
            self.job_id,
            {"progress": progress, "heartbeat_at": time.time()},
            states={RUNNING},
            attempt=self.attempt,
        )
        if job is None:
            raise Superseded(self.job_id)
        if job.cancel_requested:
            raise JobCancelled(self.job_id)

    def upload(self) -> io.BytesIO:
        """The file uploaded with the job, read from the store so any host can run it."""
        return io.BytesIO(self.store.upload(self.job_id) or b"")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def error_ref(job_id: str, attempt: int) -> str:
    """A short reference shown to the owner; admins find the traceback by the job id it starts with."""
    return f"{job_id[:8]}-{attempt}"


def failure(job_id: str, attempt: int, message: str | None = None) -> dict:
    """The changes that record a failure: the owner's message (or a generic one) and a reference."""
    ref = error_ref(job_id, attempt)
    return {"error": {"message": message or f"The job failed (ref {ref}).", "ref": ref}}


def enqueue_job(huey: Huey, job: Job) -> None:
    """Put a recorded job's task in Huey's queue, under the job's id, with the job's options."""
    options = job.options
    expires = max(job.start_by - time.time(), 0) if job.start_by is not None else None
    task = huey.run_job.s(
        job.id,
        id=job.id,
        retries=job.max_attempts - 1,
        retry_delay=options.get("retry_delay") or 0,
        timeout=options.get("time_limit"),
        expires=expires,
    )
    huey.enqueue(task)


class Heartbeat:
    """Renews, every few seconds, this process's liveness and that of its running jobs.

    It also reaps: any consumer marks stale jobs lost, purges expired ones and
    re-enqueues stranded ones, so no separate scheduler is needed. One thread
    per process.
    """

    def __init__(self, store: JobStore, huey: Huey, interval: float, requeue_after: float):
        self.store = store
        self.huey = huey
        self.interval = interval
        self.requeue_after = requeue_after
        self._next_requeue_check = 0.0
        self.running: dict[str, int] = {}
        self._pid: int | None = None
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        # A forked worker process inherits the object but not the thread.
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                # Check in before the first job starts, so no page says "no worker" about a running job.
                with contextlib.suppress(Exception):
                    self.store.beat_worker(worker_name())
                threading.Thread(target=self._run, name="tasklight-heartbeat", daemon=True).start()
                atexit.register(self._forget)

    def _forget(self) -> None:
        # A consumer that exits (SIGINT or SIGTERM) says so; a killed one just stops beating.
        with contextlib.suppress(Exception):
            self.store.forget_worker(worker_name())

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception:
                logger.exception("heartbeat failed; will try again")
            time.sleep(self.interval)

    def beat(self) -> None:
        self.store.beat_worker(worker_name())
        now = time.time()
        for job_id, attempt in list(self.running.items()):
            self.store.update(job_id, {"heartbeat_at": now}, states={RUNNING}, attempt=attempt)
        self.store.reap()
        if time.monotonic() >= self._next_requeue_check:
            # Reading the whole queue is not free, so look at most once per tenth of the wait.
            self._next_requeue_check = time.monotonic() + max(self.interval, self.requeue_after / 10)
            self.requeue_stranded()

    def requeue_stranded(self) -> int:
        """Enqueue again each job queued for long whose task is in neither Huey's queue nor its schedule.

        Huey pops a task with no acknowledgement, so a consumer that dies
        between popping a task and starting its job leaves a record queued
        that no task will ever run. Enqueueing a job twice is harmless: only
        one task can move it from queued to running.
        """
        stranded = self.store.stranded(time.time() - self.requeue_after)
        if not stranded:
            return 0
        present = {task.id for task in self.huey.pending()} | {task.id for task in self.huey.scheduled()}
        count = 0
        for job in stranded:
            if job.id not in present:
                logger.warning("job %s is still queued but its task is gone; enqueueing it again", job.id)
                enqueue_job(self.huey, job)
                count += 1
        return count


def create_huey(settings: Settings | None = None, store: JobStore | None = None) -> Huey:
    """Build the Huey instance and job store that ``settings`` select, with the job task registered.

    The web app and the consumer each call this; they agree because the task
    is registered under the same name and both read the same settings.
    """
    settings = settings or Settings.from_env()
    store = store or open_store(settings)
    if settings.REDIS_URL:
        # Share the store's pool, so that a Sentinel setup covers the queue too.
        huey = RedisHuey("tasklight", connection_pool=store.redis.connection_pool, results=False)
    else:
        huey = SqliteHuey("tasklight", filename=settings.database_path, results=False)
    heartbeat = Heartbeat(store, huey, settings.HEARTBEAT_INTERVAL, settings.REQUEUE_AFTER)

    @huey.task(context=True, name="run_job")
    def run_job(job_id: str, task: Task) -> None:
        """Run one attempt of a job and record how it ended."""
        job = store.start(job_id, worker_name())
        if job is None:
            logger.info("job %s is no longer waiting to run; skipped", job_id)
            with contextlib.suppress(LookupError):
                store.get(job_id)  # A read marks a job that missed its start deadline as expired.
            return
        heartbeat.ensure_started()
        heartbeat.running[job_id] = job.attempt
        task.tasklight_attempt = job.attempt
        guard = {"states": {RUNNING}, "attempt": job.attempt}
        context = JobContext(store, job_id, job.attempt, task)
        try:
            function = JOB_FUNCTIONS[job.kind]
            result = function(context, **job.inputs)
        except JobCancelled:
            store.finish(job_id, CANCELLED, {"progress": {**job.progress, "message": "Cancelled."}}, **guard)
        except JobError as exc:
            store.finish(job_id, FAILED, failure(job_id, job.attempt, str(exc)), **guard)
        except TaskTimeout:
            message = f"The job was stopped after {task.timeout:g} s, its time limit."
            store.finish(job_id, FAILED, failure(job_id, job.attempt, message), **guard)
        except Superseded:
            logger.warning("job %s attempt %s was superseded; its result is dropped", job_id, job.attempt)
        else:
            store.finish(job_id, SUCCEEDED, {"result": result}, **guard)
        finally:
            heartbeat.running.pop(job_id, None)

    @huey.signal(signals.SIGNAL_ERROR)
    def on_error(signal: str, task: Task, exc: BaseException) -> None:
        # Unexpected errors reach Huey, which retries while the task has retries left.
        attempt = getattr(task, "tasklight_attempt", None)
        if attempt is None:
            return
        details = "".join(traceback.format_exception(exc))
        store.update(task.id, {"traceback": details}, states={RUNNING}, attempt=attempt)
        if not task.retries:
            store.finish(task.id, FAILED, failure(task.id, attempt), states={RUNNING}, attempt=attempt)

    @huey.signal(signals.SIGNAL_RETRYING)
    def on_retrying(signal: str, task: Task) -> None:
        changes = {"state": RETRYING, "next_attempt_at": time.time() + (task.retry_delay or 0)}
        store.update(task.id, changes, states={RUNNING}, attempt=getattr(task, "tasklight_attempt", None))

    @huey.signal(signals.SIGNAL_EXPIRED)
    def on_expired(signal: str, task: Task) -> None:
        with contextlib.suppress(LookupError):
            store.mark_expired(store.get(task.id))

    @huey.signal(signals.SIGNAL_INTERRUPTED)
    def on_interrupted(signal: str, task: Task) -> None:
        # The consumer is shutting down without waiting: put the job back in
        # the queue so that the next consumer starts it again from the top.
        attempt = getattr(task, "tasklight_attempt", None)
        message = "The worker was stopped; the job will start again on the next worker."
        changes = {
            "state": RETRYING,
            "next_attempt_at": None,
            "progress": {"done": 0, "total": None, "message": message},
        }
        if store.update(task.id, changes, states={RUNNING}, attempt=attempt) is not None:
            heartbeat.running.pop(task.id, None)
            # Schedule it a moment ahead rather than enqueue it: this consumer's
            # idle workers may still be blocked on the queue and would take it
            # with them as the process exits. The next consumer's scheduler
            # moves it to the queue.
            task.eta = normalize_time(delay=2, utc=huey.utc)
            huey.add_schedule(task)

    @huey.on_startup()
    def start_heartbeat() -> None:
        heartbeat.ensure_started()

    huey.run_job = run_job
    return huey
