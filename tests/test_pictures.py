"""Pictures people can read: each job's duration in the lists, and colour contrast in dark mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import csrf_token, serving, soup
from playwright.sync_api import Page
from test_checkers import OWNER, axe_violations, make_jobs

from webapp.store import Job, new_id

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

ADMIN_TOKEN = "pictures-admin-token"
TIMEOUT_MS = 20_000
#: A moment for the store's clock, so that durations come out exact.
NOW = 1_900_000_000.0


# Durations in the lists of jobs ------------------------------------------------------------------------------------


def test_job_lists_show_how_long_each_job_ran(make_app, monkeypatch):
    """Ended: start to end; running: start to now; never started or between attempts: a dash. Both lists agree."""
    app = make_app(ADMIN_TOKEN=ADMIN_TOKEN, HEARTBEAT_TIMEOUT=3600)
    store = app.extensions["tasklight"].store
    clock = [NOW]
    monkeypatch.setattr(store, "now", lambda: clock[0])

    def job(at: float) -> str:
        clock[0] = at
        made = Job(id=new_id(), kind="timer", owner=OWNER, inputs={"seconds": 1.0, "fail": False}, created_at=at)
        store.create(made)
        return made.id

    def at(moment: float, action, *args, **kwargs) -> None:
        clock[0] = moment
        action(*args, **kwargs)

    queued = job(NOW - 500)
    succeeded = job(NOW - 400)
    at(NOW - 399, store.start, succeeded, "w:1")
    at(NOW - 395.5, store.finish, succeeded, "succeeded", {"result": {"seconds": 3.5}})
    failed = job(NOW - 300)
    at(NOW - 290, store.start, failed, "w:1")
    at(NOW - 100, store.finish, failed, "failed", {"error": {"message": "No."}})
    cancelled = job(NOW - 200)
    at(NOW - 150, store.finish, cancelled, "cancelled")
    retrying = job(NOW - 100)
    at(NOW - 99, store.start, retrying, "w:1")
    at(NOW - 98, store.update, retrying, {"state": "retrying", "next_attempt_at": NOW + 60})
    running = job(NOW - 80)
    at(NOW - 75, store.start, running, "w:1")
    clock[0] = NOW
    expected = {
        queued: ("—", None),
        succeeded: ("3.5 s", "PT3.500S"),
        failed: ("3 min 10 s", "PT190.000S"),
        cancelled: ("—", None),
        retrying: ("—", None),
        running: ("1 min 15 s", "PT75.000S"),
    }

    def durations(page) -> dict[str, tuple[str, str | None]]:
        found = {}
        for row in page.select("tbody tr"):
            cell = row.select_one("td.duration")
            time = cell.find("time")
            found[row["data-id"]] = (cell.get_text(strip=True), time["datetime"] if time else None)
        return found

    def headers(page) -> list[str]:
        return [th.get_text(strip=True) for th in page.select("table.jobs thead th")]

    client = app.test_client()
    with client.session_transaction() as session:
        session["owner"] = OWNER
    mine = soup(client.get("/jobs"))
    assert headers(mine)[-1] == "Duration"
    assert durations(mine) == expected
    # The rows My jobs refreshes itself with while a job runs, so the running one's time goes on.
    assert durations(soup(client.get("/jobs/rows"))) == expected
    login = {"csrf_token": csrf_token(client, "/admin/login"), "token": ADMIN_TOKEN}
    admin = soup(client.post("/admin/login", data=login, follow_redirects=True))
    assert headers(admin)[-1] == "Duration"
    assert durations(admin) == expected


# Dark mode ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def dark_page(make_app, browser) -> Iterator[tuple[Page, dict[str, str]]]:
    """A page in a browser that prefers dark colours, on the site served live and signed in as the jobs' owner."""
    # A long heartbeat timeout keeps the running job running however long the test takes.
    app = make_app(HEARTBEAT_TIMEOUT=3600)
    ids = make_jobs(app.extensions["tasklight"].store)
    with serving(app) as (host, port):
        base = f"http://{host}:{port}"
        context = browser.new_context(base_url=base, color_scheme="dark")
        context.set_default_timeout(TIMEOUT_MS)
        cookie = app.session_interface.get_signing_serializer(app).dumps({"owner": OWNER})
        context.add_cookies([{"name": app.config["SESSION_COOKIE_NAME"], "value": cookie, "url": base}])
        yield context.new_page(), ids
        context.close()


def contrast_violations(page: Page) -> list[str]:
    """axe-core's color-contrast rule alone, on the page as it stands; a line per element that fails it."""
    return axe_violations(page, ["color-contrast"])


def lightness(page: Page, selector: str, prop: str) -> float:
    """The mean of a computed colour's red, green and blue, from 0 to 255."""
    colour = page.eval_on_selector(selector, f"(element) => getComputedStyle(element).{prop}")
    return sum(float(part) for part in colour[colour.index("(") + 1 : -1].split(",")[:3]) / 3


@pytest.mark.browser
def test_dark_mode_has_enough_contrast(dark_page):
    """In a browser that prefers dark colours the pages turn dark, and axe finds no text too faint to read."""
    page, ids = dark_page
    found: dict[str, list[str]] = {}

    def check(label: str) -> None:
        # Dark, not the light pages merely shown to a dark-mode browser, or this test would prove nothing.
        assert lightness(page, "html", "backgroundColor") < 64 < lightness(page, "main", "color"), label
        if violations := contrast_violations(page):
            found[label] = violations

    for label, path in [
        ("catalogue", "/"),
        ("running job", f"/jobs/{ids['running']}"),
        ("succeeded CSV profile", f"/jobs/{ids['succeeded-csv_profile']}"),
        ("failed job", f"/jobs/{ids['failed']}"),
        ("my jobs", "/jobs"),
    ]:
        assert page.goto(path).status == 200, label
        check(label)
    page.goto("/jobs/new/timer")
    page.fill("#seconds", "9999")
    with page.expect_navigation():
        page.click("#submit")
    assert page.locator(".has-error").count() == 1
    check("form with errors")

    assert found == {}, "axe found text too faint in dark mode:\n" + "\n".join(
        f"{label}: {line}" for label, lines in found.items() for line in lines
    )

    # A control: light-mode ink on the dark page is caught.
    page.evaluate(
        """() => {
          const faint = document.createElement("p");
          faint.textContent = "Hard to read";
          faint.style.color = "#1d2430";  // the CSSOM is not blocked by the CSP, unlike a style attribute
          document.querySelector("main").append(faint);
        }"""
    )
    assert len(contrast_violations(page)) == 1
