"""The honest lifecycle against real consumers: progress, cancel, retry, retries,
time limits, lost and stopped workers, expiry and missing workers."""

import hashlib
import io
import signal
import time
from dataclasses import replace

from helpers import JSON, job_id_from, soup, submit, wait_for


def fragment(client, job_id):
    return soup(client.get(f"/jobs/{job_id}/status")).select_one("#job-status")


def record(app, job_id):
    return app.extensions["tasklight"].store.get(job_id)


def test_progress_bar_message_and_time_left(client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "4"}))
    wait_for(client, job_id, "running")
    time.sleep(1.5)
    root = fragment(client, job_id)
    bar = root.select_one("progress")
    assert float(bar["max"]) == 4
    assert 1 <= float(bar["value"]) < 4
    assert root.select_one(f"label[for={bar['id']}]") is not None
    assert " of 4 s" in root.select_one(".message").get_text()
    assert "left" in root.select_one(".eta").get_text()


def test_cancel_a_queued_job_at_once_and_it_never_runs(client, start_consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0.5"}))
    page = soup(client.get(f"/jobs/{job_id}"))
    token = page.select_one("form[action$='/cancel'] input[name=csrf_token]")["value"]
    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/jobs/{job_id}"
    assert client.get(f"/jobs/{job_id}", headers=JSON).get_json()["state"] == "cancelled"

    start_consumer()
    # A later job proves the consumer has drained the queue past the cancelled one.
    later = job_id_from(submit(client, "timer", {"seconds": "0"}))
    wait_for(client, later, "succeeded")
    data = client.get(f"/jobs/{job_id}", headers=JSON).get_json()
    assert data["state"] == "cancelled"
    assert data["started_at"] is None


def test_cancel_a_running_job_stops_it_at_its_next_report(client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "30"}))
    wait_for(client, job_id, "running")
    token = soup(client.get(f"/jobs/{job_id}")).select_one("input[name=csrf_token]")["value"]
    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}, follow_redirects=True)
    page = soup(response)
    assert "Cancelling" in page.select_one(".flash").get_text()
    data = wait_for(client, job_id, "cancelled", timeout=5)
    assert data["started_at"] is not None
    root = fragment(client, job_id)
    assert root["data-state"] == "cancelled"
    assert not root.has_attr("hx-trigger")


def test_cancelling_a_finished_job_changes_nothing_and_says_so(client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    wait_for(client, job_id, "succeeded")
    token = soup(client.get("/jobs/new/timer")).select_one("input[name=csrf_token]")["value"]
    page = soup(client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}, follow_redirects=True))
    assert "already ended (succeeded)" in page.select_one(".flash").get_text()
    assert client.get(f"/jobs/{job_id}", headers=JSON).get_json()["state"] == "succeeded"


def test_retry_makes_a_new_job_with_the_same_inputs_and_upload(client, start_consumer):
    content = b"tasklight" * 100
    upload = {"algorithm": "md5", "file": (io.BytesIO(content), "a.txt")}
    first = job_id_from(submit(client, "checksum", upload, content_type="multipart/form-data"))
    token = soup(client.get(f"/jobs/{first}")).select_one("input[name=csrf_token]")["value"]
    client.post(f"/jobs/{first}/cancel", data={"csrf_token": token})
    start_consumer()
    response = client.post(f"/jobs/{first}/retry", data={"csrf_token": token})
    assert response.status_code == 303
    second = job_id_from(response)
    data = wait_for(client, second, "succeeded")
    assert data["retry_of"] == first
    assert data["result"]["hexdigest"] == hashlib.md5(content).hexdigest()
    assert client.get(f"/jobs/{first}", headers=JSON).get_json()["retried_by"] == second

    refused = client.post(f"/jobs/{second}/retry", data={"csrf_token": token}, follow_redirects=True)
    assert "can be retried" in soup(refused).select(".flash")[-1].get_text()


def test_retry_a_failed_job_links_both_ways(client, consumer):
    first = job_id_from(submit(client, "timer", {"seconds": "0", "fail": "y"}))
    wait_for(client, first, "failed")
    page = soup(client.get(f"/jobs/{first}"))
    token = page.select_one("form[action$='/retry'] input[name=csrf_token]")["value"]
    second = job_id_from(client.post(f"/jobs/{first}/retry", data={"csrf_token": token}))
    assert second != first
    wait_for(client, second, "failed")
    new_page = soup(client.get(f"/jobs/{second}"))
    assert new_page.select_one(f"a[href='/jobs/{first}']") is not None
    old_page = soup(client.get(f"/jobs/{first}"))
    assert old_page.select_one(f"a[href='/jobs/{second}']") is not None


def test_automatic_retries_show_the_attempt_then_succeed(app, client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0", "crash_attempts": "1"}))
    wait_for(client, job_id, "retrying", timeout=10)
    root = fragment(client, job_id)
    assert root["data-state"] == "retrying"
    assert "attempt 2 of 3" in root.select_one(".attempt").get_text()
    assert "next attempt starts" in root.get_text()
    assert "failed" not in root.select_one(".badge").get_text().lower()
    data = wait_for(client, job_id, "succeeded", timeout=10)
    assert data["attempt"] == 2
    assert "RuntimeError" in record(app, job_id).traceback


def test_retries_exhausted_fail_with_a_reference_and_no_traceback(app, client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0", "crash_attempts": "3"}))
    data = wait_for(client, job_id, "failed", timeout=15)
    assert data["attempt"] == 3
    assert data["error"]["message"] == f"The job failed (ref {data['error']['ref']})."
    assert "crashing" not in str(data)
    assert "crashing on attempt 3" in record(app, job_id).traceback
    text = fragment(client, job_id).get_text()
    assert "Traceback" not in text and "crashing" not in text


def test_time_limit_fails_the_job_with_its_limit(client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "20", "time_limit": "0.5"}))
    data = wait_for(client, job_id, "failed", timeout=10)
    assert data["error"]["message"] == "Timed out after 0.5 s, its time limit."
    assert data["error"]["reason"] == "timeout"


def test_killed_worker_leaves_a_lost_job_that_can_be_retried(app, client, start_consumer):
    consumer = start_consumer()
    job_id = job_id_from(submit(client, "timer", {"seconds": "30"}))
    wait_for(client, job_id, "running")
    consumer.signal(signal.SIGKILL)
    consumer.wait()
    killed = time.monotonic()
    # Only the reads here can notice, since the consumer that would reap is dead.
    wait_for(client, job_id, "lost", timeout=app.config["HEARTBEAT_TIMEOUT"] + 3)
    detected = time.monotonic() - killed
    assert detected <= app.config["HEARTBEAT_TIMEOUT"] + 3
    root = fragment(client, job_id)
    assert "worker running this job stopped" in root.get_text()
    assert root.select_one("form[action$='/retry'] button") is not None
    assert not root.has_attr("hx-trigger")


def test_reaper_in_another_consumer_marks_lost_jobs(app, client, start_consumer):
    victim = start_consumer(workers=1)
    job_id = job_id_from(submit(client, "timer", {"seconds": "30"}))
    wait_for(client, job_id, "running")
    victim.signal(signal.SIGKILL)
    victim.wait()
    start_consumer()
    store = app.extensions["tasklight"].store
    deadline = time.monotonic() + app.config["HEARTBEAT_TIMEOUT"] + 5
    while store.load(job_id).state != "lost":  # no read-side check: only the reaper
        assert time.monotonic() < deadline, "the reaper did not mark the job lost"
        time.sleep(0.1)


def test_sigint_lets_the_running_job_finish(client, start_consumer):
    consumer = start_consumer()
    job_id = job_id_from(submit(client, "timer", {"seconds": "2"}))
    wait_for(client, job_id, "running")
    consumer.signal(signal.SIGINT)
    assert consumer.wait(15) == 0
    assert client.get(f"/jobs/{job_id}", headers=JSON).get_json()["state"] == "succeeded"


def test_sigterm_puts_the_running_job_back_for_the_next_worker(client, start_consumer):
    consumer = start_consumer()
    job_id = job_id_from(submit(client, "timer", {"seconds": "3"}))
    wait_for(client, job_id, "running")
    consumer.signal(signal.SIGTERM)
    consumer.wait(15)
    data = client.get(f"/jobs/{job_id}", headers=JSON).get_json()
    assert data["state"] == "retrying", consumer.output()
    text = fragment(client, job_id).get_text()
    assert "start again" in text
    assert "No worker has checked in recently" in text
    start_consumer()
    data = wait_for(client, job_id, "succeeded", timeout=15)
    assert data["attempt"] == 2


def test_a_job_not_started_in_time_expires(client, start_consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0", "start_within": "0.5"}))
    time.sleep(1)
    data = client.get(f"/jobs/{job_id}", headers=JSON).get_json()
    assert data["state"] == "expired"
    assert "not started in time" in data["error"]["message"]
    start_consumer()
    later = job_id_from(submit(client, "timer", {"seconds": "0"}))
    wait_for(client, later, "succeeded")
    assert client.get(f"/jobs/{job_id}", headers=JSON).get_json()["started_at"] is None


def test_queued_job_without_workers_says_so(client, start_consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    assert "Waiting for a worker" in fragment(client, job_id).get_text()
    start_consumer()
    wait_for(client, job_id, "succeeded")


def test_purged_job_answers_410_with_its_time_and_unknown_404(app, client, consumer):
    job_id = job_id_from(
        submit(
            client,
            "checksum",
            {"algorithm": "md5", "file": (io.BytesIO(b"x"), "x")},
            content_type="multipart/form-data",
        )
    )
    wait_for(client, job_id, "succeeded")
    store = app.extensions["tasklight"].store
    store.modify(job_id, lambda job: replace(job, purge_at=time.time() - 1))
    store.reap()
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/status"):
        response = client.get(path)
        assert response.status_code == 410
        assert "result expired at" in soup(response).get_text()
    assert client.get(f"/jobs/{job_id}", headers=JSON).get_json()["expired_at"]
    assert store.upload_content(job_id) is None
    assert client.get("/jobs/" + "f" * 32).status_code == 404


def test_the_consumer_purges_jobs_after_their_retention(settings, make_app, start_consumer):
    settings["JOB_RETENTION"] = 0.5
    app = make_app()
    client = app.test_client()
    start_consumer()
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    deadline = time.monotonic() + 10
    while (response := client.get(f"/jobs/{job_id}")).status_code != 410:
        assert response.status_code == 200
        assert time.monotonic() < deadline, "the job was not purged"
        time.sleep(0.1)
    assert "result expired at" in soup(response).get_text()


def test_a_queued_job_whose_task_was_lost_is_enqueued_again(settings, make_app, start_consumer):
    """Huey pops tasks with no acknowledgement; a record left queued with no task must still run."""
    settings["REQUEUE_AFTER"] = 1
    app = make_app()
    client = app.test_client()
    service = app.extensions["tasklight"]
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    waiting = job_id_from(submit(client, "timer", {"seconds": "0"}))
    # Lose the first job's task, as a consumer killed right after popping it would.
    assert [task.id for task in service.queue.pending()] == [job_id, waiting]
    service.queue.storage.flush_queue()
    service.queue.enqueue_job(service.store.get(waiting))
    consumer = start_consumer()
    wait_for(client, waiting, "succeeded")
    data = wait_for(client, job_id, "succeeded", timeout=10)
    assert data["attempt"] == 1
    assert "enqueueing it again" in consumer.output()


def test_a_task_from_before_tasks_carried_the_record_still_runs(app, client, start_consumer):
    """A task made by an older version names only the job's id; its start reads the record instead."""
    service = app.extensions["tasklight"]
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    service.queue.storage.flush_queue()
    service.queue.enqueue(service.queue.job_task.s(job_id, id=job_id))
    start_consumer()
    assert wait_for(client, job_id, "succeeded")["attempt"] == 1
