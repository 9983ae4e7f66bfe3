"""Fixtures: the app on either backend, a private Redis server, real consumers and one headless Chromium."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, sync_playwright

from webapp import create_app
from webapp.config import Settings
from webapp.store import open_store

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["sqlite", "redis"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private Redis on a free port, never the shared one on 6379."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; run scripts/test, which installs it")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the private redis-server did not start")
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def settings(backend, tmp_path, request) -> dict:
    """Settings shared by the app under test and its consumers."""
    redis_url = ""
    if backend == "redis":
        redis_url = request.getfixturevalue("redis_server")
        # The server is private to this test run, so emptying it is safe.
        redis.Redis.from_url(redis_url).flushdb()
    return {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE": str(tmp_path / "tasklight.db"),
        "REDIS_URL": redis_url,
        "HEARTBEAT_INTERVAL": 0.2,
        "HEARTBEAT_TIMEOUT": 2.0,
        "MAX_UPLOAD_BYTES": 1024 * 1024,
        # Tests submit many jobs from one session; the fair-use limits have tests of their own.
        "MAX_ACTIVE_JOBS": 1000,
        # Shows the timer's crash_attempts, which the retry tests use.
        "DIAGNOSTICS": True,
    }


@pytest.fixture
def make_app(settings):
    """Create apps on the test's backend, with ``config`` on top of its settings; each is closed at teardown."""
    made = []

    def make(**config):
        app = create_app({"TESTING": True, "SECRET_KEY": "test", **settings, **config})
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["tasklight"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def store(settings):
    """The test's store, opened directly, as a consumer or a script would."""
    store = open_store(Settings.load(settings))
    yield store
    store.close()


@pytest.fixture
def client(app):
    return app.test_client()


def consumer_env(settings: dict) -> dict:
    # The tests folder is importable too, for consumer modules written for a test.
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    env.pop("REDIS_URL", None)
    for name, value in settings.items():
        if name == "REDIS_URL":
            env["REDIS_URL"] = value
        else:
            env[f"TASKLIGHT_{name}"] = str(value)
    return env


class Consumer:
    """A real ``huey_consumer tasks.huey`` subprocess (or another consumer module, such as a test's own)."""

    def __init__(self, settings: dict, log: Path, workers: int = 2, module: str = "tasks.huey", env=None, args=()):
        self.settings = settings
        self.log = log
        self.workers = workers
        self.module = module
        #: Extra environment, such as libfaketime's to give the consumer a clock of its own.
        self.env = env or {}
        #: Extra consumer options, such as ``-k process``.
        self.args = list(args)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Consumer":
        command = [sys.executable, "-m", "huey.bin.huey_consumer", self.module, "-w", str(self.workers), "-m", "0.1"]
        env = {**consumer_env(self.settings), **self.env}
        with open(self.log, "ab") as log:
            # A session of its own, so that stop() ends its process workers too.
            self.proc = subprocess.Popen(
                [*command, *self.args], cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
            )
        return self

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Kill the consumer and any process workers it forked (its process group, which it leads)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_consumer(settings, tmp_path):
    """Start real consumers on the test's backend; all are killed at teardown."""
    started: list[Consumer] = []

    def start(workers: int = 2, module: str = "tasks.huey", env=None, args=()) -> Consumer:
        log = tmp_path / f"consumer-{len(started)}.log"
        consumer = Consumer(settings, log, workers, module, env, args).start()
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer.stop()


@pytest.fixture
def consumer(start_consumer):
    return start_consumer()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole run; a missing Chromium fails, it never skips."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test, which installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
