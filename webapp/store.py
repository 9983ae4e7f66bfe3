"""Job records: the single source of truth for every job's state.

Huey has no status API and deletes results on read, so pages, fragments, the
JSON API and the CLI read only these records. There is one store interface and
two backends, SQLite (the embedded default) and Redis. Every write is a
compare-and-set that can only move a job forward.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

QUEUED, RUNNING, RETRYING = "queued", "running", "retrying"
SUCCEEDED, FAILED, CANCELLED, LOST, EXPIRED = (
    "succeeded",
    "failed",
    "cancelled",
    "lost",
    "expired",
)
STATES = (QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELLED, LOST, EXPIRED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, LOST, EXPIRED})

#: The only moves a job can make; anything else is refused.
TRANSITIONS = {
    QUEUED: {RUNNING, CANCELLED, EXPIRED, FAILED},
    RUNNING: {SUCCEEDED, FAILED, CANCELLED, LOST, RETRYING},
    RETRYING: {RUNNING, CANCELLED, EXPIRED, FAILED},
}


class StoreUnavailable(Exception):
    """The store cannot be reached; callers answer 503 and lose nothing."""


class JobNotFound(LookupError):
    """No job has this id (or it is not yours): always answered like a 404."""


class JobExpired(LookupError):
    """The job existed but was purged at ``expired_at``: answered with 410."""

    def __init__(self, job_id: str, expired_at: float, owner: str):
        super().__init__(job_id)
        self.expired_at = expired_at
        self.owner = owner


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Job:
    """One job's record. Times are seconds since the epoch, UTC."""

    id: str
    kind: str
    owner: str
    inputs: dict = field(default_factory=dict)
    #: Execution options (time limit, queue expiry) that a retry reuses.
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
    expires_at: float | None = None
    #: A job not started by then ends as expired (a kind's queue expiry).
    start_by: float | None = None
    #: ``{"name": ..., "size": ...}`` of the uploaded file, if any.
    upload: dict | None = None
    version: int = 1

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def apply_changes(job: Job, changes: dict, states: Iterable[str] | None, attempt: int | None) -> Job | None:
    """Return ``job`` with ``changes`` applied, or None when the guard refuses.

    The guard holds when the job is in one of ``states`` (any, if None), on
    ``attempt`` (any, if None), and a state change is a legal forward move.
    """
    if states is not None and job.state not in states:
        return None
    if attempt is not None and job.attempt != attempt:
        return None
    new_state = changes.get("state", job.state)
    if new_state != job.state and new_state not in TRANSITIONS.get(job.state, ()):
        return None
    data = asdict(job)
    data.update(changes)
    data["version"] = job.version + 1
    return Job(**data)


class JobStore:
    """The store interface; subclasses provide the storage primitives."""

    def __init__(self, retention: float, tombstone_retention: float, heartbeat_timeout: float):
        self.retention = retention
        self.tombstone_retention = tombstone_retention
        self.heartbeat_timeout = heartbeat_timeout

    # Reads.

    def get(self, job_id: str) -> Job:
        """Return the job, marking it lost first if its worker stopped beating.

        :raises JobNotFound: no such job.
        :raises JobExpired: the job was purged.
        """
        job = self._load(job_id)
        if job is None:
            tombstone = self._tombstone(job_id)
            if tombstone is not None:
                raise JobExpired(job_id, *tombstone)
            raise JobNotFound(job_id)
        if self.is_stale(job, time.time()):
            job = self.mark_lost(job) or self._load(job_id) or job
        elif self.is_overdue(job, time.time()):
            job = self.mark_expired(job) or self._load(job_id) or job
        return job

    def get_for(self, job_id: str, owner: str | None) -> Job:
        """Return the job if ``owner`` owns it (None: anyone); otherwise not found.

        A purged job is expired only for its owner; to anyone else it never existed.
        """
        try:
            job = self.get(job_id)
        except JobExpired as exc:
            if owner is not None and exc.owner != owner:
                raise JobNotFound(job_id) from None
            raise
        if owner is not None and job.owner != owner:
            raise JobNotFound(job_id)
        return job

    def is_stale(self, job: Job, now: float) -> bool:
        """A running job whose worker has stopped renewing its heartbeat."""
        beat = job.heartbeat_at or job.started_at or job.created_at
        return job.state == RUNNING and now - beat > self.heartbeat_timeout

    def is_overdue(self, job: Job, now: float) -> bool:
        """A waiting job that can no longer start in time."""
        return job.state in (QUEUED, RETRYING) and job.start_by is not None and now > job.start_by

    def start(self, job_id: str, worker: str) -> Job | None:
        """Move a queued or retrying job to running as its next attempt; None if it may not run."""

        def change(job: Job) -> Job | None:
            now = time.time()
            if self.is_overdue(job, now):
                return None
            begin = {"state": RUNNING, "attempt": job.attempt + 1, "started_at": now, "heartbeat_at": now}
            begin.update(worker=worker, next_attempt_at=None)
            return apply_changes(job, begin, {QUEUED, RETRYING}, None)

        return self._update(job_id, change)

    # Writes.

    def create(self, job: Job, upload: bytes | None = None) -> Job:
        """Record a new job (before it is enqueued) with its upload, if any."""
        self._insert(job, upload)
        return job

    def update(
        self,
        job_id: str,
        changes: dict,
        *,
        states: Iterable[str] | None = None,
        attempt: int | None = None,
    ) -> Job | None:
        """Apply ``changes`` atomically if the guard holds; return the new record or None."""
        return self._update(job_id, lambda job: apply_changes(job, changes, states, attempt))

    def finish(
        self,
        job_id: str,
        state: str,
        changes: dict | None = None,
        *,
        states: Iterable[str] | None = None,
        attempt: int | None = None,
    ) -> Job | None:
        """Move a job to a terminal ``state`` and start its retention clock."""
        return self.update(job_id, self._ending(state, changes), states=states, attempt=attempt)

    def _ending(self, state: str, changes: dict | None = None) -> dict:
        now = time.time()
        return {**(changes or {}), "state": state, "finished_at": now, "expires_at": now + self.retention}

    def mark_lost(self, job: Job) -> Job | None:
        """Mark a running job lost if, checked again inside the write, its heartbeat is still stale."""
        ending = self._ending(LOST, {"error": {"message": "The worker running this job stopped.", "ref": job.id[:8]}})

        def change(current: Job) -> Job | None:
            # A slow worker may have beaten since ``job`` was read; it must not be declared lost.
            if not self.is_stale(current, time.time()):
                return None
            return apply_changes(current, ending, {RUNNING}, job.attempt)

        return self._update(job.id, change)

    def mark_expired(self, job: Job) -> Job | None:
        message = "The job was not started in time, so it was not run."
        return self.finish(
            job.id, EXPIRED, {"error": {"message": message, "ref": job.id[:8]}}, states={QUEUED, RETRYING}
        )

    def reap(self) -> int:
        """Mark stale running jobs lost and overdue waiting ones expired; purge old ones.

        Returns how many jobs were marked lost.
        """
        now = time.time()
        lost = sum(1 for job in self._running() if self.is_stale(job, now) and self.mark_lost(job))
        for job in self._overdue(now):
            self.mark_expired(job)
        self._purge_expired(now)
        return lost

    def purge(self, job_id: str) -> None:
        """Delete a job and its upload now, leaving a tombstone so its id answers 410."""
        self._delete(job_id, time.time())

    # Workers.

    def beat_worker(self, name: str) -> None:
        self._beat_worker(name, time.time())

    def forget_worker(self, name: str) -> None:
        """Drop a worker that is shutting down, so pages stop counting on it at once."""
        self._forget_worker(name)

    def live_workers(self) -> list[str]:
        return self._workers_since(time.time() - self.heartbeat_timeout)

    # Primitives each backend provides.

    def close(self) -> None:
        """Release this process's connections."""

    def ping(self) -> None:
        raise NotImplementedError

    def upload(self, job_id: str) -> bytes | None:
        raise NotImplementedError

    def list(
        self,
        owner: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 20,
    ) -> list[Job]:
        """Jobs newest first, created strictly before the ``before`` cursor."""
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        raise NotImplementedError

    def _load(self, job_id: str) -> Job | None:
        raise NotImplementedError

    def _tombstone(self, job_id: str) -> tuple[float, str] | None:
        """When a purged job expired, and whose it was."""
        raise NotImplementedError

    def _insert(self, job: Job, upload: bytes | None) -> None:
        raise NotImplementedError

    def _update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job | None:
        raise NotImplementedError

    def _running(self) -> list[Job]:
        raise NotImplementedError

    def _overdue(self, now: float) -> list[Job]:
        """Queued and retrying jobs whose start deadline has passed."""
        raise NotImplementedError

    def stranded(self, created_before: float) -> list[Job]:
        """Jobs still queued that were created before ``created_before``."""
        raise NotImplementedError

    def _purge_expired(self, now: float) -> None:
        raise NotImplementedError

    def _delete(self, job_id: str, now: float) -> None:
        raise NotImplementedError

    def _beat_worker(self, name: str, now: float) -> None:
        raise NotImplementedError

    def _forget_worker(self, name: str) -> None:
        raise NotImplementedError

    def _workers_since(self, since: float) -> list[str]:
        raise NotImplementedError


SQLITE_SCHEMA = """
create table if not exists jobs (
    id text primary key,
    owner text not null,
    kind text not null,
    state text not null,
    created_at real not null,
    expires_at real,
    data text not null
);
create index if not exists jobs_owner_created on jobs (owner, created_at desc, id desc);
create index if not exists jobs_created on jobs (created_at desc, id desc);
create index if not exists jobs_state on jobs (state);
create index if not exists jobs_expires on jobs (expires_at);
create table if not exists uploads (job_id text primary key, content blob not null);
create table if not exists tombstones (id text primary key, expired_at real not null, owner text not null);
create table if not exists workers (name text primary key, seen_at real not null);
"""


class SqliteStore(JobStore):
    """Records in the same SQLite file as Huey's queue, one connection per thread."""

    def __init__(self, path: str, **options):
        super().__init__(**options)
        self.path = path
        self._local = threading.local()
        with self._connect() as conn:
            conn.executescript(SQLITE_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                conn.execute("pragma journal_mode=wal")
            except sqlite3.Error as exc:
                raise StoreUnavailable(str(exc)) from exc
            self._local.conn = conn
        return _Guarded(conn)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def ping(self) -> None:
        with self._connect() as conn:
            conn.execute("select 1")

    def upload(self, job_id: str) -> bytes | None:
        with self._connect() as conn:
            row = conn.execute("select content from uploads where job_id = ?", (job_id,)).fetchone()
        return bytes(row[0]) if row else None

    def list(self, owner=None, state=None, kind=None, before=None, limit=20) -> list[Job]:
        where, args = [], []
        for column, value in (("owner", owner), ("state", state), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if before is not None:
            where.append("(created_at, id) < (?, ?)")
            args.extend(before)
        sql = "select data from jobs"
        if where:
            sql += " where " + " and ".join(where)
        sql += " order by created_at desc, id desc limit ?"
        with self._connect() as conn:
            rows = conn.execute(sql, (*args, limit)).fetchall()
        return [Job.from_json(row[0]) for row in rows]

    def counts(self) -> dict[str, int]:
        with self._connect() as conn:
            rows = conn.execute("select state, count(*) from jobs group by state").fetchall()
        return dict(rows)

    def _load(self, job_id: str) -> Job | None:
        with self._connect() as conn:
            row = conn.execute("select data from jobs where id = ?", (job_id,)).fetchone()
        return Job.from_json(row[0]) if row else None

    def _tombstone(self, job_id: str) -> tuple[float, str] | None:
        with self._connect() as conn:
            row = conn.execute("select expired_at, owner from tombstones where id = ?", (job_id,)).fetchone()
        return tuple(row) if row else None

    def _insert(self, job: Job, upload: bytes | None) -> None:
        with self._connect() as conn:
            conn.execute("begin immediate")
            try:
                conn.execute(
                    "insert into jobs (id, owner, kind, state, created_at, expires_at, data)"
                    " values (?, ?, ?, ?, ?, ?, ?)",
                    (job.id, job.owner, job.kind, job.state, job.created_at, job.expires_at, job.to_json()),
                )
                if upload is not None:
                    conn.execute("insert into uploads (job_id, content) values (?, ?)", (job.id, upload))
                conn.execute("commit")
            except BaseException:
                conn.execute("rollback")
                raise

    def _update(self, job_id, change):
        with self._connect() as conn:
            # An immediate transaction takes the write lock before the read,
            # so no other writer can slip in between the check and the set.
            conn.execute("begin immediate")
            try:
                row = conn.execute("select data from jobs where id = ?", (job_id,)).fetchone()
                job = change(Job.from_json(row[0])) if row else None
                if job is not None:
                    conn.execute(
                        "update jobs set state = ?, expires_at = ?, data = ? where id = ?",
                        (job.state, job.expires_at, job.to_json(), job_id),
                    )
                conn.execute("commit")
            except BaseException:
                conn.execute("rollback")
                raise
        return job

    def _running(self) -> list[Job]:
        return self._jobs_where("state = ?", RUNNING)

    def _overdue(self, now: float) -> list[Job]:
        # Filtered in SQL: the reaper runs on every heartbeat, and the queue may be long.
        return self._jobs_where("state in (?, ?) and json_extract(data, '$.start_by') < ?", QUEUED, RETRYING, now)

    def stranded(self, created_before: float) -> list[Job]:
        return self._jobs_where("state = ? and created_at < ?", QUEUED, created_before)

    def _jobs_where(self, condition: str, *args) -> list[Job]:
        with self._connect() as conn:
            rows = conn.execute(f"select data from jobs where {condition}", args).fetchall()
        return [Job.from_json(row[0]) for row in rows]

    def _purge_expired(self, now: float) -> None:
        with self._connect() as conn:
            rows = conn.execute("select id from jobs where expires_at < ?", (now,)).fetchall()
            conn.execute("delete from tombstones where expired_at < ?", (now - self.tombstone_retention,))
        for (job_id,) in rows:
            self._delete(job_id, now)

    def _delete(self, job_id: str, now: float) -> None:
        with self._connect() as conn:
            conn.execute("begin immediate")
            try:
                row = conn.execute("select owner from jobs where id = ?", (job_id,)).fetchone()
                if row is not None:
                    conn.execute("delete from jobs where id = ?", (job_id,))
                    conn.execute("delete from uploads where job_id = ?", (job_id,))
                    conn.execute(
                        "insert or replace into tombstones (id, expired_at, owner) values (?, ?, ?)",
                        (job_id, now, row[0]),
                    )
                conn.execute("commit")
            except BaseException:
                conn.execute("rollback")
                raise

    def _beat_worker(self, name: str, now: float) -> None:
        with self._connect() as conn:
            conn.execute("insert or replace into workers (name, seen_at) values (?, ?)", (name, now))
            conn.execute("delete from workers where seen_at < ?", (now - 24 * 3600,))

    def _forget_worker(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute("delete from workers where name = ?", (name,))

    def _workers_since(self, since: float) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute("select name from workers where seen_at >= ? order by name", (since,)).fetchall()
        return [row[0] for row in rows]


class _Guarded:
    """Wrap a connection so that any SQLite error becomes StoreUnavailable.

    Integrity errors are programming errors and pass through unchanged.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.IntegrityError
        ):
            raise StoreUnavailable(str(exc)) from exc


class RedisStore(JobStore):
    """Records in Redis, shared by any number of web and worker hosts.

    Keys, all under ``prefix``: ``job:<id>`` (the record as JSON),
    ``upload:<id>``, ``tomb:<id>`` (expiry time and owner, with a TTL), the sorted sets
    ``all``, ``owner:<owner>`` and ``queued`` (by creation time), ``deadlines``
    (by start deadline), ``finished`` (by expiry time), the set ``running`` and
    the sorted set ``workers`` (by last beat).
    """

    def __init__(self, client: redis.Redis, prefix: str = "tasklight:", **options):
        super().__init__(**options)
        self.redis = client
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def close(self) -> None:
        self.redis.connection_pool.disconnect()

    def ping(self) -> None:
        with _redis_errors():
            self.redis.ping()

    def upload(self, job_id: str) -> bytes | None:
        with _redis_errors():
            return self.redis.get(self.key("upload", job_id))

    def list(self, owner=None, state=None, kind=None, before=None, limit=20) -> list[Job]:
        index = self.key("owner", owner) if owner is not None else self.key("all")
        top = f"({before[0]!r}" if before else "+inf"
        jobs: list[Job] = []
        seen: set[str] = set()
        offset, batch = 0, max(limit * 4, 100)
        with _redis_errors():
            # Filtering happens here, so read the index in batches until the
            # page is full; creation times tie only by accident, so ids break ties.
            while len(jobs) < limit:
                ids = self.redis.zrevrangebyscore(index, top, "-inf", start=offset, num=batch, withscores=True)
                if before:
                    ids = [*self._ties(index, before), *ids] if offset == 0 else ids
                if not ids:
                    break
                offset += batch
                records = self.redis.mget([self.key("job", i.decode()) for i, _ in ids])
                for raw in records:
                    if raw is None:
                        continue
                    job = Job.from_json(raw)
                    # A job created between two batches shifts the offsets, so one may be read twice.
                    if job.id in seen:
                        continue
                    seen.add(job.id)
                    if (state is None or job.state == state) and (kind is None or job.kind == kind):
                        jobs.append(job)
                if len(ids) < batch:
                    break
        return jobs[:limit]

    def _ties(self, index: str, before: tuple[float, str]) -> list:
        """Members created at exactly the cursor's time but with a smaller id."""
        same = self.redis.zrangebyscore(index, before[0], before[0], withscores=True)
        return sorted((m for m in same if m[0].decode() < before[1]), key=lambda m: m[0], reverse=True)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with _redis_errors():
            for _, raw in self._scan_jobs():
                state = Job.from_json(raw).state
                counts[state] = counts.get(state, 0) + 1
        return counts

    def _scan_jobs(self):
        ids = [i.decode() for i in self.redis.zrange(self.key("all"), 0, -1)]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for job_id, raw in zip(chunk, self.redis.mget([self.key("job", i) for i in chunk]), strict=True):
                if raw is not None:
                    yield job_id, raw

    def _load(self, job_id: str) -> Job | None:
        with _redis_errors():
            raw = self.redis.get(self.key("job", job_id))
        return Job.from_json(raw) if raw else None

    def _tombstone(self, job_id: str) -> tuple[float, str] | None:
        with _redis_errors():
            raw = self.redis.get(self.key("tomb", job_id))
        if not raw:
            return None
        tombstone = json.loads(raw)
        return tombstone["expired_at"], tombstone["owner"]

    def _insert(self, job: Job, upload: bytes | None) -> None:
        with _redis_errors(), self.redis.pipeline() as pipe:
            pipe.set(self.key("job", job.id), job.to_json(), nx=True)
            if upload is not None:
                pipe.set(self.key("upload", job.id), upload)
            pipe.zadd(self.key("all"), {job.id: job.created_at})
            pipe.zadd(self.key("owner", job.owner), {job.id: job.created_at})
            if job.start_by is not None:
                pipe.zadd(self.key("deadlines"), {job.id: job.start_by})
            pipe.zadd(self.key("queued"), {job.id: job.created_at})
            pipe.execute()

    def _update(self, job_id, change):
        key = self.key("job", job_id)

        def transaction(pipe: redis.client.Pipeline) -> Job | None:
            raw = pipe.get(key)
            job = change(Job.from_json(raw)) if raw else None
            pipe.multi()
            if job is not None:
                pipe.set(key, job.to_json())
                if job.state == RUNNING:
                    pipe.sadd(self.key("running"), job_id)
                else:
                    pipe.srem(self.key("running"), job_id)
                if job.state not in (QUEUED, RETRYING):
                    pipe.zrem(self.key("deadlines"), job_id)
                if job.state != QUEUED:
                    pipe.zrem(self.key("queued"), job_id)
                if job.expires_at is not None:
                    pipe.zadd(self.key("finished"), {job_id: job.expires_at})
            return job

        with _redis_errors():
            # WATCH makes the read-check-write a compare-and-set: if anyone
            # else writes the record in between, redis-py runs it again.
            return self.redis.transaction(transaction, key, value_from_callable=True)

    def _running(self) -> list[Job]:
        with _redis_errors():
            return self._many(self.redis.smembers(self.key("running")))

    def _overdue(self, now: float) -> list[Job]:
        with _redis_errors():
            return self._many(self.redis.zrangebyscore(self.key("deadlines"), "-inf", f"({now!r}"))

    def stranded(self, created_before: float) -> list[Job]:
        with _redis_errors():
            return self._many(self.redis.zrangebyscore(self.key("queued"), "-inf", f"({created_before!r}"))

    def _many(self, ids) -> list[Job]:
        keys = [self.key("job", i.decode()) for i in ids]
        return [Job.from_json(raw) for raw in (self.redis.mget(keys) if keys else []) if raw]

    def _purge_expired(self, now: float) -> None:
        with _redis_errors():
            ids = self.redis.zrangebyscore(self.key("finished"), "-inf", now)
        for job_id in ids:
            self._delete(job_id.decode(), now)

    def _delete(self, job_id: str, now: float) -> None:
        with _redis_errors():
            job = self._load(job_id)
            if job is None:
                return
            with self.redis.pipeline() as pipe:
                pipe.delete(self.key("job", job_id), self.key("upload", job_id))
                tombstone = json.dumps({"expired_at": now, "owner": job.owner})
                pipe.set(self.key("tomb", job_id), tombstone, ex=int(self.tombstone_retention) or None)
                pipe.zrem(self.key("all"), job_id)
                pipe.zrem(self.key("owner", job.owner), job_id)
                pipe.zrem(self.key("finished"), job_id)
                pipe.srem(self.key("running"), job_id)
                pipe.zrem(self.key("deadlines"), job_id)
                pipe.zrem(self.key("queued"), job_id)
                pipe.execute()

    def _beat_worker(self, name: str, now: float) -> None:
        with _redis_errors(), self.redis.pipeline() as pipe:
            pipe.zadd(self.key("workers"), {name: now})
            pipe.zremrangebyscore(self.key("workers"), "-inf", now - 24 * 3600)
            pipe.execute()

    def _forget_worker(self, name: str) -> None:
        with _redis_errors():
            self.redis.zrem(self.key("workers"), name)

    def _workers_since(self, since: float) -> list[str]:
        with _redis_errors():
            return sorted(n.decode() for n in self.redis.zrangebyscore(self.key("workers"), since, "+inf"))


class _redis_errors:
    """Turn Redis connection trouble into StoreUnavailable."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
            raise StoreUnavailable(str(exc)) from exc


def redis_pool(settings) -> redis.ConnectionPool:
    """A connection pool for REDIS_URL, through Redis Sentinel when sentinels are configured.

    With sentinels, REDIS_URL still gives the database number and credentials;
    its host is ignored, since the sentinels say which server is the master.
    """
    if not settings.REDIS_SENTINELS:
        return redis.ConnectionPool.from_url(settings.REDIS_URL)
    options = parse_url(settings.REDIS_URL)
    options.pop("host", None)
    options.pop("port", None)
    sentinels = [
        (host, int(port)) for host, _, port in (s.strip().rpartition(":") for s in settings.REDIS_SENTINELS.split(","))
    ]
    manager = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": 1})
    return SentinelConnectionPool(settings.REDIS_SENTINEL_SERVICE, manager, **options)


def open_store(settings, connection_pool: redis.ConnectionPool | None = None) -> JobStore:
    """Build the store that ``settings`` select: Redis if REDIS_URL is set, else SQLite."""
    options = {
        "retention": settings.JOB_RETENTION,
        "tombstone_retention": settings.TOMBSTONE_RETENTION,
        "heartbeat_timeout": settings.HEARTBEAT_TIMEOUT,
    }
    if settings.REDIS_URL:
        pool = connection_pool or redis_pool(settings)
        return RedisStore(redis.Redis(connection_pool=pool), **options)
    os.makedirs(os.path.dirname(settings.database_path) or ".", exist_ok=True)
    return SqliteStore(settings.database_path, **options)
