"""Tasklight's operations that keep the store and the queue in step."""

import pytest

from webapp.kinds import KINDS
from webapp.service import Tasklight
from webapp.store import FAILED, StoreUnavailable


def test_a_failed_enqueue_marks_the_record_failed(app):
    """Unit test of Tasklight.submit: the queue refuses, the record must not stay queued."""
    service: Tasklight = app.extensions["tasklight"]

    def refuse(task):
        raise ConnectionError("queue is down")

    service.queue.enqueue = refuse
    with app.app_context(), pytest.raises(StoreUnavailable):
        service.submit(KINDS["timer"], "alice", {"seconds": 1})
    [job] = service.store.list(owner="alice")
    assert job.state == FAILED
    assert "could not be queued" in job.error["message"]
