"""SQLite under concurrency: 4 gunicorn workers and two consumers (one with process workers) on one file.

The embedded default, loaded as a busy single host would be: ``gunicorn --workers 4``, a consumer with 4
worker threads and one with 4 worker processes (``-k process``), and browsers that each keep two timer jobs
(0.5 to 2 s by default, which write their progress four times a second) in flight, submitting a new one as each ends and
polling each job's status fragment (with its ETag, as htmx does) every half second. The load runs for
``--seconds`` (45 by default); then the jobs still open are given ``--drain`` seconds to end.

Figures: submits accepted and refused, polls and their statuses (any 5xx is counted), jobs ended by state and
per second, the most jobs running at once, "database is locked" lines in every log, and ``PRAGMA
integrity_check`` on the file once every process has stopped.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import requests
from common import VENV_BIN, free_port, machine, open_settings_store, print_table, settings_for, start_process

from webapp.store import TERMINAL

JSON = {"Accept": "application/json"}


def start_web(stack: ExitStack, settings: dict, log: Path, workers: int) -> str:
    """gunicorn with ``workers`` sync workers, as the README deploys it; returns its URL once it answers."""
    port = free_port()
    command = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    start_process(stack, [*command, "--access-logfile", "-", "wsgi:app"], settings, log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/", timeout=5).status_code == 200:
                return base
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"gunicorn did not start; see {log}")


class Browser(threading.Thread):
    """Keeps two jobs in flight until told to stop submitting, polling each one's fragment every 0.5 s."""

    def __init__(self, base: str, seed: int, submitting: threading.Event, done_by: float, seconds: tuple):
        super().__init__(daemon=True)
        self.base, self.rng, self.submitting, self.done_by = base, random.Random(seed), submitting, done_by
        self.seconds = seconds
        self.statuses: Counter = Counter()
        self.accepted: list[str] = []
        self.errors: list[str] = []

    def request(self, http: requests.Session, method: str, path: str, **kwargs) -> requests.Response | None:
        try:
            answer = http.request(method, self.base + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            self.errors.append(repr(exc))
            return None
        self.statuses[answer.status_code] += 1
        return answer

    def run(self) -> None:
        with requests.Session() as http:
            form = self.request(http, "GET", "/jobs/new/timer", headers=JSON)
            token = form.json()["csrf_token"]
            open_jobs: dict[str, str] = {}  # id -> ETag of its fragment
            while time.monotonic() < self.done_by and (open_jobs or self.submitting.is_set()):
                while self.submitting.is_set() and len(open_jobs) < 2:
                    fields = {"seconds": f"{self.rng.uniform(*self.seconds):.2f}"}
                    answer = self.request(
                        http, "POST", "/jobs/new/timer", data=fields, headers={**JSON, "X-CSRFToken": token}
                    )
                    if answer is None or answer.status_code != 202:
                        break
                    job_id = answer.json()["id"]
                    self.accepted.append(job_id)
                    open_jobs[job_id] = ""
                time.sleep(0.5)
                for job_id, etag in list(open_jobs.items()):
                    headers = {"HX-Request": "true", **({"If-None-Match": etag} if etag else {})}
                    answer = self.request(http, "GET", f"/jobs/{job_id}/status", headers=headers)
                    if answer is None or answer.status_code not in (200, 304):
                        continue
                    open_jobs[job_id] = answer.headers.get("ETag", etag)
                    if answer.status_code == 200 and 'data-state="' in answer.text:
                        state = answer.text.split('data-state="', 1)[1].split('"', 1)[0]
                        if state in TERMINAL:
                            del open_jobs[job_id]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45, help="how long browsers keep submitting")
    parser.add_argument("--drain", type=float, default=20, help="seconds then given to the open jobs to end")
    parser.add_argument("--browsers", type=int, default=12)
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--job-seconds", default="0.5,2", help="the range of each timer's seconds, as LOW,HIGH")
    args = parser.parse_args()
    job_seconds = tuple(float(x) for x in args.job_seconds.split(","))
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = settings_for("sqlite", folder, "load")
        database = settings["DATABASE"]
        logs = {name: folder / f"{name}.log" for name in ("web", "threads", "processes")}
        running_max, started = 0, time.monotonic()
        with ExitStack() as stack:
            base = start_web(stack, settings, logs["web"], args.web_workers)
            consumer = [str(VENV_BIN / "huey_consumer"), "tasks.huey", "-w", "4", "-m", "0.1"]
            start_process(stack, consumer, settings, logs["threads"])
            start_process(stack, [*consumer, "-k", "process"], settings, logs["processes"])
            store = open_settings_store(settings)
            stack.callback(store.close)
            submitting = threading.Event()
            submitting.set()
            done_by = time.monotonic() + args.seconds + args.drain
            browsers = [Browser(base, n, submitting, done_by, job_seconds) for n in range(args.browsers)]
            for browser in browsers:
                browser.start()
            load_ends = time.monotonic() + args.seconds
            while time.monotonic() < done_by and any(b.is_alive() for b in browsers):
                if submitting.is_set() and time.monotonic() >= load_ends:
                    submitting.clear()
                running_max = max(running_max, len(store.running()))
                time.sleep(0.25)
            submitting.clear()
            for browser in browsers:
                browser.join(30)
            elapsed = time.monotonic() - started
            accepted = [job_id for b in browsers for job_id in b.accepted]
            states = Counter(store.load(job_id).state for job_id in accepted)
        statuses = sum((b.statuses for b in browsers), Counter())
        errors = [e for b in browsers for e in b.errors]
        locked = {name: log.read_text(errors="replace").count("database is locked") for name, log in logs.items()}
        access_5xx = sum(1 for line in logs["web"].read_text(errors="replace").splitlines() if '" 5' in line)
        with sqlite3.connect(database) as conn:
            integrity = conn.execute("pragma integrity_check").fetchone()[0]
    ended = sum(n for state, n in states.items() if state in TERMINAL)
    rows = [
        ["submits accepted", len(accepted)],
        ["requests by status", dict(sorted(statuses.items()))],
        ["5xx answers (client / access log)", f"{sum(n for s, n in statuses.items() if s >= 500)} / {access_5xx}"],
        ["request errors (no answer)", len(errors)],
        ["jobs ended, by state", dict(states)],
        ["jobs not ended", len(accepted) - ended],
        ["jobs ended per second", f"{ended / elapsed:.1f}"],
        ["most jobs running at once", running_max],
        ['"database is locked" (web / threads / processes)', " / ".join(str(n) for n in locked.values())],
        ["PRAGMA integrity_check", integrity],
        ["seconds, load and drain", f"{elapsed:.0f}"],
    ]
    print_table(["figure", "value"], rows)
    if errors:
        print("first request errors:", errors[:3])


if __name__ == "__main__":
    main()
