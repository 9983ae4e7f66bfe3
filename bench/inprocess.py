"""The status route's cost in process, against the floor: WSGI calls with no server and no network.

The same four requests as bench/load.py's wrk cells, on SQLite: the floor (bench/floor.py),
a running job's 200 fragment (sending what its ``hx-headers`` ask for, as htmx does), the
same with ``If-None-Match`` (304), and the JSON view. Each is called straight through the
app's WSGI callable, in interleaved batches; the best batch of each is reported, as µs per
request and as a multiple of the floor's. Without gunicorn and a client sharing the cores,
these figures move far less from run to run than those under load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import floor
from common import load_average, machine, print_table, settings_for
from load import EXTRA, hx_headers, prepare
from werkzeug.test import EnvironBuilder

HTML = {"Accept": "text/html", "HX-Request": "true"}


def call(app, environ: dict) -> tuple[str, bytes]:
    """One request through ``app``'s WSGI callable; returns its status line and body."""
    statuses = []
    body = b"".join(app(dict(environ), lambda status, headers, exc_info=None: statuses.append(status)))
    return statuses[0], body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=15, help="interleaved batches of each request (default 15)")
    parser.add_argument("--calls", type=int, default=300, help="calls in a batch (default 300)")
    args = parser.parse_args()
    print(f"# In process, SQLite: best of {args.batches} interleaved batches of {args.calls} WSGI calls")
    print(f"# {machine()}; load average at start: {load_average()}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="tasklight-bench-") as tmp:
        folder = Path(tmp)
        os.environ["TASKLIGHT_DATABASE"] = str(folder / "floor.db")  # The floor reads its file from here.
        floor.seed("", os.environ["TASKLIGHT_DATABASE"])
        settings = {**settings_for("sqlite", folder, "inprocess"), **EXTRA, "OVERLOAD_WAIT": 0}
        submitter, _, job_id, cookie = prepare(settings)
        app = submitter.app.wsgi_app
        page = {**HTML, "Cookie": f"session={cookie}"}
        path = f"/jobs/{job_id}/status"
        first = submitter.app.test_client(use_cookies=False).get(path, headers=page)
        page |= hx_headers(first.get_data())
        cells = {
            "floor": (floor.app.wsgi_app, "/floor", {"Accept": "text/html"}, "200 OK"),
            "200 fragment": (app, path, page, "200 OK"),
            "304 fragment": (app, path, {**page, "If-None-Match": first.headers["ETag"]}, "304 NOT MODIFIED"),
            "JSON": (app, path, {"Accept": "application/json", "Cookie": page["Cookie"]}, "200 OK"),
        }
        best = {}
        for name, (wsgi, url, headers, expected) in cells.items():
            environ = EnvironBuilder(path=url, headers=headers).get_environ()
            status, _ = call(wsgi, environ)
            assert status == expected, f"{name}: {status}, expected {expected}"
            cells[name] = (wsgi, environ)
            best[name] = float("inf")
        for _ in range(args.batches):
            for name, (wsgi, environ) in cells.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    call(wsgi, environ)
                best[name] = min(best[name], (time.perf_counter() - start) / args.calls)
    rows = [[name, f"{seconds * 1e6:.1f}", f"{seconds / best['floor']:.2f}x"] for name, seconds in best.items()]
    print_table(["request", "µs per request", "vs floor"], rows)


if __name__ == "__main__":
    main()
