"""Accessibility of the markup: labelled fields and progress bars, a polite status region, landmarks."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from helpers import soup, submit

from webapp.kinds import KINDS
from webapp.store import Job, new_id

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

OWNER = "a11y-owner"


def assert_labelled(page: BeautifulSoup, control) -> None:
    """A form control has a ``<label for>`` with words in it, or an ``aria-label``."""
    labels = page.select(f'label[for="{control["id"]}"]') if control.get("id") else []
    names = [label.get_text(strip=True) for label in labels] + [control.get("aria-label", "").strip()]
    assert any(names), f"{control} has no label"


def assert_all_fields_labelled(page: BeautifulSoup) -> None:
    controls = [c for c in page.select("input, select, textarea") if c.get("type") != "hidden"]
    assert controls
    for control in controls:
        assert_labelled(page, control)
    for button in page.select("button"):
        assert button.get_text(strip=True), button


@pytest.mark.parametrize("kind", KINDS)
def test_every_form_field_has_a_label(client, kind):
    page = soup(client.get(f"/jobs/new/{kind}"))
    assert_all_fields_labelled(page)
    for control in page.select("[aria-describedby]"):
        for ref in control["aria-describedby"].split():
            assert page.select_one(f"#{ref}") is not None, ref


def test_field_errors_are_tied_to_their_fields(client):
    page = soup(submit(client, "timer", {"seconds": "-1"}))
    assert page.select_one("[role=alert]") is not None
    field = page.select_one("#seconds")
    assert field["aria-invalid"] == "true"
    assert "seconds-error" in field["aria-describedby"].split()
    assert "0 to 3600" in page.select_one("#seconds-error").get_text()


def test_pages_have_a_language_landmarks_and_one_heading(client):
    for path in ("/", "/jobs/new/timer", "/jobs", "/jobs/" + "0" * 32):
        page = soup(client.get(path))
        assert page.html["lang"] == "en"
        assert page.select_one("main") is not None
        assert page.select_one("nav[aria-label]") is not None
        assert len(page.select("h1")) == 1, path
        assert page.title.get_text(strip=True)


def test_job_list_filters_are_labelled(client):
    submit(client, "timer", {"seconds": "1"})
    assert_all_fields_labelled(soup(client.get("/jobs")))


@pytest.fixture
def make_job(app, client):
    """Record a job for this client's session straight in the store, in any state, without a worker."""
    with client.session_transaction() as session:
        session["owner"] = OWNER
    store = app.extensions["tasklight"].store

    def make(state: str, progress: dict | None = None) -> str:
        job = store.create(Job(id=new_id(), kind="timer", owner=OWNER, inputs={"seconds": 4.0, "fail": False}))
        if state != "queued":
            store.start(job.id, "test:1")
        if progress:
            store.update(job.id, {"progress": progress})
        if state == "succeeded":
            store.finish(job.id, "succeeded", {"result": {"seconds": 4.0}})
        elif state == "failed":
            store.finish(job.id, "failed", {"error": {"message": "It broke.", "ref": job.id[:8]}})
        return job.id

    return make


def status_regions(client, job_id: str) -> list:
    """The status region as the full page holds it and as the fragment alone sends it."""
    page = soup(client.get(f"/jobs/{job_id}"))
    fragment = soup(client.get(f"/jobs/{job_id}/status"))
    return [(page, page.select_one("#job-status")), (fragment, fragment.select_one("#job-status"))]


@pytest.mark.parametrize(
    "state, buttons",
    [("queued", {"cancel-button"}), ("running", {"cancel-button"}), ("succeeded", set()), ("failed", {"retry-button"})],
)
def test_status_region_is_a_polite_live_region(client, make_job, state, buttons):
    job_id = make_job(state, {"done": 1, "total": 4, "message": "1 of 4 s"} if state == "running" else None)
    for _, region in status_regions(client, job_id):
        assert region["role"] == "status"
        assert region["aria-live"] == "polite"
        assert region["data-state"] == state
        assert {button["id"] for button in region.select("button")} == buttons
        assert all(button.get_text(strip=True) for button in region.select("button"))


@pytest.mark.parametrize("total", [4, None], ids=["determinate", "indeterminate"])
def test_progress_bar_has_a_label(client, make_job, total):
    job_id = make_job("running", {"done": 1, "total": total, "message": "working"})
    for document, region in status_regions(client, job_id):
        progress = region.select_one("progress")
        assert progress is not None and progress.get("id")
        assert_labelled(document, progress)
        if total:
            assert progress["max"] == "4" and progress["value"] == "1"
            # The percentage is also given as text, for browsers that do not expose the bar.
            assert region.select_one(".percent").get_text(strip=True) == "25%"


def test_progress_in_the_job_list_has_a_label(client, make_job):
    make_job("running", {"done": 1, "total": 4, "message": "1 of 4 s"})
    page = soup(client.get("/jobs"))
    progress = page.select_one("table.jobs progress")
    assert progress is not None
    assert_labelled(page, progress)
