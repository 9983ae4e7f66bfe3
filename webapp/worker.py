"""The consumer side: runs each attempt of a job and keeps its record truthful.

``Worker.run`` is the body of the queue's one task. It reads the job's record,
runs the kind's body with a ``JobContext`` and writes the outcome back. Huey's
signals cover what the task itself cannot see: queue expiry and a consumer
being stopped. A ``Heartbeat`` thread keeps running jobs alive in the store and
reaps the ones whose worker died.
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
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

from huey import signals
from huey.api import Task
from huey.exceptions import TaskTimeout
from huey.utils import normalize_time

from .config import Settings
from .kinds import KINDS
from .queue import JobQueue, JobRunner, SqliteQueueStorage
from .store import (
    CANCELLED,
    FAILED,
    MAX_LOG_LINE,
    MAX_LOG_LINES,
    MAX_TRACEBACK,
    QUEUED,
    RETRYING,
    RUNNING,
    SUCCEEDED,
    TIMEOUT,
    Job,
    JobStore,
    StoreUnavailable,
    clip,
    open_store,
)
from .store.sqlite import TakenTask

logger = logging.getLogger("tasklight.worker")

#: A kind's body: takes a ``JobContext`` and the job's inputs, returns a JSON-serialisable result.
Body = Callable[..., object]


class JobError(Exception):
    """A failure whose message is written for the job's owner and shown as is."""


class JobCancelled(Exception):
    """Raised inside a job at a progress report once its owner asked it to stop."""


class Superseded(Exception):
    """This attempt no longer owns the job (it was marked lost or re-queued)."""


def worker_name() -> str:
    """This process, as "host:pid"; the host is ``HOSTNAME`` when set, as in a container, else the system's name."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}:{os.getpid()}"


class JobContext:
    """What a running job sees: its upload, progress reporting, log lines and cancellation."""

    #: Progress reports and log lines closer together than this are coalesced, so a body may report as often
    #: as it likes while the store sees at most four writes a second; what is left lands with the ending.
    min_interval = 0.25

    def __init__(self, store: JobStore, record: Job, task: Task | None = None):
        self.store = store
        #: The record as this attempt last wrote it; a write based on it needs no read first.
        self.record = record
        self.task = task
        #: The latest report not yet written.
        self.pending: dict | None = None
        self._lines: list[dict] = []
        # Starting the attempt wrote its record just now, so a report in the first moment can wait.
        self._last_write = time.monotonic()

    @property
    def job_id(self) -> str:
        return self.record.id

    @property
    def attempt(self) -> int:
        return self.record.attempt

    @property
    def rerun_of(self) -> str | None:
        """The id of the job this one runs again, if it is a re-run."""
        return self.record.retry_of

    def report(self, done: float, total: float | None = None, message: str = "") -> None:
        """Record progress, and stop the job here if it was cancelled or ran out of time.

        :raises JobCancelled: the owner asked the job to stop.
        :raises TaskTimeout: the kind's time limit has passed.
        """
        if self.task is not None:
            self.task.check_timeout()
        self.pending = {"done": done, "total": total, "message": message}
        self._write_if_due()

    def log(self, line: str) -> None:
        """Write a line for the job's owner to read, as plain text; the last few dozen are kept.

        Never log a traceback: the owner sees these lines. Unexpected errors reach admins by themselves.
        """
        self._lines.append({"at": self.store.now(), "line": clip(str(line), MAX_LOG_LINE)})
        self._write_if_due()

    def _write_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_write >= self.min_interval:
            self._last_write = now
            try:
                self.write({"heartbeat_at": self.store.now()})
            except StoreUnavailable:
                # The store is out, not the job: keep the report for the next write and work on.
                logger.warning("job %s could not report progress; the store is unreachable", self.job_id)

    def _unwritten(self) -> dict:
        """The reports, log lines and progress milestone that have not reached the store yet."""
        changes: dict = {}
        if self.pending is not None:
            changes["progress"] = self.pending
            milestone = quarter(self.pending)
            if milestone > quarter(self.record.progress):
                changes["event"] = {"event": "progress", "message": f"{25 * milestone}% done."}
        if self._lines:
            changes["log"] = [*self.record.log, *self._lines][-MAX_LOG_LINES:]
        return changes

    def write(self, changes: dict) -> Job:
        """Write ``changes``, with what is unwritten, to this attempt's running record.

        :raises Superseded: the attempt no longer owns the job.
        :raises JobCancelled: the owner asked the job to stop.
        """
        changes = {**self._unwritten(), **changes}
        job = self.store.update(self.job_id, changes, states={RUNNING}, attempt=self.attempt, known=self.record)
        if job is None:
            raise Superseded(self.job_id)
        self.record, self.pending, self._lines = job, None, []
        if job.cancel_requested:
            raise JobCancelled(self.job_id)
        return job

    def finish(self, state: str, changes: dict) -> Job | None:
        """End this attempt's job in ``state``, with whatever it has not written yet.

        A store that is out is waited for, a while: the outcome is the one write a job must not lose.
        """
        unwritten = self._unwritten()
        unwritten.pop("event", None)  # The ending is an event of its own.
        guard = {"states": {RUNNING}, "attempt": self.attempt, "known": self.record}
        return until_reachable(lambda: self.store.finish(self.job_id, state, {**unwritten, **changes}, **guard))

    def open_upload(self) -> BinaryIO:
        """The file uploaded with the job, read from the store so that any host can run it."""
        return io.BytesIO(self.store.upload_content(self.job_id) or b"")


#: How long the writes that end an attempt wait for a store that is out, and how often they try again.
ENDING_PATIENCE, ENDING_RETRY = 60.0, 0.5


def until_reachable(write: Callable[[], Job | None]) -> Job | None:
    """``write()``, tried again while the store is unreachable, for up to ``ENDING_PATIENCE`` seconds."""
    deadline = time.monotonic() + ENDING_PATIENCE
    while True:
        try:
            return write()
        except StoreUnavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(ENDING_RETRY)


def quarter(progress: dict) -> int:
    """The milestone ``progress`` has passed: 1, 2 or 3 quarters of the work (the end is an event of its own)."""
    done, total = progress.get("done") or 0, progress.get("total")
    return min(int(4 * done / total), 3) if total else 0


def cancelled_by_owner(job: Job, progress: dict) -> dict:
    """The changes that end a job its owner cancelled."""
    return {
        "progress": {**progress, "message": "Cancelled."},
        "error": job.cancellation(),
    }


def time_limit_error(job: Job, limit: float) -> dict:
    return job.failure(f"Timed out after {limit:g} s, its time limit.", TIMEOUT)


class Heartbeat:
    """Keeps this process's running jobs honest, and recovers the jobs that nobody runs.

    Every ``interval`` seconds it renews the liveness of this process and of
    the jobs it runs. Every tick (at most a second) it also ends, on time, a
    job whose time limit has passed or whose owner cancelled it, even when its
    body never reports: a thread cannot be stopped from outside, so the body
    runs on but its outcome is refused. And it reaps: any consumer marks stale
    jobs lost, purges old ones and gives waiting jobs without a task a new one,
    so no separate scheduler is needed. One thread per process.
    """

    def __init__(self, store: JobStore, queue: JobQueue, interval: float, requeue_after: float):
        self.store = store
        self.queue = queue
        self.interval = interval
        self.requeue_after = requeue_after
        self.tick = min(interval, 1.0)
        self._next_beat = self._next_recovery = 0.0
        #: The attempt of each job this process is running, by job id.
        self._running: dict[str, int] = {}
        self._pid: int | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def running(self, job_id: str, attempt: int) -> Iterator[None]:
        """Keep this attempt's heartbeat going while the block runs."""
        self.ensure_started()
        self._running[job_id] = attempt
        try:
            yield
        finally:
            self._running.pop(job_id, None)

    def attempt_of(self, job_id: str) -> int | None:
        """The attempt of ``job_id`` this process is running, if it is running one."""
        return self._running.get(job_id)

    def let_go(self, job_id: str) -> None:
        """Stop beating for a job that this process hands back to the queue."""
        self._running.pop(job_id, None)

    def ensure_started(self) -> None:
        # A forked worker process inherits the object but not the thread.
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                # Check in before the first job starts, so no page says "no worker" about a running job.
                with contextlib.suppress(Exception):
                    self.store.beat_worker(worker_name())
                threading.Thread(target=self._loop, name="tasklight-heartbeat", daemon=True).start()
                atexit.register(self._forget)

    def _forget(self) -> None:
        # A consumer that exits (SIGINT or SIGTERM) says so; a killed one just stops beating.
        with contextlib.suppress(Exception):
            self.store.forget_worker(worker_name())

    def _loop(self) -> None:
        while True:
            try:
                self.step(time.monotonic())
            except Exception:
                logger.exception("heartbeat failed; will try again")
            time.sleep(self.tick)

    def step(self, now: float) -> None:
        """One tick: enforce limits and cancels; beat and reap when due; recover waiting jobs when due."""
        self.enforce()
        if now >= self._next_beat:
            self._next_beat = now + self.interval
            self.beat()
        if now >= self._next_recovery:
            # Reading the whole queue is not free, so look at most once per tenth of the wait.
            self._next_recovery = now + max(self.interval, self.requeue_after / 10)
            self.recover_waiting()

    def enforce(self) -> None:
        """End this process's jobs that ran past their time limit or were cancelled, whatever their body does."""
        for job_id, attempt in list(self._running.items()):
            job = self.store.load(job_id)
            if job is None or job.state != RUNNING or job.attempt != attempt:
                continue
            guard = {"states": {RUNNING}, "attempt": attempt}
            limit = job.options.get("time_limit")
            if job.cancel_requested:
                self.store.finish(job_id, CANCELLED, cancelled_by_owner(job, job.progress), **guard)
            elif limit and self.store.now() - job.started_at > limit:
                self.store.finish(job_id, FAILED, {"error": time_limit_error(job, limit)}, **guard)

    def beat(self) -> None:
        self.store.beat_worker(worker_name())
        now = self.store.now()
        for job_id, attempt in list(self._running.items()):
            self.store.update(job_id, {"heartbeat_at": now}, states={RUNNING}, attempt=attempt)
        self.store.reap()

    def recover_waiting(self) -> int:
        """Give each job that has waited long, with no task in Huey's queue or schedule, a task again.

        Huey pops a task with no acknowledgement, so a consumer that dies
        between popping a task and starting its attempt leaves a queued or
        retrying record that no task will ever run. Enqueueing a job twice is
        harmless: only one task can move it to running. A queued job whose
        task was never handed over (``enqueued`` is false: an older version's
        submit that failed half-way, whose user was told so) is failed
        instead, so that it never runs.
        """
        stuck = self.store.waiting(self.store.now() - self.requeue_after)
        if not stuck:
            return 0
        present = self.queue.task_ids()
        count = 0
        for job in stuck:
            if job.id in present:
                continue
            if job.state == QUEUED and not job.enqueued:
                error = job.failure("The job could not be queued, so it was not run.")
                self.store.finish(job.id, FAILED, {"error": error}, states={QUEUED})
                continue
            logger.warning("job %s is still %s but its task is gone; enqueueing it again", job.id, job.state)
            self.queue.enqueue_job(job)
            count += 1
        return count


class ConsumerQueue(JobQueue):
    """The queue as a consumer takes from it. On SQLite, taking a task and starting its job are one write.

    Huey takes a task in a transaction of its own, and the attempt's start was another. On SQLite
    every write waits for the file's one lock, so each job's tracking cost a write more than Huey's
    own. Here the take starts the job it runs, when Huey is about to run it: the task is due and has
    not expired, judged at the same moment, which ``execute`` then uses for Huey's own checks.
    On Redis, Huey's blocking pop is not a write to share, and ``dequeue`` is Huey's.
    """

    def __init__(self, settings: Settings, store: JobStore, run: JobRunner):
        super().__init__(settings, store, run)
        #: This worker thread's last take: (task id, the moment it was judged at, the start's outcome).
        self._taken = threading.local()

    def dequeue(self) -> Task | None:
        if not isinstance(self.storage, SqliteQueueStorage):
            return super().dequeue()
        take = self.storage.take_statements()
        now = self._get_timestamp()
        tasks: list[Task] = []

        def to_start(data: bytes) -> tuple[str, Job | None] | None:
            task = self.deserialize_task(data)
            tasks.append(task)
            expired = task.expires_resolved and task.expires_resolved < now
            if task.name != self.job_task.name or not self.ready_to_run(task, now) or expired:
                return None
            job_id, record = task.args[0], (task.args[1:] or (None,))[0]
            return job_id, Job.from_json(record) if record else None

        taken = self._store.take_task(take, to_start, worker_name())
        if taken is None:
            return None
        # A task that could not be read raises here, once it is gone, as from Huey's own dequeue.
        task = tasks[0] if tasks else self.deserialize_task(taken.data)
        self._taken.last = (task.id, now, taken) if taken.tried else None
        return task

    def execute(self, task: Task, timestamp=None):
        last = getattr(self._taken, "last", None)
        if last is not None and last[0] == task.id:
            timestamp = last[1]  # Huey's checks see the moment the take judged the task due.
        return super().execute(task, timestamp)

    def started_by_take(self, task: Task) -> TakenTask | None:
        """How taking ``task`` went, if the take tried to start its job; None if it did not try."""
        last, self._taken.last = getattr(self._taken, "last", None), None
        return last[2] if last is not None and last[0] == task.id else None


class Worker:
    """Runs jobs from the queue with the kinds' bodies, and answers Huey's signals about them."""

    def __init__(self, settings: Settings, store: JobStore, bodies: Mapping[str, Body]):
        check_bodies(bodies)
        self.store = store
        self.bodies = dict(bodies)
        self.queue = ConsumerQueue(settings, store, run=self.run)
        self.heartbeat = Heartbeat(store, self.queue, settings.HEARTBEAT_INTERVAL, settings.REQUEUE_AFTER)
        self.queue.signal(signals.SIGNAL_EXPIRED)(self.on_expired)
        self.queue.signal(signals.SIGNAL_INTERRUPTED)(self.on_interrupted)
        self.queue.on_startup()(self.heartbeat.ensure_started)

    def run(self, job_id: str, record: str | None, task: Task) -> None:
        """Run one attempt of a job and record how it ended.

        ``record`` is the job as stored when the task was made: while it is current, the start
        needs no read first (on Redis, one round trip instead of two). On SQLite, taking the task
        has started the job already (``ConsumerQueue``).
        """
        taken = self.queue.started_by_take(task)
        if taken is None:
            job = self.store.start(job_id, worker_name(), Job.from_json(record) if record else None)
        else:
            job = taken.started
        if job is None:
            logger.info("job %s is no longer waiting to run; skipped", job_id)
            with contextlib.suppress(LookupError):
                self.store.get(job_id)  # A read marks a job that missed its start deadline as expired.
            return
        context = JobContext(self.store, job, task)
        with self.heartbeat.running(job_id, job.attempt):
            try:
                result = self.bodies[job.kind](context, **job.inputs)
            except JobCancelled:
                context.finish(CANCELLED, cancelled_by_owner(job, context.pending or context.record.progress))
            except JobError as exc:
                context.finish(FAILED, {"error": job.failure(str(exc))})
            except TaskTimeout:
                context.finish(FAILED, {"error": time_limit_error(job, task.timeout)})
            except Superseded:
                logger.warning("job %s attempt %s was superseded; its result is dropped", job_id, job.attempt)
            except Exception as exc:
                # Unexpected: the traceback is kept for admins, and Huey retries while the task has retries left.
                # The end of a traceback says the most, so that is what a cut keeps.
                details = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]
                event = {"traceback": details}
                if task.retries:
                    retry_at = self.store.now() + task.retry_delay
                    event["message"] = f"Attempt {job.attempt} failed unexpectedly; it will be tried again."
                    changes = {"traceback": details, "state": RETRYING, "next_attempt_at": retry_at, "event": event}
                    guard = {"states": {RUNNING}, "attempt": job.attempt, "known": context.record}
                    until_reachable(lambda: self.store.update(job_id, changes, **guard))
                else:
                    context.finish(FAILED, {"traceback": details, "error": job.failure(), "event": event})
                raise
            else:
                context.finish(SUCCEEDED, {"result": result})

    def on_expired(self, signal: str, task: Task) -> None:
        with contextlib.suppress(LookupError):
            self.store.mark_expired(self.store.get(task.id))

    def on_interrupted(self, signal: str, task: Task) -> None:
        """The consumer is shutting down without waiting: hand the job back, to start again from the top."""
        message = "The worker was stopped; the job will start again on the next worker."
        progress = {"done": 0, "total": None, "message": message}
        changes = {"state": RETRYING, "next_attempt_at": None, "progress": progress, "event": {"message": message}}
        attempt = self.heartbeat.attempt_of(task.id)
        if self.store.update(task.id, changes, states={RUNNING}, attempt=attempt) is not None:
            self.heartbeat.let_go(task.id)
            # Schedule it a moment ahead rather than enqueue it: this consumer's
            # idle workers may still be blocked on the queue and would take it
            # with them as the process exits. The next consumer's scheduler
            # moves it to the queue.
            task.eta = normalize_time(delay=2, utc=self.queue.utc)
            self.queue.add_schedule(task)


def check_bodies(bodies: Mapping[str, Body]) -> None:
    """Refuse to start unless there is exactly one body for each kind of job.

    :raises LookupError: a kind has no body, or a body has no kind.
    """
    missing, unknown = KINDS.keys() - bodies.keys(), bodies.keys() - KINDS.keys()
    if missing or unknown:
        raise LookupError(f"kinds without a body: {sorted(missing)}; bodies without a kind: {sorted(unknown)}")


def create_huey(bodies: Mapping[str, Body], settings: Settings | None = None) -> JobQueue:
    """The consumer's queue, which runs each kind's body; ``huey_consumer tasks.huey`` runs it."""
    settings = settings or Settings.load()
    return Worker(settings, open_store(settings), bodies).queue
