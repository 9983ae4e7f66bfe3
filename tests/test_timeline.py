"""What a job tells about itself: its timeline, log lines, tab title, label, coarse status and why it ended."""

import pytest
from helpers import JSON, csrf_token, job_id_from, soup, submit, wait_for

from webapp import store as records

#: The owner must never see these fields of an event.
ADMIN_ONLY = {"worker", "traceback"}


def events(data: dict) -> list[str]:
    return [event["event"] for event in data["events"]]


def test_the_timeline_tells_each_attempt_and_its_end(make_app, client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0", "crash_attempts": "1", "label": "  nightly  "}))
    data = wait_for(client, job_id, "succeeded")
    assert events(data) == ["queued", "running", "retrying", "running", "succeeded"]
    assert [event["attempt"] for event in data["events"]] == [0, 1, 1, 2, 2]
    assert "failed unexpectedly" in data["events"][2]["message"]
    assert all(ADMIN_ONLY.isdisjoint(event) for event in data["events"])
    assert all(event["at"].endswith("Z") for event in data["events"])
    assert (data["label"], data["status"], data["is_finished"]) == ("nightly", "SUCCESSFUL", True)
    assert data["log"][0]["line"] == "Waiting 0 s."

    # The owner's page: the timeline in a <details> outside the swapped status, the log inside it.
    page = soup(client.get(f"/jobs/{job_id}"))
    assert page.select_one("main h1").get_text() == "nightly"
    details = page.select_one("details.timeline")
    assert details is not None and details.find_parent(id="job-status") is None
    assert [li["data-event"] for li in details.select("#job-timeline li")] == events(data)
    assert "Traceback" not in page.get_text()

    # The admin page: each attempt's worker and traceback.
    admin = make_app(ADMIN_TOKEN="token").test_client()
    admin.post("/admin/login", data={"csrf_token": csrf_token(admin, "/admin/login"), "token": "token"})
    timeline = soup(admin.get(f"/admin/jobs/{job_id}")).select(".admin-timeline li")
    assert "RuntimeError: crashing on attempt 1" in timeline[2].select_one("details pre").get_text()
    assert timeline[1].select_one(".worker") is not None


def test_progress_milestones_and_a_cancel_request_are_events(client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "30"}))
    wait_for(client, job_id, "running")
    token = csrf_token(client, f"/jobs/{job_id}")
    client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    data = wait_for(client, job_id, "cancelled")
    assert events(data)[-2:] == ["cancel_requested", "cancelled"]
    assert data["error"]["reason"] == "cancelled_by_user" and data["status"] == "FAILED"

    job_id = job_id_from(submit(client, "timer", {"seconds": "1.2"}))
    data = wait_for(client, job_id, "succeeded")
    milestones = [event["message"] for event in data["events"] if event["event"] == "progress"]
    assert milestones and set(milestones) <= {"25% done.", "50% done.", "75% done."}
    assert milestones == sorted(milestones)


def test_the_title_names_the_state_on_the_page_and_in_each_swap(client, store):
    job_id = job_id_from(submit(client, "timer", {"seconds": "4", "label": "Report"}))
    assert soup(client.get(f"/jobs/{job_id}")).title.get_text() == "Queued · Report · Tasklight"
    store.start(job_id, "test:1")
    store.update(job_id, {"progress": {"done": 1.36, "total": 4, "message": ""}})
    swap = soup(client.get(f"/jobs/{job_id}/status", headers={"HX-Request": "true"}))
    # htmx takes a <title> at the top of a response for the tab, and the out-of-band timeline for the page.
    assert swap.find("title").get_text() == "Running 34% · Report · Tasklight"
    assert swap.select_one("#job-timeline")["hx-swap-oob"] == "true"
    assert swap.select_one("#job-status")["data-state"] == "running"
    store.finish(job_id, records.SUCCEEDED, {"result": {"seconds": 4}})
    assert soup(client.get(f"/jobs/{job_id}")).title.get_text() == "Succeeded · Report · Tasklight"


def test_my_jobs_find_jobs_by_label(client):
    for label in ("Monthly report", "weekly REPORT", "cleanup"):
        job_id_from(submit(client, "timer", {"seconds": "1", "label": label}))
    found = client.get("/jobs?q=report", headers=JSON).get_json()["jobs"]
    assert sorted(job["label"] for job in found) == ["Monthly report", "weekly REPORT"]
    page = soup(client.get("/jobs?q=clean%"))
    assert page.select_one("#filter-q")["value"] == "clean%"
    assert page.select_one("p.empty") is not None  # "%" means itself, not "anything"
    too_long = submit(client, "timer", {"seconds": "1", "label": "x" * 81})
    assert too_long.status_code == 400 and "80 characters" in soup(too_long).select_one("#label-error").get_text()


@pytest.mark.parametrize(
    "state, status",
    [("queued", "READY"), ("retrying", "READY"), ("running", "RUNNING"), ("succeeded", "SUCCESSFUL")]
    + [(state, "FAILED") for state in ("failed", "cancelled", "lost", "expired")],
)
def test_every_state_has_a_coarse_status(state, status):
    assert records.Job(id="x", kind="timer", owner="o", state=state).status == status
    assert records.Job(id="x", kind="timer", owner="o", state=state).terminal == (state in records.TERMINAL)


def test_stored_messages_are_capped():
    job = records.Job(id="x" * 32, kind="timer", owner="o")
    message = job.failure("y" * 5000)["message"]
    assert len(message) == records.MAX_ERROR_MESSAGE and message.endswith("…")
