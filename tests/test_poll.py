"""The status poll stays cheap without changing what it answers: the session cookie, the ETag and the 304."""

from __future__ import annotations

import json
import socket
import struct
from datetime import datetime, timedelta

import flask
import pytest
from helpers import job_id_from, soup, submit
from jinja2 import meta, nodes

from webapp import early_polls, jobs, overload, security, sessions
from webapp.kinds import KINDS
from webapp.store import Job, StoreUnavailable, new_id

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


@sqlite_only
def test_a_cookie_checked_once_is_still_checked_for_forgery_and_age(app, client, monkeypatch):
    job_id = job_id_from(submit(client, "timer", {"seconds": "1"}))
    assert client.get(f"/jobs/{job_id}/status").status_code == 200  # Its cookie is now known to this process.
    cookie = client.get_cookie("session").value
    forged = app.test_client()
    forged.set_cookie("session", cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"))
    assert forged.get(f"/jobs/{job_id}/status").status_code == 404

    class Later(datetime):
        days = 32  # Past the permanent session's lifetime of 31 days.

        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(days=cls.days)

    monkeypatch.setattr(sessions, "datetime", Later)
    assert client.get(f"/jobs/{job_id}/status").status_code == 404
    Later.days = -1  # A cookie signed in the future is refused too.
    assert client.get(f"/jobs/{job_id}/status").status_code == 404
    Later.days = 0
    assert client.get(f"/jobs/{job_id}/status").status_code == 200


@sqlite_only
def test_sessions_from_one_cookie_do_not_share_what_they_hold(app):
    value = app.session_interface.get_signing_serializer(app).dumps({"owner": "o", "_flashes": [["message", "one"]]})
    opened = []
    for _ in range(2):
        with app.test_request_context(headers={"Cookie": f"session={value}"}):
            opened.append(app.session_interface.open_session(app, flask.request))
    opened[0]["_flashes"].append(["message", "two"])
    assert opened[1]["_flashes"] == [["message", "one"]]


OWNER = "poll-owner"
HTML = {"Accept": "text/html", "HX-Request": "true"}


@pytest.fixture
def store(app):
    """The app's own store, so that a test can count its reads and move its clock."""
    return app.extensions["tasklight"].store


@pytest.fixture
def make_job(client, store):
    """Record a job for this client's session straight in the store, queued or running, without a worker."""
    with client.session_transaction() as session:
        session["owner"] = OWNER

    def make(state: str = "queued") -> str:
        job = store.create(Job(id=new_id(), kind="timer", owner=OWNER, inputs={"seconds": 60.0, "fail": False}))
        if state != "queued":
            store.start(job.id, "test:1")
            store.update(job.id, {"progress": {"done": 1, "total": 60, "message": "1 of 60 s"}})
        return job.id

    return make


def poll(client, job_id: str, etag: str | None = None, headers: dict = HTML, **kwargs):
    headers = {**headers, **({"If-None-Match": etag} if etag else {})}
    return client.get(f"/jobs/{job_id}/status", headers=headers, **kwargs)


def counting(monkeypatch, obj, name: str) -> list:
    """Count the calls of ``obj.name``; returns the list that grows by one per call."""
    calls, method = [], getattr(obj, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return method(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


def test_unchanged_fragment_is_a_304_with_no_body_and_the_same_headers(client, make_job):
    job_id = make_job("running")
    first = poll(client, job_id)
    again = poll(client, job_id, first.headers["ETag"])
    assert (first.status_code, again.status_code) == (200, 304)
    assert again.get_data() == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    for response in (first, again):
        assert response.headers["Cache-Control"] == "private, no-cache"
        vary = {part.strip() for part in response.headers["Vary"].split(",")}
        assert {"Accept", "Cookie", jobs.SHOWN_TIMELINE_HEADER} <= vary


def flask_alone(monkeypatch) -> None:
    """From now on every poll goes on to Flask's status view, as if it could not be answered early."""
    monkeypatch.setattr(early_polls.EarlyPolls, "answer", lambda self, environ: None)


def test_an_unchanged_poll_gets_the_views_own_304_before_flask_starts(app, client, make_job, monkeypatch):
    job_id = make_job("running")
    poll(client, job_id)  # The first poll gives the session its CSRF token.
    tag = poll(client, job_id).headers["ETag"]
    opened = counting(monkeypatch, app.session_interface, "open_session")
    early = poll(client, job_id, tag)
    assert (early.status_code, len(opened)) == (304, 0)
    flask_alone(monkeypatch)
    from_the_view = poll(client, job_id, tag)
    assert (from_the_view.status_code, len(opened)) == (304, 1)
    assert early.headers.to_wsgi_list() == from_the_view.headers.to_wsgi_list()


@pytest.mark.parametrize("state", ["queued", "running", "cancelling", "retrying", "scheduled"])
@pytest.mark.parametrize("page_shows_timeline", [False, True])
def test_a_poll_gets_the_views_own_fragment_before_flask_starts(
    app, client, store, make_job, monkeypatch, state, page_shows_timeline
):
    job_id = make_job("queued" if state in ("queued", "scheduled") else "running")
    now = store.now()
    changes = {
        "cancelling": {"cancel_requested": True},
        "retrying": {"state": "retrying", "next_attempt_at": now + 10},
        "scheduled": {"scheduled_for": now + 600},
    }.get(state)
    if changes:
        store.update(job_id, changes)
    monkeypatch.setattr(store, "now", lambda: now)  # The clock stands still between the two answers.
    first = poll(client, job_id)  # The first poll gives the session its CSRF token.
    shown = json.loads(soup(first).select_one("#job-status")["hx-headers"]) if page_shows_timeline else {}
    opened = counting(monkeypatch, app.session_interface, "open_session")
    early = poll(client, job_id, headers={**HTML, **shown})
    assert (early.status_code, len(opened)) == (200, 0)
    flask_alone(monkeypatch)
    from_the_view = poll(client, job_id, headers={**HTML, **shown})
    assert (from_the_view.status_code, len(opened)) == (200, 1)
    assert early.get_data(as_text=True) == from_the_view.get_data(as_text=True)
    assert early.headers.to_wsgi_list() == from_the_view.headers.to_wsgi_list()
    assert (soup(early).select_one("#job-timeline") is None) == page_shows_timeline


JSON = {"Accept": "application/json"}


@pytest.mark.parametrize("state", ["queued", "running", "succeeded", "failed"])
def test_a_json_poll_gets_the_views_own_answer_before_flask_starts(app, client, store, make_job, monkeypatch, state):
    job_id = make_job("queued" if state == "queued" else "running")
    if state == "succeeded":
        store.finish(job_id, state, {"result": {"seconds": 60.0}, "event": {"event": "succeeded"}})
    elif state == "failed":
        store.finish(job_id, state, {"error": "It broke.", "event": {"event": "failed", "message": "It broke."}})
    opened = counting(monkeypatch, app.session_interface, "open_session")
    early = poll(client, job_id, headers=JSON)
    assert (early.status_code, len(opened)) == (200, 0)
    flask_alone(monkeypatch)
    from_the_view = poll(client, job_id, headers=JSON)
    assert (from_the_view.status_code, len(opened)) == (200, 1)
    assert early.get_data() == from_the_view.get_data()
    assert early.headers.to_wsgi_list() == from_the_view.headers.to_wsgi_list()
    assert early.get_json()["state"] == state
    assert early.get_json()["url"] == f"http://localhost/jobs/{job_id}"


def other_owners_job(store) -> str:
    return store.create(Job(id=new_id(), kind="timer", owner="someone-else", inputs={"seconds": 60.0})).id


@pytest.mark.parametrize(
    "case, status",
    [
        ("cookie due for refresh", 304),
        ("forged cookie", 404),
        ("not yours", 404),
        ("finished", 200),
        ("no CSRF token yet", 304),
    ],
)
def test_a_poll_that_cannot_be_answered_early_goes_on_to_flask(app, client, store, make_job, monkeypatch, case, status):
    job_id = make_job("running")
    poll(client, job_id)  # The first poll gives the session its CSRF token.
    tag = poll(client, job_id).headers["ETag"]
    headers = dict(HTML)
    if case == "finished":
        store.finish(job_id, "succeeded", {"result": {"seconds": 60.0}})
    elif case == "no CSRF token yet":
        with client.session_transaction() as session:
            del session["csrf_token"]
    elif case == "cookie due for refresh":
        with client.session_transaction() as session:
            session.permanent = True  # As an owner's session is; every signed cookie is now old enough.
        app.session_interface.refresh_after = timedelta(0)
    elif case == "forged cookie":
        client.set_cookie("session", client.get_cookie("session").value[:-2] + "AA")
    else:
        job_id = other_owners_job(store)
    opened = counting(monkeypatch, app.session_interface, "open_session")
    response = poll(client, job_id, tag, headers)
    assert (response.status_code, len(opened)) == (status, 1)
    # Only Flask can send the session cookie again; the early answer never sends one.
    assert bool(session_cookies(response)) == (case == "cookie due for refresh")


def test_a_poll_sends_the_timeline_only_to_a_page_that_does_not_show_it_as_it_stands(client, store, make_job):
    job_id = make_job("running")
    first = soup(poll(client, job_id))
    assert first.select_one("#job-timeline")["hx-swap-oob"] == "true"
    # htmx sends the fragment's hx-headers with its next poll, naming the timeline the page shows.
    shown = json.loads(first.select_one("#job-status")["hx-headers"])
    assert shown[jobs.SHOWN_TIMELINE_HEADER] == jobs.timeline_mark(store.get(job_id))
    store.update(job_id, {"progress": {"done": 2, "total": 60, "message": "2 of 60 s"}})
    progressed = soup(poll(client, job_id, headers={**HTML, **shown}))
    assert progressed.select_one("#job-status progress")["value"] == "2"
    assert progressed.select_one("#job-timeline") is None
    store.update(job_id, {"cancel_requested": True, "event": {"event": "cancel_requested"}})
    cancelling = soup(poll(client, job_id, headers={**HTML, **shown}))
    assert cancelling.select("#job-timeline li")[-1]["data-event"] == "cancel_requested"


def test_a_polls_answer_needs_only_its_context_and_the_apps_globals(app, store, make_job):
    """A poll renders the status template without Flask's context processors: it and the templates it
    includes may use only the view's context and the app's template globals (which hold request,
    session and g too), never a name that only a context processor would add."""
    env = app.jinja_env
    with app.test_request_context():
        context = jobs.job_context(store.get(make_job("running")))
    known = {*context, "poll_answer", "send_timeline", "out_of_band", *env.globals}
    included = ["partials/job_timeline.html", *(kind.result_template for kind in KINDS.values())]
    for name in [jobs.STATUS_TEMPLATE, *included]:
        tree = env.parse(env.loader.get_source(env, name)[0])
        # Names a template sets inside a loop are reported too; they are its own, not the context's.
        own = {node.name for node in tree.find_all(nodes.Name) if node.ctx == "store"}
        used = meta.find_undeclared_variables(tree) - own
        assert used <= known, f"{name} uses {used - known}"


def test_current_tag_answers_304_before_anything_is_rendered(client, make_job, monkeypatch):
    job_id = make_job("running")
    tag = poll(client, job_id).headers["ETag"]

    def must_not_render(*args, **kwargs):
        raise AssertionError("a 304 rendered the fragment")

    monkeypatch.setattr(jobs, "render_template", must_not_render)
    monkeypatch.setattr(jobs, "job_context", must_not_render)
    assert poll(client, job_id, tag).status_code == 304


def test_tag_changes_when_the_record_changes(client, store, make_job):
    job_id = make_job("running")
    first = poll(client, job_id)
    store.update(job_id, {"progress": {"done": 30, "total": 60, "message": "30 of 60 s"}})
    changed = poll(client, job_id, first.headers["ETag"])
    assert changed.status_code == 200
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert "30 of 60 s" in changed.get_data(as_text=True)
    assert poll(client, job_id, changed.headers["ETag"]).status_code == 304


def test_tag_changes_when_the_poll_interval_does(client, store, make_job, monkeypatch):
    job_id = make_job("queued")  # A queued job with no worker stays as it is while the clock moves.
    first = poll(client, job_id)
    assert 'hx-trigger="every 1s"' in first.get_data(as_text=True)
    later = store.now() + 30
    monkeypatch.setattr(store, "now", lambda: later)
    changed = poll(client, job_id, first.headers["ETag"])
    assert changed.status_code == 200
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert 'hx-trigger="every 2s"' in changed.get_data(as_text=True)


def test_tag_follows_a_waiting_jobs_no_worker_notice(client, store, make_job):
    job_id = make_job("queued")
    alone = poll(client, job_id)
    assert "Waiting for a worker" in alone.get_data(as_text=True)
    store.beat_worker("test:1")
    served = poll(client, job_id, alone.headers["ETag"])
    assert served.status_code == 200
    assert "Waiting for a worker" not in served.get_data(as_text=True)
    store.forget_worker("test:1")
    again = poll(client, job_id, served.headers["ETag"])
    assert again.status_code == 200
    assert again.headers["ETag"] == alone.headers["ETag"]


def test_tag_follows_a_retrying_jobs_countdown(client, store, make_job, monkeypatch):
    job_id = make_job("running")
    now = store.now()
    store.update(job_id, {"state": "retrying", "next_attempt_at": now + 10})
    monkeypatch.setattr(store, "now", lambda: now)
    first = poll(client, job_id)
    assert "in 10 s" in first.get_data(as_text=True)
    assert poll(client, job_id, first.headers["ETag"]).status_code == 304
    monkeypatch.setattr(store, "now", lambda: now + 1)
    later = poll(client, job_id, first.headers["ETag"])
    assert later.status_code == 200
    assert "in 9.0 s" in later.get_data(as_text=True)


@pytest.mark.parametrize("answer", [200, 304, "json"])
def test_a_running_jobs_poll_reads_the_store_once(client, store, make_job, monkeypatch, answer):
    job_id = make_job("running")
    tag = poll(client, job_id).headers["ETag"]
    loads = counting(monkeypatch, store, "load")
    lookups = counting(monkeypatch, store, "live_workers")
    if answer == "json":
        response = client.get(f"/jobs/{job_id}/status", headers={"Accept": "application/json"})
    else:
        response = poll(client, job_id, tag if answer == 304 else None)
    assert response.status_code == (304 if answer == 304 else 200)
    assert (len(loads), len(lookups)) == (1, 0)


@pytest.mark.parametrize("case, status", [("finished", 200), ("not yours", 404), ("unknown", 404), ("store down", 503)])
def test_a_poll_passed_on_to_flask_reads_the_store_once(client, store, make_job, monkeypatch, case, status):
    job_id = make_job("running")
    poll(client, job_id)  # The first poll gives the session its CSRF token, so the early path reads the job.
    if case == "finished":
        store.finish(job_id, "succeeded", {"result": {"seconds": 60.0}})
    elif case == "not yours":
        job_id = other_owners_job(store)
    elif case == "unknown":
        job_id = new_id()
    loads = counting(monkeypatch, store, "load")
    if case == "store down":

        def down(*args):
            loads.append(args)
            raise StoreUnavailable("down")

        monkeypatch.setattr(store, "load", down)
    assert poll(client, job_id).status_code == status
    assert len(loads) == 1


def test_only_a_waiting_job_looks_up_the_workers(client, store, make_job, monkeypatch):
    job_id = make_job("queued")
    tag = poll(client, job_id).headers["ETag"]
    loads = counting(monkeypatch, store, "load")
    lookups = counting(monkeypatch, store, "live_workers")
    assert poll(client, job_id, tag).status_code == 304
    assert (len(loads), len(lookups)) == (1, 1)


@sqlite_only
def test_the_fragments_cancel_button_carries_a_token_that_works(client, store, make_job):
    job_id = make_job("running")
    forms = [soup(poll(client, job_id)).select_one("form[action$='/cancel']") for _ in range(3)]
    tokens = [form.select_one("input[name=csrf_token]")["value"] for form in forms]
    # The first poll's token is Flask-WTF's, made with the session's new raw token. From the next
    # poll on, this process signs that raw token once and reuses it; the two signatures differ
    # when a second passes between them (a signed token carries its time).
    assert tokens[1] == tokens[2]
    assert client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": tokens[0]}).status_code == 303
    assert store.get(job_id).cancel_requested
    assert client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": tokens[0] + "x"}).status_code == 400


class WaitedSocket:
    """Stands for gunicorn's client socket: its TCP_INFO says the request's bytes arrived ``ms`` ago."""

    def __init__(self, ms: int):
        self.ms = ms

    def getsockopt(self, level, option, size):
        info = bytearray(size)
        struct.pack_into("I", info, overload.LAST_DATA_RECV, self.ms)
        return bytes(info)


def waited(ms: int) -> dict:
    return {"environ_overrides": {"gunicorn.socket": WaitedSocket(ms)}}


def test_the_wait_comes_from_the_connection_or_is_unknown():
    assert overload.queue_wait({}) is None  # Not under gunicorn: nothing is measured, nothing is shed.
    assert overload.queue_wait({"gunicorn.socket": WaitedSocket(1500)}) == 1.5
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            connection, _ = server.accept()
            with connection:
                connection.recv(100)
                assert overload.queue_wait({"gunicorn.socket": connection}) >= 0


def test_a_poll_that_waited_too_long_gets_a_quick_503(app, client, make_job, monkeypatch):
    job_id = make_job("running")
    tag = poll(client, job_id).headers["ETag"]
    loads = counting(monkeypatch, app.extensions["tasklight"].store, "load")
    for headers in (HTML, {"Accept": "application/json"}):
        busy = poll(client, job_id, tag, headers, **waited(600))
        assert busy.status_code == 503
        assert int(busy.headers["Retry-After"]) >= 1
        assert busy.headers["Cache-Control"] == "no-store"
        assert busy.headers["Content-Security-Policy"] == security.CONTENT_SECURITY_POLICY
        assert job_id not in busy.get_data(as_text=True)
    assert busy.get_json()["status"] == 503
    assert loads == []  # Nothing was read: the answer says nothing about the job or whose it is.
    # A poll that waited less, and anything that is not a poll, is answered as ever.
    assert poll(client, job_id, tag, **waited(100)).status_code == 304
    assert client.get(f"/jobs/{job_id}", **waited(600)).status_code == 200


def test_late_polls_from_pages_at_an_older_interval_are_sometimes_answered(app, client, make_job, monkeypatch):
    job_id = make_job("running")
    tag = poll(client, job_id).headers["ETag"]
    assert tag.endswith('-f1"')
    guard = app.wsgi_app.wsgi_app  # Inside the security headers, which wrap every answer.
    assert isinstance(guard, overload.OverloadGuard)
    guard.admit = 1.0  # Every late poll that still has to learn the interval is answered.
    assert poll(client, job_id, tag, **waited(600)).status_code == 503  # This page polls as the pacer asks.
    assert poll(client, job_id, **waited(600)).status_code == 200  # This one has no interval from us yet.
    app.extensions["poll_pacer"].factor = 2
    learnt = poll(client, job_id, tag, **waited(600))
    assert learnt.status_code == 200
    assert learnt.headers["ETag"].endswith('-f2"')
    monkeypatch.setattr(overload.random, "random", lambda: 0.5)
    guard.admit = 0.6
    assert poll(client, job_id, tag, **waited(600)).status_code == 200
    assert poll(client, job_id, tag, **waited(1200)).status_code == 503  # Past twice the limit, a fifth as many.
    guard.admit = 0.0
    assert poll(client, job_id, tag, **waited(600)).status_code == 503


def test_the_pacer_lengthens_the_poll_interval_and_so_changes_the_tag(app, client, make_job):
    job_id = make_job("queued")
    first = poll(client, job_id)
    assert 'hx-trigger="every 1s"' in first.get_data(as_text=True)
    app.extensions["poll_pacer"].factor = 4
    slower = poll(client, job_id, first.headers["ETag"])
    assert slower.status_code == 200
    assert 'hx-trigger="every 4s"' in slower.get_data(as_text=True)
    page = soup(client.get(f"/jobs/{job_id}"))
    assert page.select_one("noscript meta[http-equiv=refresh]")["content"] == "4"


def test_the_pacer_doubles_while_requests_wait_and_halves_once_they_do_not():
    now = [0.0]
    pacer = overload.PollPacer(busy=0.2, idle=0.02, most=8, raise_every=2.0, lower_every=30.0, clock=lambda: now[0])
    for _ in range(50):
        pacer.observe(1.0)
    assert pacer.factor == 2  # Once: pages learn the new interval only on their next poll.
    now[0] = 3.0
    pacer.observe(1.0)
    assert pacer.factor == 2  # Not before about one new interval (2 s times the factor).
    for moment in (4.0, 12.0, 28.0):
        now[0] = moment
        pacer.observe(1.0)
    assert pacer.factor == 8  # At 4 and 12 s, and never past ``most``.
    for _ in range(100):
        pacer.observe(0.0)
    assert pacer.factor == 8  # Not within 30 s of the last change.
    now[0] = 43.0
    pacer.observe(0.0)
    assert pacer.factor == 4
    pacer.observe(0.0)
    assert pacer.factor == 4


@sqlite_only
def test_templates_are_compiled_once_outside_debug(app):
    assert not app.debug
    assert not app.jinja_env.auto_reload  # Jinja keeps each compiled template and never checks the file again.
