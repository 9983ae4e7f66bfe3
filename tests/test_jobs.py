"""Submitting jobs through their forms and following them to their end, on both backends."""

import hashlib
import io

from helpers import job_id_from, soup, submit, wait_for


def status_root(client, job_id):
    response = client.get(f"/jobs/{job_id}/status")
    assert response.status_code == 200
    return soup(response).select_one("#job-status")


def test_catalogue_links_every_kind(client):
    page = soup(client.get("/"))
    links = {a["href"] for a in page.select(".catalogue a")}
    assert links == {"/jobs/new/timer", "/jobs/new/checksum", "/jobs/new/csv_profile"}


def test_unknown_kind_is_404(client):
    assert client.get("/jobs/new/nope").status_code == 404


def test_timer_runs_to_success_and_fragment_stops_polling(client, consumer):
    response = submit(client, "timer", {"seconds": "1.5"})
    assert response.status_code == 303
    job_id = job_id_from(response)
    assert response.headers["Location"] == f"/jobs/{job_id}"

    page = soup(client.get(f"/jobs/{job_id}"))
    root = page.select_one("#job-status")
    assert root["role"] == "status"
    assert root["data-state"] in ("queued", "running")
    assert root["hx-get"] == f"/jobs/{job_id}/status"
    assert root["hx-trigger"].startswith("every ")
    assert root["hx-swap"] == "outerHTML"
    assert page.head.select_one("noscript meta[http-equiv=refresh]") is not None

    wait_for(client, job_id, "running")
    running = status_root(client, job_id)
    assert running["data-state"] == "running"
    assert running.select_one("progress") is not None
    assert running.has_attr("hx-trigger")

    data = wait_for(client, job_id, "succeeded")
    assert data["result"] == {"seconds": 1.5}
    done = status_root(client, job_id)
    assert done["data-state"] == "succeeded"
    for attribute in ("hx-get", "hx-trigger", "hx-swap"):
        assert not done.has_attr(attribute)
    page = soup(client.get(f"/jobs/{job_id}"))
    assert page.head.select_one("noscript") is None


def test_failing_timer_shows_its_message_not_a_traceback(client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0.2", "fail": "y"}))
    data = wait_for(client, job_id, "failed")
    assert "as you asked" in data["error"]["message"]
    root = status_root(client, job_id)
    assert root["data-state"] == "failed"
    assert not root.has_attr("hx-trigger")
    assert "as you asked" in root.get_text()
    assert "Traceback" not in root.get_text()


def test_checksum_matches_hashlib(client, consumer):
    content = bytes(range(256)) * 1500  # under the test client's 500 KB spooling threshold
    response = submit(
        client,
        "checksum",
        {"algorithm": "sha512", "file": (io.BytesIO(content), "data.bin")},
        content_type="multipart/form-data",
    )
    job_id = job_id_from(response)
    data = wait_for(client, job_id, "succeeded")
    assert data["result"]["hexdigest"] == hashlib.sha512(content).hexdigest()
    assert data["result"]["size"] == len(content)
    assert hashlib.sha512(content).hexdigest() in status_root(client, job_id).get_text()


def test_csv_profile_of_a_known_file(client, consumer):
    content = b"name,age,joined\nada,36,2020-01-02\ngrace,45,2021-03-04\nada,,2022-05-06\n"
    response = submit(
        client, "csv_profile", {"file": (io.BytesIO(content), "people.csv")}, content_type="multipart/form-data"
    )
    job_id = job_id_from(response)
    data = wait_for(client, job_id, "succeeded")
    columns = {c["name"]: c for c in data["result"]["columns"]}
    assert data["result"]["rows"] == 3
    assert columns["name"]["type"] == "text"
    assert columns["name"]["distinct"] == 2
    assert columns["age"]["type"] == "integer"
    assert columns["age"]["empty"] == 1
    assert (columns["age"]["min"], columns["age"]["max"], columns["age"]["mean"]) == (36, 45, 40.5)
    assert columns["joined"]["type"] == "date"
    table = status_root(client, job_id).select_one("table")
    assert len(table.select("tbody tr")) == 3
    assert len(table.select("svg")) == 1


def test_malformed_csv_names_the_line(client, consumer):
    content = b"a,b,c\n1,2,3\n4,5\n"
    response = submit(
        client, "csv_profile", {"file": (io.BytesIO(content), "bad.csv")}, content_type="multipart/form-data"
    )
    data = wait_for(client, job_id_from(response), "failed")
    assert "Line 3" in data["error"]["message"]


def test_invalid_form_is_400_with_values_kept_and_messages(client):
    response = submit(client, "timer", {"seconds": "9999", "crash_attempts": "1"})
    assert response.status_code == 400
    page = soup(response)
    assert page.select_one("input[name=seconds]")["value"] == "9999"
    assert page.select_one("input[name=crash_attempts]")["value"] == "1"
    assert "0 to 3600" in page.select_one("#seconds-error").get_text()


def test_missing_file_is_400(client):
    response = submit(client, "checksum", {"algorithm": "md5"}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert soup(response).select_one("#file-error") is not None


def test_post_without_csrf_token_is_400(client):
    response = client.post("/jobs/new/timer", data={"seconds": "1"})
    assert response.status_code == 400
    assert "security token" in soup(response).get_text()


def test_unknown_job_is_404(client):
    assert client.get("/jobs/" + "0" * 32).status_code == 404
    assert client.get("/jobs/" + "0" * 32 + "/status").status_code == 404


def test_fragment_answers_304_when_unchanged(client, consumer):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    wait_for(client, job_id, "succeeded")
    first = client.get(f"/jobs/{job_id}/status")
    assert first.headers["Cache-Control"] == "private, no-cache"
    again = client.get(f"/jobs/{job_id}/status", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.get_data() == b""
