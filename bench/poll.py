"""Cost of one status poll, ``GET /jobs/<id>/status``, against a real gunicorn (2 sync workers).

For a finished, a running and a queued job on each backend, one client sends a bounded
number of sequential requests of three sorts: (a) a full 200 fragment, (b) the same
request with ``If-None-Match`` answered 304, and (c) the JSON view. The cells are
interleaved in rounds so that machine noise falls on all of them alike. It prints
requests/s (one sequential client) and p50/p95 latency, with p50 ratios against the
baseline, the 200 fragment of a finished job on SQLite (below 1 is faster). Gunicorn's
sync workers close every connection, so each request includes a loopback TCP connect, as
a browser's poll through a sync worker does.

It also counts the store round trips of one poll (SQL statements or Redis commands)
in process, through Flask's test client, on the same records.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests
from common import (
    SECRET_KEY,
    VENV_BIN,
    Submitter,
    create_app,
    free_port,
    machine,
    percentile,
    print_table,
    settings_for,
    start_process,
    start_redis,
)

from webapp.store import SUCCEEDED

BACKENDS = ("sqlite", "redis")
STATES = ("succeeded", "running", "queued")
MODES = ("200 fragment", "304 fragment", "JSON")
# The server must not mark the fake running job lost, nor forget the fake worker, mid-run.
EXTRA = {"HEARTBEAT_TIMEOUT": 3600}


def prepare(settings: dict) -> tuple[dict[str, str], str]:
    """Make one job in each state, created an hour ago so that the poll interval (and ETag) stays put."""
    submitter = Submitter(settings)
    store = submitter.store
    jobs = {state: submitter.submit(3600) for state in STATES}
    for job_id in jobs.values():
        store.update(job_id, {"created_at": time.time() - 3600})
    # No consumer runs: the benchmark moves the records itself, as a worker would.
    for state in ("succeeded", "running"):
        store.start(jobs[state], "bench:1")
        store.update(jobs[state], {"progress": {"done": 1800, "total": 3600, "message": "1800 of 3600 s"}})
    store.finish(jobs["succeeded"], SUCCEEDED, {"result": {"seconds": 3600}})
    store.beat_worker("bench:1")
    return jobs, submitter.client.get_cookie("session").value


def in_process(settings: dict, jobs: dict[str, str], cookie: str, n: int) -> dict[tuple[str, str], tuple[int, float]]:
    """Store round trips and median time of one poll, in a fresh in-process app reading the same records.

    Without HTTP, sockets and a client, this is the app's own share of a poll.
    """
    app = create_app({"SECRET_KEY": SECRET_KEY, **settings})
    store = app.extensions["tasklight"].store
    client = app.test_client()
    client.set_cookie("session", cookie)
    calls = 0

    def count(*args) -> None:
        nonlocal calls
        calls += 1

    if settings["REDIS_URL"]:
        execute = store.redis.execute_command

        def counted(*args, **kwargs):
            count()
            return execute(*args, **kwargs)

        store.redis.execute_command = counted
    else:
        store.ping()  # Opens this thread's connection so that it can be traced.
        store._local.conn.set_trace_callback(count)
    figures = {}
    for state, job_id in jobs.items():
        url = f"/jobs/{job_id}/status"
        for mode, headers in headers_for(client.get(url).headers["ETag"]).items():
            calls = 0
            client.get(url, headers=headers)
            trips = calls
            times = []
            for _ in range(n):
                start = time.perf_counter()
                client.get(url, headers=headers)
                times.append(time.perf_counter() - start)
            figures[(state, mode)] = (trips, percentile(times, 0.5))
    return figures


def headers_for(etag: str) -> dict[str, dict[str, str]]:
    html = {"Accept": "text/html", "HX-Request": "true"}
    return {MODES[0]: html, MODES[1]: {**html, "If-None-Match": etag}, MODES[2]: {"Accept": "application/json"}}


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"the server at {url} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per cell (default 600)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="100 requests per cell in 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 100, 2
    per_round = max(1, args.requests // args.rounds)

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tasklight-bench-") as tmp:
        folder = Path(tmp)
        redis_base = start_redis(stack, folder)
        cells = []
        app_figures = {}
        for backend in BACKENDS:
            settings = {**settings_for(backend, folder, f"poll-{backend}", redis_base), **EXTRA}
            jobs, cookie = prepare(settings)
            app_figures[backend] = in_process(settings, jobs, cookie, per_round * args.rounds // 2)
            port = free_port()
            command = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2", "wsgi:app"]
            start_process(stack, command, settings, folder / f"gunicorn-{backend}.log")
            base = f"http://127.0.0.1:{port}"
            wait_until_up(base + "/")
            session = requests.Session()
            session.cookies.set("session", cookie)
            for state, job_id in jobs.items():
                url = f"{base}/jobs/{job_id}/status"
                etag = session.get(url, headers=headers_for("")[MODES[0]]).headers["ETag"]
                for mode, headers in headers_for(etag).items():
                    expected = 304 if mode == MODES[1] else 200
                    cells.append({"key": (backend, state, mode), "session": session, "url": url, "headers": headers,
                                  "expected": expected, "times": [], "wrong": 0})  # fmt: skip

        for n in range(args.rounds):
            # Rotate the order each round, so that no cell always runs first or last.
            for cell in cells[n % len(cells) :] + cells[: n % len(cells)]:
                for _ in range(per_round):
                    start = time.perf_counter()
                    response = cell["session"].get(cell["url"], headers=cell["headers"])
                    cell["times"].append(time.perf_counter() - start)
                    cell["wrong"] += response.status_code != cell["expected"]
                    cell["bytes"] = len(response.content)

    print(f"# Status poll cost ({per_round * args.rounds} sequential requests per cell, {args.rounds} rounds)")
    print(f"# {machine()}\n")
    baseline = app_baseline = None
    rows = []
    for cell in cells:
        backend, state, mode = cell["key"]
        times = cell["times"]
        rate = len(times) / sum(times)
        p50, p95 = percentile(times, 0.5) * 1000, percentile(times, 0.95) * 1000
        baseline = baseline or p50
        wrong = f" ({cell['wrong']} not {cell['expected']})" if cell["wrong"] else ""
        rows.append([backend, state, mode + wrong, f"{rate:.0f}", f"{p50:.2f}", f"{p95:.2f}", f"{p50 / baseline:.2f}x"])
        rows[-1].append(cell["bytes"])
        trips, app_time = app_figures[backend][(state, mode)]
        app_baseline = app_baseline or app_time
        rows[-1] += [f"{app_time * 1000:.2f}", f"{app_time / app_baseline:.2f}x", trips]
    headers = ["backend", "job", "request", "req/s", "p50 ms", "p95 ms", "p50 vs baseline", "body bytes"]
    headers += ["in-app p50 ms", "in-app p50 vs baseline", "store round trips"]
    print_table(headers, rows)


if __name__ == "__main__":
    main()
