"""The admin pages: absent without ADMIN_TOKEN; with it, every job, its traceback, cancel and purge."""

import io

import pytest
from helpers import JSON, csrf_token, job_id_from, soup, submit, wait_for

TOKEN = "correct horse battery staple"


@pytest.fixture
def admin_app(make_app):
    return make_app(ADMIN_TOKEN=TOKEN)


def sign_in(client, token: str = TOKEN):
    return client.post("/admin/login", data={"csrf_token": csrf_token(client, "/admin/login"), "token": token})


@pytest.fixture
def admin(admin_app):
    client = admin_app.test_client()
    response = sign_in(client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin"
    return client


def test_without_a_token_every_admin_url_is_404(client):
    token = csrf_token(client, "/jobs/new/timer")
    for path in ("/admin", "/admin/login", "/admin/jobs/" + "0" * 32):
        assert client.get(path).status_code == 404
    for path in ("/admin/login", "/admin/logout", "/admin/jobs/x/cancel", "/admin/jobs/x/purge"):
        assert client.post(path, data={"csrf_token": token, "token": ""}).status_code == 404


def test_admin_pages_need_the_token(admin_app):
    client = admin_app.test_client()
    response = client.get("/admin/jobs/abc")
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/login?next=/admin/jobs/abc"
    form = soup(client.get("/admin/login")).select_one("form")
    assert form.select_one("input[name=token][type=password]") is not None

    wrong = sign_in(client, "guess")
    assert wrong.status_code == 403
    assert soup(wrong).select_one("[role=alert]").get_text() == "That is not the admin token."
    assert client.get("/admin").status_code == 303
    no_csrf = client.post("/admin/login", data={"token": TOKEN})
    assert no_csrf.status_code == 400
    assert client.get("/admin").status_code == 303

    assert sign_in(client).status_code == 303
    assert client.get("/admin").status_code == 200
    # Changing the token signs every admin out.
    admin_app.config["ADMIN_TOKEN"] = "a new token"
    assert client.get("/admin").status_code == 303


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(admin_app):
    client = admin_app.test_client()
    path = "/admin/login?next=/admin/jobs/abc"
    response = client.post(path, data={"csrf_token": csrf_token(client, path), "token": TOKEN})
    assert response.headers["Location"] == "/admin/jobs/abc"
    path = "/admin/login?next=https://evil.example/"
    response = client.post(path, data={"csrf_token": csrf_token(client, path), "token": TOKEN})
    assert response.headers["Location"] == "/admin"


def test_lists_every_owners_jobs_with_filters_counts_queue_and_workers(admin_app, admin, start_consumer):
    alice, bob = admin_app.test_client(), admin_app.test_client()
    a = job_id_from(submit(alice, "timer", {"seconds": "30"}))
    b = job_id_from(submit(bob, "timer", {"seconds": "30"}))
    c = job_id_from(submit(bob, "checksum", {"file": (io.BytesIO(b"x"), "x")}, content_type="multipart/form-data"))

    page = soup(admin.get("/admin"))
    assert [tr["data-id"] for tr in page.select("table.jobs tbody tr")] == [c, b, a]
    assert page.select_one("[data-count=queued]").get_text() == "3"
    assert page.select_one("#queue-length").get_text() == "3"
    assert page.select_one("#workers").get_text() == "none"
    assert [tr["data-id"] for tr in soup(admin.get("/admin?kind=checksum")).select("tbody tr")] == [c]
    assert admin.get("/admin?state=bogus").status_code == 400
    assert admin.get("/admin?before=nan_x").status_code == 400

    start_consumer()
    wait_for(alice, a, "running")
    page = soup(admin.get("/admin?state=running"))
    assert a in [tr["data-id"] for tr in page.select("tbody tr")]
    assert page.select_one("#workers").get_text() != "none"


def test_crash_traceback_is_shown_to_admins_only(admin_app, admin, consumer):
    owner = admin_app.test_client()
    job_id = job_id_from(submit(owner, "timer", {"seconds": "0", "crash_attempts": "3"}))
    data = wait_for(owner, job_id, "failed", timeout=30)
    assert data["error"]["message"] == f"The job failed (ref {data['error']['ref']})."

    page = soup(admin.get(f"/admin/jobs/{job_id}"))
    traceback = page.select_one("#traceback").get_text()
    assert "Traceback (most recent call last)" in traceback
    assert "RuntimeError: crashing on attempt 3 as asked" in traceback
    assert data["error"]["ref"] in page.select_one("#error").get_text()

    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/status"):
        for headers in ({}, JSON):
            text = owner.get(path, headers=headers).get_data(as_text=True)
            assert "Traceback" not in text and "RuntimeError" not in text and "crashing" not in text
    assert "traceback" not in owner.get(f"/jobs/{job_id}", headers=JSON).get_json()


def test_admin_cancels_and_purges_anyones_job(admin_app, admin):
    owner = admin_app.test_client()
    job_id = job_id_from(submit(owner, "timer", {"seconds": "30"}))
    token = csrf_token(admin, f"/admin/jobs/{job_id}")
    assert soup(admin.get(f"/admin/jobs/{job_id}")).select_one("#cancel-button") is not None

    response = admin.post(f"/admin/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/jobs/{job_id}"
    page = soup(admin.get(f"/admin/jobs/{job_id}"))
    assert page.select_one("h1 .badge")["data-state"] == "cancelled"
    assert page.select_one("#cancel-button") is None
    assert wait_for(owner, job_id, "cancelled")

    assert admin.post(f"/admin/jobs/{job_id}/purge", data={"csrf_token": "wrong"}).status_code == 400
    response = admin.post(f"/admin/jobs/{job_id}/purge", data={"csrf_token": token})
    assert response.status_code == 303
    assert owner.get(f"/jobs/{job_id}").status_code == 410
    assert admin.get(f"/admin/jobs/{job_id}").status_code == 410
    assert admin.post(f"/admin/jobs/{'0' * 32}/purge", data={"csrf_token": token}).status_code == 404


def test_sign_out(admin):
    response = admin.post("/admin/logout", data={"csrf_token": csrf_token(admin, "/admin/login")})
    assert response.status_code == 303
    assert admin.get("/admin").status_code == 303


def test_bulk_actions_confirm_the_count_then_act_on_every_matching_job(admin, admin_app):
    service = admin_app.extensions["tasklight"]
    owner = admin_app.test_client()
    timers = [job_id_from(submit(owner, "timer", {"seconds": "30", "label": "batch"})) for _ in range(3)]
    other = job_id_from(submit(owner, "timer", {"seconds": "30", "label": "keep"}))

    confirm = admin.get("/admin/bulk/cancel?state=queued&q=batch")
    assert "3 jobs match" in soup(confirm).select_one("#bulk-count").get_text()
    assert all(service.store.get(job_id).state == "queued" for job_id in timers)  # asking changes nothing
    form = soup(confirm).select_one("form[method=post]")
    fields = {i["name"]: i["value"] for i in form.select("input")}
    done = admin.post(form["action"], data=fields, follow_redirects=True)
    assert "acted on 3 of the 3" in soup(done).select(".flash")[-1].get_text()
    assert [service.store.get(job_id).state for job_id in timers] == ["cancelled"] * 3
    assert service.store.get(other).state == "queued"

    retry = soup(admin.get("/admin/bulk/retry?state=cancelled")).select_one("form[method=post]")
    admin.post(retry["action"], data={i["name"]: i["value"] for i in retry.select("input")})
    assert all(service.store.get(job_id).retried_by for job_id in timers)
    assert admin.get("/admin/bulk/explode").status_code == 404
    # Without the admin's session, no bulk action at all.
    assert owner.get("/admin/bulk/purge").status_code == 303
