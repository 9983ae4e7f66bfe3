"""Unit tests of the CSV profiler and its result partial."""

import io
import json
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import pytest
from bs4 import BeautifulSoup
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from webapp import profiling
from webapp.profiling import CsvFormatError, profile_csv

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

SAMPLE = (
    "id,name,score,active,joined,note,blank\n"
    "1,Ann,3.5,yes,2024-01-05,x,\n"
    "2,Bob,,no,2024-02-29,y,\n"
    "3, Cy ,4,Yes,2023-12-31,x,\n"
    "10,Ann,-1.5,NO,2024-01-05,,\n"
)


def profile(text: str | bytes, report=None) -> dict:
    """Profile ``text`` (encoded as UTF-8 if a string)."""
    data = text.encode() if isinstance(text, str) else text
    return profile_csv(io.BytesIO(data), len(data), report or (lambda done, total: None))


def by_name(result: dict) -> dict[str, dict]:
    return {column["name"]: column for column in result["columns"]}


def error_of(text: str | bytes) -> str:
    with pytest.raises(CsvFormatError) as caught:
        profile(text)
    return str(caught.value)


def test_sample_profile():
    result = profile(SAMPLE)
    json.dumps(result, allow_nan=False)  # must be storable as is
    assert result["rows"] == 4
    columns = by_name(result)
    assert list(columns) == ["id", "name", "score", "active", "joined", "note", "blank"]
    histograms = {name: column.pop("histogram") for name, column in columns.items()}
    assert columns == {
        "id": {
            "name": "id",
            "type": "integer",
            "count": 4,
            "empty": 0,
            "distinct": 4,
            "distinct_capped": False,
            "min": 1,
            "max": 10,
            "mean": 4.0,
            "top": [["1", 1], ["10", 1], ["2", 1], ["3", 1]],
        },
        "name": {
            "name": "name",
            "type": "text",
            "count": 4,
            "empty": 0,
            "distinct": 3,
            "distinct_capped": False,
            "min": "Ann",
            "max": "Cy",
            "mean": None,
            "top": [["Ann", 2], ["Bob", 1], ["Cy", 1]],
        },
        "score": {
            "name": "score",
            "type": "number",
            "count": 3,
            "empty": 1,
            "distinct": 3,
            "distinct_capped": False,
            "min": -1.5,
            "max": 4.0,
            "mean": 2.0,
            "top": [["-1.5", 1], ["3.5", 1], ["4", 1]],
        },
        "active": {
            "name": "active",
            "type": "boolean",
            "count": 4,
            "empty": 0,
            "distinct": 4,
            "distinct_capped": False,
            "min": None,
            "max": None,
            "mean": None,
            "top": [["NO", 1], ["Yes", 1], ["no", 1], ["yes", 1]],
        },
        "joined": {
            "name": "joined",
            "type": "date",
            "count": 4,
            "empty": 0,
            "distinct": 3,
            "distinct_capped": False,
            "min": "2023-12-31",
            "max": "2024-02-29",
            "mean": None,
            "top": [["2024-01-05", 2], ["2023-12-31", 1], ["2024-02-29", 1]],
        },
        "note": {
            "name": "note",
            "type": "text",
            "count": 3,
            "empty": 1,
            "distinct": 2,
            "distinct_capped": False,
            "min": "x",
            "max": "y",
            "mean": None,
            "top": [["x", 2], ["y", 1]],
        },
        "blank": {
            "name": "blank",
            "type": "empty",
            "count": 0,
            "empty": 4,
            "distinct": 0,
            "distinct_capped": False,
            "min": None,
            "max": None,
            "mean": None,
            "top": [],
        },
    }
    # Integers 1 to 10: ten bins, one integer in each.
    assert [b["count"] for b in histograms["id"]] == [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    assert [b["count"] for b in histograms["score"]] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    for name in ("id", "score"):
        bins = histograms[name]
        assert bins[0]["lo"] == columns[name]["min"] and bins[-1]["hi"] == columns[name]["max"]
        assert all(a["hi"] == b["lo"] for a, b in pairwise(bins))
        assert sum(b["count"] for b in bins) == columns[name]["count"]
    assert all(histograms[name] is None for name in ("name", "active", "joined", "note", "blank"))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["0", "1", "1"], "integer"),  # 0 and 1 are numbers, not booleans
        (["-3", "+4", "007"], "integer"),
        (["1", "2.5", "1e3", ".5"], "number"),
        (["1", "nan"], "text"),
        (["inf"], "text"),
        (["1e999"], "text"),
        (["1_000"], "text"),
        (["١٢"], "text"),  # digits of another script
        (["TRUE", "false", "Yes", "no"], "boolean"),
        (["yes", "maybe"], "text"),
        (["2024-02-29", "1999-12-31"], "date"),
        (["2023-02-29"], "text"),
        (["20240101"], "integer"),
        (["2024-01-01T10:00"], "text"),
        (["2024-01-01", "5"], "text"),
        (["", " "], "empty"),
    ],
)
def test_inferred_type(values, expected):
    column = by_name(profile("v\n" + "\n".join(f'"{v}"' for v in values) + "\n"))["v"]
    assert column["type"] == expected


def test_integers_keep_exact_values():
    column = by_name(profile("n\n9007199254740993\n-9007199254740993\n"))["n"]
    assert (column["min"], column["max"], column["mean"]) == (-9007199254740993, 9007199254740993, 0.0)


def test_single_value_has_one_bin():
    column = by_name(profile("n\n2.5\n2.5\n"))["n"]
    assert column["histogram"] == [{"lo": 2.5, "hi": 2.5, "count": 2}]


def test_integer_bins_do_not_outnumber_integers():
    column = by_name(profile("n\n1\n2\n3\n3\n"))["n"]
    assert [b["count"] for b in column["histogram"]] == [1, 1, 2]


def test_extreme_numbers_do_not_overflow():
    result = profile("n\n1.7e308\n-1.7e308\n0\n")
    json.dumps(result, allow_nan=False)
    column = by_name(result)["n"]
    assert column["mean"] == 0.0
    assert sum(b["count"] for b in column["histogram"]) == 3


def test_header_edge_cases():
    result = profile(" a ,,a,,a (2)\n1,2,3,4,5\n")
    assert [c["name"] for c in result["columns"]] == ["a", "column 2", "a (2)", "column 4", "a (2) (2)"]


def test_header_only():
    result = profile("a,b\n")
    assert result["rows"] == 0
    assert [c["type"] for c in result["columns"]] == ["empty", "empty"]


def test_byte_order_mark_and_line_endings():
    expected = profile("a,b\n1,x\n2,y\n")
    assert profile(b"\xef\xbb\xbfa,b\r\n1,x\r\n2,y\r\n") == expected
    assert profile("a,b\r1,x\r2,y\r") == expected  # old Mac line endings
    assert profile("a,b\n\n1,x\n\n2,y") == expected  # blank lines, no final newline


def test_quoted_fields():
    result = profile('a,b\n"x, ""quoted""","two\nlines"\n')
    assert [c["top"] for c in result["columns"]] == [[['x, "quoted"', 1]], [["two\nlines", 1]]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3\n", "Line 3 has 1 field, expected 2."),
        ("a,b\n1,2\n3,4,5\n", "Line 3 has 3 fields, expected 2."),
        # Lines are lines of the file: a quoted field spans two, blank lines count.
        ('a,b\n"x\ny",2\n\n4,5,6\n', "Line 5 has 3 fields, expected 2."),
        ('a,b\n"x\ny",2,3\n', "Line 2 has 3 fields, expected 2."),
        ("a,b\r1,2\r3\r", "Line 3 has 1 field, expected 2."),
        ('a,b\n1,2\n3,"open\n4,5\n6,7\n', "Line 3 has a quoted field that is never closed."),
        ('a,b\n1,"x"y\n', "Line 2 is not valid CSV: ',' expected after '\"'."),
        ("", "The file is empty."),
        ("\n\r\n", "The file is empty."),
        (b"\xef\xbb\xbf", "The file is empty."),
        (b"a,b\n1,2\n3,caf\xe9\n", "Line 3 is not UTF-8 text. Save the file as UTF-8 and try again."),
        (b"\xff\xfea\x00,\x00b\x00", "Line 1 is not UTF-8 text. Save the file as UTF-8 and try again."),
        (b"a,b\r1,2\r3,caf\xe9\r", "Line 3 is not UTF-8 text. Save the file as UTF-8 and try again."),
    ],
)
def test_malformed(text, message):
    assert error_of(text) == message


def test_report_is_monotonic_and_ends_at_size():
    data = ("n,s\n" + "".join(f"{i},{'x' * (i % 7)}\n" for i in range(3500))).encode()
    calls = []
    result = profile_csv(io.BytesIO(data), len(data), lambda done, total: calls.append((done, total)))
    assert result["rows"] == 3500
    assert len(calls) >= 4
    assert all(total == len(data) for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[0][0] < len(data)
    assert calls[-1] == (len(data), len(data))


def test_exception_from_report_propagates():
    class Stop(Exception):
        pass

    def report(done, total):
        raise Stop

    data = b"n\n" + b"1\n" * 5000
    with pytest.raises(Stop):
        profile_csv(io.BytesIO(data), len(data), report)


def test_distinct_cap(monkeypatch):
    monkeypatch.setattr(profiling, "DISTINCT_CAP", 3)
    column = by_name(profile("v\na\nb\nc\nd\na\na\nd\n"))["v"]
    assert (column["distinct"], column["distinct_capped"], column["count"]) == (3, True, 7)
    assert column["top"] == [["a", 3], ["b", 1], ["c", 1]]
    assert column["max"] == "d"  # ranges still see every value
    exact = by_name(profile("v\na\nb\nc\na\n"))["v"]
    assert (exact["distinct"], exact["distinct_capped"]) == (3, False)


def fake_url_for(endpoint: str, **values) -> str:
    """The partial's download links, without an app."""
    return f"/{endpoint}/{values.get('fmt')}"


def test_partial_escapes_and_draws_histograms():
    hostile = '<script>alert(1)</script>,"""><img src=x>",n,x'
    rows = "".join(f"{i},<b>{i}</b>,{i / 4},{i % 3}\n" for i in range(20))
    result = profile(f"{hostile}\n{rows}")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    job = SimpleNamespace(id="job1", result=result)
    html = env.get_template("results/csv_profile.html").render(job=job, url_for=fake_url_for)
    soup = BeautifulSoup(html, "html.parser")
    assert soup.find("script") is None and soup.find("img") is None and soup.find("b") is None
    assert "<script>alert(1)</script>" in soup.get_text()
    section = soup.find("section")
    assert section["class"] == ["result", "result-csv"]
    assert "20 rows" in " ".join(soup.find("caption").get_text().split())
    assert len(soup.select("tbody > tr")) == len(result["columns"])
    assert not soup.select("[style]")
    svgs = soup.select("svg.histogram")
    numeric = [c for c in result["columns"] if c["type"] in ("integer", "number")]
    assert len(svgs) == len(numeric) == 3
    for svg, column in zip(svgs, numeric, strict=True):
        assert svg["aria-label"] == f"Histogram of {column['name']}"
        assert len(svg.find_all("rect")) == len(column["histogram"])
        assert all(rect["class"] == ["bar"] and rect.title for rect in svg.find_all("rect"))


def test_partial_shows_capped_distinct_and_formats_numbers(monkeypatch):
    monkeypatch.setattr(profiling, "DISTINCT_CAP", 2)
    result = profile("v,n\na,1.5\nb,1.5\nc,4\n")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    job = SimpleNamespace(id="job1", result=result)
    html = env.get_template("results/csv_profile.html").render(job=job, url_for=fake_url_for)
    cells = [
        [td.get_text(strip=True) for td in tr.find_all("td")] for tr in BeautifulSoup(html, "html.parser").tbody("tr")
    ]
    assert cells[0][:4] == ["text", "3", "0", "≥ 2"]
    assert cells[0][7] == "a (1), b (1)"
    assert cells[1][3] == "2"
    assert cells[1][6] == "2.33333"  # the mean
