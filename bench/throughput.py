"""Throughput of many tiny jobs, and how many progress writes per second each store sustains.

Jobs: ``--jobs`` timer jobs of 0 s are submitted through an in-process app into a fresh
store while no consumer runs (the submit rate is timed too); then one real consumer
(``huey_consumer tasks.huey -w 2 -m 0.5``, as in our Procfile) drains the queue. Jobs/s
is the count over the time from the first ``started_at`` to the last ``finished_at``.
SQLite and Redis alternate for ``--rounds`` rounds; the median round is reported, and
the ratio against SQLite is the median of the rounds' paired ratios, which drift less with noise.

Progress: each writer process owns one running job and calls ``JobStore.update`` with
a progress report and heartbeat, exactly as ``JobContext.report`` does, in a loop bounded
by ``--writes`` and ``--seconds``. With 1, 2 and 4 writers at once it prints the total
writes/s and the running jobs that rate could carry at one write per 100 ms each.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    Submitter,
    machine,
    median,
    open_settings_store,
    print_table,
    settings_for,
    start_consumer,
    start_redis,
    stop,
)

from webapp.store import RUNNING, SUCCEEDED, TERMINAL

BACKENDS = ("sqlite", "redis")
WRITERS = (1, 2, 4)


def drain(settings: dict, jobs: int, log: Path) -> tuple[float, float]:
    """Submit ``jobs`` timers, then let one consumer run them; return (submits/s, jobs/s)."""
    submitter = Submitter(settings)
    begin = time.perf_counter()
    ids = [submitter.submit(0) for _ in range(jobs)]
    submit_rate = jobs / (time.perf_counter() - begin)
    with ExitStack() as stack:
        consumer = start_consumer(stack, settings, log, "-m", "0.5")
        deadline = time.monotonic() + 120
        while sum(n for state, n in submitter.store.counts().items() if state in TERMINAL) < jobs:
            if time.monotonic() > deadline or consumer.poll() is not None:
                raise SystemExit(f"the consumer did not finish {jobs} jobs; see {log}")
            time.sleep(0.1)
        stop(consumer)
    records = submitter.store.list(limit=jobs)
    assert len(records) == len(ids) and all(job.state == SUCCEEDED for job in records)
    elapsed = max(job.finished_at for job in records) - min(job.started_at for job in records)
    return submit_rate, jobs / elapsed


def write_progress(settings: dict, job_id: str, writes: int, seconds: float, start_at: float, out) -> None:
    """One writer process: report progress on its job as fast as the store allows."""
    store = open_settings_store(settings)
    while time.time() < start_at:
        time.sleep(0.001)
    begin = time.perf_counter()
    done = 0
    while done < writes and time.perf_counter() - begin < seconds:
        progress = {"done": done, "total": writes, "message": f"{done} of {writes}"}
        job = store.update(job_id, {"progress": progress, "heartbeat_at": time.time()}, states={RUNNING}, attempt=1)
        assert job is not None
        done += 1
    out.put((done, time.perf_counter() - begin))


def progress_rate(settings: dict, writers: int, writes: int, seconds: float) -> float:
    """Total progress writes/s of ``writers`` processes at once, each on its own running job."""
    submitter = Submitter(settings)
    ids = [submitter.submit(3600) for _ in range(writers)]
    for job_id in ids:
        submitter.store.start(job_id, "bench:1")
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start_at = time.time() + 1.0  # Start together, after every process has opened its store.
    args = [(settings, job_id, writes, seconds, start_at, out) for job_id in ids]
    processes = [context.Process(target=write_progress, args=a) for a in args]
    for process in processes:
        process.start()
    results = [out.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join(10)
    # Writers may finish at different times; count them all over the longest one.
    return sum(done for done, _ in results) / max(elapsed for _, elapsed in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="tiny jobs per round (default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per backend (default 5)")
    parser.add_argument("--writes", type=int, default=5000, help="most progress writes per writer (default 5000)")
    parser.add_argument("--seconds", type=float, default=4.0, help="most seconds per progress run (default 4)")
    parser.add_argument("--quick", action="store_true", help="100 jobs, 1 round, 1 s progress runs")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds, args.seconds = 100, 1, 1.0
    drained: dict[str, list[tuple[float, float]]] = {b: [] for b in BACKENDS}
    progress: dict[tuple[str, int], float] = {}

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tasklight-bench-") as tmp:
        folder = Path(tmp)
        redis_base = start_redis(stack, folder)
        db = 0
        for n in range(args.rounds):
            for backend in BACKENDS if n % 2 == 0 else reversed(BACKENDS):
                settings = settings_for(backend, folder, f"drain-{db}", redis_base, db=db)
                drained[backend].append(drain(settings, args.jobs, folder / f"consumer-{db}.log"))
                db += 1
        for writers in WRITERS:
            for backend in BACKENDS:
                settings = settings_for(backend, folder, f"progress-{db}", redis_base, db=db)
                progress[(backend, writers)] = progress_rate(settings, writers, args.writes, args.seconds)
                db += 1

    print(f"# Throughput of {args.jobs} tiny jobs (1 consumer, 2 thread workers; median of {args.rounds} rounds)")
    print(f"# {machine()}\n")
    rows = []
    for backend, results in drained.items():
        rate = median([r for _, r in results])
        rounds = ", ".join(f"{r:.0f}" for _, r in results)
        ratio = median([r / base for (_, r), (_, base) in zip(results, drained["sqlite"], strict=True)])
        submits = median([s for s, _ in results])
        rows.append([backend, f"{rate:.0f}", rounds, f"{ratio:.2f}x", f"{submits:.0f}"])
    print_table(["backend", "jobs/s", "each round", "vs SQLite", "submits/s (in-process app)"], rows)

    print(f"# Progress writes through JobStore.update (each writer up to {args.writes} writes or {args.seconds:g} s)\n")
    rows = []
    for (backend, writers), rate in progress.items():
        ratio = rate / progress[("sqlite", writers)]
        rows.append([backend, writers, f"{rate:.0f}", f"{ratio:.2f}x", f"{rate / 10:.0f}"])
    print_table(["backend", "writer processes", "writes/s", "vs SQLite", "running jobs at 10 writes/s each"], rows)


if __name__ == "__main__":
    main()
