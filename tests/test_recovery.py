"""No job left behind: every accepted job ends, whatever dies or refuses along the way."""

import glob
import time

import pytest
from helpers import JSON, job_id_from, submit, wait_for

from webapp.kinds import KINDS
from webapp.store import FAILED, RETRYING, Job, new_id


@pytest.fixture
def quick_recovery(settings):
    """Consumers look for waiting jobs without a task after one second, not five minutes."""
    settings["REQUEUE_AFTER"] = 1


@pytest.mark.parametrize(
    "next_attempt",
    [-5, None],
    ids=["retry-task-popped-then-lost", "interrupted-retry-never-started"],
)
def test_a_retrying_job_whose_task_is_gone_runs_again(quick_recovery, app, client, start_consumer, next_attempt):
    """A consumer killed after popping a retry task (or between the retrying write and the re-enqueue, or on a
    store error as the last attempt starts, or stopped with a popped retry not yet started) leaves the job
    retrying with no task. Another consumer must give it a task again."""
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    store, queue = app.extensions["tasklight"].store, app.extensions["tasklight"].queue
    store.start(job_id, "gone:1")
    retry_at = time.time() + next_attempt if next_attempt is not None else None
    store.update(job_id, {"state": RETRYING, "next_attempt_at": retry_at})
    queue.storage.flush_queue()  # the task died with its consumer
    start_consumer()
    data = wait_for(client, job_id, "succeeded", timeout=15)
    assert data["attempt"] == 2 and data["max_attempts"] == KINDS["timer"].retries + 1


def test_a_queued_record_never_handed_to_the_queue_is_failed_not_run(quick_recovery, app, client, start_consumer):
    """A submit writes the record and its task in one transaction, but an older version's submit could fail
    half-way, leaving a queued record with no task whose user was told nothing was queued. The reaper fails
    such a record rather than running it later."""
    store = app.extensions["tasklight"].store
    with client.session_transaction() as session:
        session["owner"] = "someone"
    job = store.create(Job(id=new_id(), kind="timer", owner="someone", inputs={"seconds": 0}))
    assert (job.state, job.enqueued) == ("queued", False)
    start_consumer()
    data = wait_for(client, job.id, FAILED, timeout=15)
    assert data["attempt"] == 0 and data["started_at"] is None
    assert "could not be queued" in data["error"]["message"]


def test_a_body_that_never_reports_still_ends_at_its_time_limit(client, start_consumer):
    start_consumer(module="stubborn_tasks.huey")
    job_id = job_id_from(submit(client, "timer", {"seconds": "60", "time_limit": "1"}))
    data = wait_for(client, job_id, FAILED, timeout=10)
    assert data["error"] | {"ref": None} == {
        "message": "Timed out after 1 s, its time limit.",
        "reason": "timeout",
        "ref": None,
    }


def test_a_body_that_never_reports_is_still_cancelled(client, start_consumer):
    start_consumer(module="stubborn_tasks.huey")
    job_id = job_id_from(submit(client, "timer", {"seconds": "60"}))
    wait_for(client, job_id, "running")
    token = client.get("/jobs/new/timer", headers=JSON).get_json()["csrf_token"]
    assert client.post(f"/jobs/{job_id}/cancel", headers={**JSON, "X-CSRFToken": token}).status_code == 202
    wait_for(client, job_id, "cancelled", timeout=5)


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_a_host_whose_clock_runs_ahead_does_not_mark_live_jobs_lost(client, start_consumer, settings):
    """Staleness is judged by the store's clock. A second consumer whose clock is a minute ahead reaps
    every heartbeat; by its own clock the first consumer's beats would look a minute old."""
    [libfaketime] = glob.glob("/usr/lib/*/faketime/libfaketime.so.1") or [None]
    assert libfaketime, "libfaketime is not installed; scripts/setup --test installs Debian's faketime"
    start_consumer(workers=1)
    job_id = job_id_from(submit(client, "timer", {"seconds": "3"}))
    wait_for(client, job_id, "running")
    start_consumer(workers=1, env={"LD_PRELOAD": libfaketime, "FAKETIME": "+60s"})
    assert wait_for(client, job_id, {"succeeded", "lost"}, timeout=15)["state"] == "succeeded"
