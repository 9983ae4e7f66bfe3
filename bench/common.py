"""Shared pieces of the benchmarks: private servers, real consumers, in-process apps and tables.

Every server started here listens on 127.0.0.1 on a free port, and every process is
ended by its own handle (its pid) when the ``ExitStack`` that started it closes.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# The scripts run as ``python bench/<name>.py``; make the app importable from the repository root.
sys.path.insert(0, str(ROOT))

from webapp import create_app  # noqa: E402
from webapp.config import Settings  # noqa: E402
from webapp.store import TERMINAL, JobStore, open_store  # noqa: E402

SECRET_KEY = "bench-only-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(stack: ExitStack, folder: Path) -> str:
    """Start a private redis-server (never the shared one on 6379) and return its base URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*command, "--dir", str(folder)], stdout=subprocess.DEVNULL)
    stack.callback(stop, proc)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                sys.exit("the private redis-server did not start")
            time.sleep(0.05)
    client.close()
    return f"redis://127.0.0.1:{port}"


def settings_for(backend: str, folder: Path, name: str, redis_base: str = "", db: int = 0) -> dict:
    """Settings for one isolated setup: its own SQLite file, or its own Redis database number."""
    settings = {"INSTANCE_PATH": str(folder / f"instance-{name}"), "DATABASE": str(folder / f"{name}.db")}
    settings["REDIS_URL"] = f"{redis_base}/{db}" if backend == "redis" else ""
    # One script submits every job from one session, far past the fair-use limit meant for people.
    settings["MAX_ACTIVE_JOBS"] = 10**9
    return settings


def env_for(settings: dict) -> dict:
    """The environment that makes a consumer or web server use ``settings`` (as tests/conftest.py does)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", SECRET_KEY=SECRET_KEY)
    env.pop("REDIS_URL", None)
    for name, value in settings.items():
        env["REDIS_URL" if name == "REDIS_URL" else f"TASKLIGHT_{name}"] = str(value)
    return env


def start_process(
    stack: ExitStack, command: list[str], settings: dict, log: Path, extra_env: dict | None = None
) -> subprocess.Popen:
    """Start a process from the repository root with ``settings``; it is stopped when ``stack`` closes."""
    env = {**env_for(settings), **(extra_env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    stack.callback(stop, proc)
    return proc


def start_consumer(stack: ExitStack, settings: dict, log: Path, *options: str) -> subprocess.Popen:
    """Start a real ``huey_consumer tasks.huey -w 2`` with extra ``options`` such as ``-m 0.5``."""
    command = [str(VENV_BIN / "huey_consumer"), "tasks.huey", "-w", "2", *options]
    return start_process(stack, command, settings, log)


def procfile_web_options() -> list[str]:
    """The gunicorn options of the Procfile's web process, less its ``--bind`` and its app.

    The benchmarks serve every app (Tasklight and the floor alike) with these, so
    they measure the server as deployed, and stay in step when the Procfile changes.
    """
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    words = shlex.split(line.removeprefix("web:"))
    words = words[words.index("gunicorn") + 1 : -1]  # The last word is the app.
    options = []
    while words:
        word = words.pop(0)
        if word in ("--bind", "-b"):
            words.pop(0)
        elif not word.startswith("--bind="):
            options.append(word)
    return options


def start_gunicorn(
    stack: ExitStack,
    app: str,
    settings: dict,
    log: Path,
    health: str = "/",
    extra_env: dict | None = None,
    options: list[str] | None = None,
) -> str:
    """Start gunicorn with ``options`` (by default the Procfile's), its output to ``log``; return its URL."""
    port = free_port()
    options = procfile_web_options() if options is None else options
    command = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", *options, app]
    base = f"http://127.0.0.1:{port}"
    GUNICORNS[base] = start_process(stack, command, settings, log, extra_env).pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + health, timeout=2).status_code == 200:
                return base
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"gunicorn serving {app} did not start; see {log}")


#: The pid of the gunicorn master serving each base URL this run started.
GUNICORNS: dict[str, int] = {}


def server_cpu_seconds(base: str) -> float:
    """The CPU time (user and system) used so far by the gunicorn serving ``base``: its master and workers."""
    master = GUNICORNS[base]
    pids = [master, *map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split())]
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime and stime, after the command's name.
    return ticks / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen) -> None:
    """End one process that this run started, by its own handle."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Submitter:
    """An in-process app and test client that submits timer jobs as a script would (JSON, CSRF token)."""

    def __init__(self, settings: dict):
        self.app = create_app({"SECRET_KEY": SECRET_KEY, **settings})
        self.client = self.app.test_client()
        self.store: JobStore = self.app.extensions["tasklight"].store
        form = self.client.get("/jobs/new/timer", headers={"Accept": "application/json"})
        self.token = form.get_json()["csrf_token"]

    def submit(self, seconds: float = 0.0) -> str:
        response = self.client.post(
            "/jobs/new/timer",
            data={"csrf_token": self.token, "seconds": str(seconds)},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 202, response.status_code
        return response.get_json()["id"]

    def wait(self, job_id: str, timeout: float = 30.0, interval: float = 0.01):
        """Read the record until the job ends; the times measured are the record's own."""
        deadline = time.monotonic() + timeout
        while (job := self.store.get(job_id)).state not in TERMINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            time.sleep(interval)
        return job


def open_settings_store(settings: dict) -> JobStore:
    return open_store(Settings.load(settings))


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(headers: list[str], rows: list[list]) -> None:
    """Print a Markdown table, so the output can be pasted into docs/BENCHMARKS.md as is."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print()


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, for the header of a run."""
    return ", ".join(f"{n:.2f}" for n in os.getloadavg())


def machine() -> str:
    """One line describing where the figures came from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    return (
        f"nproc={os.cpu_count()}, {cpu}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, Redis {redis_version.removeprefix('v=')}"
    )
