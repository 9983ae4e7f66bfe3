"""Security headers, cookies, upload limits, escaping of hostile content, and error pages that leak nothing."""

from __future__ import annotations

import io
import logging
import re
import socket
from collections.abc import Iterator

import pytest
from bs4 import BeautifulSoup
from helpers import JSON, csrf_token, job_id_from, serving, soup, submit, wait_for

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
HOSTILE = '"><img src=x onerror=alert(1)><script id="pwned">alert(1)</script><b id="pwned-b">'
HOSTILE_NAME = "<img src=x onerror=alert(1)>.csv"

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
both_backends = pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)


def assert_no_injected_markup(page: BeautifulSoup) -> None:
    """Nothing hostile became an element or an attribute: the page holds only the markup the templates wrote."""
    assert page.find_all("img") == []
    assert page.select("#pwned, #pwned-b") == []
    assert [script.get("src") for script in page.find_all("script")] in ([], ["/assets/htmx.min.js"])
    for tag in page.find_all(True):
        handlers = [name for name in tag.attrs if name.lower().startswith("on")]
        assert handlers == [], tag


@sqlite_only
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/"),
        ("GET", "/jobs/new/timer"),
        ("GET", "/jobs"),
        ("GET", "/jobs/" + "0" * 32),
        ("GET", "/jobs/new/nope"),
        ("GET", "/static/style.css"),
        ("GET", "/assets/htmx.min.js"),
        ("POST", "/jobs/new/timer"),
    ],
)
def test_every_response_carries_the_security_headers(client, method, path):
    # Closing the response closes the file behind a static one.
    with client.open(path, method=method) as response:
        assert response.headers["Content-Security-Policy"] == CSP
        assert "unsafe" not in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"


@sqlite_only
def test_job_pages_and_json_are_never_stored_and_fragments_are_revalidated(client):
    job_id = job_id_from(submit(client, "timer", {"seconds": "1"}))
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/status", "/jobs", "/jobs/new/timer"):
        for accept in ("text/html", "application/json"):
            response = client.get(path, headers={"Accept": accept})
            directives = {part.strip() for part in response.headers["Cache-Control"].split(",")}
            fragment = path.endswith("/status") and accept == "text/html"
            assert directives == ({"private", "no-cache"} if fragment else {"no-store"}), (path, accept, directives)
            # The same URL answers JSON or HTML by Accept, so a cache must keep them apart.
            assert "Accept" in response.headers["Vary"], (path, accept)


def session_cookie(response) -> str:
    cookies = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("session=")]
    assert len(cookies) == 1, response.headers.getlist("Set-Cookie")
    return cookies[0]


@sqlite_only
def test_session_cookie_is_httponly_and_samesite_lax(client):
    cookie = session_cookie(client.get("/jobs/new/timer"))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes


@sqlite_only
def test_session_cookie_is_secure_behind_tls(make_app, monkeypatch):
    monkeypatch.setenv("TASKLIGHT_BEHIND_TLS", "1")
    app = make_app()
    cookie = session_cookie(app.test_client().get("/jobs/new/timer", base_url="https://localhost"))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"secure", "httponly", "samesite=lax"} <= attributes


@sqlite_only
def test_behind_tls_the_links_the_app_builds_say_https(make_app, monkeypatch):
    monkeypatch.setenv("TASKLIGHT_BEHIND_TLS", "1")
    # CSRF is off here only because its Secure cookie would not come back over this test's plain HTTP.
    client = make_app(WTF_CSRF_ENABLED=False).test_client()
    # The proxy that terminates HTTPS speaks plain HTTP to the app, and says what the browser used.
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "jobs.example.org"}
    response = client.post("/jobs/new/timer", data={"seconds": "1"}, headers={**JSON, **proxy})
    url = response.get_json()["url"]
    assert url.startswith("https://jobs.example.org/jobs/")
    # A JSON poll, answered before Flask starts, builds the same link.
    polled = client.get(url.removeprefix("https://jobs.example.org") + "/status", headers={**JSON, **proxy})
    assert polled.get_json()["url"] == url


@sqlite_only
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_upload_over_the_limit_is_a_friendly_413(client, app, accept):
    token = csrf_token(client, "/jobs/new/checksum")
    # A body built by hand: the test client would spool a large form to a temporary file it never closes here.
    body = (
        (
            f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            '--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        ).encode()
        + b"x" * app.config["MAX_CONTENT_LENGTH"]
        + b"\r\n--b--\r\n"
    )
    response = client.post(
        "/jobs/new/checksum",
        data=body,
        content_type="multipart/form-data; boundary=b",
        headers={"Accept": accept},
    )
    assert response.status_code == 413
    if accept == "application/json":
        assert "larger than the limit of 1 MiB" in response.get_json()["error"]
        return
    page = soup(response)
    assert page.select_one("main h1").get_text() == "File too large"
    assert "larger than the limit of 1 MiB" in page.select_one(".error-message").get_text()
    assert page.select_one("header.site") is not None


@pytest.fixture
def http_server(app) -> Iterator[tuple[str, int]]:
    """The test app on a real HTTP server in a background thread; yields its host and port."""
    with serving(app) as address:
        yield address


@sqlite_only
def test_real_server_refuses_an_oversized_upload_before_reading_it(http_server, app):
    """The 413 page arrives while the client has sent only the headers and a sliver of the body."""
    host, port = http_server
    length = app.config["MAX_CONTENT_LENGTH"] * 10
    head = (
        f"POST /jobs/new/checksum HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/html\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.encode() + b"--b\r\n" + b"x" * 1024)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    page = BeautifulSoup(rest.partition(b"\r\n\r\n")[2], "html.parser")
    assert page.select_one("main h1").get_text() == "File too large"


@sqlite_only
def test_hostile_form_values_are_shown_as_text(client):
    response = submit(client, "timer", {"seconds": HOSTILE, "time_limit": HOSTILE})
    assert response.status_code == 400
    page = soup(response)
    assert_no_injected_markup(page)
    assert page.select_one("input[name=seconds]")["value"] == HOSTILE
    assert page.select_one("#seconds-error") is not None

    response = submit(client, "checksum", {"algorithm": HOSTILE, "file": (io.BytesIO(b"x"), HOSTILE_NAME)})
    assert response.status_code == 400
    assert_no_injected_markup(soup(response))


@sqlite_only
@pytest.mark.parametrize(
    "path",
    [
        "/jobs/new/" + HOSTILE,
        "/jobs/" + HOSTILE,
        "/jobs/" + HOSTILE + "/status",
        "/jobs?state=" + HOSTILE,
        "/jobs?kind=" + HOSTILE,
        "/jobs?before=" + HOSTILE,
    ],
)
def test_hostile_urls_are_shown_as_text(client, path):
    response = client.get(path)
    assert response.status_code in (200, 400, 404)
    assert_no_injected_markup(soup(response))


HOSTILE_CSV = (
    b'"<script id=""pwned"">alert(1)</script>","<img src=x onerror=alert(1)>",plain\n'
    b'"<b id=""pwned-b"">x</b>","""><img src=x onerror=alert(1)>",1\n'
    b'"<b id=""pwned-b"">x</b>",<img src=x>,2\n'
)


@both_backends
def test_hostile_csv_and_file_name_never_become_markup(client, consumer):
    response = submit(
        client, "csv_profile", {"file": (io.BytesIO(HOSTILE_CSV), HOSTILE_NAME)}, content_type="multipart/form-data"
    )
    job_id = job_id_from(response)
    wait_for(client, job_id, "succeeded")
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/status", "/jobs"):
        assert_no_injected_markup(soup(client.get(path)))
    page = soup(client.get(f"/jobs/{job_id}"))
    names = [th.get_text() for th in page.select("table.csv-profile tbody th[scope=row]")]
    assert names == ['<script id="pwned">alert(1)</script>', "<img src=x onerror=alert(1)>", "plain"]
    assert HOSTILE_NAME in page.select_one("dl.job-facts").get_text()


@sqlite_only
def test_hostile_content_in_an_error_message_stays_text(client, consumer):
    content = b"a,b\n1,2\n<img src=x onerror=alert(1)>,<b id=pwned-b>,3\n"
    response = submit(
        client, "csv_profile", {"file": (io.BytesIO(content), HOSTILE_NAME)}, content_type="multipart/form-data"
    )
    job_id = job_id_from(response)
    wait_for(client, job_id, "failed")
    page = soup(client.get(f"/jobs/{job_id}"))
    assert_no_injected_markup(page)
    assert "Line 3" in page.select_one("#job-status .error").get_text()


@both_backends
def test_unexpected_job_errors_show_a_reference_not_the_exception(client, app, consumer):
    """The exception's text and traceback stay in the record for admins; the owner sees a reference."""
    job_id = job_id_from(submit(client, "timer", {"seconds": "0", "crash_attempts": "3"}))
    data = wait_for(client, job_id, "failed", timeout=30)
    assert "traceback" not in data
    assert re.fullmatch(r"The job failed \(ref [0-9a-f]{8}-\d\)\.", data["error"]["message"])
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/status"):
        text = client.get(path).get_data(as_text=True)
        assert "crashing on attempt" not in text
        assert "Traceback" not in text and "RuntimeError" not in text
        assert data["error"]["ref"] in text
    with app.app_context():
        record = app.extensions["tasklight"].store.get(job_id)
    assert "RuntimeError: crashing on attempt" in record.traceback


@pytest.fixture
def production_app(make_app):
    """The app as deployed: not testing, not debugging, so errors are handled rather than raised."""
    app = make_app(TESTING=False)
    assert not app.debug and not app.testing

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail <b id=pwned-b> /etc/passwd")

    return app


@sqlite_only
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_unexpected_errors_answer_a_plain_500_with_a_reference(production_app, caplog, accept):
    with caplog.at_level(logging.ERROR):
        response = production_app.test_client().get("/boom", headers={"Accept": accept})
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    for secret in ("secret detail", "/etc/passwd", "Traceback", "RuntimeError", "boom"):
        assert secret not in text
    if accept == "application/json":
        ref = response.get_json()["ref"]
    else:
        page = soup(response)
        assert_no_injected_markup(page)
        assert page.select_one("main h1").get_text() == "Something went wrong"
        ref = re.search(r"\(ref ([0-9a-f]{8})\)", page.select_one(".error-message").get_text()).group(1)
    assert response.headers["Content-Security-Policy"] == CSP
    # The details go to the log, under the same reference, for admins.
    logged = [record for record in caplog.records if ref in record.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info[0] is RuntimeError


@sqlite_only
def test_csrf_token_is_required_even_with_a_valid_session(client):
    token = csrf_token(client, "/jobs/new/timer")
    assert client.post("/jobs/new/timer", data={"seconds": "1"}).status_code == 400
    assert client.post("/jobs/new/timer", data={"seconds": "1", "csrf_token": token + "x"}).status_code == 400
    assert client.post("/jobs/new/timer", data={"seconds": "1", "csrf_token": token}).status_code == 303


@sqlite_only
@pytest.mark.parametrize(("extra", "status"), [(0, 303), (1, 413)])
def test_the_file_itself_gets_the_exact_upload_limit(client, app, extra, status):
    token = csrf_token(client, "/jobs/new/checksum")
    body = (
        (
            f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            '--b\r\nContent-Disposition: form-data; name="algorithm"\r\n\r\nmd5\r\n'
            '--b\r\nContent-Disposition: form-data; name="file"; filename="edge.bin"\r\n\r\n'
        ).encode()
        + b"x" * (app.config["MAX_UPLOAD_BYTES"] + extra)
        + b"\r\n--b--\r\n"
    )
    response = client.post("/jobs/new/checksum", data=body, content_type="multipart/form-data; boundary=b")
    assert response.status_code == status


@sqlite_only
@pytest.mark.parametrize("headers", [{}, {"Accept": "application/json"}])
def test_a_form_field_whose_name_cannot_be_read_is_a_400_not_a_500(client, headers):
    """A multipart part named ``"\\"`` (an unfinished quoted string) reaches the app with the name None."""
    token = csrf_token(client, "/jobs/new/csv_profile")
    body = (
        b'--b\r\nContent-Disposition: form-data; name="\\"\r\n\r\n61\r\n'
        b'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n' + token.encode() + b"\r\n--b--\r\n"
    )
    for data in (body, body.replace(b"csrf_token", b"other")):
        response = client.post(
            "/jobs/new/csv_profile", data=data, headers={"Content-Type": "multipart/form-data; boundary=b", **headers}
        )
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
        assert "cannot be read" in response.get_data(as_text=True)
