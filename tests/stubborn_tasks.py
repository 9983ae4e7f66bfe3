"""A consumer module whose timer never reports: ``huey_consumer stubborn_tasks.huey``.

It proves that a job's record ends on time, at its time limit or shortly after
a cancel, whatever its body does.
"""

import time

import tasks
from webapp.worker import create_huey


def stubborn_timer(job, seconds: float, fail: bool = False, crash_attempts: int = 0) -> dict:
    """Wait ``seconds`` without a single progress report, as a body busy computing would."""
    time.sleep(seconds)
    return {"seconds": seconds}


huey = create_huey({**tasks.BODIES, "timer": stubborn_timer})
