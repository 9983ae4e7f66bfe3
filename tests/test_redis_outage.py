"""Redis goes away while pages poll, forms submit and a consumer runs jobs, and comes back with its data.

Everything is real: the app on an HTTP server, a ``huey_consumer`` process, and a redis-server of the test's
own on a free port, which keeps its data in an append-only file, so that it can be stopped and started again
on the same port (a restart), or frozen with SIGSTOP (a hang). Neither the web app nor the consumer is restarted.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
from bs4 import BeautifulSoup
from faults import OwnRedis, Script, tally
from helpers import JSON, job_id_from, serving

from webapp.store import TERMINAL

redis_only = pytest.mark.parametrize("backend", ["redis"], indirect=True)
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"\n]+", line \d+')
#: The bound the service must come back within, once Redis answers again.
RESUME_BOUND = 5.0


@pytest.fixture
def durable_redis(tmp_path):
    server = OwnRedis(tmp_path / "durable-redis")
    yield server
    server.close()


@pytest.fixture
def outage_settings(settings, durable_redis):
    """The test's settings on its own Redis, with a short socket timeout so that a hang is a 503 in a second."""
    settings.update(REDIS_URL=durable_redis.url, REDIS_SOCKET_TIMEOUT=1)
    return settings


@contextlib.contextmanager
def outage(server: OwnRedis, kind: str):
    """Redis is out for the block: stopped and then started again with its data, or hung and then let go."""
    if kind == "hang":
        with server.hung():
            yield
    else:
        server.stop()
        try:
            yield
        finally:
            server.start()


@dataclass
class Pollers:
    """Browsers polling their jobs, as the page and its fragment do, every 0.2 s until stopped.

    Each one polls the status fragment, the full page and the JSON of each job, and keeps every answer's time,
    URL and status, and whether it showed a traceback.
    """

    base: str
    cookies: requests.cookies.RequestsCookieJar
    ids: list[str]
    count: int = 2
    answers: list[tuple[float, str, int, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, daemon=True) for _ in range(self.count)]

    def start(self) -> Pollers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _poll(self) -> None:
        with requests.Session() as http:
            http.cookies.update(self.cookies)
            while not self._stop.is_set():
                for job_id in self.ids:
                    for path, headers in (
                        (f"/jobs/{job_id}/status", {"HX-Request": "true"}),
                        (f"/jobs/{job_id}", {}),
                        (f"/jobs/{job_id}", JSON),
                    ):
                        try:
                            answer = http.get(self.base + path, headers=headers, timeout=10)
                        except requests.RequestException as exc:
                            self.errors.append(f"{path}: {exc!r}")
                            continue
                        shown = bool(TRACEBACK.search(answer.text))
                        self.answers.append((time.monotonic(), path, answer.status_code, shown))
                self._stop.wait(0.2)

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter:
        return Counter(status for at, _, status, _ in self.answers if since <= at <= until)


def html_submit(base: str, cookies, seconds: str) -> requests.Response:
    """A browser fills in the timer form (its page needs no store) and sends it."""
    with requests.Session() as http:
        http.cookies.update(cookies)
        page = http.get(f"{base}/jobs/new/timer", timeout=10)
        token = soup_of(page).select_one("input[name=csrf_token]")["value"]
        return http.post(
            f"{base}/jobs/new/timer",
            data={"csrf_token": token, "seconds": seconds},
            allow_redirects=False,
            timeout=10,
        )


def soup_of(response: requests.Response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def assert_friendly_503(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert not TRACEBACK.search(response.text), response.text
    if response.headers["Content-Type"].startswith("application/json"):
        assert "cannot be reached" in response.json()["error"]
    else:
        assert "cannot be reached" in soup_of(response).select_one(".error-message").get_text()


def time_until(done, bound: float) -> float:
    """Seconds until ``done()`` is true, trying every 0.05 s; fails at three times ``bound`` (the figure is
    reported up to there, so that a slow recovery shows how slow)."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(requests.RequestException):
            if done():
                return time.monotonic() - started
        if time.monotonic() - started > bound * 3:
            pytest.fail(f"still not back {bound * 3:.0f} s after Redis came back")
        time.sleep(0.05)


@redis_only
@pytest.mark.parametrize("kind", ["restart", "hang"])
def test_an_outage_is_a_503_and_the_service_resumes_by_itself(
    outage_settings, make_app, start_consumer, durable_redis, kind
):
    """While Redis is out, every poll and submit is a friendly 503 (never a 500 or a traceback). Within 5 s of
    Redis answering again, the same web app and consumer serve polls, accept a submit and start its job; and
    every job accepted before the outage ends in a terminal state."""
    app = make_app(TESTING=False)
    consumer = start_consumer(workers=2)
    with serving(app) as (host, port):
        base = f"http://{host}:{port}"
        script = Script(base)
        accepted = [job_id_from(script.submit(seconds=str(s))) for s in (0.5, 1, 2, 3, 4, 6)]
        time_until(lambda: script.job(accepted[-1]).json()["state"] == "running", 10)
        pollers = Pollers(base, script.http.cookies, accepted).start()
        time.sleep(1)
        with outage(durable_redis, kind):
            began = time.monotonic()
            time.sleep(0.5)
            during_json = script.submit(seconds="7.5")
            during_html = html_submit(base, script.http.cookies, "7.5")
            during_poll = script.job(accepted[0])
            time.sleep(max(0.0, 3 - (time.monotonic() - began)))
            ended = time.monotonic()
        back = time.monotonic()
        web = time_until(lambda: script.job(accepted[0]).status_code == 200, RESUME_BOUND)
        submitted = []

        def accepted_again() -> bool:
            answer = script.submit(seconds="0.5")
            if answer.status_code == 202:
                submitted.append(answer.json()["id"])
            return bool(submitted)

        submit = time_until(accepted_again, RESUME_BOUND)
        start = time_until(lambda: script.job(submitted[0]).json()["state"] in ("running", "succeeded"), RESUME_BOUND)
        resumed = time.monotonic() - back
        states = script.wait_all([*accepted, *submitted], timeout=30)
        pollers.stop()
    during = pollers.statuses(began + 0.2, ended)
    figures = {
        "outage": kind,
        "accepted before": len(accepted),
        "ended": tally(states),
        "answers during the outage": dict(during),
        "answers in all": dict(pollers.statuses()),
        "seconds to resume (web, submit, job start)": (round(web, 2), round(submit, 2), round(start, 2)),
    }
    print(figures)
    for answer in (during_json, during_html, during_poll):
        assert_friendly_503(answer)
    assert not [a for a in pollers.answers if a[3]], "a poll showed a traceback"
    assert set(pollers.statuses()) <= {200, 304, 503}, figures
    assert during[503] > 0, figures
    assert not pollers.errors, pollers.errors[:5]
    assert resumed <= RESUME_BOUND + 0.5, figures
    assert all(state in TERMINAL for state in states.values()), (figures, consumer.output()[-3000:])
    assert consumer.proc.poll() is None, "the consumer exited"


@redis_only
@pytest.mark.parametrize("kind", ["restart", "hang"])
def test_an_outage_longer_than_the_heartbeat_timeout_does_not_turn_a_live_job_lost(
    outage_settings, make_app, start_consumer, durable_redis, kind
):
    """HEARTBEAT_TIMEOUT is 2 s; Redis is out for 4 s while a 10 s timer runs on a live consumer, with a page
    polling it. Nothing died but the store's connection, so the job must end succeeded, not lost."""
    app = make_app(TESTING=False)
    consumer = start_consumer(workers=1)
    with serving(app) as (host, port):
        base = f"http://{host}:{port}"
        script = Script(base)
        job_id = job_id_from(script.submit(seconds="10"))
        time_until(lambda: script.job(job_id).json()["state"] == "running", 10)
        pollers = Pollers(base, script.http.cookies, [job_id], count=1).start()
        time.sleep(1)
        with outage(durable_redis, kind):
            time.sleep(4)
        states = script.wait_all([job_id], timeout=25)
        pollers.stop()
        data = script.job(job_id).json()
    print({"outage": kind, "state": data["state"], "error": data["error"], "attempt": data["attempt"]})
    assert consumer.proc.poll() is None
    assert states[job_id] == "succeeded", (data, consumer.output()[-3000:])


@redis_only
def test_a_submit_during_an_outage_keeps_the_form_values(outage_settings, make_app, durable_redis):
    app = make_app(TESTING=False)
    with serving(app) as (host, port):
        base = f"http://{host}:{port}"
        durable_redis.stop()
        try:
            answer = html_submit(base, requests.cookies.RequestsCookieJar(), "7.5")
        finally:
            durable_redis.start()
    assert_friendly_503(answer)
    field = soup_of(answer).select_one("form input[name=seconds]")
    assert field is not None, "the 503 page shows no form"
    assert field["value"] == "7.5"


@redis_only
@pytest.mark.browser
def test_a_page_open_through_an_outage_says_so_polls_slower_and_comes_back(
    outage_settings, make_app, start_consumer, durable_redis, browser
):
    """In Chromium: while Redis is down the job's page keeps its state, says the store cannot be reached and
    polls every 10 s; once Redis is back it carries on to the result, with no reload."""
    app = make_app(TESTING=False)
    start_consumer(workers=1)
    with serving(app) as (host, port):
        context = browser.new_context(base_url=f"http://{host}:{port}")
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto("/jobs/new/timer")
        page.fill("#seconds", "4")
        with page.expect_navigation():
            page.click("#submit")
        page.wait_for_selector("#job-status[data-state=running]")
        page.evaluate("window.__marker = 1")
        with outage(durable_redis, "restart"):
            page.wait_for_selector("#job-status[hx-trigger='every 10s'] .warning")
            assert page.get_attribute("#job-status", "data-state") == "running"
        page.wait_for_selector("#job-status[data-state=succeeded]", timeout=40_000)
        assert page.evaluate("window.__marker") == 1, "the page was reloaded"
        context.close()
