"""Past capacity, status polls get a quick 503 or a longer interval, never a timeout.

A poll that waited too long for a worker gets a ``503`` with ``Retry-After`` at
once, before Flask does any work: htmx does not swap an error, and its
``every Ns`` trigger simply polls again on the next tick. Meanwhile each process
paces the polls: while requests wait for a worker, it doubles the poll interval
it gives the fragments (up to 8 times), and halves it again once they no longer
wait. The interval is part of the fragment's ETag, so every open page learns the
longer one on its next answer, and the polling load falls to what the server
can serve. A page learns only from a real answer, and if every late poll were
shed, none would, and the polls would go on at the rate that overloads the
server. So a quarter of the late polls from pages that have not learnt the
current factor (their ETag ends with a lower ``-fN``, or they have none) are
answered all the same; a twentieth once a poll waited twice the limit, so that
the renders they cost never keep the queue from draining.

How long a request waited comes from the kernel: ``tcpi_last_data_recv`` of its
connection (Linux's ``TCP_INFO``) is the time since the request's last bytes
arrived, which is its time in the listen queue or gunicorn's thread pool, plus
gunicorn's parsing. gunicorn hands the socket to the app as ``gunicorn.socket``;
under any other server nothing is measured and nothing is shed.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable

from .jobs import STATUS_PATH
from .negotiate import prefers_json

#: Where ``tcpi_last_data_recv`` (milliseconds, 32 bits) sits in Linux's ``struct tcp_info``.
LAST_DATA_RECV = 52
TCP_INFO = getattr(socket, "TCP_INFO", None)
#: The pacer's factor at the end of a fragment's ETag (see ``jobs.fragment_tag``).
PACE_IN_TAG = re.compile(r'-f([0-9]+)"')


def queue_wait(environ: dict) -> float | None:
    """Seconds since the request's last bytes arrived, or None where it cannot be known."""
    sock = environ.get("gunicorn.socket")
    if sock is None or TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, LAST_DATA_RECV + 4)
    except (OSError, AttributeError):
        return None
    if len(info) < LAST_DATA_RECV + 4:
        return None
    return struct.unpack_from("I", info, LAST_DATA_RECV)[0] / 1000


class PollPacer:
    """This process's factor on the poll interval: doubled while requests wait, halved once they do not.

    The wait is smoothed over requests. Pages learn a new interval only on
    their next poll, so the factor goes up again only after ``raise_every``
    times the factor (about one of the new intervals), and down only after
    ``lower_every`` seconds at the same factor: it does not swing, which would
    change every page's ETag back and forth.
    """

    def __init__(
        self,
        busy: float = 0.2,
        idle: float = 0.02,
        most: int = 8,
        raise_every: float = 2.0,
        lower_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.busy, self.idle, self.most = busy, idle, most
        self.raise_every, self.lower_every = raise_every, lower_every
        self.clock = clock
        self.factor = 1
        self.wait = 0.0
        self.changed = -float("inf")

    def observe(self, waited: float) -> None:
        """Note that a request waited ``waited`` seconds for a worker."""
        self.wait += (waited - self.wait) * 0.1
        now = self.clock()
        if self.wait > self.busy and self.factor < self.most and now - self.changed >= self.raise_every * self.factor:
            self.factor, self.changed = self.factor * 2, now
        elif self.wait < self.idle and self.factor > 1 and now - self.changed >= self.lower_every:
            self.factor, self.changed = self.factor // 2, now


class OverloadGuard:
    """WSGI middleware: measure each request's wait for the pacer, and answer a poll that waited too long with 503."""

    def __init__(self, app: Callable, pacer: PollPacer, shed_after: float = 0.5, admit: float = 0.25):
        self.app = app
        self.pacer = pacer
        self.shed_after = shed_after
        #: The share of late polls from pages still at a shorter interval that get a real answer all the same.
        self.admit = admit

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        waited = queue_wait(environ)
        if waited is None:
            return self.app(environ, start_response)
        self.pacer.observe(waited)
        if (
            waited < self.shed_after
            or environ.get("REQUEST_METHOD") != "GET"
            or not STATUS_PATH.fullmatch(environ.get("PATH_INFO", ""))
            or (self.learning(environ.get("HTTP_IF_NONE_MATCH", "")) and random.random() < self.admitted(waited))
        ):
            return self.app(environ, start_response)
        return self.busy(environ, start_response)

    def admitted(self, waited: float) -> float:
        """The share of late learners answered: fewer once the queue is past twice the limit, so it drains."""
        return self.admit if waited < 2 * self.shed_after else self.admit / 5

    def learning(self, if_none_match: str) -> bool:
        """Whether this page polls faster than the pacer now asks: no fragment tag yet, or one from a lower factor."""
        paced = PACE_IN_TAG.search(if_none_match)
        return paced is None or int(paced[1]) < self.pacer.factor

    def busy(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """The quick answer: nothing read, nothing rendered, so it says nothing about the job or its owner."""
        retry = 2 * self.pacer.factor
        message = "The server is busy just now. The status will refresh on its own in a moment."
        if prefers_json(environ.get("HTTP_ACCEPT")):
            body = json.dumps({"error": message, "status": 503}).encode()
            kind = "application/json"
        else:
            body = f"<p>{message}</p>\n".encode()
            kind = "text/html; charset=utf-8"
        headers = [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Retry-After", str(retry)),
            ("Cache-Control", "no-store"),
            ("Vary", "Accept"),
            # htmx swaps a 503 in (base.html), for the store-outage fragment; this one keeps the page as it is.
            ("HX-Reswap", "none"),
        ]
        start_response("503 Service Unavailable", headers)
        return [body]
