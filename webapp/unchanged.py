"""A status poll that finds nothing new gets its 304 before Flask starts.

Most polls find their job as the page shows it: the fragment's ETag still
matches. The status view would answer them with a 304 too, but only after
Flask has built a request, opened the session, run the hooks and finished the
response, which costs more than the answer itself. This WSGI middleware answers
that one case from the session cookie, one store read and the ETag, with the
headers the view sends (the tests compare the two answers).

Everything else goes on to Flask, which answers it in full: any other request,
a poll without ``If-None-Match``, JSON, a missing or forged cookie, a session
whose cookie is due to be sent again, a job that is unknown, purged or someone
else's, a store that cannot be reached, and a fragment that has changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Flask
from werkzeug.http import parse_etags

from .jobs import STATUS_PATH, clock_driven, fragment_headers, fragment_tag
from .negotiate import prefers_json
from .store import JobNotFound, JobPurged, StoreUnavailable


class UnchangedPolls:
    """WSGI middleware: answer a status poll whose fragment has not changed with 304, without Flask."""

    def __init__(self, flask: Flask, wsgi_app: Callable):
        self.flask = flask
        self.wsgi_app = wsgi_app
        self.store = flask.extensions["tasklight"].store
        self.pacer = flask.extensions["poll_pacer"]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        tag = self.unchanged_tag(environ)
        if tag is None:
            return self.wsgi_app(environ, start_response)
        start_response("304 NOT MODIFIED", fragment_headers(tag))
        return []

    def unchanged_tag(self, environ: dict) -> str | None:
        """The fragment's ETag if this is a poll by the job's owner that already has it; otherwise None."""
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if not if_none_match or environ.get("REQUEST_METHOD") != "GET":
            return None
        path = STATUS_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if path is None or prefers_json(environ.get("HTTP_ACCEPT")):
            return None
        session = self.flask.session_interface.unchanging_session(self.flask, environ.get("HTTP_COOKIE"))
        owner = session.get("owner") if session else None
        if owner is None:
            return None
        try:
            job = self.store.get_for(path[1], owner)
        except (JobNotFound, JobPurged, StoreUnavailable):
            return None
        tag = fragment_tag(job, clock_driven(job, self.store, self.pacer.factor))
        return tag if parse_etags(if_none_match).contains(tag) else None
