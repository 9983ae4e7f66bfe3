"""Tasklight in a real headless Chromium: polling, the no-JavaScript fallback, history, buttons and the CSP."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import serving
from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.browser

#: Long enough for a job that should have ended, short enough to keep the suite quick.
TIMEOUT_MS = 20_000
#: How long a finished job's page is watched for further polls or refreshes (the first interval is 1 s).
QUIET_MS = 2_500

CHECKSUM_DATA = bytes(range(256)) * 64
CSV_DATA = b"name,age,joined\nada,36,2020-01-02\ngrace,45,2021-03-04\nada,,2022-05-06\n"

# Chromium reports CSP violations as console errors too, but this makes them explicit when scripts run.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


INJECT_INLINE_SCRIPT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.__ran = 1";
  document.head.append(script);
}"""


@pytest.fixture
def live_server(make_app) -> Iterator[str]:
    """The app on a real HTTP server in a background thread, sharing the test's store; yields its base URL."""
    with serving(make_app(TESTING=False)) as (host, port):
        yield f"http://{host}:{port}"


class Recorder:
    """What a browser context did: its requests, navigations and any console errors."""

    def __init__(self, context: BrowserContext):
        self.requests: list[tuple[str, str]] = []
        self.navigations: list[tuple[Page, str]] = []
        self.errors: list[str] = []
        self.documents: set[str] = set()
        context.on("request", self._request)
        context.on("console", self._console)
        context.on("weberror", lambda error: self.errors.append(f"page error: {error.error}"))
        context.on("page", self._page)

    def _console(self, message) -> None:
        url = message.location.get("url")
        # Chromium logs every page answered with 4xx as a failed resource; the tests assert those statuses.
        if message.text.startswith("Failed to load resource") and url in self.documents:
            return
        if message.type == "error" or "Content Security Policy" in message.text:
            self.errors.append(f"console {message.type}: {message.text} ({url})")

    def _request(self, request) -> None:
        self.requests.append((request.method, request.url))
        if request.resource_type == "document":
            self.documents.add(request.url)

    def _page(self, page: Page) -> None:
        page.on("framenavigated", lambda frame: frame == page.main_frame and self.navigations.append((page, frame.url)))

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, url in self.requests if m == method and url.split("?")[0].endswith(path))

    def navigated(self, page: Page) -> int:
        return sum(1 for p, _ in self.navigations if p is page)


@pytest.fixture
def open_context(browser, live_server) -> Iterator[Callable[..., tuple[BrowserContext, Recorder]]]:
    """Open browser contexts (one session each) on the live server; none may log an error or a CSP violation."""
    opened: list[tuple[BrowserContext, Recorder]] = []

    def open_one(javascript: bool = True) -> tuple[BrowserContext, Recorder]:
        context = browser.new_context(base_url=live_server, java_script_enabled=javascript)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        recorder = Recorder(context)
        opened.append((context, recorder))
        return context, recorder

    yield open_one
    errors = [error for _, recorder in opened for error in recorder.errors]
    for context, _ in opened:
        context.close()
    assert errors == [], "the browser logged errors"


def job_id_of(page: Page) -> str:
    match = re.fullmatch(r".*/jobs/([0-9a-f]{32})", page.url)
    assert match, page.url
    return match.group(1)


def state_of(page: Page) -> str:
    return page.get_attribute("#job-status", "data-state")


def wait_for_state(page: Page, *states: str) -> None:
    page.wait_for_selector(", ".join(f"#job-status[data-state={state}]" for state in states))


def submit(page: Page, kind: str, **fields: str) -> str:
    """Fill in a kind's form as a person would, send it, and return the new job's id."""
    page.goto(f"/jobs/new/{kind}")
    if fields.get("label"):
        page.fill("#label", fields["label"])
    if kind == "timer":
        page.fill("#seconds", fields.get("seconds", "1"))
        if fields.get("fail"):
            page.check("#fail")
    elif kind == "checksum":
        page.set_input_files(
            "#file", files=[{"name": "data.bin", "mimeType": "application/octet-stream", "buffer": CHECKSUM_DATA}]
        )
        page.select_option("#algorithm", "sha512")
    else:
        page.set_input_files("#file", files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": CSV_DATA}])
    with page.expect_navigation():
        page.click("#submit")
    return job_id_of(page)


def assert_result(page: Page, kind: str) -> None:
    """The finished job's result is on the page, in the status region."""
    status = page.locator("#job-status")
    if kind == "timer":
        assert status.locator(".result-timer strong").inner_text() == "3.0"
    elif kind == "checksum":
        assert status.locator("code.digest").inner_text() == hashlib.sha512(CHECKSUM_DATA).hexdigest()
    else:
        names = status.locator("table.csv-profile tbody th[scope=row]").all_inner_texts()
        assert names == ["name", "age", "joined"]


KIND_FIELDS = {"timer": {"seconds": "3"}, "checksum": {}, "csv_profile": {}}


def test_fragment_swaps_to_the_result_and_polling_stops(open_context, start_consumer, backend):
    """Each kind of job goes from queued to its result by swaps of the fragment alone; then polling stops."""
    context, recorder = open_context()
    pages, jobs = {}, {}
    # The consumer starts only once every page shows its job queued, so each page must change by polling.
    for kind, fields in KIND_FIELDS.items():
        page = pages[kind] = context.new_page()
        jobs[kind] = submit(page, kind, **fields)
        response = page.request.get(page.url)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert state_of(page) == "queued"
        assert page.get_attribute("#job-status", "hx-trigger") == "every 1s"
        page.evaluate("window.__marker = 1")
    loaded = {kind: recorder.navigated(page) for kind, page in pages.items()}
    start_consumer()

    timer = pages["timer"]
    wait_for_state(timer, "running")
    assert timer.locator("#job-status progress").count() == 1
    for kind, page in pages.items():
        wait_for_state(page, "succeeded")
        assert_result(page, kind)

    polls = {kind: recorder.count("GET", f"/jobs/{jobs[kind]}/status") for kind in pages}
    assert all(count >= 1 for count in polls.values()), polls
    timer.wait_for_timeout(QUIET_MS)
    for kind, page in pages.items():
        assert recorder.count("GET", f"/jobs/{jobs[kind]}/status") == polls[kind], f"{kind} kept polling"
        assert page.evaluate("window.__marker") == 1, f"the {kind} page was reloaded"
        assert recorder.navigated(page) == loaded[kind], f"the {kind} page navigated"
        assert page.get_attribute("#job-status", "hx-trigger") is None


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_the_tab_title_and_the_open_timeline_follow_the_job(open_context, start_consumer, backend, javascript):
    """A person who switched tabs sees the state in the title; a timeline they opened stays open while it updates."""
    context, _ = open_context(javascript=javascript)
    page = context.new_page()
    submit(page, "timer", seconds="2", label="Tab test")
    assert page.title() == "Queued · Tab test · Tasklight"
    page.click("details.timeline summary")
    start_consumer()
    page.wait_for_function("() => document.title.startsWith('Running')", timeout=20_000)
    wait_for_state(page, "succeeded")
    page.wait_for_function("() => document.title === 'Succeeded · Tab test · Tasklight'", timeout=20_000)
    if javascript:  # Without JavaScript the page reloads, and a reloaded <details> starts closed.
        assert page.locator("details.timeline").get_attribute("open") is not None
        page.wait_for_selector("#job-timeline li[data-event=succeeded]")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_without_javascript_the_page_refreshes_until_the_result(open_context, start_consumer, backend):
    """With JavaScript off, the meta refresh carries each page to its result, then the refreshing stops."""
    context, recorder = open_context(javascript=False)
    pages, jobs = {}, {}
    for kind, fields in KIND_FIELDS.items():
        page = pages[kind] = context.new_page()
        jobs[kind] = submit(page, kind, **fields)
        assert state_of(page) == "queued"
        assert page.locator("head noscript").count() == 1
    loaded = {kind: recorder.navigated(page) for kind, page in pages.items()}
    start_consumer()

    for kind, page in pages.items():
        wait_for_state(page, "succeeded")
        assert_result(page, kind)
        assert page.locator("head noscript").count() == 0
        assert recorder.navigated(page) > loaded[kind], f"the {kind} page never refreshed"
    refreshed = {kind: recorder.navigated(page) for kind, page in pages.items()}
    pages["timer"].wait_for_timeout(QUIET_MS)
    for kind, page in pages.items():
        assert recorder.navigated(page) == refreshed[kind], f"the {kind} page kept refreshing"
        assert recorder.count("GET", f"/jobs/{jobs[kind]}/status") == 0


def job_count(context: BrowserContext) -> int:
    response = context.request.get("/jobs", headers={"Accept": "application/json"})
    return len(response.json()["jobs"])


def assert_full_page(page: Page) -> None:
    assert page.locator("header.site").count() == 1
    assert page.locator("main h1").count() == 1
    assert page.locator("#job-status").count() == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_back_button_neither_resubmits_nor_shows_a_bare_fragment(open_context, consumer, backend):
    """Back from a job's page returns to its form without sending it again; back to the job shows the whole page."""
    context, recorder = open_context()
    page = context.new_page()
    job_id = submit(page, "timer", seconds="3")
    wait_for_state(page, "running")
    # The page may have been rendered already running; wait until the fragment has polled at least once.
    with page.expect_response(lambda response: response.url.endswith(f"/jobs/{job_id}/status"), timeout=5000):
        pass
    assert recorder.count("GET", f"/jobs/{job_id}/status") >= 1

    page.go_back()
    assert page.url.endswith("/jobs/new/timer")
    assert page.locator("form #seconds").count() == 1
    page.go_forward()
    assert job_id_of(page) == job_id
    assert_full_page(page)
    wait_for_state(page, "succeeded")

    page.click("header.site >> text=My jobs")
    page.wait_for_url("**/jobs")
    page.go_back()
    assert job_id_of(page) == job_id
    assert_full_page(page)
    assert recorder.count("POST", "/jobs/new/timer") == 1
    assert job_count(context) == 1


def wait_for_url_change(page: Page, old_url: str) -> None:
    page.wait_for_url(lambda url: url != old_url)


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cancel_and_retry_buttons(open_context, consumer, backend, javascript):
    """Cancel stops a running timer; Retry of a failed one starts a new job that links back to it."""
    context, _ = open_context(javascript=javascript)
    page = context.new_page()
    long_job = submit(page, "timer", seconds="30")
    wait_for_state(page, "running")
    with page.expect_navigation():
        page.click("#cancel-button")
    assert job_id_of(page) == long_job
    assert "Cancelling" in page.locator(".flash").inner_text() or state_of(page) == "cancelled"
    wait_for_state(page, "cancelled")
    assert "while it was running" in page.locator("#job-status").inner_text()

    failed_job = submit(page, "timer", seconds="0.3", fail="y")
    wait_for_state(page, "failed")
    assert "as you asked" in page.locator("#job-status .error").inner_text()
    with page.expect_navigation():
        page.click("#retry-button")
    new_job = job_id_of(page)
    assert new_job != failed_job
    link = page.locator(f"dl.job-facts a[href='/jobs/{failed_job}']")
    assert link.count() == 1
    assert link.locator("xpath=../preceding-sibling::dt[1]").inner_text() == "Retry of"
    wait_for_state(page, "failed")
    assert job_count(context) == 3


def tab_to(page: Page, element_id: str, limit: int = 20) -> None:
    """Press Tab until the element with this id has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    pytest.fail(f"#{element_id} could not be reached with Tab")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_keyboard_alone_submits_a_timer_and_cancels_it(open_context, consumer, backend):
    """Tab, typing, Space and Enter fill in and send the timer form, and reach and press Cancel."""
    context, _ = open_context()
    page = context.new_page()
    page.goto("/jobs/new/timer")
    tab_to(page, "seconds")
    page.keyboard.type("20")
    assert page.input_value("#seconds") == "20"  # tabbing in selected the default, so typing replaced it
    tab_to(page, "fail")
    page.keyboard.press("Space")
    assert page.is_checked("#fail")
    tab_to(page, "submit")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    job_id = job_id_of(page)
    wait_for_state(page, "running")
    # The fragment is swapped every second meanwhile; htmx gives the focus back to the element with the same id.
    tab_to(page, "cancel-button")
    page.wait_for_timeout(1_500)
    assert page.evaluate("document.activeElement.id") == "cancel-button", "a swap took the focus away"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert job_id_of(page) == job_id
    wait_for_state(page, "cancelled")


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_console_errors_or_csp_violations_on_any_page(open_context, consumer, backend, javascript):
    """Every kind of page loads cleanly under the Content-Security-Policy (the fixture checks the console)."""
    context, recorder = open_context(javascript=javascript)
    page = context.new_page()
    for path in ("/", "/jobs/new/timer", "/jobs/new/checksum", "/jobs/new/csv_profile", "/jobs"):
        response = page.goto(path)
        assert response.status == 200, path
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
    page.goto("/jobs/new/timer")
    page.fill("#seconds", "99999")
    with page.expect_navigation():
        page.click("#submit")
    assert page.locator(".has-error #seconds-error").count() == 1
    submit(page, "timer", seconds="0.2")
    wait_for_state(page, "succeeded")
    page.goto("/jobs")
    assert page.locator("table.jobs tbody tr").count() == 1
    assert page.goto("/jobs/" + "0" * 32).status == 404
    assert page.locator("main h1").inner_text() == "Job not found"
    # The stylesheet and htmx really were applied, not blocked.
    assert page.evaluate("getComputedStyle(document.querySelector('header.site')).display") == "flex"
    if javascript:
        assert page.evaluate("typeof htmx") == "object"
    assert recorder.errors == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_csp_violations_would_be_caught(browser, live_server, backend):
    """The CSP is enforced and the watcher sees a violation, so a clean run above means something."""
    context = browser.new_context(base_url=live_server)
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    recorder = Recorder(context)
    page = context.new_page()
    page.goto("/")
    page.evaluate("document.body.setAttribute('style', 'background: red')")
    page.evaluate(INJECT_INLINE_SCRIPT)
    deadline = time.monotonic() + 5
    while len(recorder.errors) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert page.evaluate("window.__ran") is None
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgb(255, 0, 0)"
    assert any("CSP violation: style-src" in error for error in recorder.errors), recorder.errors
    assert any("CSP violation: script-src" in error for error in recorder.errors), recorder.errors
    context.close()


#: What the page on screen is: its type, its job's state (on the job's page, or its row in My jobs), and whether its
#: document came from the browser's cache.
DOCUMENT = """() => {
  const entry = performance.getEntriesByType("navigation")[0];
  const status = document.querySelector("#job-status, tr[data-id]");
  return {type: document.contentType, html: !!document.querySelector("main h1"), path: location.pathname,
          state: status && status.dataset.state, navigation: entry.type,
          fromCache: entry.deliveryType === "cache" || entry.transferSize === 0};
}"""

#: The job's JSON, fetched from the page as a script of its own would, through the browser's HTTP cache.
FETCH_JSON = """async (url) => {
  const response = await fetch(url, {headers: {Accept: "application/json"}});
  const body = await response.text();
  let state = null;
  try { state = JSON.parse(body).state; } catch (error) { state = `not JSON: ${body.slice(0, 40)}`; }
  return {type: response.headers.get("content-type"), cacheControl: response.headers.get("cache-control"),
          vary: response.headers.get("vary"), state};
}"""

#: The steps of walk_back_and_forth that land on a page by Back or Forward.
HISTORY_STEPS = ("back after it succeeded", "back after its JSON was fetched", "forward to My jobs", "back again")


@pytest.fixture
def steady_page(open_context, make_app, live_server) -> Page:
    """A page whose session cookie stays the same throughout, as it does within a second.

    Flask signs a permanent session again on every answer, with the time in it, and every page answer says
    ``Vary: Cookie``; a new cookie would send the browser to the server and hide what its cache would have shown.
    A session that is not permanent keeps its cookie, so the test sees the cache at its most eager.
    """
    context, _ = open_context()
    app = make_app()  # the same secret key as the live server's, to sign the cookie
    cookie = app.session_interface.get_signing_serializer(app).dumps({"owner": "back-and-forth"})
    context.add_cookies([{"name": app.config["SESSION_COOKIE_NAME"], "value": cookie, "url": live_server}])
    return context.new_page()


def walk_back_and_forth(page: Page, start_consumer, job_id: str) -> dict[str, dict]:
    """Open the job's page while it waits, let it succeed, fetch its JSON, walk away and back: what each step showed."""
    seen = {}
    cookies = page.context.cookies()

    def away_and_back(label: str) -> None:
        page.click("header.site >> text=My jobs")
        page.wait_for_url("**/jobs")
        page.go_back()
        assert job_id_of(page) == job_id
        seen[label] = page.evaluate(DOCUMENT)

    # A plain GET of the page, so that this very document is what a cache would hold.
    page.goto(f"/jobs/{job_id}")
    seen["opened while queued"] = page.evaluate(DOCUMENT)
    start_consumer()
    wait_for_state(page, "succeeded")
    away_and_back("back after it succeeded")
    seen["its JSON fetched"] = page.evaluate(FETCH_JSON, f"/jobs/{job_id}")
    away_and_back("back after its JSON was fetched")
    page.go_forward()
    page.wait_for_url("**/jobs")
    seen["forward to My jobs"] = page.evaluate(DOCUMENT)
    page.go_back()
    assert job_id_of(page) == job_id
    seen["back again"] = page.evaluate(DOCUMENT)
    assert page.context.cookies() == cookies, "the session cookie changed, so the cache was not put to the test"
    return seen


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_back_and_forward_never_show_json_or_an_htmx_snapshot(steady_page, start_consumer, backend):
    """Back to a job's page after a script fetched its JSON from that page shows the HTML page, not the JSON."""
    page = steady_page
    job_id = submit(page, "timer", seconds="1")
    # htmx 2 keeps no snapshots of pages for its history, which could hold a stale or private page.
    assert page.evaluate("htmx.config.historyCacheSize") == 0
    seen = walk_back_and_forth(page, start_consumer, job_id)
    fetched = seen["its JSON fetched"]
    assert (fetched["type"], fetched["state"]) == ("application/json", "succeeded")
    for label in HISTORY_STEPS:
        shown = seen[label]
        assert (shown["type"], shown["html"], shown["navigation"]) == ("text/html", True, "back_forward"), label
    assert page.evaluate("sessionStorage.getItem('htmx-history-cache')") is None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_back_and_forward_show_the_job_as_it_is_now(steady_page, start_consumer, backend):
    """After a job ends, Back shows it succeeded, fetched again: job pages and JSON say no-store, fragments no-cache."""
    page = steady_page
    job_id = submit(page, "timer", seconds="1")
    html = page.request.get(f"/jobs/{job_id}")
    fragment = page.request.get(f"/jobs/{job_id}/status")
    assert fragment.headers["cache-control"] == "private, no-cache" and fragment.headers["etag"]
    seen = walk_back_and_forth(page, start_consumer, job_id)
    assert seen["opened while queued"]["state"] == "queued"
    fetched = seen["its JSON fetched"]
    for vary in (html.headers["vary"], fragment.headers["vary"], fetched["vary"]):
        assert "Accept" in [part.strip() for part in vary.split(",")], vary
    for label in HISTORY_STEPS:
        assert seen[label]["state"] == "succeeded", f"{label}: {seen[label]}"
        if seen[label]["path"] != "/jobs":  # My jobs is not a job page; the contract leaves its caching open
            assert not seen[label]["fromCache"], f"{label}: the page came from the browser's cache"
    assert (html.headers["cache-control"], fetched["cacheControl"]) == ("no-store", "no-store")
