"""Pieces the fault tests share: a Redis that can be stopped and started again with its data, gunicorn,
and a client that talks to a live server as a script does (JSON, a cookie jar, the CSRF header).

Every process here listens on 127.0.0.1 on a free port and is ended by its own handle.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from conftest import ROOT, consumer_env, free_port
from helpers import JSON

from webapp.store import TERMINAL


class OwnRedis:
    """A redis-server of one test's own, on a free port of 127.0.0.1, which the test may break.

    With ``durable`` it keeps its data on disk (append-only file, fsync'd on every write), so that
    it can be stopped, hung or killed, and started again on the same port with the same data.
    """

    def __init__(self, folder: Path, durable: bool = True):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed; run scripts/test, which installs it")
        self.folder = folder
        self.durable = durable
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        #: For the test's own commands; it connects again after a restart.
        self.client = redis.Redis(port=self.port, socket_timeout=5)
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 10) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        command += ["--dir", str(self.folder)]
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        client = redis.Redis(port=self.port, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.close()
                        pytest.fail("the test's own redis-server did not start: " + self.log()[-2000:])
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop the server: SIGTERM shuts it down cleanly, SIGKILL as a crash would."""
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signum)
        self.proc.wait(10)

    @contextlib.contextmanager
    def hung(self) -> Iterator[None]:
        """The server hangs (SIGSTOP): connections open, but nothing is answered until the block ends."""
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return (self.folder / "redis.log").read_text(errors="replace")


class Gunicorn:
    """``gunicorn wsgi:app`` with sync workers on a port of its own, started and stopped as a deploy would."""

    def __init__(self, settings: dict, log: Path, workers: int = 2, port: int | None = None, args=()):
        self.settings = settings
        self.log = log
        self.workers = workers
        self.port = port or free_port()
        self.args = list(args)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> Gunicorn:
        binary = Path(sys.executable).with_name("gunicorn")
        command = [str(binary), "--workers", str(self.workers), "--bind", f"127.0.0.1:{self.port}", *self.args]
        env = {**consumer_env(self.settings), "SECRET_KEY": "test"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*command, "wsgi:app"], cwd=ROOT, env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(self.base + "/", timeout=5)
                return self
            except requests.RequestException:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail("gunicorn did not start: " + self.output()[-3000:])
                time.sleep(0.1)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> None:
        """SIGTERM: graceful (workers finish their requests); SIGKILL if it is still there after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Script:
    """A client of a live server that behaves as a script would: a cookie jar, JSON, the CSRF token as a header."""

    def __init__(self, base: str, timeout: float = 10):
        self.base = base
        self.timeout = timeout
        self.http = requests.Session()
        self.token = self.http.get(f"{base}/jobs/new/timer", headers=JSON, timeout=timeout).json()["csrf_token"]

    def submit(self, kind: str = "timer", **fields) -> requests.Response:
        headers = {**JSON, "X-CSRFToken": self.token}
        return self.http.post(f"{self.base}/jobs/new/{kind}", data=fields, headers=headers, timeout=self.timeout)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.base + path, timeout=self.timeout, **kwargs)

    def job(self, job_id: str) -> requests.Response:
        return self.get(f"/jobs/{job_id}", headers=JSON)

    def wait_all(self, ids, timeout: float) -> dict[str, str]:
        """Poll each job until it ends or ``timeout`` passes; returns each one's last state ("?" if never read)."""
        states = dict.fromkeys(ids, "?")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for job_id in [i for i, s in states.items() if s not in TERMINAL]:
                with contextlib.suppress(requests.RequestException):
                    answer = self.job(job_id)
                    if answer.status_code == 200:
                        states[job_id] = answer.json()["state"]
            if all(state in TERMINAL for state in states.values()):
                break
            time.sleep(0.2)
        return states

    def close(self) -> None:
        self.http.close()


def tally(states: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return counts


@contextlib.contextmanager
def gunicorns(settings: dict, folder: Path) -> Iterator[Callable[..., Gunicorn]]:
    """Start gunicorns on ``settings``; each is killed when the block ends (for a test's fixture)."""
    started: list[Gunicorn] = []

    def start(workers: int = 2, port: int | None = None, args=()) -> Gunicorn:
        server = Gunicorn(settings, folder / f"gunicorn-{len(started)}.log", workers, port, args)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop(signal.SIGKILL)
