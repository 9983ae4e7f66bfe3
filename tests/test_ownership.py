"""A job belongs to the session that submitted it: every other session gets the same 404 as for an unknown id."""

import io

import pytest
from helpers import JSON, csrf_token, job_id_from, soup, submit, wait_for

UNKNOWN = "0" * 32


def job_urls(job_id: str, download: str | None = None) -> list[tuple[str, str, dict]]:
    """Every URL of a job as (method, path, headers); POSTs get a CSRF token added by the caller."""
    urls = [
        ("GET", f"/jobs/{job_id}", {}),
        ("GET", f"/jobs/{job_id}", JSON),
        ("GET", f"/jobs/{job_id}/status", {}),
        ("GET", f"/jobs/{job_id}/status", JSON),
        ("POST", f"/jobs/{job_id}/cancel", {}),
        ("POST", f"/jobs/{job_id}/cancel", JSON),
        ("POST", f"/jobs/{job_id}/retry", {}),
        ("POST", f"/jobs/{job_id}/retry", JSON),
    ]
    for fmt in ("json", "csv", "sha256", "md5"):
        urls.append(("GET", f"/jobs/{job_id}/download.{fmt}", {}))
    return urls


def request(client, method: str, path: str, headers: dict):
    if method == "POST":
        token = csrf_token(client, "/jobs/new/timer")
        return client.post(path, data={"csrf_token": token}, headers=headers)
    return client.get(path, headers=headers)


def assert_like_unknown(client, job_id: str) -> None:
    """Each URL of ``job_id`` answers exactly what the same URL of a never-existing id answers."""
    for (method, path, headers), (_, unknown_path, _) in zip(job_urls(job_id), job_urls(UNKNOWN), strict=True):
        response = request(client, method, path, headers)
        unknown = request(client, method, unknown_path, headers)
        assert response.status_code == 404, (method, path, headers, response.status_code)
        assert response.get_data() == unknown.get_data(), (method, path, headers)
        assert response.mimetype == unknown.mimetype


@pytest.fixture
def other(app):
    """A second browser session."""
    return app.test_client()


def finished_jobs(client) -> dict[str, str]:
    """One job of each kind, run to its end: a csv profile, a checksum and a failed timer."""
    ids = {
        "csv_profile": job_id_from(
            submit(
                client,
                "csv_profile",
                {"file": (io.BytesIO(b"a,b\n1,2\n"), "t.csv")},
                content_type="multipart/form-data",
            )
        ),
        "checksum": job_id_from(
            submit(
                client,
                "checksum",
                {"algorithm": "sha256", "file": (io.BytesIO(b"hello"), "h.txt")},
                content_type="multipart/form-data",
            )
        ),
        "timer": job_id_from(submit(client, "timer", {"seconds": "0", "fail": "y"})),
    }
    wait_for(client, ids["csv_profile"], "succeeded")
    wait_for(client, ids["checksum"], "succeeded")
    wait_for(client, ids["timer"], "failed")
    return ids


def test_every_url_of_a_finished_job_is_404_for_other_sessions(app, client, other, consumer):
    ids = finished_jobs(client)
    # The owner can reach them, so the 404s below are about ownership alone.
    assert client.get(f"/jobs/{ids['csv_profile']}/download.csv").status_code == 200
    assert client.get(f"/jobs/{ids['checksum']}/download.sha256").status_code == 200

    fresh = app.test_client()  # a session that never submitted anything
    other_id = job_id_from(submit(other, "timer", {"seconds": "0"}))  # a session with jobs of its own
    wait_for(other, other_id, "succeeded")
    for session in (fresh, other):
        for job_id in ids.values():
            assert_like_unknown(session, job_id)
    # Nothing the other sessions did touched the owner's jobs: no retries were made.
    assert client.get(f"/jobs/{ids['timer']}", headers=JSON).get_json()["retried_by"] is None


def test_other_session_cannot_cancel_a_waiting_job(client, other):
    job_id = job_id_from(submit(client, "timer", {"seconds": "5"}))  # no consumer: it stays queued
    assert_like_unknown(other, job_id)
    data = client.get(f"/jobs/{job_id}", headers=JSON).get_json()
    assert data["state"] == "queued"
    assert data["cancel_requested"] is False


def test_other_sessions_list_does_not_show_the_job(client, other):
    job_id = job_id_from(submit(client, "timer", {"seconds": "5"}))
    submit(other, "timer", {"seconds": "5"})
    assert [j["id"] for j in client.get("/jobs", headers=JSON).get_json()["jobs"]] == [job_id]
    listed = [j["id"] for j in other.get("/jobs", headers=JSON).get_json()["jobs"]]
    assert job_id not in listed and len(listed) == 1
    assert soup(other.get("/jobs")).select_one(f"a[href='/jobs/{job_id}']") is None


def test_a_purged_job_is_404_not_410_for_other_sessions(app, client, other):
    job_id = job_id_from(submit(client, "timer", {"seconds": "5"}))
    submit(other, "timer", {"seconds": "5"})
    app.extensions["tasklight"].store.purge(job_id)
    assert client.get(f"/jobs/{job_id}").status_code == 410
    assert other.get(f"/jobs/{job_id}").status_code == 404
