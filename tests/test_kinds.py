"""Each kind of job is declared once, and its pieces agree: body, form, result partial and downloads."""

import dataclasses
import inspect

import pytest
from helpers import soup
from jinja2 import TemplateNotFound
from test_tasks import FakeJob

import tasks
from webapp import kinds
from webapp.kinds import KINDS
from webapp.store import SUCCEEDED, Job, new_id
from webapp.worker import check_bodies, create_huey

#: For each kind, inputs for its body and an upload: enough to produce a real result.
SAMPLES = {
    "timer": ({"seconds": 0.0, "fail": False}, None),
    "checksum": ({"algorithm": "sha256"}, b"hello\n"),
    "csv_profile": ({}, b"name,age\nada,36\ngrace,45\n"),
}


def test_every_kind_has_one_body_and_a_sample():
    assert tasks.BODIES.keys() == KINDS.keys() == SAMPLES.keys()


def test_a_consumer_refuses_to_start_with_a_body_missing_or_unknown():
    with pytest.raises(LookupError, match="kinds without a body: \\['timer'\\]"):
        create_huey({"checksum": tasks.checksum, "csv_profile": tasks.csv_profile})
    with pytest.raises(LookupError, match="bodies without a kind: \\['extra'\\]"):
        check_bodies({**tasks.BODIES, "extra": tasks.timer})


@pytest.mark.parametrize("name", KINDS)
def test_the_form_inputs_fit_the_body(app, name):
    """What the form hands over, the body accepts: no name is misspelt on either side."""
    with app.test_request_context():
        inputs = KINDS[name].form(meta={"csrf": False}).inputs()
    inspect.signature(tasks.BODIES[name]).bind(None, **inputs)


@pytest.mark.parametrize("name", KINDS)
def test_a_form_with_a_file_is_sent_as_multipart(client, name):
    page = soup(client.get(f"/jobs/new/{name}"))
    has_file = page.select_one("input[type=file]") is not None
    assert (page.select_one("form[enctype='multipart/form-data']") is not None) == has_file


@pytest.mark.parametrize("name", KINDS)
def test_the_result_partial_shows_the_result_and_links_every_download(app, client, name):
    inputs, content = SAMPLES[name]
    result = tasks.BODIES[name](FakeJob(content or b""), **inputs)
    with client.session_transaction() as session:
        session["owner"] = "owner"
    store = app.extensions["tasklight"].store
    job = Job(
        id=new_id(), kind=name, owner="owner", inputs=inputs, upload_name="sample", upload_size=len(content or "")
    )
    store.create(job, content)
    store.start(job.id, "test:1")
    store.finish(job.id, SUCCEEDED, {"result": result})

    region = soup(client.get(f"/jobs/{job.id}")).select_one("#job-status")
    assert region.select_one(".result") is not None
    links = {a["href"] for a in region.select(".downloads a")}
    formats = KINDS[name].download_formats(store.get(job.id))
    assert links == {f"/jobs/{job.id}/download.{fmt}" for fmt in formats}
    for link in links:
        assert client.get(link).status_code == 200


def test_a_kind_without_its_result_partial_fails_at_start_up(make_app, monkeypatch):
    extra = dataclasses.replace(KINDS["timer"], name="no_partial")
    monkeypatch.setitem(kinds.KINDS, "no_partial", extra)
    with pytest.raises(TemplateNotFound, match="results/no_partial.html"):
        make_app()
