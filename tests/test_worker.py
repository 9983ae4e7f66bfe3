"""JobContext against a real store: progress, cancellation, supersession and time limits."""

import time

import pytest
from huey.api import Task
from huey.exceptions import TaskTimeout

import tasks
from webapp.config import Settings
from webapp.queue import JobQueue
from webapp.store import EXPIRED, QUEUED, RETRYING, RUNNING, SUCCEEDED, Job, new_id
from webapp.worker import JobCancelled, JobContext, Superseded, Worker


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


sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def consumer_queue(settings, store):
    """The queue as a consumer takes from it, with the real bodies, in this process (no consumer runs)."""
    return Worker(Settings.load(settings), store, tasks.BODIES).queue


def write_transactions(store, queue) -> list[str]:
    """The write transactions begun from now on, on this thread's store connection and Huey's."""
    begun: list[str] = []
    store.ping()  # Opens this thread's connection.
    for conn in (store._local.conn, queue.storage.conn):
        conn.set_trace_callback(lambda sql: begun.append(sql) if sql.lower().startswith("begin") else None)
    return begun


@sqlite_only
def test_on_sqlite_taking_a_task_starts_its_job_in_the_same_write(store, consumer_queue):
    job = store.create(Job(id=new_id(), kind="timer", owner="a", inputs={"seconds": 0.0, "fail": False}))
    consumer_queue.enqueue_job(job)
    begun = write_transactions(store, consumer_queue)
    task = consumer_queue.dequeue()
    assert (task.id, len(begun), consumer_queue.pending()) == (job.id, 1, [])
    started = store.get(job.id)
    assert (started.state, started.attempt, started.version) == (RUNNING, 1, job.version + 1)
    assert consumer_queue.started_by_take(task).started == started


@sqlite_only
def test_on_sqlite_a_task_not_yet_due_is_taken_without_starting_its_job(store, consumer_queue):
    later = store.now() + 600
    job = store.create(Job(id=new_id(), kind="timer", owner="a", inputs={"seconds": 0.0}, scheduled_for=later))
    consumer_queue.enqueue_job(job)
    task = consumer_queue.dequeue()
    assert store.get(job.id).state == QUEUED
    consumer_queue.execute(task)  # As the consumer does next: Huey puts it in its schedule.
    assert [t.id for t in consumer_queue.scheduled()] == [job.id]
    assert store.get(job.id).state == QUEUED


@sqlite_only
def test_on_sqlite_an_expired_task_is_taken_without_starting_its_job_and_expires_it(store, consumer_queue):
    job = store.create(Job(id=new_id(), kind="timer", owner="a", inputs={"seconds": 0.0}, start_by=store.now()))
    consumer_queue.enqueue_job(job)
    time.sleep(0.05)
    task = consumer_queue.dequeue()
    assert store.load(job.id).state == QUEUED  # load, not get: a read by get would mark it expired itself.
    consumer_queue.execute(task)  # Huey sees it expired, at the moment the take judged it.
    assert store.get(job.id).state == EXPIRED


@sqlite_only
def test_on_sqlite_a_task_that_cannot_be_read_is_taken_away_as_huey_would(store, consumer_queue):
    consumer_queue.storage.enqueue(b"not a task")
    with pytest.raises(Exception):  # noqa: B017 (whatever Huey's deserializer raises, as Huey's dequeue would)
        consumer_queue.dequeue()
    assert consumer_queue.pending_count() == 0  # The queue is not stuck behind it.


@sqlite_only
def test_on_sqlite_a_task_whose_record_cannot_be_read_is_taken_without_starting_its_job(store, consumer_queue):
    job = store.create(Job(id=new_id(), kind="timer", owner="a", inputs={"seconds": 0.0}))
    consumer_queue.enqueue(consumer_queue.job_task.s(job.id, "{not a record", id=job.id))
    task = consumer_queue.dequeue()
    assert (task.id, consumer_queue.pending_count()) == (job.id, 0)
    assert consumer_queue.started_by_take(task) is None  # The run tries the start itself, and fails as before.
    assert store.get(job.id).state == QUEUED
