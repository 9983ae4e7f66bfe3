"""The queue that the web side and the consumer share: Huey on the configured backend, with the one job task.

Every kind of job runs through one Huey task, ``run_job(job_id, record)``.
The web side only enqueues it; a consumer gives it a body (``webapp.worker``).
Both register it under the same name, so a message from one runs in the other.
The task carries the job's record as it was stored when the task was made, so
that starting the job needs no read first while that copy is still current.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

from huey.api import Huey, Task
from huey.storage import RedisStorage, SqliteStorage

from .config import Settings
from .store import Job, JobStore
from .store.sqlite import BUSY_TIMEOUT

#: Runs one attempt of a job, given its id, the record the task carries (JSON; None in an older
#: task) and Huey's task.
JobRunner = Callable[[str, str | None, Task], None]


class SqliteQueueStorage(SqliteStorage):
    """Huey's SQLite storage, opened lazily and once per process.

    Huey's own creates its tables (and so the file) when it is constructed, and
    keeps one connection that a forked process would share. This one connects
    on first use, creating the tables then, and a forked process (a consumer's
    process workers, a preloaded gunicorn) opens a connection of its own.
    """

    def __init__(self, name: str, filename: str, **kwargs):
        super().__init__(name, filename=filename, timeout=BUSY_TIMEOUT, create_tables=False, **kwargs)
        self._pid = os.getpid()

    @property
    def conn(self):
        if self._pid != os.getpid():
            self._conn, self._pid = None, os.getpid()
        return super().conn

    def _create_connection(self):
        os.makedirs(os.path.dirname(self.filename) or ".", exist_ok=True)
        conn = super()._create_connection()
        for statement in self.ddl:
            conn.execute(statement)
        return conn

    def enqueue_statement(self, data: bytes) -> tuple[str, tuple]:
        """The insert that ``enqueue`` runs, for the job store to run in its own transaction on this file.

        Huey's tables are made with this process's first connection, which this opens if it is not yet.
        """
        self.conn  # noqa: B018 (the property opens the connection)
        return "insert into task (queue, data, priority) values (?, ?, 0)", (self.name, data)

    def take_statements(self) -> TakeStatements:
        """What ``dequeue`` runs, for the job store to run in its own transaction on this file, so that
        taking a task and starting its job are one write (``webapp.worker.ConsumerQueue``).

        Huey's tables are made with this process's first connection, which this opens if it is not yet.
        """
        self.conn  # noqa: B018 (the property opens the connection)
        return TakeStatements(
            ("select 1 from task where queue = ? limit 1", (self.name,)),
            ("select id, data from task where queue = ? order by priority desc, id limit 1", (self.name,)),
            "delete from task where id = ?",
        )


class TakeStatements(NamedTuple):
    """What Huey's SQLite ``dequeue`` runs, for the job store to run in its own transaction on the file."""

    #: A look for a task without the write lock, as an idle consumer asks often.
    peek: tuple[str, tuple]
    #: The next task's row id and data.
    next_task: tuple[str, tuple]
    #: Its removal, given its row id.
    remove: str


class JobQueue(Huey):
    """Huey with the job task registered; ``run`` is the task's body, given only in a consumer."""

    def __init__(self, settings: Settings, store: JobStore, run: JobRunner | None = None):
        if settings.REDIS_URL:
            # Share the store's pool, so that a Sentinel setup covers the queue too.
            storage = {"storage_class": RedisStorage, "connection_pool": store.redis.connection_pool}
        else:
            storage = {"storage_class": SqliteQueueStorage, "filename": settings.database_path}
        super().__init__("tasklight", results=False, **storage)
        self._store = store
        self._run = run
        self.job_task = self.task(context=True, name="run_job")(self._run_job)

    def _run_job(self, job_id: str, record: str | None = None, task: Task | None = None) -> None:
        if self._run is None:
            raise RuntimeError("this process only enqueues jobs; run them with huey_consumer tasks.huey")
        self._run(job_id, record, task)

    def is_revoked(self, task, timestamp=None, peek=True) -> bool:
        """Never: a job is cancelled in its record, not by Huey's revocation, so a task needs no check.

        Huey reads a task's revocation keys before running it, a store round trip per task that
        would never find anything here. ``revoke()`` on this queue has no effect; cancel the job.
        """
        return False

    def enqueue_job(self, job: Job) -> None:
        """Put a recorded job's task in the queue; ``job`` is the record as stored."""
        self.enqueue(self.job_task_for(job))

    def push_command(self, job: Job) -> tuple[str, tuple]:
        """The command that queues ``job``'s task, in the store's own terms, for the store to run in the
        transaction that writes the record: Redis's LPUSH, or an insert into Huey's task table, which
        is in the store's SQLite file. What Huey.enqueue does, less its signal, which nothing here hears.
        """
        task = self.job_task_for(job)
        if task.expires:
            task.resolve_expires(self.utc)
        data = self.serialize_task(task)
        if isinstance(self.storage, RedisStorage):
            return "LPUSH", (self.storage.queue_key, data)
        return self.storage.enqueue_statement(data)

    def job_task_for(self, job: Job) -> Task:
        """The task that runs ``job``, under the job's id, with the job's options and its record as stored."""
        now = self._store.now()
        start_within = max(job.start_by - now, 0) if job.start_by is not None else None
        # A scheduled job waits in Huey's schedule, which its consumers move to the queue when it is due.
        delay = job.scheduled_for - now if job.scheduled_for and job.scheduled_for > now else None
        return self.job_task.s(
            job.id,
            job.to_json(),
            id=job.id,
            # A job enqueued again after an attempt keeps only the attempts it has left.
            retries=max(job.max_attempts - 1 - job.attempt, 0),
            retry_delay=job.options.get("retry_delay") or 0,
            timeout=job.options.get("time_limit"),
            expires=start_within,
            delay=delay,
        )

    def task_ids(self) -> set[str]:
        """The ids of the tasks waiting in the queue or in the schedule."""
        return {task.id for task in self.pending()} | {task.id for task in self.scheduled()}
