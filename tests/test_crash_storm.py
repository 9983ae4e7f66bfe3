"""A crash storm, small enough for CI: jobs in flight across two consumers, one of them SIGKILLed mid-stream.

Every accepted job must end, succeeded or lost (a retry that succeeded counts as succeeded); none may vanish,
and none may run twice at the same time. Each consumer runs ``ledger_tasks.huey``, which writes down every
attempt's start and end, so overlaps are seen from outside the store. ``bench/storm.py`` is the big version.
"""

from __future__ import annotations

import random
import signal
import socket
import time

import ledger_tasks
import pytest
from helpers import JSON

from webapp.store import LOST, SUCCEEDED, TERMINAL

JOBS = 40


@pytest.fixture
def storm_settings(settings):
    """Quick recovery: a dead consumer's jobs are lost after 2 s, and a popped task nobody started is queued
    again after 2 s."""
    settings.update(HEARTBEAT_INTERVAL=0.2, HEARTBEAT_TIMEOUT=2.0, REQUEUE_AFTER=2.0)
    return settings


def test_a_consumer_killed_mid_stream_loses_nothing_and_runs_nothing_twice(
    storm_settings, app, client, store, start_consumer, tmp_path
):
    ledger = tmp_path / "ledger.jsonl"
    env = {"TASKLIGHT_LEDGER": str(ledger)}
    victim = start_consumer(workers=2, module="ledger_tasks.huey", env=env)
    survivor = start_consumer(workers=2, module="ledger_tasks.huey", env=env)
    token = client.get("/jobs/new/timer", headers=JSON).get_json()["csrf_token"]
    rng = random.Random(7)
    ids = []
    for n in range(JOBS):
        # Every fifth job crashes on its first attempt, so retries run during the storm too.
        fields = {"seconds": f"{rng.uniform(0.2, 0.6):.2f}", "crash_attempts": "1" if n % 5 == 0 else "0"}
        answer = client.post("/jobs/new/timer", data=fields, headers={**JSON, "X-CSRFToken": token})
        assert answer.status_code == 202, answer.get_data(as_text=True)
        ids.append(answer.get_json()["id"])
    deadline = time.monotonic() + 30
    # Mid-stream: once a third of the jobs have ended, and the victim is running some.
    while time.monotonic() < deadline:
        ended = sum(1 for job in store.list(limit=JOBS) if job.terminal)
        running_on_victim = [job for job in store.running() if job.worker.endswith(f":{victim.proc.pid}")]
        if ended >= JOBS // 3 and running_on_victim:
            break
        time.sleep(0.02)
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    killed_at = time.time()
    victim_name = f"{socket.gethostname()}:{victim.proc.pid}"

    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        jobs = {job_id: store.get(job_id) for job_id in ids}
        if all(job.terminal for job in jobs.values()):
            break
        time.sleep(0.2)
    states = {job_id: job.state for job_id, job in jobs.items()}
    attempts = ledger_tasks.read(ledger, deaths={victim_name: killed_at})
    overlapping = ledger_tasks.overlaps(attempts)
    twice = ledger_tasks.duplicates(attempts)
    counts = {state: list(states.values()).count(state) for state in set(states.values())}
    figures = {
        "accepted": len(ids),
        "ended": counts,
        "vanished": sum(1 for s in states.values() if s not in TERMINAL),
        "attempts": len(attempts),
        "on the victim": sum(1 for a in attempts if a.worker == victim_name),
        "left open by the kill": sum(1 for a in attempts if not a.finished),
        "overlaps": len(overlapping),
        "attempts started twice": len(twice),
    }
    print(figures)
    logs = victim.output()[-2000:] + survivor.output()[-3000:]
    assert set(states.values()) <= {SUCCEEDED, LOST}, (figures, logs)
    assert not overlapping and not twice, (overlapping[:3], twice[:3])
    # Lost means the victim was running it: no job of the live consumer is ever declared lost.
    for job_id, job in jobs.items():
        if job.state == LOST:
            assert job.worker == victim_name, (job_id, job.worker, victim_name)
    # The records agree with the ledger: each job's last attempt ran where its record says.
    last = {}
    for attempt in sorted(attempts, key=lambda a: a.start):
        last[attempt.job] = attempt
    for job_id, job in jobs.items():
        written = (last[job_id].attempt, last[job_id].worker) if job_id in last else (0, None)
        if job.state == LOST and written[0] < job.attempt:
            # Killed between starting the attempt in the store and its body's first line: nothing ran.
            continue
        assert (job.attempt, job.worker) == written, job_id
    # An attempt the victim left open ends its job lost (it is not run again): nothing it held succeeded twice.
    open_on_victim = {a.job for a in attempts if a.worker == victim_name and not a.finished}
    assert all(states[job_id] == LOST for job_id in open_on_victim), figures
    assert survivor.proc.poll() is None
