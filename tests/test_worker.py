"""JobContext against a real store: progress, cancellation, supersession and time limits."""

import time

import pytest
from huey.api import Task
from huey.exceptions import TaskTimeout

from webapp.store import RETRYING, Job, new_id
from webapp.worker import JobCancelled, JobContext, Superseded


@pytest.fixture
def running(store) -> Job:
    job = store.create(Job(id=new_id(), kind="timer", owner="a"))
    return store.start(job.id, "w")


def test_report_writes_progress_and_renews_the_heartbeat(store, running):
    context = JobContext(store, running.id, running.attempt)
    before = store.get(running.id).heartbeat_at
    time.sleep(0.01)
    context.report(3, 10, "three")
    job = store.get(running.id)
    assert job.progress == {"done": 3, "total": 10, "message": "three"}
    assert job.heartbeat_at > before


def test_reports_closer_than_the_interval_are_skipped_but_not_the_last(store, running):
    context = JobContext(store, running.id, running.attempt)
    context.report(1, 10)
    context.report(2, 10)
    assert store.get(running.id).progress["done"] == 1
    context.report(10, 10)
    assert store.get(running.id).progress["done"] == 10


def test_a_cancel_request_stops_the_job_at_its_next_report(store, running):
    context = JobContext(store, running.id, running.attempt)
    store.update(running.id, {"cancel_requested": True})
    with pytest.raises(JobCancelled):
        context.report(1, 10)


def test_an_attempt_that_lost_the_job_is_superseded(store, running):
    context = JobContext(store, running.id, running.attempt)
    store.update(running.id, {"state": RETRYING})
    with pytest.raises(Superseded):
        context.report(1, 10)


def test_a_report_past_the_time_limit_raises_task_timeout(store, running):
    task = Task(timeout=0.01)
    task._deadline = time.monotonic() - 1  # as Huey sets it when the task starts
    with pytest.raises(TaskTimeout):
        JobContext(store, running.id, running.attempt, task).report(1, 10)
