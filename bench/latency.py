"""Submit-to-start latency of a job: from the submit POST being sent to the record's ``started_at``.

Three real consumers (``huey_consumer tasks.huey -w 2``) run side by side, each on its own
store: SQLite with ``-m 0.5`` (as in our Procfile), SQLite with Huey's default maximum
delay (10 s), and Redis (blocking BRPOP). Timer jobs of 0 s are submitted one at a time
through an in-process app (a JSON POST with its CSRF token). The default-delay consumer
gets one job per round, after ``--idle`` seconds of quiet so that its polling has backed
off; during that quiet the other two get a job every ``--gap`` seconds in turn, so that
they have idled too. Each wait is lengthened by a random part of one polling period
(seeded), so that a submit lands at a random point of the consumer's sleep, as a user's
would. It prints the median and maximum start latency and submit-to-succeeded time, with
ratios against Redis. Times come from the records (the worker's clock), and
the client runs on the same host, so they share one clock.

Then the submit itself, as a script meets it: ``--submits`` JSON POSTs over HTTP to a real
gunicorn (the Procfile's options) on Redis, a 30 s timer and a 0 s timer in turn, while a
consumer runs the jobs. A long job must not make its submit slower: the page answers at once.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests
from common import (
    Submitter,
    machine,
    median,
    percentile,
    print_table,
    settings_for,
    start_consumer,
    start_gunicorn,
    start_redis,
)

SETUPS = {
    "SQLite, -m 0.5 (Procfile)": ("sqlite", ["-m", "0.5"]),
    "SQLite, default max delay 10 s, after idle": ("sqlite", []),
    "Redis (BRPOP)": ("redis", []),
}


def sample(submitter: Submitter) -> tuple[float, float]:
    """Submit one 0 s timer; return seconds from the POST being sent to its start and to its success.

    From the sending, not the answer: on Redis the record and its task are written in one
    transaction, and a waiting consumer often starts the job before the answer is back.
    """
    sent = time.time()
    job_id = submitter.submit(0)
    job = submitter.wait(job_id, timeout=30)
    assert job.state == "succeeded", job.state
    return job.started_at - sent, job.finished_at - sent


def submit_times(stack: ExitStack, folder: Path, redis_base: str, count: int) -> dict[float, list[float]]:
    """Seconds each submit POST took over HTTP, by the timer's length, 30 s and 0 s in turn."""
    settings = settings_for("redis", folder, "submits", redis_base, db=len(SETUPS))
    start_consumer(stack, settings, folder / "consumer-submits.log")
    base = start_gunicorn(stack, "wsgi:app", settings, folder / "gunicorn-submits.log")
    json = {"Accept": "application/json"}
    with requests.Session() as session:
        token = session.get(f"{base}/jobs/new/timer", headers=json, timeout=10).json()["csrf_token"]
        times: dict[float, list[float]] = {30.0: [], 0.0: []}
        for n in range(count):
            for seconds in (30.0, 0.0) if n % 2 else (0.0, 30.0):
                began = time.perf_counter()
                data = {"csrf_token": token, "seconds": str(seconds)}
                response = session.post(f"{base}/jobs/new/timer", data=data, headers=json, timeout=10)
                times[seconds].append(time.perf_counter() - began)
                assert response.status_code == 202, response.status_code
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="jobs for the default-delay consumer (default 6)")
    parser.add_argument("--idle", type=float, default=15.0, help="quiet seconds before each of those (default 15)")
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between the other jobs (default 1.5)")
    parser.add_argument("--submits", type=int, default=100, help="submits of each length (default 100)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 40 submits of each length")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.submits = 2, 40
    fast, slow, fastest = SETUPS
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in SETUPS}
    rng = random.Random(1)
    # Huey's idle poll delay after t quiet seconds is 0.1 * 1.15**n where the sleeps so far sum to t,
    # which is 0.1 + 0.15 * t (capped by the maximum delay): the length of the period to land in.
    period = 0.1 + 0.15 * args.idle

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tasklight-bench-") as tmp:
        folder = Path(tmp)
        redis_base = start_redis(stack, folder)
        submitters = {}
        for n, (name, (backend, options)) in enumerate(SETUPS.items()):
            settings = settings_for(backend, folder, f"latency-{n}", redis_base, db=n)
            start_consumer(stack, settings, folder / f"consumer-{n}.log", *options)
            submitters[name] = Submitter(settings)
            submitters[name].wait(submitters[name].submit(0), timeout=30)  # The consumer is up.
        for _ in range(args.rounds):
            quiet_until = time.monotonic() + args.idle + rng.uniform(0, period)
            turn = 0
            while time.monotonic() + args.gap + 0.5 < quiet_until:
                time.sleep(args.gap + rng.uniform(0, 0.5))
                name = (fast, fastest)[turn % 2]
                samples[name].append(sample(submitters[name]))
                turn += 1
            time.sleep(max(0.0, quiet_until - time.monotonic()))
            samples[slow].append(sample(submitters[slow]))
        submits = submit_times(stack, folder, redis_base, args.submits)

    print(f"# Submit-to-start latency (0 s timer jobs; {args.rounds} rounds, idle {args.idle:g} s, gap {args.gap:g} s)")
    print(f"# {machine()}\n")
    base_start = median([s for s, _ in samples[fastest]])
    base_done = median([d for _, d in samples[fastest]])
    rows = []
    for name, values in samples.items():
        starts, dones = [s for s, _ in values], [d for _, d in values]
        rows.append(
            [name, len(values), f"{median(starts) * 1000:.1f}", f"{max(starts) * 1000:.1f}",
             f"{median(starts) / base_start:.0f}x", f"{median(dones) * 1000:.1f}", f"{max(dones) * 1000:.1f}",
             f"{median(dones) / base_done:.0f}x"]
        )  # fmt: skip
    headers = ["consumer", "jobs", "start p50 ms", "start max ms", "start p50 vs Redis"]
    headers += ["succeeded p50 ms", "succeeded max ms", "succeeded p50 vs Redis"]
    print_table(headers, rows)

    print(f"# Submit POST over HTTP, Redis, a consumer running: {args.submits} of each length, in turn\n")
    quick = median(submits[0.0])
    rows = [
        [f"{seconds:g} s timer", len(times), f"{median(times) * 1000:.1f}", f"{percentile(times, 0.95) * 1000:.1f}",
         f"{median(times) / quick:.2f}x"]
        for seconds, times in submits.items()
    ]  # fmt: skip
    print_table(["job", "submits", "p50 ms", "p95 ms", "p50 vs the 0 s timer"], rows)


if __name__ == "__main__":
    main()
