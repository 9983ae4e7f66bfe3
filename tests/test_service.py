"""Tasklight's operations that keep the store and the queue in step."""

import pytest

from webapp.kinds import KINDS
from webapp.service import Tasklight
from webapp.store import FAILED, QUEUED, Job, StoreUnavailable


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_failed_enqueue_marks_the_record_failed(app):
    """Unit test of Tasklight.submit on SQLite, where the task is enqueued after the record is written: the
    queue refuses, the record must not stay queued."""
    service: Tasklight = app.extensions["tasklight"]

    def refuse(task):
        raise ConnectionError("queue is down")

    service.queue.enqueue = refuse
    with app.app_context(), pytest.raises(StoreUnavailable):
        service.submit(KINDS["timer"], "alice", {"seconds": 1})
    [job] = service.store.list(owner="alice")
    assert job.state == FAILED
    assert "could not be queued" in job.error["message"]


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_on_redis_a_submit_writes_the_record_and_its_task_in_one_transaction(app, monkeypatch):
    service: Tasklight = app.extensions["tasklight"]
    monkeypatch.setattr(service.queue, "enqueue", lambda task: pytest.fail("enqueued after the record"))
    with app.app_context():
        job = service.submit(KINDS["timer"], "alice", {"seconds": 1})
    stored = service.store.get(job.id)
    assert (stored.state, stored.enqueued, stored.version) == (QUEUED, True, 1)
    # The task carries the record exactly as stored, so that starting the job needs no read first.
    [task] = service.queue.pending()
    assert task.id == job.id and Job.from_json(task.args[1]) == stored
