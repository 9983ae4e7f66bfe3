"""The OpenAPI document of the JSON API: served as kept in the repository, and true of a real server.

Schemathesis generates requests from ``docs/openapi.json`` and sends them to the app on a real HTTP server,
as a client with a session cookie and its CSRF token. Every answer must be below 500, carry no traceback,
and agree with the document: its status code, its content type, its headers and its body's schema.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass, field

import pytest
import redis
import requests
import schemathesis
from helpers import JSON, serving
from hypothesis import HealthCheck, settings

import tasks
from webapp import create_app
from webapp.pages import OPENAPI
from webapp.store import FAILED, RETRYING, SUCCEEDED
from webapp.worker import JobContext, JobError

DOCUMENT = json.loads(OPENAPI.read_text())
JSON_TYPE, HTML_TYPE = "application/json", "text/html"


def test_the_served_document_is_the_one_in_the_repository(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == DOCUMENT
    assert DOCUMENT["openapi"].startswith("3.1")


def test_the_document_covers_the_public_contract():
    """Each route of the README's public contract that answers JSON is described, and nothing else is."""
    described = {(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert described == {
        ("GET", "/jobs/new/{kind}"),
        ("POST", "/jobs/new/{kind}"),
        *((method, f"/jobs/new/{kind}") for kind in ("timer", "checksum", "csv_profile") for method in ("GET", "POST")),
        ("GET", "/jobs"),
        ("GET", "/jobs/{id}"),
        ("GET", "/jobs/{id}/status"),
        ("POST", "/jobs/{id}/cancel"),
        ("POST", "/jobs/{id}/retry"),
        ("GET", "/jobs/{id}/download.{format}"),
        ("GET", "/openapi.json"),
    }
    job = DOCUMENT["components"]["schemas"]["Job"]
    assert set(job["required"]) == {
        *("id", "kind", "state", "progress", "result", "error", "created_at", "started_at", "finished_at"),
        *("attempt", "max_attempts", "cancel_requested", "retry_of", "retried_by", "url"),
    }


@dataclass
class Api:
    """A live server, and a client's session on it: its cookie, its CSRF token and jobs in every state."""

    base: str
    cookie: str
    token: str
    accept: str
    jobs: dict[str, str] = field(default_factory=dict)

    def pick(self, generated: str, path: str, fmt: str | None) -> str:
        """A job of this session for a generated id, chosen by the id itself so that runs repeat.

        A download is mostly asked of a job that has a file in that format, so that files are checked too.
        """
        jobs = list(self.jobs.values())
        number = int(generated, 16)
        if path.endswith("download.{format}") and number % 4:
            jobs = [self.jobs["profile" if fmt in ("json", "csv") else "checksum"]]
        return jobs[number % len(jobs)]


def run_body(store, job_id: str, body) -> None:
    """Run a kind's real body in this process, as a worker would, and record how it ended."""
    context = JobContext(store, store.start(job_id, "schemathesis:1"))
    job = context.record
    try:
        result = body(context, **job.inputs)
    except JobError as exc:
        context.finish(FAILED, {"error": job.failure(str(exc))})
    else:
        context.finish(SUCCEEDED, {"result": result})


#: The JSON API on both backends, and the same URLs as a browser sees them (HTML, 303s, the fragment's 304s).
FACES = [("sqlite", JSON_TYPE), ("redis", JSON_TYPE), ("sqlite", HTML_TYPE)]


@pytest.fixture(scope="module", params=FACES, ids=["sqlite-json", "redis-json", "sqlite-html"])
def api(request, tmp_path_factory) -> Api:
    """The production app (error pages, no test mode) on a real HTTP server, and a session with jobs of each kind
    in each state: queued, running, retrying, succeeded, failed, cancelled, lost, expired and purged.

    One server per backend for the whole module: each operation's examples run against it in turn.
    """
    folder = tmp_path_factory.mktemp("openapi")
    backend, accept = request.param
    redis_url = ""
    if backend == "redis":
        redis_url = request.getfixturevalue("redis_server").rsplit("/", 1)[0] + "/1"
        redis.Redis.from_url(redis_url).flushdb()
    config = {
        "TESTING": False,
        "SECRET_KEY": "test",
        "INSTANCE_PATH": str(folder / "instance"),
        "DATABASE": str(folder / "tasklight.db"),
        "REDIS_URL": redis_url,
        "HEARTBEAT_TIMEOUT": 2.0,
        "MAX_UPLOAD_BYTES": 64 * 1024,
        "MAX_ACTIVE_JOBS": 100_000,
    }
    app = create_app(config)
    request.addfinalizer(app.extensions["tasklight"].close)
    store = app.extensions["tasklight"].store
    with serving(app) as (host, port), requests.Session() as http:
        base = f"http://{host}:{port}"
        token = http.get(f"{base}/jobs/new/timer", headers=JSON, timeout=10).json()["csrf_token"]
        headers = {**JSON, "X-CSRFToken": token}

        def submit(kind: str, data: dict, files: dict | None = None) -> str:
            answer = http.post(f"{base}/jobs/new/{kind}", data=data, files=files, headers=headers, timeout=10)
            assert answer.status_code == 202, answer.text
            return answer.json()["id"]

        ids = {"queued": submit("timer", {"seconds": "1"})}
        ids["running"] = submit("timer", {"seconds": "1"})
        store.start(ids["running"], "schemathesis:1")
        ids["retrying"] = submit("timer", {"seconds": "1"})
        store.start(ids["retrying"], "schemathesis:1")
        store.update(ids["retrying"], {"state": RETRYING, "next_attempt_at": time.time() + 3600})
        for name, fail in (("succeeded", False), ("failed", True)):
            ids[name] = submit("timer", {"seconds": "0", "fail": "y" if fail else ""})
            run_body(store, ids[name], tasks.timer)
        ids["cancelled"] = submit("timer", {"seconds": "1"})
        http.post(f"{base}/jobs/{ids['cancelled']}/cancel", headers=headers, timeout=10)
        ids["lost"] = submit("timer", {"seconds": "1"})
        store.start(ids["lost"], "schemathesis:1")
        store.update(ids["lost"], {"heartbeat_at": time.time() - 3600})
        ids["expired"] = submit("timer", {"seconds": "1", "start_within": "0.2"})
        ids["checksum"] = submit("checksum", {"algorithm": "md5"}, {"file": ("a b.txt", io.BytesIO(b"hello\n"))})
        run_body(store, ids["checksum"], tasks.checksum)
        csv = b"name,size,when\nalpha,1,2026-01-02\nbeta,2.5,2026-01-03\n"
        ids["profile"] = submit("csv_profile", {}, {"file": ("data.csv", io.BytesIO(csv))})
        run_body(store, ids["profile"], tasks.csv_profile)
        ids["bad profile"] = submit("csv_profile", {}, {"file": ("bad.csv", io.BytesIO(b"a,b\n1\n"))})
        run_body(store, ids["bad profile"], tasks.csv_profile)
        ids["purged"] = submit("timer", {"seconds": "0"})
        run_body(store, ids["purged"], tasks.timer)
        store.purge(ids["purged"])
        yield Api(base, http.cookies["session"], token, accept, ids)


#: Every check Schemathesis runs by default, with what this API answers on purpose, and two left out:
#:
#: - ``ignored_auth`` expects 401 or 403 to a request without credentials. Here a POST without its CSRF token
#:   answers 400, as the public contract says, and the session cookie is no login: without it you simply have
#:   no jobs (a 404, an empty list), so there is nothing to refuse.
#: - ``negative_data_rejection`` expects a 4xx to any request outside the document. The forms read values as
#:   HTML forms do, which is lenient on purpose: a checkbox (``fail``) is on whenever it is sent with a value
#:   other than "" or "false", and a JSON ``true``/``false`` reads as the number 1/0. Those requests are
#:   answered 202 with the value as read. Every other out-of-document request still gets its 4xx, and
#:   ``status_code_conformance`` checks that each of those is a code the document gives.
#:
#: A request the document allows may still be refused for what it names, not for its shape: 404 (no such job
#: in this session, or no such file for it), 409 (not retryable, not succeeded), 410 (purged), 429 (a limit).
#: Not 5xx: nothing here may fail.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "ignored_auth": {"enabled": False},
            "negative_data_rejection": {"enabled": False},
            "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "404", "409", "410", "429"]},
        }
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


#: What a Python traceback always holds: its heading, or a frame's line.
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"\n]+", line \d+')


@schemathesis.check
def no_traceback(ctx, response, case) -> None:
    """No answer, of any status or type, shows a Python traceback."""
    text = response.content.decode("utf-8", "replace")
    if TRACEBACK.search(text):
        raise AssertionError(f"the answer shows a traceback: {text[:300]}")


@schemathesis.check
def one_charset(ctx, response, case) -> None:
    """A Content-Type names its charset at most once."""
    for value in response.headers.get("content-type", []):
        if value.lower().count("charset=") > 1:
            raise AssertionError(f"Content-Type {value!r} names its charset more than once")


@schema.parametrize()
# Derandomized, and with no example database, so no run depends on an earlier one. Hypothesis also draws values
# from constants in the project's own modules, so the requests change when the code (or the set of test modules
# loaded) does: that is how the whole suite once found the unreadable field name that security.py now refuses.
@settings(max_examples=15, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_agrees_with_its_document(case, api):
    generated = case.path_parameters.get("id") if case.path_parameters else None
    if isinstance(generated, str) and len(generated) == 32 and all(c in "0123456789abcdef" for c in generated):
        # A valid id that names no job only ever gets a 404: aim most of them at this session's jobs.
        case.path_parameters["id"] = api.pick(generated, case.path, case.path_parameters.get("format"))
    # Schemathesis makes up the credentials the document declares. A made-up one is replaced by the real one,
    # and one it leaves out of a POST on purpose stays out. A GET may go without the cookie (it then sees no
    # jobs), so Schemathesis seldom sends it: every GET gets it, to see the jobs.
    if case.method == "GET" or (case.cookies and "session" in case.cookies):
        case.cookies = {**(case.cookies or {}), "session": api.cookie}
    if case.headers and "X-CSRFToken" in case.headers:
        case.headers["X-CSRFToken"] = api.token
    case.call_and_validate(
        base_url=api.base,
        headers={"Accept": api.accept},
        additional_checks=[no_traceback, one_charset],
        timeout=20,
    )
