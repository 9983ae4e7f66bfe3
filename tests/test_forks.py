"""Process boundaries on SQLite: no connection crosses a fork, and the queue waits for a lock as long as the store.

Against real processes: a ``huey_consumer`` whose workers are forked processes, and a ``gunicorn --preload``
whose workers are forked from a master that has already created the app.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import ROOT, consumer_env, free_port
from helpers import JSON, csrf_token, job_id_from, submit, wait_for

from webapp.config import Settings
from webapp.queue import JobQueue
from webapp.store import SUCCEEDED, TERMINAL
from webapp.store.sqlite import BUSY_TIMEOUT

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

#: kcmp(2)'s number, by machine: it tells whether descriptors of two processes are one and the same open file.
SYS_KCMP = {"x86_64": 312, "aarch64": 272}.get(os.uname().machine)
KCMP_FILE = 0


def database_fds(pid: int, database: str) -> list[int]:
    """The descriptors that process ``pid`` holds on the SQLite file ``database`` (or its -wal and -shm)."""
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(database):
                fds.append(int(fd))
        except FileNotFoundError:
            pass  # closed while we looked
    return fds


def children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The parent's pid is the second field after the command name, which may hold spaces.
                if int(stat.read().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def inherited_connections(parent: int, database: str) -> list[tuple[int, int]]:
    """(child, descriptor) for each open file on the database that a child shares with ``parent``.

    A connection opened before a fork lives on in the child as the very same open files; one that the
    child opened itself does not. A parent that holds nothing on the database has nothing to hand down.
    """
    held = database_fds(parent, database)
    if not held:
        return []
    assert SYS_KCMP is not None, f"the parent holds {held} on the database, and kcmp(2) is unknown here to tell more"
    libc = ctypes.CDLL(None, use_errno=True)
    shared = []
    for child in children(parent):
        for fd in database_fds(child, database):
            for parent_fd in held:
                same = libc.syscall(SYS_KCMP, parent, child, KCMP_FILE, parent_fd, fd)
                if same < 0:
                    raise OSError(ctypes.get_errno(), "kcmp")
                if same == 0:
                    shared.append((child, fd))
    return shared


@pytest.fixture
def process_consumer(start_consumer):
    """A real ``huey_consumer tasks.huey -k process``: its workers are processes forked from the consumer."""
    return start_consumer(args=["-k", "process"])


def assert_all_succeeded(states: dict, *logs: Path) -> None:
    failed = {job_id: state for job_id, state in states.items() if state != SUCCEEDED}
    assert not failed, (failed, *(log.read_text(errors="replace")[-3000:] for log in logs))


@sqlite_only
def test_process_workers_run_every_job_on_sqlite(client, process_consumer, settings):
    """Two forked worker processes share the consumer's store and queue objects but not their connections."""
    ids = [job_id_from(submit(client, "timer", {"seconds": "0.3"})) for _ in range(6)]
    states = {job_id: wait_for(client, job_id, TERMINAL, timeout=30)["state"] for job_id in ids}
    assert_all_succeeded(states, process_consumer.log)
    # Sharing an idle connection seldom fails at once, so look for one: no worker holds the consumer's files.
    assert inherited_connections(process_consumer.proc.pid, settings["DATABASE"]) == []


@pytest.fixture
def gunicorn(settings, tmp_path):
    """``gunicorn --preload --workers 2 wsgi:app`` on a free port of 127.0.0.1, with the test's settings."""
    port, log = free_port(), tmp_path / "gunicorn.log"
    binary = Path(sys.executable).with_name("gunicorn")
    command = [str(binary), "--preload", "--workers", "2", "--bind", f"127.0.0.1:{port}", "wsgi:app"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**consumer_env(settings), "SECRET_KEY": "test"}, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(base + "/", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait(10)
                pytest.fail("gunicorn did not start: " + log.read_text(errors="replace"))
            time.sleep(0.1)
    yield base, log, proc.pid
    proc.terminate()
    proc.wait(10)


def browse(base: str, jobs: int) -> tuple[list[int], dict[str, str]]:
    """One browser: submit ``jobs`` timers, then poll each (page fragment and JSON) until it ends.

    Returns every status code it got and each job's final state.
    """
    statuses, states = [], {}
    with requests.Session() as session:
        token = session.get(f"{base}/jobs/new/timer", headers=JSON, timeout=10).json()["csrf_token"]
        ids = []
        for _ in range(jobs):
            answer = session.post(
                f"{base}/jobs/new/timer",
                data={"csrf_token": token, "seconds": "0.3"},
                allow_redirects=False,
                timeout=10,
            )
            statuses.append(answer.status_code)
            if answer.status_code == 303:
                ids.append(answer.headers["Location"].rsplit("/", 1)[-1])
        deadline = time.monotonic() + 30
        while len(states) < len(ids) and time.monotonic() < deadline:
            for job_id in set(ids) - states.keys():
                statuses.append(session.get(f"{base}/jobs/{job_id}/status", timeout=10).status_code)
                answer = session.get(f"{base}/jobs/{job_id}", headers=JSON, timeout=10)
                statuses.append(answer.status_code)
                if answer.status_code == 200 and answer.json()["state"] in TERMINAL:
                    states[job_id] = answer.json()["state"]
            time.sleep(0.1)
        states.update({job_id: "unfinished" for job_id in set(ids) - states.keys()})
    return statuses, states


@sqlite_only
def test_preloaded_gunicorn_workers_serve_concurrent_browsers_on_sqlite(gunicorn, consumer, settings):
    """A preloaded master creates the app; each forked worker opens its own connections, and all requests succeed."""
    base, log, master = gunicorn
    with ThreadPoolExecutor(4) as pool:
        results = [future.result(timeout=60) for future in [pool.submit(browse, base, 3) for _ in range(4)]]
    statuses = Counter(code for codes, _ in results for code in codes)
    states = {job_id: state for _, jobs in results for job_id, state in jobs.items()}
    assert statuses[303] == 12, (statuses, log.read_text(errors="replace")[-3000:])
    assert not [code for code in statuses if code >= 500], (statuses, log.read_text(errors="replace")[-3000:])
    assert_all_succeeded(states, log, consumer.log)
    # Sharing an idle connection seldom fails at once, so look for one: no worker holds the master's files.
    assert inherited_connections(master, settings["DATABASE"]) == []


@sqlite_only
def test_the_queue_waits_for_a_lock_as_long_as_the_store(settings, store):
    """Huey's SQLite storage gives up on a lock no sooner than the store does, so neither is the weak link."""
    assert JobQueue(Settings.load(settings), store).storage._timeout == BUSY_TIMEOUT


@sqlite_only
def test_a_burst_of_submits_while_a_consumer_drains_is_never_locked_out(make_app, start_consumer, store):
    """Four browsers submit 30 jobs each while a consumer runs them: no 503, no "database is locked"."""
    # Many jobs per browser: the fair-use limit on active jobs is not what this test is about.
    app = make_app(TESTING=False, MAX_ACTIVE_JOBS=1000)
    consumer = start_consumer(workers=4)
    started = time.monotonic()

    def burst() -> list[int]:
        client = app.test_client()
        token = csrf_token(client, "/jobs/new/timer")
        return [
            client.post("/jobs/new/timer", data={"csrf_token": token, "seconds": "0"}).status_code for _ in range(30)
        ]

    with ThreadPoolExecutor(4) as pool:
        statuses = Counter(code for future in [pool.submit(burst) for _ in range(4)] for code in future.result(60))
    assert statuses == {303: 120}, (statuses, consumer.output()[-3000:])
    # Bounded, so that a consumer that is locked out fails the test rather than slowing it down.
    while store.counts().get(SUCCEEDED, 0) < 120 and time.monotonic() - started < 20:
        time.sleep(0.1)
    assert store.counts() == {SUCCEEDED: 120}, consumer.output()[-3000:]
    assert "database is locked" not in consumer.output()
