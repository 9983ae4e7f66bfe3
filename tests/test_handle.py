"""JobHandle: follow a job by id from Python, against real consumers on both backends."""

import itertools
import time

import pytest

from webapp.handle import (
    JobCancelled,
    JobExpired,
    JobFailed,
    JobHandle,
    JobLost,
    JobNotSucceeded,
    delays,
)
from webapp.kinds import KINDS
from webapp.store import RUNNING, JobNotFound


def start(app, seconds: float, options: dict | None = None, **inputs) -> JobHandle:
    """Submit a timer job as the web app would, and fetch its handle."""
    job = app.extensions["tasklight"].submit(KINDS["timer"], "owner-1", {"seconds": seconds, **inputs}, options)
    return JobHandle.fetch(job.id, app=app)


def test_wait_returns_the_result(app, consumer):
    handle = start(app, 0.3)
    assert handle.state == "queued" and not handle.ready()
    assert handle.wait(timeout=20) == {"seconds": 0.3}
    assert handle.ready() and handle.successful() and not handle.failed()
    assert handle.result == {"seconds": 0.3}
    assert handle.error is None
    assert handle.progress["done"] == 0.3


def test_fetch_uses_the_current_app(app, consumer):
    job_id = start(app, 0).id
    with app.app_context():
        assert JobHandle.fetch(job_id).wait(timeout=20) == {"seconds": 0}


def test_failure_raises_job_failed_with_the_safe_message(app, consumer):
    handle = start(app, 0, fail=True)
    with pytest.raises(JobFailed) as caught:
        handle.wait(timeout=20)
    assert "as you asked" in caught.value.message
    assert str(caught.value) == caught.value.message
    assert isinstance(caught.value, JobNotSucceeded)
    assert caught.value.job.state == "failed"
    assert handle.failed() and handle.error["message"] == caught.value.message


def test_cancelled_job_raises_job_cancelled(app, consumer):
    handle = start(app, 30)
    deadline = time.monotonic() + 20
    while handle.refresh().state != RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "stop" in handle.cancel()
    with pytest.raises(JobCancelled):
        handle.wait(timeout=20)
    assert handle.state == "cancelled"


def test_timeout_raises_and_leaves_the_job_alone(app, consumer):
    handle = start(app, 30)
    with pytest.raises(TimeoutError, match="after 0.5 s"):
        handle.wait(timeout=0.5)
    assert not handle.refresh().ready()
    assert handle.record.cancel_requested is False
    handle.cancel()


def test_unknown_id_raises_at_once(app):
    began = time.monotonic()
    with pytest.raises(JobNotFound):
        JobHandle.fetch("0" * 32, app=app)
    assert time.monotonic() - began < 0.5


def test_owner_restricts_fetch(app):
    handle = start(app, 30)
    assert JobHandle.fetch(handle.id, app=app, owner="owner-1").id == handle.id
    with pytest.raises(JobNotFound):
        JobHandle.fetch(handle.id, app=app, owner="someone-else")


def test_retry_returns_a_new_handle(app, consumer):
    handle = start(app, 0, fail=True)
    with pytest.raises(JobFailed):
        handle.wait(timeout=20)
    again = handle.retry()
    assert again.id != handle.id
    assert again.record.retry_of == handle.id
    assert handle.record.retried_by == again.id
    with pytest.raises(JobFailed):
        again.wait(timeout=20)
    with pytest.raises(ValueError):
        start(app, 0).retry()  # a queued (or succeeded) job cannot be retried


def test_expired_job_raises_job_expired(app):
    # No consumer: the job cannot start before its queue expiry passes.
    handle = start(app, 1, {"start_within": 0.2})
    with pytest.raises(JobExpired) as caught:
        handle.wait(timeout=5)
    assert caught.value.job.state == "expired"


def test_lost_job_raises_job_lost(app):
    # A worker that starts the job and then never beats again (HEARTBEAT_TIMEOUT is 2 s here).
    handle = start(app, 30)
    app.extensions["tasklight"].store.start(handle.id, "gone:1")
    with pytest.raises(JobLost) as caught:
        handle.wait(timeout=10)
    assert "stopped" in caught.value.message


def test_delays_double_from_50_ms_up_to_1_s():
    assert list(itertools.islice(delays(), 8)) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_waiting_reads_the_store_sparingly(app, monkeypatch):
    handle = start(app, 30)  # no consumer: it stays queued
    store = app.extensions["tasklight"].store
    reads = []
    real_get = store.get
    monkeypatch.setattr(store, "get", lambda job_id: reads.append(job_id) or real_get(job_id))
    with pytest.raises(TimeoutError):
        handle.wait(timeout=3)
    # 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1 + 0.45: eight reads in three seconds, not sixty.
    assert 6 <= len(reads) <= 9
