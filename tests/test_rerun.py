"""Edit and run again: a finished job's form, filled in with its inputs, keeps its upload unless replaced."""

import hashlib
import io

from helpers import JSON, csrf_token, job_id_from, soup, submit, wait_for


def test_edit_and_run_again_keeps_the_upload_and_links_both_ways(client, consumer):
    content = b"first file\n"
    files = {"algorithm": "md5", "label": "hash it", "file": (io.BytesIO(content), "a.txt")}
    first = job_id_from(submit(client, "checksum", files, content_type="multipart/form-data"))
    wait_for(client, first, "succeeded")
    link = soup(client.get(f"/jobs/{first}")).select_one("#edit-button")["href"]
    assert link == f"/jobs/new/checksum?from={first}"

    form = soup(client.get(link))
    assert form.select_one("select[name=algorithm] option[selected]")["value"] == "md5"
    assert form.select_one("input[name=label]")["value"] == "hash it"
    assert "keep a.txt" in form.select_one("#file-help").get_text()
    assert not form.select_one("input[name=file]").has_attr("required")

    # Change the algorithm, keep the file.
    action = form.select_one("form[method=post]")["action"]
    response = client.post(action, data={"csrf_token": csrf_token(client, link), "algorithm": "sha1", "label": "again"})
    second = job_id_from(response)
    data = wait_for(client, second, "succeeded")
    assert data["result"]["hexdigest"] == hashlib.sha1(content).hexdigest()
    assert (data["retry_of"], data["label"]) == (first, "again")
    assert data["log"][0]["line"].startswith("Hashing")
    assert client.get(f"/jobs/{first}", headers=JSON).get_json()["retried_by"] == second

    # A new file replaces the kept one.
    replaced = {"csrf_token": csrf_token(client, link), "algorithm": "md5", "file": (io.BytesIO(b"new"), "b.txt")}
    third = job_id_from(client.post(action, data=replaced, content_type="multipart/form-data"))
    assert wait_for(client, third, "succeeded")["result"]["hexdigest"] == hashlib.md5(b"new").hexdigest()


def test_a_timer_is_edited_with_its_options_and_its_body_knows_it_is_a_re_run(client, consumer):
    first = job_id_from(submit(client, "timer", {"seconds": "0", "time_limit": "30"}))
    wait_for(client, first, "succeeded")
    form = soup(client.get(f"/jobs/new/timer?from={first}"))
    assert float(form.select_one("input[name=time_limit]")["value"]) == 30
    action = form.select_one("form[method=post]")["action"]
    token = form.select_one("input[name=csrf_token]")["value"]
    second = job_id_from(client.post(action, data={"csrf_token": token, "seconds": "0.1"}))
    data = wait_for(client, second, "succeeded")
    assert data["log"][0]["line"] == "Waiting 0.1 s (a re-run)."


def test_only_the_owner_may_edit_a_job_and_only_with_its_own_kind(app, client):
    job_id = job_id_from(submit(client, "timer", {"seconds": "1"}))
    assert client.get(f"/jobs/new/checksum?from={job_id}").status_code == 404
    assert app.test_client().get(f"/jobs/new/timer?from={job_id}").status_code == 404
    assert client.get(f"/jobs/new/timer?from={'0' * 32}").status_code == 404
