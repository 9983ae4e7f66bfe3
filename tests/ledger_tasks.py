"""A consumer module that writes down every attempt it runs: ``huey_consumer ledger_tasks.huey``.

Its timer is the real one, wrapped: as each attempt's body starts and as it ends (returns or raises), one
JSON line is appended to the file named by ``TASKLIGHT_LEDGER``, with the job's id, the attempt, the
consumer that ran it (``host:pid``, as the record's ``worker`` names it) and the time. A consumer killed
mid-attempt leaves a start with no end. The crash tests and ``bench/storm.py`` read the ledger back to tell
whether any job ran twice at the same time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import tasks
from webapp.worker import create_huey, worker_name

LEDGER = os.environ.get("TASKLIGHT_LEDGER", "")


def write(event: str, job, **extra) -> None:
    line = {"event": event, "job": job.job_id, "attempt": job.attempt, "worker": worker_name(), "at": time.time()}
    line.update(thread=threading.get_ident(), **extra)
    # One write of one short line to a file opened for appending: lines from many processes never interleave.
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def ledger_timer(job, seconds: float, fail: bool = False, crash_attempts: int = 0) -> dict:
    """The real timer, with its start and end written down."""
    write("start", job)
    outcome = "raised"
    try:
        result = tasks.timer(job, seconds, fail, crash_attempts)
        outcome = "returned"
        return result
    finally:
        write("end", job, outcome=outcome)


huey = create_huey({**tasks.BODIES, "timer": ledger_timer}) if LEDGER else None


@dataclass(frozen=True)
class Attempt:
    job: str
    attempt: int
    worker: str
    start: float
    #: When it ended; for one whose consumer was killed, when that happened; None if neither is known.
    end: float | None
    #: Its end was written down: the body returned or raised.
    finished: bool


def read(path: Path, deaths: dict[str, float] | None = None) -> list[Attempt]:
    """The attempts written down in the ledger at ``path``.

    :param deaths: when each killed consumer (``host:pid``) died, which ends the attempts it left open.
    """
    deaths = deaths or {}
    starts: dict[tuple, dict] = {}
    ends: dict[tuple, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            key = (entry["job"], entry["attempt"], entry["worker"], entry["thread"])
            if entry["event"] == "start":
                if key in starts:
                    # The same attempt started twice by one thread: impossible unless a record let it.
                    key = (*key, len(starts))
                starts[key] = entry
            else:
                ends[key] = entry["at"]
    return [
        Attempt(e["job"], e["attempt"], e["worker"], e["at"], ends.get(key, deaths.get(e["worker"])), key in ends)
        for key, e in starts.items()
    ]


def overlaps(attempts: list[Attempt]) -> list[tuple[Attempt, Attempt]]:
    """Pairs of attempts of one job that ran at the same time (an attempt with no known end runs on forever)."""
    by_job: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        by_job[attempt.job].append(attempt)
    found = []
    for runs in by_job.values():
        runs.sort(key=lambda a: a.start)
        # The run that ends last among those started so far: any later start before its end overlaps it.
        latest: Attempt | None = None
        for run in runs:
            if latest is not None and (latest.end is None or run.start < latest.end):
                found.append((latest, run))
            if latest is None or (latest.end is not None and (run.end is None or run.end > latest.end)):
                latest = run
    return found


def duplicates(attempts: list[Attempt]) -> list[tuple[str, int]]:
    """(job, attempt) pairs that were started more than once: each attempt number must run once."""
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for attempt in attempts:
        seen[attempt.job, attempt.attempt] += 1
    return [key for key, count in seen.items() if count > 1]
