"""Tasklight's operations that keep the store and the queue in step."""

import sqlite3

import pytest
import redis

from webapp.kinds import KINDS
from webapp.service import Tasklight
from webapp.store import QUEUED, Job


def test_a_submit_writes_the_record_and_its_task_in_one_transaction(app, monkeypatch):
    service: Tasklight = app.extensions["tasklight"]
    monkeypatch.setattr(service.queue, "enqueue", lambda task: pytest.fail("enqueued apart from the record"))
    with app.app_context():
        job = service.submit(KINDS["timer"], "alice", {"seconds": 1})
    stored = service.store.get(job.id)
    assert (stored.state, stored.enqueued, stored.version) == (QUEUED, True, 1)
    # The task carries the record exactly as stored, so that starting the job needs no read first.
    [task] = service.queue.pending()
    assert task.id == job.id and Job.from_json(task.args[1]) == stored


def test_a_submit_whose_transaction_fails_records_nothing_and_queues_nothing(app, monkeypatch):
    """Unit test of Tasklight.submit: the task's part of the transaction is refused, so the record's is undone."""
    service: Tasklight = app.extensions["tasklight"]
    monkeypatch.setattr(service.queue, "push_command", lambda job: ("no such command", ()))
    with app.app_context(), pytest.raises((sqlite3.Error, redis.ResponseError)):
        service.submit(KINDS["timer"], "alice", {"seconds": 1})
    assert service.store.list(owner="alice") == [] and service.queue.pending() == []
