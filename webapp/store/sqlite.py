"""The embedded default: job records in the same SQLite file as Huey's queue."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from . import ACTIVE, RUNNING, WAITING, Job, JobStore, unavailable_on

if TYPE_CHECKING:
    from ..queue import TakeStatements

SCHEMA = """
create table if not exists jobs (
    id text primary key,
    owner text not null,
    kind text not null,
    state text not null,
    created_at real not null,
    purge_at real,
    data text not null
);
create index if not exists jobs_owner_created on jobs (owner, created_at desc, id desc);
create index if not exists jobs_created on jobs (created_at desc, id desc);
create index if not exists jobs_state on jobs (state);
create index if not exists jobs_purge on jobs (purge_at);
create table if not exists uploads (job_id text primary key, content blob not null);
create table if not exists tombstones (id text primary key, purged_at real not null, owner text not null);
create table if not exists workers (name text primary key, seen_at real not null);
"""

#: Seconds a write waits for another writer's lock before giving up; Huey's queue waits as long.
BUSY_TIMEOUT = 10.0

#: SQLite's primary result codes that mean the file cannot be used just now, rather than a bug in a statement.
OUTAGE_CODES = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_NOTADB,
}


class TakenTask(NamedTuple):
    """A task taken from Huey's queue by ``SqliteStore.take_task``, and what became of its job's start."""

    data: bytes
    #: Whether the start was tried: the task runs a job, now.
    tried: bool
    #: The job as started, or None if it was not (not tried, or no longer waiting to run).
    started: Job | None


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF in OUTAGE_CODES


class SqliteStore(JobStore):
    """Records in one SQLite file, with one connection per thread, opened lazily in each process."""

    def __init__(self, path: str, **options):
        super().__init__(**options)
        self.path = path
        self._local = threading.local()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened on first use; a forked process opens its own."""
        with unavailable_on(is_outage):
            conn = getattr(self._local, "conn", None)
            if conn is None or self._local.pid != os.getpid():
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
                conn.execute("pragma journal_mode=wal")
                # In WAL mode, NORMAL syncs at checkpoints rather than at every commit. A crash of the
                # app loses nothing; a power cut may undo the last writes, which the recovery treats
                # like a worker that stopped. Huey's queue in the same file keeps its own setting.
                conn.execute("pragma synchronous=normal")
                conn.executescript(SCHEMA)
                self._local.conn, self._local.pid = conn, os.getpid()
            yield conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock before its first read, so no writer slips in between."""
        with self._connection() as conn:
            conn.execute("begin immediate")
            try:
                yield conn
            except BaseException:
                conn.execute("rollback")
                raise
            conn.execute("commit")

    def _select(self, sql: str, *args) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(sql, args).fetchall()

    def _jobs_where(self, condition: str, *args) -> list[Job]:
        return [Job.from_json(data) for (data,) in self._select(f"select data from jobs where {condition}", *args)]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def ping(self) -> None:
        self._select("select 1")

    def load(self, job_id: str) -> Job | None:
        rows = self._select("select data from jobs where id = ?", job_id)
        return self.parsed.parse(job_id, rows[0][0]) if rows else None

    def modify(self, job_id, change, known=None):
        with self._transaction() as conn:
            return self._modify_in(conn, job_id, change, known)

    def _modify_in(self, conn: sqlite3.Connection, job_id: str, change, known: Job | None) -> Job | None:
        """``modify``'s work, inside a write transaction on ``conn``."""
        # Reading inside the write transaction costs no round trip here. What ``known`` saves, while
        # its version is the stored one, is decoding the stored record.
        current = None
        if known is not None:
            stored = conn.execute("select json_extract(data, '$.version') from jobs where id = ?", (job_id,))
            current = known if stored.fetchone() == (known.version,) else None
        if current is None:
            row = conn.execute("select data from jobs where id = ?", (job_id,)).fetchone()
            current = Job.from_json(row[0]) if row else None
        expected = current.version if current else None
        job = change(current) if current else None
        if job is not None:
            job.version = expected + 1
            conn.execute(
                "update jobs set state = ?, purge_at = ?, data = ? where id = ?",
                (job.state, job.purge_at, job.to_json(), job_id),
            )
        return job

    def take_task(
        self, take: TakeStatements, to_start: Callable[[bytes], tuple[str, Job | None] | None], worker: str
    ) -> TakenTask | None:
        """Take the next task from Huey's queue in this file, with the statements Huey's ``dequeue`` runs
        (``take``), and start the job it runs in the same transaction, when ``to_start(task data)`` names
        one to start now: its id, and the record the task carries. None when the queue is empty.

        Every write to the file waits for its one lock, so a consumer's writes per job bound its
        throughput: this makes taking a task and starting its job one write instead of two.
        """
        if not self._select(take.peek[0], *take.peek[1]):
            return None
        with self._transaction() as conn:
            row = conn.execute(*take.next_task).fetchone()
            if row is None:
                return None
            conn.execute(take.remove, (row[0],))
            data = bytes(row[1])
            try:
                target = to_start(data)
                started = self._modify_in(conn, target[0], self.starting(worker), target[1]) if target else None
            except sqlite3.Error:
                raise  # The file is out: nothing is taken, and the task waits for the next take.
            except Exception:
                # A task or record that cannot be read (no write was made) is taken all the same, as Huey
                # takes it, and fails where it did before: a queue must never stick behind one task.
                target = started = None
        return TakenTask(data, target is not None, started)

    def insert(self, job: Job, upload_content: bytes | None, queue_push: tuple[str, tuple] | None = None) -> None:
        # One transaction: the record, its upload and (with ``queue_push``) its task in Huey's table.
        with self._transaction() as conn:
            conn.execute(
                "insert into jobs (id, owner, kind, state, created_at, purge_at, data) values (?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.owner, job.kind, job.state, job.created_at, job.purge_at, job.to_json()),
            )
            if upload_content is not None:
                conn.execute("insert into uploads (job_id, content) values (?, ?)", (job.id, upload_content))
            if queue_push:
                conn.execute(*queue_push)

    def upload_content(self, job_id: str) -> bytes | None:
        rows = self._select("select content from uploads where job_id = ?", job_id)
        return bytes(rows[0][0]) if rows else None

    def tombstone(self, job_id: str) -> tuple[float, str] | None:
        rows = self._select("select purged_at, owner from tombstones where id = ?", job_id)
        return tuple(rows[0]) if rows else None

    def list(self, owner=None, state=None, kind=None, before=None, limit=20, label=None) -> list[Job]:
        where, args = ["1"], []
        for column, value in (("owner", owner), ("state", state), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if label:
            # LIKE is case-blind for ASCII; the escape makes % and _ in the words mean themselves.
            where.append("json_extract(data, '$.label') like ? escape '\\'")
            args.append("%" + label.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if before is not None:
            where.append("(created_at, id) < (?, ?)")
            args.extend(before)
        return self._jobs_where(" and ".join(where) + " order by created_at desc, id desc limit ?", *args, limit)

    def counts(self) -> dict[str, int]:
        return dict(self._select("select state, count(*) from jobs group by state"))

    def running(self) -> list[Job]:
        return self._jobs_where("state = ?", RUNNING)

    def overdue(self, now: float) -> list[Job]:
        # Filtered in SQL: the reaper runs on every heartbeat, and the queue may be long.
        return self._jobs_where("state in (?, ?) and json_extract(data, '$.start_by') < ?", *WAITING, now)

    def waiting(self, since_before: float) -> list[Job]:
        return self._jobs_where("state in (?, ?) and json_extract(data, '$.waiting_since') < ?", *WAITING, since_before)

    def usage(self, owner: str) -> tuple[int, int]:
        [(active, stored)] = self._select(
            "select count(*) filter (where state in (?, ?, ?)),"
            " coalesce(sum(json_extract(data, '$.upload_size')), 0) from jobs where owner = ?",
            *ACTIVE,
            owner,
        )
        return active, stored

    def purge_due(self, now: float) -> None:
        for (job_id,) in self._select("select id from jobs where purge_at < ?", now):
            self.delete(job_id, now)
        with self._connection() as conn:
            conn.execute("delete from tombstones where purged_at < ?", (now - self.tombstone_retention,))

    def delete(self, job_id: str, now: float) -> None:
        with self._transaction() as conn:
            row = conn.execute("select owner from jobs where id = ?", (job_id,)).fetchone()
            if row is not None:
                conn.execute("delete from jobs where id = ?", (job_id,))
                conn.execute("delete from uploads where job_id = ?", (job_id,))
                conn.execute(
                    "insert or replace into tombstones (id, purged_at, owner) values (?, ?, ?)", (job_id, now, row[0])
                )

    def beat_worker(self, name: str) -> None:
        # One file, one host: this host's clock is the store's.
        now = self.now()
        with self._connection() as conn:
            conn.execute("insert or replace into workers (name, seen_at) values (?, ?)", (name, now))
            conn.execute("delete from workers where seen_at < ?", (now - 24 * 3600,))

    def forget_worker(self, name: str) -> None:
        with self._connection() as conn:
            conn.execute("delete from workers where name = ?", (name,))

    def workers_since(self, since: float) -> list[str]:
        return [name for (name,) in self._select("select name from workers where seen_at >= ? order by name", since)]
