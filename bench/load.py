"""Capacity of the status route under concurrent load, against a floor app, with wrk and many polling browsers.

Part 1 (wrk): two Tasklight servers (Redis and SQLite) and two floor servers (bench/floor.py:
one Redis GET or one SQLite SELECT by primary key, plus a ~500-byte template) all run under
gunicorn with the same options, the Procfile's web options (``--access-log on`` or ``off``
adds or drops gunicorn's access log for all four alike). Each Tasklight server has one
running job, moved through the store and backdated an hour so that its ETag stays put, and
its overload guard off (``OVERLOAD_WAIT=0``): wrk's 50 connections keep the server saturated on
purpose, and this part measures the route's speed, not how the server sheds load.
``wrk -t2 -c50 --latency`` drives each cell for ``--seconds``: the 200 fragment, the same
request with ``If-None-Match`` (304), the JSON view, and the floor. The cells are interleaved
in ``--rounds`` rounds whose order rotates; medians are reported, with ratios against the
floor of the same backend. A wrk Lua script counts the status codes, so wrong answers show.

Part 2 (browsers): on a third Tasklight server, on the same Redis store, with the overload
guard as configured (``--no-guard`` turns it off), K simulated browsers (asyncio; each holds one
HTTP/1.1 connection, kept alive while the server keeps it, as a browser does), each with
its own session cookie (signed with the app's own serializer; an owner and a CSRF token, as after a
submit) and its own running job (made through the store), poll that job's status every 2 s for ``--duration`` s with
``If-None-Match``, as htmx does: on a fixed schedule, skipping a tick while the previous
request is still in flight (with ``--follow``, at the interval each answer gives, as htmx does).
It reports requests sent, answered (and how many with a quick 503), errors, timeouts (10 s),
ticks skipped, latency p50/p99, how late and how busy the client itself was (it shares the
cores with the servers), and the host's listen-queue overflows (connections a full backlog dropped).
The same browsers then poll the Redis floor's route, and each run gives the server's and the
client's CPU time per answer: what the route costs, against what gunicorn, the kernel and the
client cost on the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import floor
import requests
from common import (
    ROOT,
    Submitter,
    load_average,
    machine,
    median,
    percentile,
    print_table,
    procfile_web_options,
    server_cpu_seconds,
    settings_for,
    start_gunicorn,
    start_redis,
)

BACKENDS = ("redis", "sqlite")
HTML = {"Accept": "text/html", "HX-Request": "true"}
TRIGGER = re.compile(rb'hx-trigger="every ([0-9.]+)s"')
#: The headers a fragment asks htmx to send with its next poll (the state and timeline the page shows).
HX_HEADERS = re.compile(rb"hx-headers='([^']*)'")


def hx_headers(body: bytes) -> dict:
    """The headers htmx sends with the next poll of the fragment in ``body``, from its ``hx-headers``."""
    found = HX_HEADERS.search(body)
    return json.loads(found[1]) if found else {}


# The servers must not mark the benchmark's running jobs lost mid-run: no consumer beats for them.
EXTRA = {"HEARTBEAT_TIMEOUT": 3600}
# Counts the status codes of every thread and prints them, with the summary, as "BENCH" lines.
LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do io.write(string.format("BENCH status%d %d\\n", status, n)) end
  end
  local e = summary.errors
  io.write(string.format("BENCH requests %d\\nBENCH duration %d\\n", summary.requests, summary.duration))
  io.write(string.format("BENCH errors %d\\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("BENCH p50 %d\\nBENCH p99 %d\\n", latency:percentile(50), latency:percentile(99)))
end
"""


def gunicorn_options(access_log: str) -> list[str]:
    """The Procfile's web options, with gunicorn's access log (to the server's output) as ``access_log`` says."""
    options = procfile_web_options()
    if access_log != "procfile" and "--access-logfile" in options:
        at = options.index("--access-logfile")
        del options[at : at + 2]
    if access_log == "on":
        options += ["--access-logfile", "-"]
    return options


def ensure_wrk() -> str:
    """Return the path of wrk, installing it with apt-get first if it is missing."""
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk")


def prepare(settings: dict) -> tuple[Submitter, object, str, str]:
    """Submit a timer job and move it to running, half done; return (submitter, its queued record, id, cookie)."""
    submitter = Submitter(settings)
    store = submitter.store
    job_id = submitter.submit(3600)
    store.update(job_id, {"created_at": time.time() - 3600})
    template = store.get(job_id)  # Still queued: the browsers' jobs are made from this record.
    move_to_running(store, job_id)
    store.beat_worker("bench:1")
    return submitter, template, job_id, submitter.client.get_cookie("session").value


def move_to_running(store, job_id: str) -> None:
    """Start a queued job as a worker would, and report half of its progress."""
    store.start(job_id, "bench:1")
    store.update(job_id, {"progress": {"done": 1800, "total": 3600, "message": "1800 of 3600 s"}})


def run_wrk(wrk: str, url: str, headers: dict, seconds: int, script: Path) -> dict:
    """One wrk run; return req/s, p50/p99 in ms, status counts and socket errors."""
    command = [wrk, "-t2", "-c50", f"-d{seconds}s", "--latency", "-s", str(script), url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    figures: dict[str, int] = {}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            _, name, value = line.split()
            figures[name] = figures.get(name, 0) + int(value)
    statuses = {int(k[6:]): v for k, v in figures.items() if k.startswith("status")}
    return {
        "rate": figures["requests"] / figures["duration"] * 1e6,
        "p50": figures["p50"] / 1000,
        "p99": figures["p99"] / 1000,
        "statuses": statuses,
        "errors": figures["errors"],
    }


def listen_overflows() -> int:
    """The host's count of connections dropped because a listen queue was full (a server's backlog overflowed)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["ListenOverflows"])


def make_browsers(submitter: Submitter, template, count: int, age: float | None = None) -> list[tuple[str, str]]:
    """``count`` (job id, cookie) pairs: a new session owner each, whose running job is made through the store.

    With ``age``, each job was created that many seconds ago, instead of an hour ago as ``template`` was.
    """
    serializer = submitter.app.session_interface.get_signing_serializer(submitter.app)
    pairs = []
    for _ in range(count):
        owner = uuid.uuid4().hex
        job = replace(template, id=uuid.uuid4().hex, owner=owner)
        if age is not None:
            job = replace(job, created_at=submitter.store.now() - age)
        submitter.store.create(job)
        move_to_running(submitter.store, job.id)
        # As a person's session after a submit: its owner, and the raw CSRF token its forms were signed from.
        pairs.append((job.id, serializer.dumps({"owner": owner, "csrf_token": uuid.uuid4().hex})))
    return pairs


class BrowserConnection:
    """One browser's HTTP/1.1 connection to the site it polls, kept alive between polls as a browser keeps it.

    A lean client of its own, not aiohttp's, because the client shares the server's two cores: it
    spends less CPU per poll (0.16 to 0.21 ms against aiohttp's 0.24 ms on one machine, and its
    p99 at 4,000 browsers was a quarter or less of what aiohttp's gave: docs/BENCHMARKS.md, §8), so the
    load it sends is more the server's to bear than its own.
    When the server closes the connection (a sync worker closes each one; a threaded one closes it
    once idle past its keep-alive), the next poll opens a new one, and a poll that finds it closed
    before any answer came is sent again on a new one, as a browser does with a GET.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.opened = 0

    async def get(self, request: bytes, again: bool = True) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send a whole request; return the answer's status, headers (lower-case names) and body."""
        fresh = self.streams is None
        if fresh:
            self.streams = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        reader, writer = self.streams
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if fresh or not again:
                raise
            return await self.get(request, again=False)  # The server had closed it: once more, on a new one.
        status_line, *lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", 0))
        body = await reader.readexactly(length) if length else b""
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return int(status_line.split()[1]), headers, body

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def http_request(host: str, path: str, headers: dict) -> bytes:
    """A GET as a browser sends it on a kept-alive connection."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def poll_browsers(
    base: str, pairs: list, duration: float, interval: float, timeout: float, follow: bool = False
) -> dict:
    """Let every browser poll its path every ``interval`` s for ``duration`` s, as htmx would; return the tallies.

    ``pairs`` holds each browser's (path, session cookie).

    With ``follow``, each browser polls at the interval the server last gave it (the fragment's
    ``hx-trigger="every Ns"``), as htmx does after each swap; a 304 or an error keeps the interval.
    """
    stats = {"sent": 0, "answered": 0, "busy": 0, "errors": 0, "timeouts": 0, "skipped": 0, "connections": 0}
    stats |= {"latencies": [], "lags": [], "intervals": [], "timeline": []}
    loop = asyncio.get_running_loop()
    site = base.removeprefix("http://")
    host, port = site.rsplit(":", 1)

    async def poll(connection: BrowserConnection, request: dict, scheduled: float, learned: dict, pace: dict) -> None:
        """One poll; ``learned`` holds what the last answers taught the browser to send (ETag, hx-headers)."""
        sent = loop.time()
        stats["sent"] += 1
        stats["lags"].append(sent - scheduled)
        status = None
        try:
            wire = http_request(site, request["path"], {**request["headers"], **learned})
            status, headers, body = await asyncio.wait_for(connection.get(wire), timeout)
            stats["answered"] += 1
            stats["latencies"].append(loop.time() - sent)
            if status == 503:
                stats["busy"] += 1  # htmx swaps nothing and polls again on the next tick.
            elif status not in (200, 304):
                stats["errors"] += 1
            elif b"etag" in headers:
                learned["If-None-Match"] = headers[b"etag"].decode()
            if status == 200:
                learned.update(hx_headers(body))
            if follow and status == 200 and (trigger := TRIGGER.search(body)):
                pace["interval"] = float(trigger[1])
        except TimeoutError:
            connection.close()  # Its answer may still come: the connection cannot be used again.
            stats["timeouts"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            connection.close()
            stats["errors"] += 1
        # When it was sent (from the start), how long its answer took (None: no answer), its status, the interval.
        stats["timeline"].append((sent - start, loop.time() - sent if status else None, status, pace["interval"]))

    async def browser(path: str, cookie: str, first: float, end: float) -> None:
        request = {"path": path, "headers": {**HTML, "Cookie": f"session={cookie}"}}
        connection, learned = BrowserConnection(host, int(port)), {}
        in_flight, tick, pace = None, first, {"interval": interval}
        while tick < end:
            await asyncio.sleep(max(0.0, tick - loop.time()))
            if in_flight is not None and not in_flight.done():
                stats["skipped"] += 1  # htmx drops a poll while the element's previous request is in flight.
            else:
                in_flight = asyncio.create_task(poll(connection, request, tick, learned, pace))
            tick += pace["interval"]
        if in_flight is not None:
            await in_flight
        connection.close()
        stats["intervals"].append(pace["interval"])
        stats["connections"] += connection.opened

    start = loop.time() + 1.0
    # Browsers arrive spread over the first interval, as people's page loads would.
    browsers = [browser(j, c, start + random.uniform(0, interval), start + duration) for j, c in pairs]
    await asyncio.wait_for(asyncio.gather(*browsers), duration + timeout + 60)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration of each cell in each round (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved wrk rounds (default 2; 0: browsers only)")
    parser.add_argument("--browsers", default="500,1000,2000", help="browser counts (default 500,1000,2000)")
    parser.add_argument("--duration", type=float, default=30, help="seconds each browser run lasts (default 30)")
    parser.add_argument("--quick", action="store_true", help="3 s cells, 10 s browser runs")
    parser.add_argument(
        "--follow",
        action="store_true",
        help="browsers poll at the interval the server gives them, as htmx does (their jobs start 15 s old: 2 s)",
    )
    parser.add_argument(
        "--no-guard", action="store_true", help="browsers poll a server without the overload guard (OVERLOAD_WAIT=0)"
    )
    parser.add_argument(
        "--access-log",
        choices=("procfile", "on", "off"),
        default="procfile",
        help="gunicorn's access log for every server alike: as the Procfile has it (default), or on or off",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.duration = 3, 10
    counts = [int(n) for n in args.browsers.split(",") if n]
    print(f"# Status route under load: wrk -t2 -c50, {args.seconds} s a cell, {args.rounds} rounds")
    wrk = ensure_wrk()
    print(f"# {machine()}, wrk {subprocess.run([wrk, '-v'], capture_output=True, text=True).stdout.split()[1]}")
    options = gunicorn_options(args.access_log)
    print(f"# gunicorn options of every server (Tasklight and floor alike): {' '.join(options)}")
    guard = "off" if args.no_guard else "on"
    print(f"# Tasklight's overload guard and pacing: off for wrk, {guard} for the browsers")
    print(f"# load average at start: {load_average()}\n", flush=True)

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tasklight-bench-") as tmp:
        folder = Path(tmp)
        script = folder / "count.lua"
        script.write_text(LUA)
        redis_base = start_redis(stack, folder)
        cells, servers, floor_bases = [], {}, {}
        for db, backend in enumerate(BACKENDS):
            settings = {**settings_for(backend, folder, f"load-{backend}", redis_base, db=db), **EXTRA}
            submitter, template, job_id, cookie = prepare(settings)
            # wrk measures the route's speed at saturation: without the guard, which would shed some of its
            # closed-loop requests, and without the pacing, which would change the ETag of the 304 cell.
            unguarded = {**settings, "OVERLOAD_WAIT": 0}
            base = start_gunicorn(stack, "wsgi:app", unguarded, folder / f"gunicorn-{backend}.log", options=options)
            servers[backend] = (submitter, template, settings)
            url = f"{base}/jobs/{job_id}/status"
            page = {**HTML, "Cookie": f"session={cookie}"}
            first = requests.get(url, headers=page, timeout=10)
            # Every poll after the first sends what the fragment's hx-headers ask for, as htmx does.
            page |= hx_headers(first.content)
            etag = first.headers["ETag"]
            json_view = {"Accept": "application/json", "Cookie": f"session={cookie}"}
            cells += [
                ((backend, "200 fragment"), url, page, 200),
                ((backend, "304 fragment"), url, {**page, "If-None-Match": etag}, 304),
                ((backend, "JSON"), url, json_view, 200),
            ]
            floor_settings = settings_for(backend, folder, f"floor-{backend}", redis_base, db=db + len(BACKENDS))
            floor.seed(floor_settings["REDIS_URL"], floor_settings["DATABASE"])
            floor_log = folder / f"gunicorn-floor-{backend}.log"
            path = {"PYTHONPATH": str(ROOT / "bench")}
            floor_base = start_gunicorn(stack, "floor:app", floor_settings, floor_log, "/floor", path, options)
            cells.append(((backend, "floor"), f"{floor_base}/floor", {"Accept": "text/html"}, 200))
            floor_bases[backend] = floor_base
        for key, url, headers, expected in cells:  # One request each, so a wrong setup fails before the long part.
            status = requests.get(url, headers=headers, timeout=10).status_code
            assert status == expected, f"{key}: {status}, expected {expected}"

        results: dict[tuple, list[dict]] = {cell[0]: [] for cell in cells}
        for n in range(args.rounds):
            for key, url, headers, _ in cells[n % len(cells) :] + cells[: n % len(cells)]:
                results[key].append(run_wrk(wrk, url, headers, args.seconds, script))

        # The browsers poll a server of their own on the same store, with the guard as configured.
        submitter, template, settings = servers["redis"]
        if args.no_guard:
            settings = {**settings, "OVERLOAD_WAIT": 0}
        base = start_gunicorn(stack, "wsgi:app", settings, folder / "gunicorn-browsers.log", options=options)
        browser_runs = []
        for count in counts:
            begin = time.perf_counter()
            pairs = make_browsers(submitter, template, count, 15.0 if args.follow else None)
            made = time.perf_counter() - begin
            # The floor under the same browsers, polling /floor, shows what the server and the client cost alone.
            targets = (("Tasklight", base, "/jobs/{}/status"), ("floor", floor_bases["redis"], "/floor"))
            for server, url, path in targets:
                polls = [(path.format(job_id), cookie) for job_id, cookie in pairs]
                used, cpu, wall = server_cpu_seconds(url), time.process_time(), time.perf_counter()
                overflows = listen_overflows()
                stats = asyncio.run(poll_browsers(url, polls, args.duration, 2.0, 10.0, args.follow))
                stats["cpu"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
                stats["client cpu"] = time.process_time() - cpu
                stats["server cpu"] = server_cpu_seconds(url) - used
                stats["overflows"] = listen_overflows() - overflows
                browser_runs.append((count, server, made, stats))
        gunicorn_errors = sum(p.read_text().count("[ERROR]") for p in folder.glob("gunicorn-*.log"))

    rows = []
    for (backend, request), runs in results.items() if args.rounds else ():
        expected = 304 if request.startswith("304") else 200
        floor_rate = median([r["rate"] for r in results[(backend, "floor")]])
        floor_p50 = median([r["p50"] for r in results[(backend, "floor")]])
        rate, p50 = median([r["rate"] for r in runs]), median([r["p50"] for r in runs])
        wrong = sum(n for r in runs for status, n in r["statuses"].items() if status != expected)
        answered = sum(r["statuses"].get(expected, 0) for r in runs)
        rounds = ", ".join(f"{r['rate']:.0f}" for r in runs)
        p99 = median([r["p99"] for r in runs])
        rows.append([backend, request, f"{rate:.0f}", rounds, f"{p50:.1f}", f"{p99:.1f}", f"{rate / floor_rate:.2f}x"])
        rows[-1] += [f"{p50 / floor_p50:.2f}x", f"{answered} x {expected}", wrong, sum(r["errors"] for r in runs)]
    headers = ["backend", "request", "req/s", "each round", "p50 ms", "p99 ms", "req/s vs floor", "p50 vs floor"]
    if rows:
        print_table([*headers, "answers", "other statuses", "socket errors"], rows)

    pace = "at the interval the server gives it (2 s at first)" if args.follow else "every 2 s"
    print(f"# Polling browsers on Redis: each polls its own running job {pace} for {args.duration:g} s,")
    print("# then the floor's route, from the same browsers; CPU per answer is CPU seconds over answers\n")
    rows = []
    for count, server, made, s in browser_runs:
        lat = [t * 1000 for t in s["latencies"]] or [0.0]
        within = sum(t <= 1.0 for t in s["latencies"]) / s["sent"] if s["sent"] else 0.0
        row = [count, server, f"{made:.1f}", s["sent"], f"{s['sent'] / args.duration:.0f}", s["answered"], s["busy"]]
        row += [s["errors"], s["timeouts"], s["skipped"], f"{percentile(lat, 0.5):.1f}", f"{percentile(lat, 0.99):.1f}"]
        row += [f"{max(lat):.0f}", f"{within:.1%}", f"{percentile(s['intervals'] or [0.0], 0.5):g}"]
        row += [f"{percentile(s['lags'], 0.99) * 1000:.0f}", f"{s['cpu']:.0%}", s["overflows"], s["connections"]]
        per_answer = [f"{s[side] / max(s['answered'], 1) * 1000:.2f}" for side in ("server cpu", "client cpu")]
        rows.append([*row, *per_answer])
    headers = [
        "browsers",
        "server",
        "setup s",
        "sent",
        "sent/s",
        "answered",
        "of which 503",
        "errors",
        "timeouts (10 s)",
    ]
    headers += ["skipped ticks", "p50 ms", "p99 ms", "max ms", "answered within 1 s", "interval at end s"]
    headers += ["client send lag p99 ms", "client CPU (of 1 core)", "listen overflows (host)", "connections opened"]
    headers += ["server CPU ms per answer", "client CPU ms per answer"]
    print_table(headers, rows)
    for count, server, _, s in browser_runs:
        print(f"# {count} browsers on {server}, by when each poll was sent: how its answers went, and the interval\n")
        rows = []
        for begin in range(0, int(args.duration), 5):
            polls = [p for p in s["timeline"] if begin <= p[0] < begin + 5]
            if not polls:
                continue
            lat = [p[1] * 1000 for p in polls if p[1] is not None] or [0.0]
            within = sum(p[1] is not None and p[1] <= 1.0 for p in polls) / len(polls)
            row = [f"{begin}-{begin + 5}", len(polls), f"{len(polls) / 5:.0f}", sum(p[2] == 503 for p in polls)]
            row += [f"{percentile(lat, 0.5):.1f}", f"{percentile(lat, 0.99):.1f}", f"{within:.1%}"]
            rows.append([*row, f"{percentile([p[3] for p in polls], 0.5):g}"])
        headers = ["s", "sent", "sent/s", "503", "p50 ms", "p99 ms", "answered within 1 s", "interval s (median)"]
        print_table(headers, rows)
    print(f"# gunicorn [ERROR] lines in the server logs: {gunicorn_errors}; load average at end: {load_average()}")


if __name__ == "__main__":
    main()
