"""Throughput of no-op jobs through Tasklight's tracking, against raw Huey, Celery and RQ, in one run.

Each cell enqueues ``--jobs`` jobs into a fresh store while no worker runs, then starts
one worker and times from the first job's start to the last job's end, read from each
system's own records:

- Tasklight: timer jobs of 0 s, submitted as a script would (JSON POST through an in-process
  app), run by ``huey_consumer tasks.huey -w 2 -m 0.5`` (our Procfile); times from the job records.
- raw Huey: a no-op task (bench/peer_tasks.py) on the same backend, results kept, run by
  ``huey_consumer peer_tasks.huey -w 2 -m 0.5``; times are the values the tasks return.
- Celery (Redis only): a threads pool of 2, Redis broker and result backend,
  ``task_track_started=True``; from the task's return value to the result's ``date_done``.
- RQ (Redis only): one ``SimpleWorker``; from the job's ``started_at`` to its ``ended_at``.

Completion is read from each system's status (records, results, result metas, job
statuses and the finished registry); every job is checked to have succeeded. The cells
run in ``--rounds`` rounds whose order rotates; the median jobs/s is reported, and each
ratio is the median of the rounds' paired ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import peer_tasks
import redis
from common import (
    ROOT,
    VENV_BIN,
    Submitter,
    load_average,
    machine,
    median,
    print_table,
    settings_for,
    start_consumer,
    start_process,
    start_redis,
)
from rq import Queue
from rq.job import Job, JobStatus

from webapp.store import SUCCEEDED, TERMINAL

CELLS = (
    ("Tasklight", "sqlite"),
    ("raw Huey", "sqlite"),
    ("Tasklight", "redis"),
    ("raw Huey", "redis"),
    ("Celery", "redis"),
    ("RQ", "redis"),
)
RATIOS = (
    ("Tasklight / raw Huey, SQLite", ("Tasklight", "sqlite"), ("raw Huey", "sqlite")),
    ("Tasklight / raw Huey, Redis", ("Tasklight", "redis"), ("raw Huey", "redis")),
    ("Tasklight / Celery, Redis", ("Tasklight", "redis"), ("Celery", "redis")),
    ("Tasklight / RQ, Redis", ("Tasklight", "redis"), ("RQ", "redis")),
)
PEER_PATH = {"PYTHONPATH": str(ROOT / "bench")}


def wait_for(done, worker, log: Path, timeout: float = 300) -> None:
    """Poll ``done()`` until it is true; stop the run if the worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit(f"the worker did not finish its jobs; see {log}")
        time.sleep(0.02)


def run_tasklight(stack: ExitStack, settings: dict, jobs: int, log: Path) -> float:
    """Tasklight's full path: submit timers of 0 s, one consumer runs them; elapsed s from its records."""
    submitter = Submitter(settings)
    store = submitter.store
    ids = [submitter.submit(0) for _ in range(jobs)]
    worker = start_consumer(stack, settings, log, "-m", "0.5")
    wait_for(lambda: store.get(ids[-1]).state in TERMINAL, worker, log)
    wait_for(lambda: sum(n for s, n in store.counts().items() if s in TERMINAL) == jobs, worker, log)
    records = store.list(limit=jobs)
    assert len(records) == jobs and all(job.state == SUCCEEDED for job in records)
    return max(job.finished_at for job in records) - min(job.started_at for job in records)


def run_huey(stack: ExitStack, settings: dict, jobs: int, log: Path) -> float:
    """Raw Huey: enqueue no-op tasks, one consumer like Tasklight's runs them; elapsed s from their results."""
    _, noop = peer_tasks.make_huey(settings["REDIS_URL"], settings["DATABASE"])
    results = [noop() for _ in range(jobs)]
    command = [str(VENV_BIN / "huey_consumer"), "peer_tasks.huey", "-w", "2", "-m", "0.5"]
    worker = start_process(stack, command, settings, log, PEER_PATH)
    wait_for(lambda: results[-1].get(preserve=True) is not None, worker, log)
    wait_for(lambda: all(r.get(preserve=True) is not None for r in results), worker, log)
    times = [r.get(preserve=True) for r in results]
    return max(times) - min(times)


def run_celery(stack: ExitStack, url: str, jobs: int, log: Path) -> float:
    """Celery: send no-op tasks, a threads pool of 2 runs them; elapsed s from return values and date_done."""
    app = peer_tasks.make_celery(url)
    results = [app.send_task("noop") for _ in range(jobs)]
    command = [str(VENV_BIN / "celery"), "-A", "peer_tasks:celery", "worker", "--pool", "threads", "--concurrency", "2"]
    worker = start_process(stack, [*command, "--loglevel", "WARNING"], {"REDIS_URL": url}, log, PEER_PATH)
    wait_for(lambda: results[-1].ready(), worker, log)
    wait_for(lambda: all(r.ready() for r in results), worker, log)
    metas = [app.backend.get_task_meta(r.id) for r in results]
    assert all(meta["status"] == "SUCCESS" for meta in metas)
    app.close()
    return max(epoch(meta["date_done"]) for meta in metas) - min(meta["result"] for meta in metas)


def epoch(moment: datetime | str) -> float:
    """Seconds since the epoch from a UTC datetime or its ISO 8601 text, as Celery gives ``date_done``."""
    moment = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run_rq(stack: ExitStack, url: str, jobs: int, log: Path) -> float:
    """RQ: enqueue no-op jobs, one SimpleWorker runs them; elapsed s from the jobs' started_at and ended_at."""
    connection = redis.Redis.from_url(url)
    queue = Queue("bench", connection=connection)
    enqueued = queue.enqueue_many([Queue.prepare_data("peer_tasks.noop") for _ in range(jobs)])
    command = [str(VENV_BIN / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "-u", url, "bench"]
    worker = start_process(stack, command, {"REDIS_URL": url}, log, PEER_PATH)
    wait_for(lambda: enqueued[-1].get_status(refresh=True) == JobStatus.FINISHED, worker, log)
    wait_for(lambda: queue.finished_job_registry.count == jobs, worker, log)
    records = Job.fetch_many([job.id for job in enqueued], connection=connection)
    assert all(job.get_status() == JobStatus.FINISHED for job in records)
    elapsed = max(job.ended_at for job in records) - min(job.started_at for job in records)
    connection.close()
    return elapsed.total_seconds()


def run_cell(system: str, backend: str, folder: Path, redis_base: str, name: str, jobs: int) -> float:
    """One cell in a fresh store (a new SQLite file, or a flushed Redis database); return jobs/s."""
    settings = settings_for(backend, folder, name, redis_base, db=1)
    if backend == "redis":
        redis.Redis.from_url(settings["REDIS_URL"]).flushdb()
    log = folder / f"{name}.log"
    with ExitStack() as stack:  # The worker stops when its cell ends.
        if system == "Tasklight":
            elapsed = run_tasklight(stack, settings, jobs, log)
        elif system == "raw Huey":
            elapsed = run_huey(stack, settings, jobs, log)
        elif system == "Celery":
            elapsed = run_celery(stack, settings["REDIS_URL"], jobs, log)
        else:
            elapsed = run_rq(stack, settings["REDIS_URL"], jobs, log)
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per cell (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--quick", action="store_true", help="500 jobs per cell")
    args = parser.parse_args()
    if args.quick:
        args.jobs = 500
    print(f"# Throughput of {args.jobs} no-op jobs: Tasklight against raw Huey, Celery and RQ ({args.rounds} rounds)")
    print(f"# {machine()}")
    print(f"# load average at start: {load_average()}\n", flush=True)
    rates: dict[tuple[str, str], list[float]] = {cell: [] for cell in CELLS}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tasklight-bench-") as tmp:
        folder = Path(tmp)
        redis_base = start_redis(stack, folder)
        for n in range(args.rounds):
            for system, backend in CELLS[n % len(CELLS) :] + CELLS[: n % len(CELLS)]:
                name = f"{system.replace(' ', '-').lower()}-{backend}-{n}"
                rates[(system, backend)].append(run_cell(system, backend, folder, redis_base, name, args.jobs))

    rows = []
    for (system, backend), values in rates.items():
        rows.append([system, backend, f"{median(values):.0f}", ", ".join(f"{v:.0f}" for v in values)])
    print_table(["system", "backend", "jobs/s", "each round"], rows)
    rows = []
    for label, ours, theirs in RATIOS:
        paired = [a / b for a, b in zip(rates[ours], rates[theirs], strict=True)]
        rows.append([label, f"{median(paired):.2f}x", ", ".join(f"{r:.2f}x" for r in paired)])
    print_table(["ratio of jobs/s", "median", "each round"], rows)
    print(f"# load average at end: {load_average()}")


if __name__ == "__main__":
    main()
