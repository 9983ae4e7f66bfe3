"""Tasklight's Huey module, and the body of each kind of job: run ``huey_consumer tasks.huey`` to start a worker.

A body is a plain function that takes a ``JobContext`` and the job's inputs,
reports progress through the context, returns a JSON-serialisable result and
signals failure by raising: ``JobError`` for a message meant for the owner,
anything else for an unexpected failure that only admins see the details of.
Each kind is declared in ``webapp/kinds.py``; ``huey`` below refuses to start
unless every kind there has exactly one body here.
"""

import hashlib
import time

from webapp.profiling import CsvFormatError, profile_csv
from webapp.worker import JobContext, JobError, create_huey

#: Bytes hashed between progress reports.
CHUNK = 1024 * 1024


def timer(job: JobContext, seconds: float, fail: bool = False, crash_attempts: int = 0) -> dict:
    """Wait ``seconds``, reporting progress about every 100 ms."""
    if job.attempt <= crash_attempts:
        raise RuntimeError(f"crashing on attempt {job.attempt} as asked")
    job.log(f"Waiting {seconds:g} s{' (a re-run)' if job.rerun_of else ''}.")
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        job.report(elapsed, seconds, f"{elapsed:.1f} of {seconds:g} s")
        time.sleep(min(0.1, seconds - elapsed))
    job.report(seconds, seconds, "Done.")
    if fail:
        raise JobError(f"The timer failed after {seconds:g} s, as you asked.")
    return {"seconds": seconds}


def checksum(job: JobContext, algorithm: str) -> dict:
    """Hash the uploaded file, reporting progress by bytes."""
    data = job.open_upload()
    size = len(data.getbuffer())
    digest = hashlib.new(algorithm)
    job.log(f"Hashing {size:,} bytes with {algorithm}.")
    done = 0
    while chunk := data.read(CHUNK):
        digest.update(chunk)
        done += len(chunk)
        job.report(done, size, f"{done:,} of {size:,} bytes")
    job.report(size, size, "Done.")
    return {"algorithm": algorithm, "hexdigest": digest.hexdigest(), "size": size}


def csv_profile(job: JobContext) -> dict:
    """Profile every column of the uploaded CSV file, reporting progress by bytes."""
    data = job.open_upload()
    size = len(data.getbuffer())
    try:
        profile = profile_csv(data, size, lambda done, total: job.report(done, total, f"{done:,} of {total:,} bytes"))
    except CsvFormatError as exc:
        raise JobError(str(exc)) from exc
    job.log(f"Profiled {profile['rows']:,} rows in {len(profile['columns'])} columns.")
    return profile


#: The body of each kind of job, by the kind's name.
BODIES = {"timer": timer, "checksum": checksum, "csv_profile": csv_profile}

huey = create_huey(BODIES)
