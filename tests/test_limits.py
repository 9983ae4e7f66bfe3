"""Fair use: per-owner limits on active jobs and stored upload bytes, answered with a 429 that says which."""

import io
import sqlite3

import redis
from helpers import JSON, job_id_from, soup, submit


def test_past_the_active_job_limit_a_submit_is_429_and_records_nothing(make_app):
    app = make_app(MAX_ACTIVE_JOBS=2)
    client = app.test_client()
    first = job_id_from(submit(client, "timer", {"seconds": "30"}))
    job_id_from(submit(client, "timer", {"seconds": "30"}))
    refused = submit(client, "timer", {"seconds": "30"})
    assert refused.status_code == 429
    page = soup(refused)
    assert page.select_one("main h1").get_text() == "Too many jobs"
    assert "2 jobs waiting or running" in page.select_one(".error-message").get_text()
    assert len(client.get("/jobs", headers=JSON).get_json()["jobs"]) == 2
    # Another session has its own allowance; and ending a job frees a place.
    assert submit(app.test_client(), "timer", {"seconds": "30"}).status_code == 303
    token = soup(client.get(f"/jobs/{first}")).select_one("input[name=csrf_token]")["value"]
    client.post(f"/jobs/{first}/cancel", data={"csrf_token": token})
    assert submit(client, "timer", {"seconds": "30"}).status_code == 303


def test_past_the_stored_upload_limit_a_submit_is_429(make_app):
    client = make_app(MAX_STORED_UPLOAD_BYTES=1000).test_client()
    files = {"algorithm": "md5", "file": (io.BytesIO(b"x" * 600), "a.bin")}
    job_id_from(submit(client, "checksum", files, content_type="multipart/form-data"))
    files = {"algorithm": "md5", "file": (io.BytesIO(b"x" * 600), "b.bin")}
    refused = submit(client, "checksum", files, content_type="multipart/form-data", headers=JSON)
    assert refused.status_code == 429
    assert "uploads would take more than" in refused.get_json()["error"]


def test_a_retry_whose_upload_is_gone_is_refused_with_a_message(app, client, backend, settings):
    files = {"algorithm": "md5", "file": (io.BytesIO(b"abc"), "a.txt")}
    job_id = job_id_from(submit(client, "checksum", files, content_type="multipart/form-data"))
    token = soup(client.get(f"/jobs/{job_id}")).select_one("input[name=csrf_token]")["value"]
    client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    # The upload alone is gone, as after an eviction or a purge racing the retry.
    if backend == "redis":
        redis.Redis.from_url(settings["REDIS_URL"]).delete(f"tasklight:upload:{job_id}")
    else:
        with sqlite3.connect(settings["DATABASE"]) as db:
            db.execute("delete from uploads where job_id = ?", (job_id,))
    response = client.post(f"/jobs/{job_id}/retry", data={"csrf_token": token}, follow_redirects=True)
    assert "no longer kept" in soup(response).select(".flash")[-1].get_text()
    json = client.post(f"/jobs/{job_id}/retry", headers={**JSON, "X-CSRFToken": token})
    assert json.status_code == 409 and "no longer kept" in json.get_json()["error"]
    assert len(client.get("/jobs", headers=JSON).get_json()["jobs"]) == 1
