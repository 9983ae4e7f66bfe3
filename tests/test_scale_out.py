"""Scale-out, simulated on one machine: two consumer "hosts" and gunicorn with 4 workers, sharing one Redis.

Each host is a consumer with an instance folder of its own and a host name of its own (a UTS namespace of
its own, where the machine allows one; ``HOSTNAME`` is set too). Jobs must spread across both, every web
worker must give the same record, each record's ``worker`` must name the consumer that really ran the job
(``ledger_tasks`` writes each attempt down), and when one host dies (SIGKILL) its running jobs, and only
those, must become lost, noticed by the other host's reaper.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import ledger_tasks
import pytest
from conftest import ROOT, Consumer, consumer_env
from faults import Script, gunicorns

from webapp.store import LOST, SUCCEEDED, TERMINAL

redis_only = pytest.mark.parametrize("backend", ["redis"], indirect=True)


def can_name_hosts() -> bool:
    """Whether this machine lets a process have a host name of its own (root, with user namespaces or not)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    check = subprocess.run([unshare, "--uts", "hostname", "tasklight-check"], capture_output=True, timeout=10)
    return check.returncode == 0


class Host(Consumer):
    """A consumer as if on a host of its own: its own instance folder, ``HOSTNAME``, and, where possible, its
    own host name, which the record's ``worker`` (``host:pid``) then shows."""

    def __init__(self, name: str, settings: dict, folder, ledger, named: bool):
        folder.mkdir()
        own = {**settings, "INSTANCE_PATH": str(folder / "instance")}
        env = {"HOSTNAME": name, "TASKLIGHT_LEDGER": str(ledger)}
        super().__init__(own, folder / "consumer.log", workers=2, module="ledger_tasks.huey", env=env)
        self.name = name
        self.named = named

    def start(self) -> Host:
        command = [sys.executable, "-m", "huey.bin.huey_consumer", self.module, "-w", str(self.workers), "-m", "0.1"]
        if self.named:
            # unshare and sh both exec, so the pid is the consumer's own.
            command = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *command]
        env = {**consumer_env(self.settings), **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        return self

    @property
    def worker(self) -> str:
        """How the records name this consumer."""
        return f"{self.name if self.named else socket.gethostname()}:{self.proc.pid}"


@pytest.fixture
def hosts(settings, tmp_path):
    settings.update(HEARTBEAT_INTERVAL=0.2, HEARTBEAT_TIMEOUT=2.0, REQUEUE_AFTER=2.0)
    named = can_name_hosts()
    ledger = tmp_path / "ledger.jsonl"
    started = [Host(name, settings, tmp_path / name, ledger, named).start() for name in ("host-a", "host-b")]
    yield started, ledger
    for host in started:
        host.stop()


@pytest.fixture
def web(settings, tmp_path):
    with gunicorns(settings, tmp_path) as start:
        yield start(workers=4)


@redis_only
def test_jobs_spread_over_two_hosts_and_a_dead_host_is_noticed(hosts, web, store):
    (a, b), ledger = hosts
    script = Script(web.base)
    # Spread: short jobs, more than the four worker threads at once.
    ids = [script.submit(seconds=f"{0.3 + (n % 4) * 0.15:.2f}").json()["id"] for n in range(24)]
    states = script.wait_all(ids, timeout=40)
    assert set(states.values()) == {SUCCEEDED}, states
    records = {job_id: store.get(job_id) for job_id in ids}
    spread = {host.worker: sum(1 for r in records.values() if r.worker == host.worker) for host in (a, b)}
    print({"spread": spread, "named hosts": a.named})
    assert sum(spread.values()) == len(ids), (spread, {r.worker for r in records.values()})
    assert min(spread.values()) >= len(ids) // 6, spread
    # Each record names the consumer that ran the job, by the ledger written outside the store.
    ran = {attempt.job: attempt.worker for attempt in ledger_tasks.read(ledger)}
    assert {job_id: record.worker for job_id, record in records.items()} == ran
    # Every web worker gives the same record: eight reads of each job, spread over gunicorn's four workers.
    for job_id in ids[:6]:
        answers = {script.job(job_id).text for _ in range(8)}
        assert len(answers) == 1, answers

    # A host dies. Long jobs run on both hosts; host-a is killed; only its jobs become lost.
    long = [script.submit(seconds="8").json()["id"] for _ in range(4)]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        running = {job.id: job.worker for job in store.running()}
        if len(running) == 4 and set(running.values()) == {a.worker, b.worker}:
            break
        time.sleep(0.05)
    assert set(running.values()) == {a.worker, b.worker}, running
    a.signal(signal.SIGKILL)
    a.wait(10)
    killed = time.monotonic()
    on_a = {job_id for job_id, worker in running.items() if worker == a.worker}
    # Watched through list(), which never marks anything itself: host-b's reaper must notice.
    while time.monotonic() - killed < 15:
        now = {job.id: job for job in store.list(limit=50) if job.id in on_a}
        if all(job.state == LOST for job in now.values()):
            break
        time.sleep(0.1)
    noticed = time.monotonic() - killed
    print({"lost after (s)": round(noticed, 1), "jobs on the dead host": len(on_a)})
    assert all(job.state == LOST for job in now.values()), now
    # The heartbeat timeout (2 s), plus the age of the last beat and the reaper's interval, with room to spare.
    assert noticed < 8
    while a.worker in store.live_workers() and time.monotonic() - killed < 10:
        time.sleep(0.1)
    assert b.worker in store.live_workers() and a.worker not in store.live_workers()
    final = script.wait_all(long, timeout=20)
    assert {job_id: state for job_id, state in final.items() if job_id not in on_a} == {
        job_id: SUCCEEDED for job_id in long if job_id not in on_a
    }
    assert all(state in TERMINAL for state in final.values())
