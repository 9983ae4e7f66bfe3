"""JobContext against a real store: progress, cancellation, supersession and time limits."""

import time

import pytest
from huey.api import Task
from huey.exceptions import TaskTimeout

from webapp.config import Settings
from webapp.queue import JobQueue
from webapp.store import RETRYING, SUCCEEDED, Job, new_id
from webapp.worker import JobCancelled, JobContext, Superseded


@pytest.fixture
def running(store) -> Job:
    job = store.create(Job(id=new_id(), kind="timer", owner="a"))
    return store.start(job.id, "w")


def test_report_writes_progress_and_renews_the_heartbeat(store, running):
    context = JobContext(store, running)
    before = store.get(running.id).heartbeat_at
    time.sleep(JobContext.min_interval)  # a report in the attempt's first moment waits for the next one
    context.report(3, 10, "three")
    job = store.get(running.id)
    assert job.progress == {"done": 3, "total": 10, "message": "three"}
    assert job.heartbeat_at > before


def test_reports_closer_than_the_interval_are_coalesced_and_the_last_lands_with_the_ending(store, running):
    context = JobContext(store, running)
    context.report(0, 10)
    assert store.get(running.id).progress["done"] == 0  # the attempt has only just started
    time.sleep(JobContext.min_interval)
    context.report(1, 10)
    context.report(2, 10)
    context.report(10, 10, "done")
    assert store.get(running.id).progress["done"] == 1
    context.finish(SUCCEEDED, {"result": 1})
    assert store.get(running.id).progress == {"done": 10, "total": 10, "message": "done"}


def test_a_stale_copy_of_the_record_never_overwrites_a_newer_one(store, running):
    """The compare-and-set holds when the writer's copy is out of date, as after another process's write."""
    context = JobContext(store, running)
    store.update(running.id, {"heartbeat_at": store.now()})  # the heartbeat thread writes meanwhile
    time.sleep(JobContext.min_interval)
    context.report(1, 10)
    store.update(running.id, {"cancel_requested": True})
    with pytest.raises(JobCancelled):
        context.write({"progress": {"done": 2, "total": 10, "message": ""}})
    job = store.get(running.id)
    assert job.cancel_requested and job.progress["done"] == 2 and job.version == running.version + 4


def test_a_cancel_request_stops_the_job_at_its_next_report(store, running):
    context = JobContext(store, running)
    store.update(running.id, {"cancel_requested": True})
    time.sleep(JobContext.min_interval)
    with pytest.raises(JobCancelled):
        context.report(1, 10)


def test_an_attempt_that_lost_the_job_is_superseded(store, running):
    context = JobContext(store, running)
    store.update(running.id, {"state": RETRYING})
    time.sleep(JobContext.min_interval)
    with pytest.raises(Superseded):
        context.report(1, 10)


def test_a_report_past_the_time_limit_raises_task_timeout(store, running):
    task = Task(timeout=0.01)
    task._deadline = time.monotonic() - 1  # as Huey sets it when the task starts
    with pytest.raises(TaskTimeout):
        JobContext(store, running, task).report(1, 10)


def test_the_queue_never_asks_the_store_whether_a_task_was_revoked(settings, store, monkeypatch):
    # A job is cancelled in its record; Huey's revocation check would be a store round trip per task.
    queue = JobQueue(Settings.load(settings), store)
    job = store.create(Job(id=new_id(), kind="timer", owner="a"))
    queue.enqueue_job(job)
    [task] = queue.pending()
    queue.revoke_by_id(job.id)
    monkeypatch.setattr(queue.storage, "peek_many", lambda keys: pytest.fail("read the revocation keys"))
    assert not queue.is_revoked(task)
