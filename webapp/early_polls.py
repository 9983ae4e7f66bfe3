"""A status poll gets its answer before Flask starts, whenever it can.

Thousands of open pages poll their jobs every few seconds, and Flask's own work on a
request (a request object, routing, the session, the hooks, the response) costs more
than the answer. This WSGI middleware answers the common polls from the session cookie,
one store read and the fragment's template, with the status view's own headers and body
(the tests compare the two answers):

- a poll whose fragment has not changed (its ``If-None-Match`` holds the ETag) gets a 304;
- a poll of a job that is waiting or running gets the fragment, as the view renders it;
- a poll that asks for JSON gets the job's JSON view, as ``jsonify`` makes it, in any state.

Everything else goes on to Flask, which answers it in full: any other request, a
missing or forged cookie, a session whose cookie is due to be sent again or that has no
CSRF token yet (the view makes one), a job that is unknown, purged, someone else's or
finished (its fragment links to pages that need Flask's URL building), and a store that
cannot be reached (the view's outage answer). What this read for a poll it passes on (the job,
or the error) is left in the environ, so the view does not read the store again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Flask
from werkzeug.exceptions import SecurityError
from werkzeug.http import parse_etags
from werkzeug.wsgi import get_host

from .jobs import (
    EARLY_READ,
    SHOWN_TIMELINE_HEADER,
    STATUS_PATH,
    built_job_url,
    clock_driven,
    fragment_headers,
    fragment_tag,
    job_context,
    job_json,
    render_poll_answer,
)
from .negotiate import prefers_json
from .security import session_csrf_token
from .store import Job, JobNotFound, JobPurged, StoreUnavailable

#: The WSGI environ's name for the header in which a page says which timeline it shows.
SHOWN_TIMELINE_ENVIRON = "HTTP_" + SHOWN_TIMELINE_HEADER.upper().replace("-", "_")


class EarlyPolls:
    """WSGI middleware: answer a status poll of a waiting or running job without Flask (304 or 200)."""

    def __init__(self, flask: Flask, wsgi_app: Callable):
        self.flask = flask
        self.wsgi_app = wsgi_app
        self.store = flask.extensions["tasklight"].store
        self.pacer = flask.extensions["poll_pacer"]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        answer = self.answer(environ)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def answer(self, environ: dict) -> tuple[str, list, bytes] | None:
        """The poll's status line, headers and body, if it can be answered here; otherwise None."""
        path = STATUS_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if path is None or environ.get("REQUEST_METHOD") != "GET":
            return None
        as_json = prefers_json(environ.get("HTTP_ACCEPT"))
        session = self.flask.session_interface.unchanging_session(self.flask, environ.get("HTTP_COOKIE"))
        owner = session.get("owner") if session else None
        # The fragment carries the session's CSRF token (its cancel button), which the JSON does not.
        csrf = session_csrf_token(self.flask, session) if owner and not as_json else None
        if owner is None or not (as_json or csrf):
            return None
        try:
            job = self.store.get_for(path[1], owner)
        except (JobNotFound, JobPurged, StoreUnavailable) as exc:
            environ[EARLY_READ] = exc  # The view answers from it, without reading the store again.
            return None
        environ[EARLY_READ] = job
        if as_json:
            return self.json_answer(job, environ)
        if job.terminal:
            return None
        clock = clock_driven(job, self.store, self.pacer.factor)
        tag = fragment_tag(job, clock)
        headers = fragment_headers(tag)
        if parse_etags(environ.get("HTTP_IF_NONE_MATCH")).contains(tag):
            return "304 NOT MODIFIED", headers, b""
        body = self.render(job, clock, environ, csrf).encode()
        headers += [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
        return "200 OK", headers, body

    def render(self, job: Job, clock: dict, environ: dict, csrf: str) -> str:
        """The fragment, as the status view renders it."""
        page_url = built_job_url(self.flask.url_map, environ.get("SCRIPT_NAME", ""), None, job.id)
        context = job_context(job, clock, page_url, csrf)
        return render_poll_answer(self.flask.jinja_env, context, environ.get(SHOWN_TIMELINE_ENVIRON))

    def json_answer(self, job: Job, environ: dict) -> tuple[str, list, bytes] | None:
        """The job's JSON view, with the status view's headers; None for a host Flask would refuse."""
        try:
            host = get_host(environ, self.flask.config["TRUSTED_HOSTS"])
        except SecurityError:
            return None
        site = (environ["wsgi.url_scheme"], host)
        page_url = built_job_url(self.flask.url_map, environ.get("SCRIPT_NAME", ""), site, job.id)
        response = self.flask.json.response(job_json(job, page_url))
        # As the blueprint's hook and the session interface leave them: private, never stored, varying.
        headers = [*response.headers.to_wsgi_list(), ("Vary", "Accept, Cookie"), ("Cache-Control", "no-store")]
        return "200 OK", headers, response.get_data()
