"""The status poll stays cheap without changing what it answers: the session cookie, the ETag and the 304."""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import job_id_from, submit

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def session_cookies(response) -> list[str]:
    return [value for value in response.headers.getlist("Set-Cookie") if value.startswith("session=")]


@sqlite_only
def test_first_submit_sets_the_session_cookie_and_polls_do_not_resend_it(client):
    response = submit(client, "timer", {"seconds": "1"})
    [cookie] = session_cookies(response)
    assert "expires=" in cookie.lower()  # The owner's session is permanent.
    job_id = job_id_from(response)
    first = client.get(f"/jobs/{job_id}/status")
    again = client.get(f"/jobs/{job_id}/status", headers={"If-None-Match": first.headers["ETag"]})
    assert (first.status_code, again.status_code) == (200, 304)
    for poll in (first, again):
        assert session_cookies(poll) == []
        assert "Cookie" in poll.headers["Vary"]
    # The cookie it kept still proves ownership, so the polls above were the owner's.
    assert client.get(f"/jobs/{job_id}/status", headers={"Accept": "application/json"}).status_code == 200


@sqlite_only
def test_an_unchanged_session_cookie_is_refreshed_once_it_is_old(app, client):
    job_id = job_id_from(submit(client, "timer", {"seconds": "1"}))
    app.session_interface.refresh_after = timedelta(0)  # Every cookie is now old enough.
    [cookie] = session_cookies(client.get(f"/jobs/{job_id}/status"))
    assert "expires=" in cookie.lower()
    assert client.get(f"/jobs/{job_id}/status").status_code == 200


@sqlite_only
def test_a_changed_session_is_sent_at_once(client):
    # Viewing a form puts a CSRF token in a new session; submitting adds the owner: each change is sent.
    assert session_cookies(client.get("/jobs/new/timer"))
    assert session_cookies(submit(client, "timer", {"seconds": "1"}))
