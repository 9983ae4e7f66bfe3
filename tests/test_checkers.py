"""Every page a person can see, judged by tools written elsewhere: axe-core in Chromium and the Nu Html Checker."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import csrf_token, serving, submit
from playwright.sync_api import Page

from webapp.kinds import KINDS
from webapp.profiling import profile_csv
from webapp.shares import share_url
from webapp.store import Job, error_ref, new_id

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

ROOT = Path(__file__).resolve().parent.parent
OWNER = "checkers-owner"
ADMIN_TOKEN = "checkers-admin-token"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
VNU = ROOT / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
TIMEOUT_MS = 20_000

CHECKSUM_DATA = bytes(range(256)) * 16
CSV_DATA = (
    b"name,age,joined,score,city\n"
    b"ada,36,2020-01-02,1.5,London\n"
    b"grace,45,2021-03-04,2.25,Arlington\n"
    b"ada,,2022-05-06,3,London\n"
    b"linus,54,2023-07-08,-0.5,Helsinki\n"
)

#: The one kind of message the Nu Html Checker may report: htmx's own attributes. HTML has no ``hx-*`` attributes,
#: and htmx reads them rather than ``data-hx-*`` by design; they are what its documentation and our contract use.
HTMX_ATTRIBUTE = re.compile(r"^Attribute “hx-[a-z-]+” not allowed on element “[a-z0-9]+” at this point\.$")


def make_jobs(store) -> dict[str, str]:
    """One job in each state and with each kind of result, for OWNER, as a worker would have left it."""
    ids: dict[str, str] = {}

    def create(name: str, kind: str = "timer", upload: tuple[str, bytes] | None = None, **fields) -> str:
        inputs = {"timer": {"seconds": 4.0, "fail": False, "crash_attempts": 0}, "checksum": {"algorithm": "sha256"}}
        job = Job(id=new_id(), kind=kind, owner=OWNER, inputs=inputs.get(kind, {}), **fields)
        if upload:
            job.upload_name, job.upload_size = upload[0], len(upload[1])
        store.create(job, upload[1] if upload else None)
        ids[name] = job.id
        return job.id

    def running(name: str, **fields) -> str:
        job_id = create(name, **fields)
        store.start(job_id, "checkers:1")
        return job_id

    failed = running("failed")
    store.finish(failed, "failed", {"error": {"message": "The timer failed after 4 s, as you asked.", "ref": "x-1"}})
    # A queued re-run of the failed job: both pages then link to each other.
    store.update(failed, {"retried_by": create("queued", retry_of=failed)})
    create("to-cancel")
    create("scheduled", scheduled_for=store.now() + 3600)

    store.update(running("running"), {"progress": {"done": 1, "total": 4, "message": "1.0 of 4 s"}})
    store.update(running("running-indeterminate"), {"progress": {"done": 3, "total": None, "message": "working"}})

    retrying = running("retrying", max_attempts=3)
    store.update(retrying, {"state": "retrying", "next_attempt_at": store.now() + 60, "traceback": "Traceback: …"})

    store.finish(running("succeeded-timer"), "succeeded", {"result": {"seconds": 4.0}})
    checksum = running("succeeded-checksum", kind="checksum", upload=("data.bin", CHECKSUM_DATA))
    digest = {"algorithm": "sha256", "hexdigest": "ab" * 32, "size": len(CHECKSUM_DATA)}
    store.finish(checksum, "succeeded", {"result": digest})
    profile = profile_csv(io.BytesIO(CSV_DATA), len(CSV_DATA), lambda done, total: None)
    csv_job = running("succeeded-csv_profile", kind="csv_profile", upload=("people.csv", CSV_DATA))
    store.finish(csv_job, "succeeded", {"result": profile})

    store.finish(running("cancelled"), "cancelled")
    lost = running("lost")
    store.finish(
        lost, "lost", {"error": {"message": "The worker running this job stopped.", "ref": error_ref(lost, 1)}}
    )
    expired = create("expired")
    store.finish(expired, "expired", {"error": {"message": "The job was not started in time, so it was not run."}})

    purged = create("purged")
    store.purge(purged)
    return ids


#: Entries of ``make_jobs``'s answer that are not a job page of the owner's: a purged id, and a share link's path.
NOT_JOB_PAGES = ("purged", "shared")


def owner_pages(ids: dict[str, str]) -> list[tuple[str, str, int]]:
    """(label, path, status) of each page its owner can simply open."""
    pages = [("catalogue", "/", 200)]
    pages += [(f"form {kind}", f"/jobs/new/{kind}", 200) for kind in KINDS]
    pages += [(f"job {name}", f"/jobs/{job_id}", 200) for name, job_id in ids.items() if name not in NOT_JOB_PAGES]
    pages += [("shared result", ids["shared"], 200)]
    pages += [("my jobs", "/jobs", 200), ("my jobs, none match", "/jobs?state=failed&kind=csv_profile", 200)]
    pages += [("not found", "/jobs/" + "0" * 32, 404), ("gone", f"/jobs/{ids['purged']}", 410)]
    return pages


#: What each form is sent with to come back with errors: a value out of range, or no file.
INVALID = {"timer": {"seconds": "9999", "crash_attempts": "7"}, "checksum": {}, "csv_profile": {}}


@pytest.fixture
def site(make_app) -> tuple:
    """The app with admin pages and the diagnostic fields on (every field a form can show), and its jobs."""
    app = make_app(ADMIN_TOKEN=ADMIN_TOKEN, DIAGNOSTICS=True)
    store = app.extensions["tasklight"].store
    ids = make_jobs(store)
    # A share link of the CSV profile, with its inputs: the page anyone with the link sees.
    profile = store.get(ids["succeeded-csv_profile"])
    share = {"id": "checkers", "created_at": store.now(), "expires_at": store.now() + 3600, "inputs": True}
    store.update(profile.id, {"shares": [share]})
    with app.test_request_context():
        ids["shared"] = urlsplit(share_url(store.get(profile.id), share)).path
    return app, ids


# axe-core ----------------------------------------------------------------------------------------------------------


def inject_axe(page: Page) -> None:
    """Load axe-core into the page; evaluate runs in the page's world by the DevTools protocol, not under its CSP."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text())


#: htmx swaps a waiting job's fragment for the same markup every second; cancelling its requests holds the page still
#: while axe reads it, and the wait lets a request already under way land first.
HOLD_STILL = """() => document.body.addEventListener("htmx:beforeRequest", (event) => event.preventDefault())"""
SETTLED = "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')"


def axe_violations(page: Page, rules: list[str] | None = None) -> list[str]:
    """Run axe on the page as it stands: its default rules (color-contrast included, none turned off), or only
    ``rules``; a line per violation and node."""
    inject_axe(page)
    if page.evaluate("typeof htmx === 'object'"):
        page.evaluate(HOLD_STILL)
        page.wait_for_function(SETTLED)
    options = json.dumps({"runOnly": rules} if rules else {})
    results = page.evaluate(f"async () => await axe.run(document, {options})")
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at {node['target']}: {node['failureSummary']}"
        for violation in results["violations"]
        for node in violation["nodes"]
    ]


@pytest.fixture
def live_site(site, browser) -> Iterator[tuple[Page, dict[str, str]]]:
    """A page in one browser context on the site served live, signed in as OWNER."""
    app, ids = site
    with serving(app) as (host, port):
        base = f"http://{host}:{port}"
        context = browser.new_context(base_url=base)
        context.set_default_timeout(TIMEOUT_MS)
        cookie = app.session_interface.get_signing_serializer(app).dumps({"owner": OWNER})
        context.add_cookies([{"name": app.config["SESSION_COOKIE_NAME"], "value": cookie, "url": base}])
        yield context.new_page(), ids
        context.close()


@pytest.mark.browser
def test_axe_finds_violations_on_a_broken_page(live_site):
    """A picture with no text and pale text on white are caught, so a clean run below means something."""
    page, _ = live_site
    page.goto("/")
    assert axe_violations(page) == []
    page.evaluate(
        """() => {
          const img = document.createElement("img");
          img.src = "data:image/gif;base64,R0lGODlhAQABAAAAACw=";
          const pale = document.createElement("p");
          pale.textContent = "Hard to read";
          pale.style.color = "#c8c8c8";  // the CSSOM is not blocked by the CSP, unlike a style attribute
          document.querySelector("main").append(img, pale);
        }"""
    )
    found = {line.split(" ", 1)[0] for line in axe_violations(page)}
    assert found == {"image-alt", "color-contrast"}, found


@pytest.mark.browser
def test_every_page_passes_axe(live_site):
    """axe-core finds no violation on any page a person can see, in the real Chromium."""
    page, ids = live_site
    found: dict[str, list[str]] = {}

    def check(label: str) -> None:
        if violations := axe_violations(page):
            found[label] = violations

    for label, path, status in owner_pages(ids):
        response = page.goto(path)
        assert response.status == status, (label, response.status)
        check(label)

    for kind, fields in INVALID.items():
        page.goto(f"/jobs/new/{kind}")
        for name, value in fields.items():
            page.fill(f"#{name}", value)
        with page.expect_navigation():
            page.click("#submit")
        assert page.locator(".has-error").count() >= 1, kind
        check(f"form {kind} with errors")

    # A flash message: cancel a queued job with its button.
    page.goto(f"/jobs/{ids['to-cancel']}")
    with page.expect_navigation():
        page.click("#cancel-button")
    assert page.locator(".flash").count() == 1
    check("job cancelled, with a flash message")

    assert page.goto("/admin").url.endswith("/admin/login?next=/admin")
    check("admin sign-in")
    page.fill("#token", "wrong")
    with page.expect_navigation():
        page.click("#submit")
    assert page.locator(".form-error").count() == 1
    check("admin sign-in with an error")
    page.fill("#token", ADMIN_TOKEN)
    with page.expect_navigation():
        page.click("#submit")
    assert page.url.endswith("/admin")
    check("admin")
    for name in ("retrying", "running", "succeeded-csv_profile", "failed"):
        assert page.goto(f"/admin/jobs/{ids[name]}").status == 200
        check(f"admin job {name}")
    assert page.goto("/admin/bulk/retry?state=failed").status == 200
    check("admin bulk confirmation")

    assert found == {}, "axe found violations:\n" + "\n".join(
        f"{label}: {line}" for label, lines in found.items() for line in lines
    )


# The Nu Html Checker -----------------------------------------------------------------------------------------------

#: A fragment is checked inside the smallest document that holds it.
FRAGMENT_DOCUMENT = "".join(
    (
        '<!doctype html><html lang="en"><head><title>{title}</title></head>',
        "<body><main><h1>Job</h1>{body}</main></body></html>",
    )
)


def fragment_document(fragment: str) -> str:
    """The fragment as htmx applies it: the <title> at its top names the tab, the rest goes in the page."""
    title = re.search(r"<title>(.*?)</title>", fragment, re.S)
    assert title is not None, "a status fragment names the job's state in a <title>"
    return FRAGMENT_DOCUMENT.format(title=title.group(1), body=fragment.replace(title.group(0), "", 1))


def run_vnu(files: list[Path]) -> dict[str, list[dict]]:
    """Check ``files`` in one run of the Nu Html Checker (the JVM is slow to start); its findings by file name."""
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is missing: run scripts/test, which installs Debian's default-jre-headless")
    if not VNU.exists():
        pytest.fail(f"{VNU.relative_to(ROOT)} is missing: run scripts/test, which installs vnu-jar from npm")
    command = [java, "-jar", str(VNU), "--format", "json", "--stdout", *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip(), f"the Nu Html Checker said nothing (exit {done.returncode}): {done.stderr}"
    found: dict[str, list[dict]] = {file.name: [] for file in files}
    for message in json.loads(done.stdout)["messages"]:
        # Errors and warnings ("info" of subType "warning") count; the rest of "info" is only information.
        if message["type"] != "info" or message.get("subType") == "warning":
            found.setdefault(message.get("url", "").rsplit("/", 1)[-1], []).append(message)
    return found


def findings(messages: list[dict]) -> list[str]:
    """Each message but those about htmx's attributes, in a line."""
    return [
        f"{m['type']}: {m['message']} (line {m.get('lastLine', '?')}: {m.get('extract', '')!r})"
        for m in messages
        if not HTMX_ATTRIBUTE.match(m["message"])
    ]


def test_every_page_passes_the_nu_html_checker(site, tmp_path):
    """The server's HTML of every page and status fragment passes the Nu Html Checker, but for htmx's attributes."""
    app, ids = site
    client = app.test_client()
    with client.session_transaction() as session:
        session["owner"] = OWNER
    documents: dict[str, str] = {}

    def keep(label: str, response, status: int) -> None:
        assert response.status_code == status, (label, response.status_code)
        documents[label] = response.get_data(as_text=True)

    for label, path, status in owner_pages(ids):
        keep(label, client.get(path), status)
        if label.startswith("job "):
            fragment = client.get(f"{path}/status").get_data(as_text=True)
            documents[f"fragment {label[4:]}"] = fragment_document(fragment)
    for kind, fields in INVALID.items():
        keep(f"form {kind} with errors", submit(client, kind, fields), 400)
    cancel = f"/jobs/{ids['to-cancel']}"
    sent = client.post(f"{cancel}/cancel", data={"csrf_token": csrf_token(client, cancel)}, follow_redirects=True)
    keep("job cancelled, with a flash message", sent, 200)

    keep("admin sign-in", client.get("/admin/login?next=/admin"), 200)
    login = {"csrf_token": csrf_token(client, "/admin/login")}
    keep("admin sign-in with an error", client.post("/admin/login", data={**login, "token": "wrong"}), 403)
    keep("admin", client.post("/admin/login", data={**login, "token": ADMIN_TOKEN}, follow_redirects=True), 200)
    for name in ("retrying", "running", "succeeded-csv_profile", "failed"):
        keep(f"admin job {name}", client.get(f"/admin/jobs/{ids[name]}"), 200)
    keep("admin bulk confirmation", client.get("/admin/bulk/retry?state=failed"), 200)

    # A control: a real error and an htmx attribute, so that a clean run means something and the filter is narrow.
    documents["control"] = FRAGMENT_DOCUMENT.format(
        title="Control", body='<div hx-get="/x"><p><div>in a paragraph</div></p></div>'
    )
    files = []
    for number, (label, html) in enumerate(documents.items()):
        files.append(tmp_path / f"{number:02d}-{re.sub(r'[^a-z0-9]+', '-', label)}.html")
        files[-1].write_text(html, encoding="utf-8")
    messages = run_vnu(files)

    control = messages.pop(files[-1].name)
    assert any("hx-get" in m["message"] for m in control), control
    assert findings(control) and all("hx-" not in line for line in findings(control)), control
    assert set(messages) == {file.name for file in files[:-1]}, sorted(messages)
    found = {name: findings(lines) for name, lines in messages.items() if findings(lines)}
    assert found == {}, "the Nu Html Checker found errors:\n" + "\n".join(
        f"{name}: {line}" for name, lines in found.items() for line in lines
    )
