"""Inputs that are too big or too strange get a 400 with a message at their field, never a 500."""

import dataclasses
import io
import json

import hypothesis
import pytest
from flask.testing import FlaskClient
from helpers import JSON, job_id_from, soup, submit
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from werkzeug.test import stream_encode_multipart

from webapp.kinds import KINDS

# A failing example is shown with its inputs, which may be 100 KB long; that is expected here, not an error.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

#: Text that parses as a decimal but is no ordinary number, or overflows a float, with the words of its message.
NOT_ORDINARY_NUMBERS = {
    "sNaN": "finite",
    "-sNaN": "finite",
    "NaN": "finite",
    "-NaN": "finite",
    "Infinity": "finite",
    "-Infinity": "finite",
    "inf": "finite",
    "1e999999999": "too large",
    "-1e999999999": "too large",
    "9" * 5000: "too large",
}
#: JSON values that are neither text, a number nor true/false, with the words of their message.
NOT_SCALARS = [
    (None, "null"),
    ([1], "a list"),
    ([], "a list"),
    ([True], "a list"),
    ({"a": 1}, "an object"),
    ({}, "an object"),
]
#: Up to this many characters in one field.
HUGE = 100_000


@pytest.fixture
def backend():
    """Forms do not depend on the store, so SQLite alone is enough here."""
    return "sqlite"


def form_fields(app) -> dict[str, list[str]]:
    """Every field of every kind's form, the CSRF token's included, as the app builds them."""
    with app.test_request_context():
        return {name: [field.name for field in kind.form()] for name, kind in KINDS.items()}


def file_fields(app) -> dict[str, set[str]]:
    with app.test_request_context():
        return {name: {f.name for f in kind.form() if f.type == "FileField"} for name, kind in KINDS.items()}


def token(client, kind: str = "timer") -> str:
    return client.get(f"/jobs/new/{kind}", headers=JSON).get_json()["csrf_token"]


def post_json(client, kind: str, body, accept: dict = JSON):
    """POST ``body`` (an object, or JSON text as is) to a kind's form, as a script would."""
    text = body if isinstance(body, str) else json.dumps(body)
    headers = {**accept, "X-CSRFToken": token(client, kind)}
    return client.post(f"/jobs/new/{kind}", data=text, content_type="application/json", headers=headers)


def field_message(response, name: str) -> str:
    """The message at field ``name``: from the JSON answer, or from the form page under the field."""
    assert response.status_code == 400, response.status_code
    if response.is_json:
        return response.get_json()["fields"][name]
    error = soup(response).select_one(f".field #{name}-error.error")
    assert error is not None, f"no error under {name}"
    return error.get_text()


@pytest.mark.parametrize("value, words", NOT_ORDINARY_NUMBERS.items(), ids=[v[:12] for v in NOT_ORDINARY_NUMBERS])
@pytest.mark.parametrize("field", ["seconds", "time_limit", "start_within"])
def test_numbers_at_their_edges_are_refused_at_the_field(client, field, value, words):
    assert words in field_message(submit(client, "timer", {"seconds": "1", field: value}), field)
    assert words in field_message(post_json(client, "timer", {"seconds": "1", field: value}), field)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"crash_attempts": "7" * 400}, "too large"),  # under the 4300 digits Python reads, over the largest float
        ('{"crash_attempts": 1' + "0" * 400 + "}", "too large"),
        ({"crash_attempts": 1.5}, "whole number"),
    ],
    ids=["text", "json-integer", "json-fraction"],
)
def test_whole_numbers_at_their_edges_are_refused_at_the_field(client, body, words):
    if isinstance(body, dict) and isinstance(body["crash_attempts"], str):
        assert words in field_message(submit(client, "timer", body), "crash_attempts")
    assert words in field_message(post_json(client, "timer", body), "crash_attempts")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["seconds", "time_limit", "crash_attempts"])
def test_json_numbers_that_are_no_numbers_are_refused_at_the_field(client, field, number):
    # Python's JSON reader takes NaN and Infinity, and reads 1e999 as infinity.
    assert "finite" in field_message(post_json(client, "timer", f'{{"{field}": {number}}}'), field)


def test_ordinary_numbers_still_pass(client, store):
    # 0.1 is the least of both limits: a float bound, a little over 0.1, would refuse it.
    response = submit(client, "timer", {"seconds": "2.5", "time_limit": "0.1", "start_within": "0.1"})
    job = store.get(job_id_from(response))
    assert job.inputs["seconds"] == 2.5
    assert (job.options["time_limit"], job.options["start_within"]) == (0.1, 0.1)
    job = store.get(job_id_from(post_json(client, "timer", {"seconds": 0.5, "fail": True, "crash_attempts": 2})))
    assert job.inputs == {"seconds": 0.5, "fail": True, "crash_attempts": 2}


@pytest.mark.parametrize("value, words", NOT_SCALARS, ids=[json.dumps(value) for value, _ in NOT_SCALARS])
def test_json_values_that_are_not_text_numbers_or_booleans_are_refused_at_the_field(app, client, value, words):
    for kind, names in form_fields(app).items():
        for name in names:
            message = field_message(post_json(client, kind, {name: value}), name)
            assert words in message, (kind, name, message)


def test_json_text_that_is_not_unicode_is_refused_at_the_field(client):
    # A lone surrogate escape is valid JSON but no character; the form page could not be encoded to send it.
    for accept in ({"Accept": "text/html"}, JSON):
        assert "Unicode" in field_message(post_json(client, "timer", '{"seconds": "\\ud800"}', accept), "seconds")


def test_a_file_part_in_a_field_that_is_not_a_file_is_refused_at_the_field(app, client):
    files = file_fields(app)
    for kind, names in form_fields(app).items():
        for name in set(names) - files[kind]:
            for accept in (JSON, {}):
                data = {name: (io.BytesIO(b"12"), "number.txt")}
                headers = {**accept, "X-CSRFToken": token(client, kind)}
                response = client.post(
                    f"/jobs/new/{kind}", data=data, headers=headers, content_type="multipart/form-data"
                )
                if name == "csrf_token" and not accept:
                    # The page shows no error under a hidden field; the JSON names it.
                    assert response.status_code == 400
                    continue
                assert "not a file" in field_message(response, name), (kind, name)


def test_text_in_a_file_field_is_refused_at_the_field(client):
    response = submit(client, "checksum", {"file": "not a file", "algorithm": "md5"})
    assert "Choose a file" in field_message(response, "file")


# What a person, a browser or a script may send to any field.
EDGE_TEXT = st.sampled_from(
    [*NOT_ORDINARY_NUMBERS, "7" * 400, "", " ", "0", "-0", "1e-999999999", "0x10", "1_000", "\x00", "true"]
)
FORM_TEXT = st.one_of(
    st.text(),  # any Unicode but lone surrogates, NUL included
    EDGE_TEXT,
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.integers().map(str),
    st.builds(lambda part, n: (part * n)[:HUGE], st.text(min_size=1, max_size=3), st.integers(1, HUGE)),
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    FORM_TEXT,
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
)
FILE_PARTS = st.tuples(st.binary(max_size=2048), st.text(max_size=40))
ENCODINGS = {
    "urlencoded": FORM_TEXT,
    "multipart": FORM_TEXT | FILE_PARTS,
    "json": JSON_VALUES,
}
ACCEPTS = [{"Accept": "text/html"}, JSON]


def plausible(field, encoding: str) -> st.SearchStrategy | None:
    """What a browser would send to ``field``, so that strange values in the other fields can get as far as a job."""
    if field.type == "FileField":
        return FILE_PARTS if encoding == "multipart" else None
    if field.type == "CSRFTokenField":
        return None  # every example sends the token
    if field.type == "SelectField":
        return st.sampled_from([value for value, *_ in field.iter_choices()])
    if field.type == "BooleanField":
        return st.sampled_from(["y", ""])
    return st.sampled_from(["0", "1", "2.5"])


def either(*strategies: st.SearchStrategy | None) -> st.SearchStrategy:
    """One of ``strategies`` (None for none), each as likely: ``|`` would weigh each of their alternatives alike."""
    return st.sampled_from([s for s in strategies if s is not None]).flatmap(lambda strategy: strategy)


@dataclasses.dataclass
class Fuzz:
    """One app's client for a whole test (not one per example), its CSRF token, and per kind what to send."""

    client: FlaskClient
    csrf: str
    #: Per kind, the values of its form's fields to send (any of them, or none).
    values: dict[str, st.SearchStrategy] = dataclasses.field(repr=False)
    #: Per kind, the names of its form's fields.
    fields: dict[str, list[str]] = dataclasses.field(repr=False)


@pytest.fixture
def fuzz(make_app, encoding) -> Fuzz:
    """Any field of any kind's form gets a plausible value or any value of the encoding, so that a new kind or
    field is covered without a change here."""
    app = make_app(MAX_ACTIVE_JOBS=10**9, MAX_STORED_UPLOAD_BYTES=2**62)
    client = app.test_client()
    with app.test_request_context():
        values = {
            name: st.fixed_dictionaries(
                {}, optional={f.name: either(plausible(f, encoding), ENCODINGS[encoding]) for f in kind.form()}
            )
            for name, kind in KINDS.items()
        }
    return Fuzz(client, token(client), values, form_fields(app))


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@hypothesis.settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_input_to_any_field_gets_an_answer_not_a_crash(fuzz, encoding, data):
    kind = data.draw(st.sampled_from(sorted(KINDS)), label="kind")
    values = data.draw(fuzz.values[kind], label="values")
    headers = {**data.draw(st.sampled_from(ACCEPTS), label="accept"), "X-CSRFToken": fuzz.csrf}
    path = f"/jobs/new/{kind}"
    if encoding == "json":
        response = fuzz.client.post(path, data=json.dumps(values), content_type="application/json", headers=headers)
    else:
        # As a browser sends it: the token in the form, unless this example puts something else there.
        form = {"csrf_token": fuzz.csrf}
        form |= {name: (io.BytesIO(v[0]), v[1]) if isinstance(v, tuple) else v for name, v in values.items()}
        if encoding == "multipart":
            # Encoded here, so that the body's temporary file (past 500 KB Werkzeug spools it to disk) is closed:
            # the test client leaves that to the garbage collector, which warns.
            body, length, boundary = stream_encode_multipart(form)
            with body:
                response = fuzz.client.post(
                    path,
                    input_stream=body,
                    content_length=length,
                    content_type=f"multipart/form-data; boundary={boundary}",
                    headers=headers,
                )
        else:
            response = fuzz.client.post(
                path, data=form, content_type="application/x-www-form-urlencoded", headers=headers
            )
    hypothesis.event(f"{kind} {response.status_code}")
    assert response.status_code < 500
    assert "Traceback" not in response.get_data(as_text=True)
    if response.status_code == 400 and response.is_json and "fields" in response.get_json():
        messages = response.get_json()["fields"]
        assert set(messages) <= set(fuzz.fields[kind])
        assert all(isinstance(m, str) and m for m in messages.values())


def test_without_diagnostics_the_timer_has_no_crash_attempts(make_app, store):
    client = make_app(DIAGNOSTICS=False).test_client()
    page = soup(client.get("/jobs/new/timer"))
    assert page.select_one("input[name=seconds]") is not None
    assert page.select_one("[name=crash_attempts]") is None
    assert "crash_attempts" not in client.get("/jobs/new/timer", headers=JSON).get_json()["fields"]
    for value in ("3", "not a number"):
        job_id = job_id_from(submit(client, "timer", {"seconds": "0", "crash_attempts": value}))
        assert "crash_attempts" not in store.get(job_id).inputs
    for value in (3, [3]):  # even a value the field would refuse: there is no field
        job_id = job_id_from(post_json(client, "timer", {"seconds": 0, "crash_attempts": value}))
        assert "crash_attempts" not in store.get(job_id).inputs


def test_with_diagnostics_the_timer_takes_crash_attempts(make_app, store):
    client = make_app(DIAGNOSTICS=True).test_client()
    assert soup(client.get("/jobs/new/timer")).select_one("input[name=crash_attempts]") is not None
    job_id = job_id_from(submit(client, "timer", {"seconds": "0", "crash_attempts": "3"}))
    assert store.get(job_id).inputs["crash_attempts"] == 3
