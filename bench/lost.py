"""How long after a worker is SIGKILLed its running job is shown as lost.

For each backend and each heartbeat setting, start a real consumer, start a
long timer job, SIGKILL the consumer mid-job and time until the job's record
says ``lost``, in two ways:

- read: nothing else runs; a page poll (one ``store.get`` every 0.5 s) notices;
- reaper: a second consumer is running and nothing reads the job; its reaper
  notices (the state is watched through ``store.list``, which never reaps).

The expected figure is the heartbeat timeout plus up to one heartbeat interval
(the age of the last beat when the worker died), plus the reaper's own
interval for the reaper path.
"""

import argparse
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import Submitter, machine, print_table, settings_for, start_consumer, start_redis

from webapp.store import LOST


def measure(settings: dict, folder: Path, via_reaper: bool) -> float:
    """Seconds from SIGKILL to ``lost`` for one job."""
    with ExitStack() as stack:
        submitter = Submitter(settings)
        stack.callback(submitter.app.extensions["tasklight"].close)
        victim = start_consumer(stack, settings, folder / "victim.log", "-m", "0.1")
        job_id = submitter.submit(seconds=600)
        while submitter.store.get(job_id).state != "running":
            time.sleep(0.02)
        if via_reaper:
            start_consumer(stack, settings, folder / "reaper.log", "-m", "0.1")
        time.sleep(float(settings["HEARTBEAT_INTERVAL"]) * 1.5)  # the job has been beating for a while
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed = time.monotonic()
        while True:
            if via_reaper:
                state = next(j.state for j in submitter.store.list() if j.id == job_id)
            else:
                state = submitter.store.get(job_id).state
            if state == LOST:
                return time.monotonic() - killed
            time.sleep(0.5 if not via_reaper else 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the shortened heartbeat (interval 1 s, timeout 5 s)")
    args = parser.parse_args()
    heartbeats = [(1.0, 5.0)] if args.quick else [(1.0, 5.0), (5.0, 30.0)]
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        redis_base = start_redis(stack, folder)
        n = 0
        for interval, timeout in heartbeats:
            for backend in ("sqlite", "redis"):
                for via_reaper in (False, True):
                    n += 1
                    settings = settings_for(backend, folder, f"lost{n}", redis_base, db=n % 16)
                    settings.update(HEARTBEAT_INTERVAL=interval, HEARTBEAT_TIMEOUT=timeout)
                    seconds = measure(settings, folder, via_reaper)
                    path = "reaper" if via_reaper else "read"
                    rows.append(
                        [backend, f"{interval:g} / {timeout:g}", path, f"{seconds:.1f}", f"{seconds / timeout:.2f}"]
                    )
                    print(f"  {backend} {interval:g}/{timeout:g} {path}: {seconds:.1f} s", flush=True)
    print()
    print_table(["backend", "heartbeat interval / timeout (s)", "noticed by", "kill to lost (s)", "÷ timeout"], rows)


if __name__ == "__main__":
    main()
