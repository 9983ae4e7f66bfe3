"""Helpers that drive the app as a browser or a script would."""

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from bs4 import BeautifulSoup
from werkzeug.serving import WSGIRequestHandler, make_server

#: Headers of a client that wants JSON.
JSON = {"Accept": "application/json"}


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args) -> None:
        """Keep the test output free of one line per request."""


@contextlib.contextmanager
def serving(app) -> Iterator[tuple[str, int]]:
    """Serve ``app`` on a real HTTP server in a background thread; yields its host and port."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="http-server", daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def csrf_token(client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    return soup(page).select_one("input[name=csrf_token]")["value"]


def submit(client, kind: str, data: dict, **kwargs):
    """Fill in a kind's form as a browser would, CSRF token included."""
    path = f"/jobs/new/{kind}"
    return client.post(path, data={"csrf_token": csrf_token(client, path), **data}, **kwargs)


def job_id_from(response) -> str:
    assert response.status_code in (202, 303), response.status_code
    return response.headers["Location"].rsplit("/", 1)[-1]


def wait_for(client, job_id: str, states, timeout: float = 20) -> dict:
    """Poll the job's JSON until it is in one of ``states``; fail on timeout."""
    states = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout
    while True:
        data = client.get(f"/jobs/{job_id}", headers={"Accept": "application/json"}).get_json()
        if data["state"] in states:
            return data
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} stayed {data['state']}, expected {sorted(states)}: {data}")
        time.sleep(0.05)
