"""A crash storm: 200 jobs in flight across two consumers, one SIGKILLed mid-stream, on each backend.

For each backend, start two real consumers (``ledger_tasks.huey -w 4``, which writes down every attempt's
start and end), submit 200 timer jobs of 0.2 to 1 s (every tenth crashes on its first attempt, so retries
run too), SIGKILL one consumer once a third of the jobs have ended, and wait (bounded) for every job to end.
The heartbeat timeout and the re-queue delay are short (3 s), so recovery is quick.

Figures: jobs accepted, ended (succeeded, of which after a retry; lost), vanished (not ended by the deadline),
overlaps (two attempts of one job running at once, from the ledger), attempts started twice, where the
attempts ran, and the seconds from the kill to the last job ending.
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import ROOT, VENV_BIN, Submitter, machine, print_table, settings_for, start_process, start_redis

sys.path.insert(0, str(ROOT / "tests"))
import ledger_tasks  # noqa: E402

from webapp.store import LOST, SUCCEEDED, TERMINAL  # noqa: E402


def start_ledger_consumer(stack: ExitStack, settings: dict, log: Path, ledger: Path, workers: int):
    command = [str(VENV_BIN / "huey_consumer"), "ledger_tasks.huey", "-w", str(workers), "-m", "0.1"]
    env = {"TASKLIGHT_LEDGER": str(ledger), "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    return start_process(stack, command, settings, log, env)


def storm(settings: dict, folder: Path, jobs: int, workers: int, deadline: float) -> dict:
    ledger = folder / "ledger.jsonl"
    with ExitStack() as stack:
        victim = start_ledger_consumer(stack, settings, folder / "victim.log", ledger, workers)
        survivor = start_ledger_consumer(stack, settings, folder / "survivor.log", ledger, workers)
        submitter = Submitter(settings)
        stack.callback(submitter.app.extensions["tasklight"].close)
        store = submitter.store
        rng = random.Random(2026)
        headers = {"Accept": "application/json", "X-CSRFToken": submitter.token}
        ids, refused = [], 0
        started = time.monotonic()
        for n in range(jobs):
            fields = {"seconds": f"{rng.uniform(0.2, 1.0):.2f}", "crash_attempts": "1" if n % 10 == 0 else "0"}
            answer = submitter.client.post("/jobs/new/timer", data=fields, headers=headers)
            if answer.status_code == 202:
                ids.append(answer.get_json()["id"])
            else:
                refused += 1
        victim_name = f"{socket.gethostname()}:{victim.pid}"
        stop_by = time.monotonic() + deadline
        while time.monotonic() < stop_by:
            ended = sum(1 for job_id in ids if store.load(job_id).terminal)
            if ended >= len(ids) // 3 and any(job.worker == victim_name for job in store.running()):
                break
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at, killed_mono = time.time(), time.monotonic()
        states: dict[str, str] = {}
        while time.monotonic() < stop_by:
            states = {job_id: store.get(job_id).state for job_id in ids}
            if all(state in TERMINAL for state in states.values()):
                break
            time.sleep(0.2)
        recovered = time.monotonic() - killed_mono
        total = time.monotonic() - started
        records = {job_id: store.load(job_id) for job_id in ids}
        survivor_alive = survivor.poll() is None
    attempts = ledger_tasks.read(ledger, deaths={victim_name: killed_at})
    lost = [job_id for job_id, state in states.items() if state == LOST]
    return {
        "accepted": len(ids),
        "refused": refused,
        "succeeded": sum(1 for s in states.values() if s == SUCCEEDED),
        "after a retry": sum(1 for r in records.values() if r.state == SUCCEEDED and r.attempt > 1),
        "lost": len(lost),
        "lost not on the victim": sum(1 for job_id in lost if records[job_id].worker != victim_name),
        "other end": sum(1 for s in states.values() if s in TERMINAL and s not in (SUCCEEDED, LOST)),
        "vanished": sum(1 for s in states.values() if s not in TERMINAL),
        "overlaps": len(ledger_tasks.overlaps(attempts)),
        "started twice": len(ledger_tasks.duplicates(attempts)),
        "attempts (victim / survivor)": (
            f"{sum(1 for a in attempts if a.worker == victim_name)} / "
            f"{sum(1 for a in attempts if a.worker != victim_name)}"
        ),
        "left open by the kill": sum(1 for a in attempts if not a.finished),
        "kill to all ended (s)": f"{recovered:.1f}",
        "whole run (s)": f"{total:.1f}",
        "survivor alive": survivor_alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4, help="worker threads per consumer")
    parser.add_argument("--deadline", type=float, default=120, help="seconds each backend's run may take")
    parser.add_argument("--backend", choices=["sqlite", "redis", "both"], default="both")
    args = parser.parse_args()
    print(machine())
    backends = ["sqlite", "redis"] if args.backend == "both" else [args.backend]
    results = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        redis_base = start_redis(stack, folder) if "redis" in backends else ""
        for n, backend in enumerate(backends):
            run = folder / backend
            run.mkdir()
            settings = settings_for(backend, run, "storm", redis_base, db=n)
            settings.update(HEARTBEAT_INTERVAL=0.5, HEARTBEAT_TIMEOUT=3.0, REQUEUE_AFTER=3.0)
            results[backend] = storm(settings, run, args.jobs, args.workers, args.deadline)
            print(f"  {backend}: {results[backend]}", flush=True)
    print()
    names = list(next(iter(results.values())))
    print_table(["", *backends], [[name, *(results[b][name] for b in backends)] for name in names])
    bad = [b for b, r in results.items() if r["vanished"] or r["overlaps"] or r["started twice"] or r["other end"]]
    if bad:
        sys.exit(f"jobs vanished, overlapped or ended otherwise on: {', '.join(bad)}")


if __name__ == "__main__":
    main()
