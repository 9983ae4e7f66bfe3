"""Job records: the single source of truth for every job's state.

Huey has no status API and deletes results on read, so pages, fragments, the
JSON API and the CLI read only these records. This module holds the record,
its states and the rules for moving between them, and the store interface;
``sqlite.py`` and ``redis.py`` are its two backends. Every write is a
compare-and-set that can only move a job forward.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings

QUEUED, RUNNING, RETRYING = "queued", "running", "retrying"
SUCCEEDED, FAILED, CANCELLED, LOST, EXPIRED = "succeeded", "failed", "cancelled", "lost", "expired"
STATES = (QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELLED, LOST, EXPIRED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, LOST, EXPIRED})
#: Ended without a result, so "Run again" makes sense.
RETRYABLE = frozenset({FAILED, LOST, CANCELLED, EXPIRED})

#: Waiting for a worker: no attempt is running.
WAITING = frozenset({QUEUED, RETRYING})
#: Not ended: they count against an owner's active jobs.
ACTIVE = frozenset({QUEUED, RUNNING, RETRYING})

#: The only moves a job can make; anything else is refused.
TRANSITIONS = {
    QUEUED: {RUNNING, CANCELLED, EXPIRED, FAILED},
    RUNNING: {SUCCEEDED, FAILED, CANCELLED, LOST, RETRYING},
    RETRYING: {RUNNING, CANCELLED, EXPIRED, FAILED},
}

#: The one exception to "nothing changes a terminal job": fields that annotate
#: a job without changing its outcome. ``retried_by`` links an ended job to its
#: re-run, and ``shares`` are the links its owner made to show its result.
ANNOTATIONS = frozenset({"retried_by", "shares"})

#: Django 6's task framework has four coarse statuses; each state maps onto one of them.
COARSE_STATUS = {
    QUEUED: "READY",
    RETRYING: "READY",
    RUNNING: "RUNNING",
    SUCCEEDED: "SUCCESSFUL",
    FAILED: "FAILED",
    CANCELLED: "FAILED",
    LOST: "FAILED",
    EXPIRED: "FAILED",
}

#: Why a job ended without a result, beside its message: ``error["reason"]``.
TIMEOUT, CANCELLED_BY_USER, LOST_WORKER, EXPIRED_IN_QUEUE = (
    "timeout",
    "cancelled_by_user",
    "lost_worker",
    "expired_in_queue",
)

#: Caps that keep a record small, whatever a job does.
MAX_EVENTS = 100
MAX_LOG_LINES = 50
MAX_LOG_LINE = 500
MAX_ERROR_MESSAGE = 1000
MAX_TRACEBACK = 20_000


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis if anything was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StoreUnavailable(Exception):
    """The store cannot be reached; callers answer 503 and lose nothing."""


class JobNotFound(LookupError):
    """No job has this id (or it is not yours): always answered like a 404."""


class JobPurged(LookupError):
    """The job existed but its record was purged at ``purged_at``: answered with 410."""

    def __init__(self, job_id: str, purged_at: float, owner: str):
        super().__init__(job_id)
        self.purged_at = purged_at
        self.owner = owner


def new_id() -> str:
    return uuid.uuid4().hex


def error_ref(job_id: str, attempt: int) -> str:
    """The short reference shown with an error; admins find the job (and its traceback) by it."""
    return f"{job_id[:8]}-{attempt}"


@dataclass
class Job:
    """One job's record. Times are seconds since the epoch, UTC."""

    id: str
    kind: str
    owner: str
    inputs: dict = field(default_factory=dict)
    #: Execution options (``time_limit``, ``start_within``, ``retry_delay``) that a retry reuses.
    options: dict = field(default_factory=dict)
    state: str = QUEUED
    progress: dict = field(default_factory=lambda: {"done": 0, "total": None, "message": ""})
    result: Any = None
    #: Safe to show the owner: ``{"message": ..., "ref": ...}``.
    error: dict | None = None
    #: For admins only, never rendered to the owner.
    traceback: str | None = None
    attempt: int = 0
    max_attempts: int = 1
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    next_attempt_at: float | None = None
    worker: str | None = None
    cancel_requested: bool = False
    retry_of: str | None = None
    retried_by: str | None = None
    #: When the record is purged; set once the job is terminal.
    purge_at: float | None = None
    #: A job not started by then ends as expired (``created_at`` plus the kind's ``start_within``).
    start_by: float | None = None
    #: The uploaded file's name and size, if the job has one; its content is kept beside the record.
    upload_name: str | None = None
    upload_size: int | None = None
    #: Its task was handed to the queue. A submit writes the record and its task together, so this is
    #: False only for a record made without a task (such as by a test or a script), or by an older
    #: version whose submit failed half-way: such a queued job is failed, never run.
    enqueued: bool = False
    #: Since when the job has been waiting for a worker (queued, or retrying); None while it is not.
    waiting_since: float | None = None
    #: A short name the owner gave the job.
    label: str = ""
    #: When the owner asked the job to start, if not as soon as possible.
    scheduled_for: float | None = None
    #: What happened to the job, oldest first: ``{"at", "event", "message", "attempt"}``, and for admins
    #: only ``worker`` and ``traceback``. The last ``MAX_EVENTS`` are kept.
    events: list = field(default_factory=list)
    #: Lines the job's body wrote for its owner: ``{"at", "line"}``, the last ``MAX_LOG_LINES``.
    log: list = field(default_factory=list)
    #: Share links the owner made: ``{"id", "created_at", "expires_at", "inputs"}`` (see webapp/shares.py).
    shares: list = field(default_factory=list)
    #: When a reader first found this attempt's heartbeat stale; a beat after it refutes the suspicion.
    stale_since: float | None = None
    #: Goes up by one with every stored change. It stays the last field: the Redis backend reads it off the JSON's end.
    version: int = 1

    def __post_init__(self) -> None:
        if self.waiting_since is None and self.state == QUEUED:
            self.waiting_since = self.scheduled_for or self.created_at
        if not self.events and self.state == QUEUED:
            self.events = [{"at": self.created_at, "attempt": 0, "event": QUEUED, "message": "Submitted."}]

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def retryable(self) -> bool:
        return self.state in RETRYABLE

    @property
    def waiting(self) -> bool:
        """Queued, or retrying with no attempt scheduled: it starts as soon as a worker is free."""
        return self.state == QUEUED or (self.state == RETRYING and not self.next_attempt_at)

    def failure(self, message: str | None = None, reason: str | None = None) -> dict:
        """The ``error`` of this attempt: the owner's message (or a generic one), the reference, and why."""
        ref = error_ref(self.id, self.attempt)
        error = {"message": clip(message or f"The job failed (ref {ref}).", MAX_ERROR_MESSAGE), "ref": ref}
        return {**error, "reason": reason} if reason else error

    def scheduled(self, now: float) -> bool:
        """Queued to start at a time still to come."""
        return self.state == QUEUED and self.scheduled_for is not None and self.scheduled_for > now

    def cancellation(self) -> dict:
        """The ``error`` of a job its owner cancelled, whether it was waiting or running."""
        return self.failure("Cancelled by its owner.", CANCELLED_BY_USER)

    @property
    def status(self) -> str:
        """The coarse status of Django 6's task framework: READY, RUNNING, SUCCESSFUL or FAILED."""
        return COARSE_STATUS[self.state]

    def as_dict(self) -> dict:
        """The fields, in order, as a shallow dict.

        Shallow, because a record is a value: its dicts and lists are shared
        with the versions made from it and never changed in place. A deep copy
        (``dataclasses.asdict``) cost more than all the rest of a write.
        """
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        data = json.loads(text)
        if data.keys() <= FIELD_SET:
            return cls(**data)
        # Written by a newer version with fields this one does not know.
        return cls(**{k: v for k, v in data.items() if k in FIELD_SET})


#: The record's fields in order: its JSON keeps this order, so ``version`` stays last.
FIELD_NAMES = tuple(f.name for f in fields(Job))
FIELD_SET = frozenset(FIELD_NAMES)


def apply_changes(job: Job, changes: dict, states: Iterable[str] | None, attempt: int | None, now: float) -> Job | None:
    """Return ``job`` with ``changes`` applied, or None when the guard refuses.

    The guard holds when the job is in one of ``states`` (any, if None), on
    ``attempt`` (any, if None), a state change is a legal forward move, and a
    terminal job is changed only in its annotations.
    """
    if states is not None and job.state not in states:
        return None
    if attempt is not None and job.attempt != attempt:
        return None
    if job.terminal and not changes.keys() <= ANNOTATIONS:
        return None
    new_state = changes.get("state", job.state)
    if new_state != job.state and new_state not in TRANSITIONS.get(job.state, ()):
        return None
    data = job.as_dict()
    # ``changes`` is left as given: a compare-and-set that lost a race applies it again.
    event = changes.get("event")
    data.update((name, value) for name, value in changes.items() if name != "event")
    if new_state != job.state:
        data["waiting_since"] = (data["next_attempt_at"] or now) if new_state in WAITING else None
        event = {"event": new_state, **(event or {})}
    if event is not None:
        data["events"] = [*job.events, transition_event(data, event, now)][-MAX_EVENTS:]
    return Job(**data)


def transition_event(data: dict, event: dict, now: float) -> dict:
    """An event of the timeline, with its time, attempt and a message for the owner."""
    message = event.get("message")
    if not message and data.get("error") and event["event"] in TERMINAL:
        message = data["error"]["message"]
    if not message:
        message = EVENT_MESSAGES.get(event["event"], "").format(attempt=data["attempt"])
    if event["event"] == RUNNING and data.get("worker"):
        event = {**event, "worker": data["worker"]}
    return {"at": now, "attempt": data["attempt"], **event, "message": message}


#: The owner's words for each event, unless the write that caused it gives its own.
EVENT_MESSAGES = {
    QUEUED: "Submitted.",
    RUNNING: "Attempt {attempt} started.",
    RETRYING: "Attempt {attempt} did not finish; it will be tried again.",
    SUCCEEDED: "Succeeded.",
    CANCELLED: "Cancelled.",
    "cancel_requested": "Cancel requested.",
}


@contextlib.contextmanager
def unavailable_on(is_outage: Callable[[BaseException], bool]) -> Iterator[None]:
    """Turn an error that ``is_outage`` says means "the store is unreachable" into StoreUnavailable.

    Anything else (a bug, such as bad SQL) passes through and is answered as the 500 it is.
    """
    try:
        yield
    except Exception as exc:
        if is_outage(exc):
            raise StoreUnavailable(str(exc)) from exc
        raise


class ParsedRecords:
    """The record last decoded for each job, so that reading the same text again does not decode it again.

    A status poll mostly finds the record as the last poll did, and decoding
    its JSON cost more than the rest of a 304. A record is a value, never
    changed in place, so the same ``Job`` can be handed out again. At most
    ``size`` records of at most ``max_text`` characters are kept, oldest out first:
    one per open page, up to 8,192 in a process (about 7 KB each for a running job).
    """

    def __init__(self, size: int = 8192, max_text: int = 32 * 1024):
        self.size = size
        self.max_text = max_text
        self._records: dict[str, tuple[str | bytes, Job]] = {}

    def parse(self, job_id: str, text: str | bytes) -> Job:
        kept = self._records.get(job_id)
        if kept is not None and kept[0] == text:
            return kept[1]
        job = Job.from_json(text)
        if len(text) <= self.max_text:
            self._records.pop(job_id, None)
            self._records[job_id] = (text, job)
            if len(self._records) > self.size:
                # The oldest entry; another thread may have taken it out first.
                self._records.pop(next(iter(self._records)), None)
        return job


class JobStore:
    """The store interface: the rules live here, and each backend provides the storage primitives."""

    def __init__(self, retention: float, tombstone_retention: float, heartbeat_timeout: float):
        self.retention = retention
        self.tombstone_retention = tombstone_retention
        self.heartbeat_timeout = heartbeat_timeout
        #: Decodes what ``load`` reads; see ParsedRecords.
        self.parsed = ParsedRecords()

    def now(self) -> float:
        """The time by the store's clock, in seconds since the epoch.

        Every time that is written to a record and compared with another is
        read from this one clock, so hosts whose clocks disagree still agree
        on which heartbeats are stale and which deadlines have passed.
        """
        return time.time()

    def get(self, job_id: str) -> Job:
        """Return the job, first marking it lost or expired if the clock says it is.

        :raises JobNotFound: no such job.
        :raises JobPurged: the job was purged.
        """
        job = self.load(job_id)
        if job is None:
            tombstone = self.tombstone(job_id)
            if tombstone is not None:
                raise JobPurged(job_id, *tombstone)
            raise JobNotFound(job_id)
        now = self.now()
        if self.is_stale(job, now):
            job = self.suspect_or_lose(job) or self.load(job_id) or job
        elif self.is_overdue(job, now):
            job = self.mark_expired(job) or self.load(job_id) or job
        return job

    def get_for(self, job_id: str, owner: str | None) -> Job:
        """Return the job if ``owner`` owns it (None: anyone); otherwise not found.

        A purged job is purged only for its owner; to anyone else it never existed.
        """
        try:
            job = self.get(job_id)
        except JobPurged as exc:
            if owner is not None and exc.owner != owner:
                raise JobNotFound(job_id) from None
            raise
        if owner is not None and job.owner != owner:
            raise JobNotFound(job_id)
        return job

    def is_stale(self, job: Job, now: float) -> bool:
        """A running job whose worker has stopped renewing its heartbeat."""
        return job.state == RUNNING and now - self._last_beat(job) > self.heartbeat_timeout

    @staticmethod
    def _last_beat(job: Job) -> float:
        return job.heartbeat_at or job.started_at or job.created_at

    @property
    def lost_grace(self) -> float:
        """How long a stale job stays suspected before it is lost, so that its worker can beat again."""
        return self.heartbeat_timeout / 2

    def is_suspected_long_enough(self, job: Job, now: float) -> bool:
        """Stale, suspected since before its last beat was due, and not refuted for ``lost_grace`` since."""
        suspected = job.stale_since is not None and job.stale_since > self._last_beat(job)
        return self.is_stale(job, now) and suspected and now - job.stale_since > self.lost_grace

    def is_overdue(self, job: Job, now: float) -> bool:
        """A waiting job that can no longer start in time."""
        return job.state in WAITING and job.start_by is not None and now > job.start_by

    def create(self, job: Job, upload_content: bytes | None = None, queue_push: tuple[str, tuple] | None = None) -> Job:
        """Record a new job, with the content of its upload, if any.

        :param queue_push: the queue's command that enqueues the job's task (JobQueue.push_command),
            written in the same transaction as the record, so that both are written or neither is.
        """
        self.insert(job, upload_content, queue_push)
        return job

    def start(self, job_id: str, worker: str, known: Job | None = None) -> Job | None:
        """Move a queued or retrying job to running as its next attempt; None if it may not run.

        :param known: a copy of the record as it was stored, such as the one a task carries.
        """
        return self.modify(job_id, self.starting(worker), known)

    def starting(self, worker: str) -> Callable[[Job], Job | None]:
        """The change that starts a waiting job as its next attempt in ``worker``; it gives None if it may not run."""

        def begin(job: Job) -> Job | None:
            now = self.now()
            if self.is_overdue(job, now):
                return None
            changes = {"state": RUNNING, "attempt": job.attempt + 1, "started_at": now, "heartbeat_at": now}
            changes.update(worker=worker, next_attempt_at=None)
            return apply_changes(job, changes, WAITING, None, now)

        return begin

    def update(
        self,
        job_id: str,
        changes: dict,
        *,
        states: Iterable[str] | None = None,
        attempt: int | None = None,
        known: Job | None = None,
    ) -> Job | None:
        """Apply ``changes`` atomically if the guard holds; return the new record or None.

        :param known: the caller's latest copy of the record, which saves a read when it is still current.
        """
        return self.modify(job_id, lambda job: apply_changes(job, changes, states, attempt, self.now()), known)

    def finish(
        self,
        job_id: str,
        state: str,
        changes: dict | None = None,
        *,
        states: Iterable[str] | None = None,
        attempt: int | None = None,
        known: Job | None = None,
    ) -> Job | None:
        """Move a job to a terminal ``state`` and start its retention clock."""
        return self.update(job_id, self._ending(state, changes), states=states, attempt=attempt, known=known)

    def _ending(self, state: str, changes: dict | None = None) -> dict:
        now = self.now()
        return {**(changes or {}), "state": state, "finished_at": now, "purge_at": now + self.retention}

    def suspect_or_lose(self, job: Job) -> Job | None:
        """A stale job is first suspected, and lost only if no beat comes within ``lost_grace``.

        A heartbeat can be stale because the worker died, or because the store
        was unreachable and the worker could not beat. The grace starts when a
        reader can see the store again, so a live worker, which beats within a
        second or so of the store's return, refutes the suspicion and its job
        is not lost; a dead one cannot. Returns the new record, or None.
        """
        now = self.now()
        if self.is_suspected_long_enough(job, now):
            return self.mark_lost(job)

        def suspect(current: Job) -> Job | None:
            if not self.is_stale(current, now) or (current.stale_since or 0) > self._last_beat(current):
                return None
            return apply_changes(current, {"stale_since": now}, {RUNNING}, job.attempt, now)

        return self.modify(job.id, suspect)

    def mark_lost(self, job: Job) -> Job | None:
        """Mark a running job lost if, checked again inside the write, it is still suspected long enough."""
        ending = self._ending(LOST, {"error": job.failure("The worker running this job stopped.", LOST_WORKER)})

        def lose(current: Job) -> Job | None:
            # A slow worker may have beaten since ``job`` was read; it must not be declared lost.
            now = self.now()
            if not self.is_suspected_long_enough(current, now):
                return None
            return apply_changes(current, ending, {RUNNING}, job.attempt, now)

        return self.modify(job.id, lose)

    def mark_expired(self, job: Job) -> Job | None:
        """End a job that was not started by its deadline."""
        error = job.failure("The job was not started in time, so it was not run.", EXPIRED_IN_QUEUE)
        return self.finish(job.id, EXPIRED, {"error": error}, states=WAITING)

    def reap(self) -> int:
        """Mark stale running jobs lost and overdue waiting ones expired; purge those past retention.

        Returns how many jobs were marked lost.
        """
        now = self.now()
        stale = [job for job in self.running() if self.is_stale(job, now)]
        lost = sum(1 for job in stale if (self.suspect_or_lose(job) or job).state == LOST)
        for job in self.overdue(now):
            self.mark_expired(job)
        self.purge_due(now)
        return lost

    def purge(self, job_id: str) -> None:
        """Delete a job and its upload now, leaving a tombstone so its id answers 410."""
        self.delete(job_id, self.now())

    def live_workers(self) -> list[str]:
        return self.workers_since(self.now() - self.heartbeat_timeout)

    # What each backend provides.

    def close(self) -> None:
        """Release this process's connections."""

    def ping(self) -> None:
        raise NotImplementedError

    def load(self, job_id: str) -> Job | None:
        """The record as stored, with none of ``get``'s checks; None if there is none."""
        raise NotImplementedError

    def modify(self, job_id: str, change: Callable[[Job], Job | None], known: Job | None = None) -> Job | None:
        """Compare-and-set: store ``change(record)`` unless it is None, with no other write in between.

        The stored record gets the next version. ``known``, if given, is a recent copy of the record;
        a backend may try the change on it first.
        """
        raise NotImplementedError

    def insert(self, job: Job, upload_content: bytes | None, queue_push: tuple[str, tuple] | None = None) -> None:
        raise NotImplementedError

    def upload_content(self, job_id: str) -> bytes | None:
        raise NotImplementedError

    def tombstone(self, job_id: str) -> tuple[float, str] | None:
        """When a purged job was purged, and whose it was."""
        raise NotImplementedError

    def list(
        self,
        owner: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 20,
        label: str | None = None,
    ) -> list[Job]:
        """Jobs newest first, created strictly before the ``before`` cursor; ``label``: whose label has these words."""
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        raise NotImplementedError

    def running(self) -> list[Job]:
        raise NotImplementedError

    def overdue(self, now: float) -> list[Job]:
        """Queued and retrying jobs whose start deadline has passed."""
        raise NotImplementedError

    def waiting(self, since_before: float) -> list[Job]:
        """Queued and retrying jobs that have been waiting since before ``since_before``."""
        raise NotImplementedError

    def usage(self, owner: str) -> tuple[int, int]:
        """How many active jobs ``owner`` has, and how many bytes of uploads the store keeps for them."""
        raise NotImplementedError

    def purge_due(self, now: float) -> None:
        """Purge every job whose retention ended before ``now``, and forget old tombstones."""
        raise NotImplementedError

    def delete(self, job_id: str, now: float) -> None:
        raise NotImplementedError

    def beat_worker(self, name: str) -> None:
        """Record that the worker ``name`` is alive now."""
        raise NotImplementedError

    def forget_worker(self, name: str) -> None:
        """Drop a worker that is shutting down, so pages stop counting on it at once."""
        raise NotImplementedError

    def workers_since(self, since: float) -> list[str]:
        raise NotImplementedError


def open_store(settings: Settings, connection_pool=None) -> JobStore:
    """The store that ``settings`` select: Redis if REDIS_URL is set, else SQLite. Nothing connects yet."""
    options = {
        "retention": settings.JOB_RETENTION,
        "tombstone_retention": settings.TOMBSTONE_RETENTION,
        "heartbeat_timeout": settings.HEARTBEAT_TIMEOUT,
    }
    if settings.REDIS_URL:
        from .redis import RedisStore, redis_pool

        return RedisStore(connection_pool or redis_pool(settings), **options)
    from .sqlite import SqliteStore

    return SqliteStore(settings.database_path, **options)
