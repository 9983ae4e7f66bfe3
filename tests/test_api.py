"""The same URLs answer JSON for ``Accept: application/json``; scripts submit with a CSRF header."""

import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, consumer_env, free_port
from helpers import JSON, csrf_token, job_id_from, submit, wait_for

FIELDS = {"id", "kind", "state", "progress", "result", "error", "created_at", "started_at", "finished_at"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def api_token(client, kind: str = "timer") -> str:
    response = client.get(f"/jobs/new/{kind}", headers=JSON)
    assert response.status_code == 200
    assert "Accept" in response.vary
    return response.get_json()["csrf_token"]


def api_submit(client, data: dict, kind: str = "timer", **kwargs):
    headers = {**JSON, "X-CSRFToken": api_token(client, kind)}
    return client.post(f"/jobs/new/{kind}", headers=headers, **({"data": data} if data is not None else {}), **kwargs)


def test_form_json_gives_fields_and_csrf_token(client):
    data = client.get("/jobs/new/checksum", headers=JSON).get_json()
    assert data["kind"] == "checksum"
    assert set(data["fields"]) == {"label", "start_at", "start_in", "file", "algorithm"}
    assert data["csrf_token"]


def test_submit_answers_202_with_location_and_the_job(client):
    response = api_submit(client, {"seconds": "1"})
    assert response.status_code == 202
    job_id = job_id_from(response)
    assert response.headers["Location"] == f"/jobs/{job_id}"
    assert "Accept" in response.vary
    data = response.get_json()
    assert FIELDS <= data.keys()
    assert (data["id"], data["kind"], data["state"]) == (job_id, "timer", "queued")
    assert ISO_UTC.fullmatch(data["created_at"])
    assert data["started_at"] is None and data["finished_at"] is None
    assert "traceback" not in data and "owner" not in data


def test_submit_takes_a_json_body_too(client):
    response = api_submit(client, None, json={"seconds": 0.5, "fail": False})
    assert response.status_code == 202
    assert response.get_json()["state"] == "queued"


def test_validation_errors_are_400_with_a_message_per_field(client):
    response = api_submit(client, {"seconds": "9999", "crash_attempts": "7"})
    assert response.status_code == 400
    body = response.get_json()
    assert set(body["fields"]) == {"seconds", "crash_attempts"}
    assert "0 to 3600" in body["fields"]["seconds"]
    assert all(isinstance(message, str) for message in body["fields"].values())


@pytest.mark.parametrize("field", ["time_limit", "start_within"])
def test_the_smallest_value_a_message_offers_is_accepted(client, field):
    """The form says "Enter 0.1 to …", so 0.1 itself is valid, typed as text or sent as a JSON number."""
    assert api_submit(client, {"seconds": "1", field: "0.1"}).status_code == 202
    assert api_submit(client, None, json={"seconds": 1, field: 0.1}).status_code == 202
    assert api_submit(client, {"seconds": "1", field: "0.09"}).status_code == 400


def test_submit_without_csrf_header_is_400_json(client):
    client.get("/jobs/new/timer", headers=JSON)
    response = client.post("/jobs/new/timer", data={"seconds": "1"}, headers=JSON)
    assert response.status_code == 400
    assert "security token" in response.get_json()["error"]


def test_a_non_object_json_body_is_400(client):
    assert api_submit(client, None, json=[1, 2]).status_code == 400


def test_unknown_job_and_kind_are_404_json(client):
    for path in ("/jobs/" + "0" * 32, "/jobs/" + "0" * 32 + "/status", "/jobs/new/nope"):
        response = client.get(path, headers=JSON)
        assert response.status_code == 404
        assert response.mimetype == "application/json"
        assert response.get_json()["error"]
        assert "Accept" in response.vary


def test_html_and_json_of_one_url_vary_on_accept(client):
    job_id = job_id_from(api_submit(client, {"seconds": "5"}))
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/status", "/jobs"):
        html, data = client.get(path), client.get(path, headers=JSON)
        assert (html.mimetype, data.mimetype) == ("text/html", "application/json")
        assert "Accept" in html.vary and "Accept" in data.vary
    # A browser's Accept header (and curl's */*) gets HTML.
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert client.get(f"/jobs/{job_id}", headers={"Accept": browser}).mimetype == "text/html"
    assert client.get(f"/jobs/{job_id}", headers={"Accept": "*/*"}).mimetype == "text/html"


def test_job_runs_to_success_with_iso_times(client, consumer):
    job_id = job_id_from(api_submit(client, {"seconds": "0.3"}))
    data = wait_for(client, job_id, "succeeded")
    assert data["result"] == {"seconds": 0.3}
    assert data["error"] is None
    assert data["progress"]["done"] == data["progress"]["total"] == 0.3
    for name in ("created_at", "started_at", "finished_at"):
        assert ISO_UTC.fullmatch(data[name]), data[name]
    assert data["created_at"] <= data["started_at"] <= data["finished_at"]
    assert (
        client.get(f"/jobs/{job_id}/status", headers=JSON).get_json()
        == client.get(f"/jobs/{job_id}", headers=JSON).get_json()
    )


def test_cancel_and_retry_answer_json(client):
    job_id = job_id_from(api_submit(client, {"seconds": "5"}))
    token = {**JSON, "X-CSRFToken": api_token(client)}
    early = client.post(f"/jobs/{job_id}/retry", headers=token)
    assert early.status_code == 409
    assert "queued" in early.get_json()["error"]

    cancelled = client.post(f"/jobs/{job_id}/cancel", headers=token)
    assert cancelled.status_code == 202
    assert cancelled.get_json()["state"] == "cancelled"
    assert cancelled.get_json()["message"]

    retried = client.post(f"/jobs/{job_id}/retry", headers=token)
    assert retried.status_code == 202
    new_id = job_id_from(retried)
    assert retried.get_json()["retry_of"] == job_id
    assert client.get(f"/jobs/{new_id}", headers=JSON).get_json()["state"] == "queued"


def test_listing_json(client):
    ids = [job_id_from(api_submit(client, {"seconds": "5"})) for _ in range(2)]
    data = client.get("/jobs?kind=timer", headers=JSON).get_json()
    assert [j["id"] for j in data["jobs"]] == ids[::-1]
    assert data["next"] is None


def test_browser_form_post_still_redirects(client):
    response = submit(client, "timer", {"seconds": "1"})
    assert response.status_code == 303
    assert csrf_token(client, "/jobs/new/timer")


@pytest.fixture
def dev_server(settings, tmp_path):
    """``flask --app wsgi run`` on a free port, with the test's settings."""
    port = free_port()
    with open(tmp_path / "web.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "run", "-p", str(port)],
            cwd=ROOT,
            env=consumer_env(settings),
            stdout=log,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(base + "/", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the dev server did not start: " + (tmp_path / "web.log").read_text())
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(10)


def test_curl_example_round_trip(dev_server, consumer):
    assert shutil.which("curl"), "curl is not installed; scripts/setup --test installs it"
    done = subprocess.run(
        [str(ROOT / "scripts" / "curl-example"), dev_server, "0.5"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"seconds": 0.5}'
    assert "state: succeeded" in done.stderr

    bad = subprocess.run(
        [str(ROOT / "scripts" / "curl-example"), dev_server, "nope"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1
    assert '"seconds"' in bad.stderr
