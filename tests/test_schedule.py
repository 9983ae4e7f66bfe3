"""Scheduled starts: a job can wait for a time, in Huey's own schedule, and be cancelled until then."""

import datetime
import time

from helpers import JSON, csrf_token, job_id_from, soup, submit, wait_for


def test_a_scheduled_job_waits_then_starts_on_time(client, consumer):
    # Its start deadline (1 s) counts from the scheduled time, six seconds off, so it still runs.
    job_id = job_id_from(submit(client, "timer", {"seconds": "0", "start_in": "0.1", "start_within": "1"}))
    page = soup(client.get(f"/jobs/{job_id}"))
    assert page.title.get_text().startswith("Scheduled · ")
    assert "Scheduled for" in page.select_one("#job-status .scheduled").get_text()
    data = client.get(f"/jobs/{job_id}", headers=JSON).get_json()
    assert data["state"] == "queued" and data["scheduled_for"]
    time.sleep(1.5)
    assert client.get(f"/jobs/{job_id}", headers=JSON).get_json()["state"] == "queued"
    data = wait_for(client, job_id, "succeeded", timeout=15)
    scheduled = datetime.datetime.fromisoformat(data["scheduled_for"])
    assert datetime.datetime.fromisoformat(data["started_at"]) >= scheduled


def test_a_scheduled_job_can_be_cancelled_until_then_and_never_runs(client, consumer):
    at = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S")
    job_id = job_id_from(submit(client, "timer", {"seconds": "0", "start_at": at}))
    client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_token(client, f"/jobs/{job_id}")})
    later = job_id_from(submit(client, "timer", {"seconds": "0", "start_in": "0.08"}))
    wait_for(client, later, "succeeded", timeout=15)
    data = client.get(f"/jobs/{job_id}", headers=JSON).get_json()
    assert data["state"] == "cancelled" and data["started_at"] is None


def test_start_times_are_checked_at_the_field(client):
    now = datetime.datetime.now(datetime.UTC)
    cases = {
        "start_at": ((now - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"), "has passed"),
        "start_at ": ((now + datetime.timedelta(days=31)).strftime("%Y-%m-%dT%H:%M"), "30 days"),
        "start_in": ("50000", "0 to 43200"),
    }
    for name, (value, message) in cases.items():
        response = submit(client, "timer", {"seconds": "1", name.strip(): value}, headers=JSON)
        assert response.status_code == 400 and message in response.get_json()["fields"][name.strip()]
    both = {"seconds": "1", "start_in": "5", "start_at": (now + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")}
    assert "not both" in submit(client, "timer", both, headers=JSON).get_json()["fields"]["start_at"]
