"""The floor for bench/load.py: about the least a Flask status route can do, served like Tasklight.

One route, ``GET /floor``, reads one ~500-byte JSON record and renders a ~500-byte Jinja
template from it. With ``REDIS_URL`` set the read is one Redis GET; otherwise it is one
SELECT by primary key from the WAL-mode SQLite file named by ``TASKLIGHT_DATABASE``.
``seed`` writes the record. Run it as ``gunicorn --pythonpath bench floor:app``.
"""

from __future__ import annotations

import json
import os
import sqlite3

import redis
from flask import Flask, render_template
from jinja2 import DictLoader

KEY = "floor:record"
RECORD = {
    "id": "0123456789abcdef0123456789abcdef",
    "kind": "timer",
    "state": "running",
    "progress": {"done": 1800, "total": 3600, "message": "1800 of 3600 s"},
    "inputs": {"seconds": 3600},
    "created_at": 1700000000.0,
    "started_at": 1700000001.0,
    "heartbeat_at": 1700001801.0,
    "worker": "bench:1",
    "attempt": 1,
    "max_attempts": 3,
    "note": "x" * 160,
}
TEMPLATE = """<section id="job-status" role="status" aria-live="polite" data-state="{{ job.state }}"
  class="job-status state-{{ job.state }}" hx-get="/floor" hx-trigger="every 5s" hx-swap="outerHTML">
  <h2 class="state-line"><span class="badge">{{ job.state|capitalize }}</span>
  <span class="attempt">attempt {{ job.attempt }} of {{ job.max_attempts }}</span></h2>
  <label for="progress-{{ job.id }}">Progress</label>
  <progress id="progress-{{ job.id }}" value="{{ job.progress.done }}" max="{{ job.progress.total }}">
    {{ (100 * job.progress.done / job.progress.total)|round|int }}%</progress>
  <p class="message">{{ job.progress.message }}</p>
  <p class="worker">Running on {{ job.worker }} since {{ job.started_at }}.</p>
</section>
"""

app = Flask(__name__)
app.jinja_loader = DictLoader({"floor.html": TEMPLATE})
_connections: dict[str, object] = {}


def connection():
    """This worker process's Redis client or SQLite connection, opened on first use (after the fork)."""
    if "conn" not in _connections:
        if os.environ.get("REDIS_URL"):
            _connections["conn"] = redis.Redis.from_url(os.environ["REDIS_URL"])
        else:
            _connections["conn"] = sqlite3.connect(os.environ["TASKLIGHT_DATABASE"], isolation_level=None)
    return _connections["conn"]


@app.get("/floor")
def floor():
    """One read of the record, one render of the template."""
    conn = connection()
    if isinstance(conn, redis.Redis):
        raw = conn.get(KEY)
    else:
        raw = conn.execute("select data from records where id = ?", (RECORD["id"],)).fetchone()[0]
    return render_template("floor.html", job=json.loads(raw))


def seed(redis_url: str, database: str) -> None:
    """Write the record the route reads: a Redis key, or a row of a WAL-mode SQLite file."""
    data = json.dumps(RECORD)
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        client.set(KEY, data)
        client.close()
        return
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("pragma journal_mode=wal")
    conn.execute("create table if not exists records (id text primary key, data text not null)")
    conn.execute("insert or replace into records values (?, ?)", (RECORD["id"], data))
    conn.close()
