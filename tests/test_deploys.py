"""Deploys while jobs run: the web restarted or reloaded, a consumer stopped gracefully, a rolling restart of
two consumers under a steady stream of submits. Every accepted job must end, and none may run twice at once.

Real processes throughout: gunicorn with sync workers, ``huey_consumer`` processes (``ledger_tasks.huey``,
which writes down each attempt, for the overlap check), on each backend.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter

import ledger_tasks
import pytest
import requests
from faults import Script, gunicorns, tally
from helpers import job_id_from, serving

from webapp.store import RETRYING, SUCCEEDED, TERMINAL


@pytest.fixture
def deploy_settings(settings):
    settings.update(HEARTBEAT_INTERVAL=0.2, HEARTBEAT_TIMEOUT=2.0, REQUEUE_AFTER=2.0)
    return settings


@pytest.fixture
def start_gunicorn(deploy_settings, tmp_path):
    with gunicorns(deploy_settings, tmp_path) as start:
        yield start


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.jsonl"


@pytest.fixture
def start_ledger_consumer(start_consumer, ledger):
    def start(workers: int = 2):
        return start_consumer(workers=workers, module="ledger_tasks.huey", env={"TASKLIGHT_LEDGER": str(ledger)})

    return start


class Poller:
    """A browser polling its jobs' JSON every 0.1 s until stopped; counts statuses and refused connections."""

    def __init__(self, script: Script, ids: list[str]):
        self.script, self.ids = script, ids
        self.statuses: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        with requests.Session() as http:
            http.cookies.update(self.script.http.cookies)
            while not self._stop.is_set():
                for job_id in list(self.ids):
                    try:
                        answer = http.get(
                            f"{self.script.base}/jobs/{job_id}", headers={"Accept": "application/json"}, timeout=10
                        )
                        self.statuses[answer.status_code] += 1
                    except requests.ConnectionError:
                        self.statuses["refused"] += 1
                self._stop.wait(0.1)


def no_overlaps(ledger_path, deaths: dict[str, float] | None = None) -> None:
    """No two attempts of a job ran at once; ``deaths`` ends the attempts of consumers that exited mid-job."""
    attempts = ledger_tasks.read(ledger_path, deaths)
    assert not ledger_tasks.overlaps(attempts), ledger_tasks.overlaps(attempts)[:3]
    assert not ledger_tasks.duplicates(attempts)


@pytest.mark.parametrize("how", ["restart", "reload"])
def test_restarting_the_web_while_jobs_run_loses_nothing(start_gunicorn, start_ledger_consumer, ledger, how):
    """gunicorn is stopped (SIGTERM) and started again on the same port, or reloaded in place (SIGHUP: new
    workers, a new app in each), while jobs run and a browser polls them. The cookie still works afterwards,
    every job succeeds and no answer is a 5xx."""
    consumer = start_ledger_consumer(workers=3)
    web = start_gunicorn(workers=2)
    script = Script(web.base)
    ids = [job_id_from(script.submit(seconds=str(s))) for s in (1, 1.5, 2, 2.5, 3, 3)]
    with Poller(script, ids) as poller:
        time.sleep(0.8)
        if how == "restart":
            web.stop(signal.SIGTERM)
            start_gunicorn(workers=2, port=web.port)
        else:
            web.proc.send_signal(signal.SIGHUP)
        states = script.wait_all(ids, timeout=30)
    print({"web": how, "ended": tally(states), "answers": dict(poller.statuses)})
    assert set(states.values()) == {SUCCEEDED}, (states, consumer.output()[-3000:])
    assert not [code for code in poller.statuses if isinstance(code, int) and code >= 500], poller.statuses
    no_overlaps(ledger)


def test_a_consumer_stopped_with_sigint_finishes_its_jobs_first(client, start_ledger_consumer, ledger, store):
    """SIGINT is the graceful stop: the running jobs finish on the stopping consumer (attempt 1), it exits
    cleanly, and the jobs still queued run on the next consumer."""
    first = start_ledger_consumer(workers=2)
    ids = [job_id_from(submit_timer(client, seconds)) for seconds in (2, 2, 0.5, 0.5, 0.5)]
    deadline = time.monotonic() + 10
    while sum(1 for job_id in ids if store.get(job_id).state == "running") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    running = {job.id for job in store.running()}
    assert len(running) == 2
    first.signal(signal.SIGINT)
    assert first.wait(20) == 0, first.output()[-3000:]
    for job_id in running:
        job = store.get(job_id)
        assert (job.state, job.attempt, job.worker) == (SUCCEEDED, 1, f"{socket.gethostname()}:{first.proc.pid}")
    start_ledger_consumer(workers=2)
    deadline = time.monotonic() + 20
    while not all(store.get(job_id).terminal for job_id in ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    states = {job_id: store.get(job_id).state for job_id in ids}
    print({"ended": tally(states)})
    assert set(states.values()) == {SUCCEEDED}, states
    no_overlaps(ledger)


def submit_timer(client, seconds: float):
    token = client.get("/jobs/new/timer", headers={"Accept": "application/json"}).get_json()["csrf_token"]
    headers = {"Accept": "application/json", "X-CSRFToken": token}
    return client.post("/jobs/new/timer", data={"seconds": str(seconds)}, headers=headers)


def test_a_rolling_restart_of_two_consumers_under_steady_submits_ends_every_job(
    app, start_ledger_consumer, ledger, store
):
    """A submit every 0.15 s for 7 s; meanwhile consumer A gets SIGTERM and A' starts, then B gets SIGTERM and
    B' starts. SIGTERM hands each running job back (retrying) to start again on the next consumer: every job
    ends, succeeded, with no attempt overlapping another."""
    a, b = start_ledger_consumer(workers=2), start_ledger_consumer(workers=2)
    ids: list[str] = []
    refused = Counter()
    stop = threading.Event()
    with serving(app) as (host, port):
        script = Script(f"http://{host}:{port}")

        def stream() -> None:
            n = 0
            while not stop.is_set():
                answer = script.submit(seconds=str(0.4 + (n % 5) * 0.3))
                if answer.status_code == 202:
                    ids.append(answer.json()["id"])
                else:
                    refused[answer.status_code] += 1
                n += 1
                stop.wait(0.15)

        submitter = threading.Thread(target=stream, daemon=True)
        submitter.start()
        try:
            handed_back, deaths = set(), {}
            for old in (a, b):
                time.sleep(2)
                before = {job.id for job in store.running()}
                old.signal(signal.SIGTERM)
                old.wait(15)
                # It exits at once: the attempts it was running end with it (their bodies' ends are not written).
                deaths[f"{socket.gethostname()}:{old.proc.pid}"] = time.time()
                handed_back |= {job_id for job_id in before if store.get(job_id).state == RETRYING}
                start_ledger_consumer(workers=2)
            time.sleep(2)
        finally:
            stop.set()
            submitter.join(15)
        states = script.wait_all(ids, timeout=30)
    attempts = ledger_tasks.read(ledger)
    figures = {
        "accepted": len(ids),
        "refused": dict(refused),
        "ended": tally(states),
        "handed back by SIGTERM": len(handed_back),
        "attempts": len(attempts),
    }
    print(figures)
    assert not refused, figures
    assert all(state in TERMINAL for state in states.values()), figures
    assert set(states.values()) == {SUCCEEDED}, figures
    # A job running at a SIGTERM (there usually is one) ran again from the top, as a later attempt.
    assert all(store.get(job_id).attempt >= 2 for job_id in handed_back), figures
    no_overlaps(ledger, deaths)
