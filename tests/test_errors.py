"""Error answers: a store that is down gets a friendly 503, never a traceback."""

import json

import pytest
from helpers import csrf_token, soup

from webapp import create_app


@pytest.fixture
def down_app(tmp_path):
    """An app whose Redis is not there (nothing listens on port 1)."""
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "t", "INSTANCE_PATH": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    yield app
    app.extensions["tasklight"].close()


def test_store_down_answers_503_pages_and_loses_nothing(down_app):
    client = down_app.test_client()
    assert client.get("/").status_code == 200
    token = csrf_token(client, "/jobs/new/timer")
    response = client.post("/jobs/new/timer", data={"csrf_token": token, "seconds": "1"})
    assert response.status_code == 503
    assert "cannot be reached" in soup(response).select_one(".error-message").get_text()
    assert "Traceback" not in response.get_data(as_text=True)
    with client.session_transaction() as session:
        session["owner"] = "someone"
    assert client.get("/jobs/" + "a" * 32).status_code == 503
    assert client.get("/jobs").status_code == 503
    json = client.get("/jobs/" + "a" * 32, headers={"Accept": "application/json"})
    assert json.status_code == 503 and "cannot be reached" in json.get_json()["error"]


def test_a_method_not_allowed_names_the_allowed_ones(client):
    """A 405 keeps werkzeug's Allow header through the app's own error page (RFC 9110 requires it)."""
    for headers in ({}, {"Accept": "application/json"}):
        response = client.delete("/jobs", headers=headers)
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_during_an_outage_a_polling_page_keeps_its_state_and_polls_more_slowly(down_app):
    """htmx swaps a 503 (base.html): the status poll's answer keeps the state the page says it shows (its
    hx-headers), and asks for a slower poll; any other 503 that htmx fetches says not to swap it."""
    client = down_app.test_client()
    with client.session_transaction() as session:
        session["owner"] = "someone"
    htmx = {"HX-Request": "true"}
    job_id = "a" * 32
    # The page sends the ETag of the fragment it shows, as a browser does.
    shown = {**htmx, "Tasklight-Shown-State": "running", "If-None-Match": '"0123456789abcdef0123-f1"'}
    polled = client.get(f"/jobs/{job_id}/status", headers=shown)
    assert polled.status_code == 503 and polled.headers["Retry-After"] == "10"
    section = soup(polled).select_one("#job-status")
    assert section["data-state"] == "running" and section["hx-trigger"] == "every 10s"
    assert section["hx-get"] == f"/jobs/{job_id}/status"
    assert "cannot be reached" in section.get_text()
    # A poll that names no state (or an ended one), and every other request, get the usual 503, unswapped.
    ended = {**htmx, "Tasklight-Shown-State": "succeeded"}
    for path, headers in ((f"/jobs/{job_id}/status", htmx), (f"/jobs/{job_id}/status", ended), ("/jobs/rows", htmx)):
        response = client.get(path, headers=headers)
        assert response.status_code == 503 and response.headers["HX-Reswap"] == "none", path
    assert "HX-Reswap" not in client.get(f"/jobs/{job_id}").headers
    base = soup(client.get("/"))
    config = json.loads(base.select_one("meta[name=htmx-config]")["content"])
    assert {"code": "503", "swap": True, "error": True} in config["responseHandling"]
