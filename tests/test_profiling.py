"""Unit tests of the CSV profiler and its result partial."""

import csv
import io
import json
import random
import re
from itertools import pairwise, product
from pathlib import Path
from types import SimpleNamespace

import pytest
from bs4 import BeautifulSoup
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from webapp import filters, profiling
from webapp.profiling import CsvFormatError, CsvLimits, profile_csv

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

SAMPLE = (
    "id,name,score,active,joined,note,blank\n"
    "1,Ann,3.5,yes,2024-01-05,x,\n"
    "2,Bob,,no,2024-02-29,y,\n"
    "3, Cy ,4,Yes,2023-12-31,x,\n"
    "10,Ann,-1.5,NO,2024-01-05,,\n"
)


def profile(text: str | bytes, report=None, limits: CsvLimits | None = None) -> dict:
    """Profile ``text`` (encoded as UTF-8 if a string)."""
    data = text.encode() if isinstance(text, str) else text
    limited = (limits,) if limits else ()  # without, the default bounds apply
    return profile_csv(io.BytesIO(data), len(data), report or (lambda done, total: None), *limited)


def by_name(result: dict) -> dict[str, dict]:
    return {column["name"]: column for column in result["columns"]}


def error_of(text: str | bytes, limits: CsvLimits | None = None) -> str:
    with pytest.raises(CsvFormatError) as caught:
        profile(text, limits=limits)
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


def quadratic_names(header: list[str]) -> list[str]:
    """The names the profiler gave before de-duplication was made linear: the smallest free suffix, by search."""
    names, seen = [], set()
    for number, field in enumerate(header, 1):
        name = field.strip() or f"column {number}"
        unique, copy = name, 1
        while unique in seen:
            copy += 1
            unique = f"{name} ({copy})"
        seen.add(unique)
        names.append(unique)
    return names


def test_names_match_the_smallest_free_suffix():
    # Headers that literally contain "x (2)" and the like, in every order.
    pool = ["a", "a (2)", "a (3)", "a (2) (2)", "", "column 2", "b", "a (1)"]
    rng = random.Random(4)
    for _ in range(2000):
        header = [rng.choice(pool) for _ in range(rng.randint(1, 9))]
        names = profiling._column_names(header, 200)
        assert names == quadratic_names(header)
        assert len(set(names)) == len(names)


def test_many_repeated_names_take_linear_work():
    # Numbering 50,000 copies of a name by search tries 1.25 billion names (many minutes); this must return.
    header = ["a"] * 49_999 + ["a (2)"]
    result = profile(",".join(header) + "\n", limits=CsvLimits(max_columns=50_000, max_result_bytes=2**30))
    names = [column["name"] for column in result["columns"]]
    assert names[:3] == ["a", "a (2)", "a (3)"]
    assert names[-2:] == ["a (49999)", "a (2) (2)"]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (",".join(["a"] * 501), "The header has 501 columns; at most 500 can be profiled."),
        # Blank names are numbered, so they make columns as well.
        ("," * 2000, "The header has 2,001 columns; at most 500 can be profiled."),
    ],
)
def test_columns_are_bounded(header, message):
    assert error_of(header + "\n1\n") == message
    assert len(profile(",".join(["a"] * 500) + "\n")["columns"]) == 500
    assert error_of("a,b,c\n", CsvLimits(max_columns=2)) == "The header has 3 columns; at most 2 can be profiled."


def test_long_fields_fail_naming_the_line_and_bound():
    long = "x" * 12_345
    assert error_of(f"a,b\n1,2\n3,{long}\n") == "Line 3 has a field of 12,345 characters; fields may be at most 10,000."
    assert error_of(f"a,{long}\n") == "Line 1 has a field of 12,345 characters; fields may be at most 10,000."
    # A quoted field spanning lines is counted whole, on the line its row starts.
    assert error_of(f'a,b\n1,"{long}\n{long}"\n') == (
        "Line 2 has a field of 24,691 characters; fields may be at most 10,000."
    )
    # Past the csv module's own limit, which stops before the field is whole; that limit is left as it was.
    limit = csv.field_size_limit()
    assert error_of("a,b\n1,2\n3," + "x" * 200_000 + "\n") == (
        "Line 3 has a field of more than 131,072 characters; fields may be at most 10,000."
    )
    assert csv.field_size_limit() == limit
    assert error_of("a\nxyz\n", CsvLimits(max_cell_length=2)) == (
        "Line 2 has a field of 3 characters; fields may be at most 2."
    )
    column = by_name(profile("a\n" + "x" * 10_000 + "\n"))["a"]
    assert column["count"] == 1


def test_long_rows_fail_before_they_are_read_whole():
    data = b"a,b\n1," + b"x" * (4 * 1024 * 1024) + b"\n"
    stream = io.BytesIO(data)
    with pytest.raises(CsvFormatError) as caught:
        profile_csv(stream, len(data), lambda done, total: None)
    assert str(caught.value) == "Line 2 starts a row longer than 1 MiB; rows may be at most 1 MiB."
    assert stream.tell() < 2 * 1024 * 1024
    # The lines of a row are counted together; the message names the line the row starts on.
    limits = CsvLimits(max_row_bytes=1000)
    message = "Line 3 starts a row longer than 1,000 bytes; rows may be at most 1,000 bytes."
    assert error_of('a\n1\n"' + "x\n" * 600 + '"\n', limits) == message
    # Old Mac lines ("\r" only) are separate rows however long the file.
    result = profile("n\r" + "1\r" * 5000, limits=CsvLimits(max_row_bytes=10))
    assert result["rows"] == 5000


def test_long_names_and_values_are_cut():
    long = "y" * 150
    result = profile(f"{'n' * 250},{'n' * 250}x,v\n{long}a,1,{long}1\n{long}b,2,{long}2\n{long}b,3,{long}\n")
    names = [column["name"] for column in result["columns"]]
    assert names == ["n" * 199 + "…", "n" * 199 + "… (2)", "v"]
    first, _, last = result["columns"]
    cut = "y" * 99 + "…"
    assert (first["min"], first["max"], first["top"]) == (cut, cut, [[cut, 2], [cut, 1]])
    assert first["distinct"] == 2  # counted on whole values
    assert last["type"] == "text" and last["top"] == [[cut, 1], [cut, 1], [cut, 1]]
    assert len(profile(f"v\n{long}\n", limits=CsvLimits(max_value_length=10))["columns"][0]["max"]) == 10


def test_result_size_is_bounded():
    text = "a,b\n" + "".join(f"{i},{i * 7}\n" for i in range(100))
    stored = len(json.dumps(profile(text), separators=(",", ":")))
    assert profile(text, limits=CsvLimits(max_result_bytes=stored))["rows"] == 100
    message = f"The profile would take {stored:,} bytes; profiles may be at most {stored - 1:,} bytes."
    assert error_of(text, CsvLimits(max_result_bytes=stored - 1)) == message
    # At the default bounds, non-ASCII names and values (escaped when stored) can pass it.
    header = ",".join(f"{i}{'é' * 300}" for i in range(500))
    rows = "".join(",".join(f"{r}{'é' * 200}" for _ in range(500)) + "\n" for r in range(5))
    assert re.fullmatch(
        r"The profile would take [0-9,]+ bytes; profiles may be at most 1 MiB\.", error_of(f"{header}\n{rows}")
    )


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_columns"):
        CsvLimits(max_columns=0)


def test_long_runs_of_digits_take_linear_work():
    # The number pattern used to backtrack quadratically on a run of digits: this cell took about three minutes.
    cell = "1" * 99_999 + "x"
    column = by_name(profile(f"a,b\n{cell},1\n", limits=CsvLimits(max_cell_length=100_000)))["a"]
    assert (column["type"], column["count"]) == ("text", 1)


def test_number_pattern_is_unchanged():
    old = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
    for length in range(7):
        for chars in product("1.e+-x", repeat=length):
            value = "".join(chars)
            assert bool(profiling._NUMBER.fullmatch(value)) == bool(old.fullmatch(value)), value


def test_integers_with_many_leading_zeros():
    # int() refuses more than 4,300 digits.
    column = by_name(profile("n\n" + "0" * 5000 + "12\n-" + "0" * 5000 + "3\n"))["n"]
    assert (column["type"], column["min"], column["max"]) == ("integer", -3, 12)


def reports_of(data: bytes, limits: CsvLimits | None = None) -> tuple[list[tuple[int, int]], BaseException | None]:
    """The calls to ``report`` while profiling ``data``, and the error it ended with."""
    calls = []
    try:
        profile_csv(io.BytesIO(data), len(data), lambda done, total: calls.append((done, total)), limits or CsvLimits())
    except CsvFormatError as error:
        return calls, error
    return calls, None


def test_progress_is_reported_while_reading_a_long_header():
    data = b"a," * (2 * 1024 * 1024) + b"a\n"  # 4 MiB, one line
    calls, error = reports_of(data, CsvLimits(max_row_bytes=8 * 1024 * 1024))
    assert str(error) == "The header has 2,097,153 columns; at most 500 can be profiled."
    assert len(calls) >= 8
    assert all(done < len(data) and total == len(data) for done, total in calls)
    assert [done for done, _ in calls] == sorted(set(done for done, _ in calls))


def test_progress_is_reported_while_reading_a_long_row():
    header = ",".join(f"c{i}" for i in range(500))
    data = f"{header}\n{','.join(['v' * 1900] * 500)}\n".encode()  # the row is about 0.9 MiB
    calls, error = reports_of(data)
    assert error is None
    assert len([done for done, _ in calls if done < len(data)]) >= 3
    assert calls[-1] == (len(data), len(data))


def test_progress_is_reported_for_work_not_counted_in_rows(monkeypatch):
    monkeypatch.setattr(profiling, "REPORT_SECONDS", 0)  # every check reports
    monkeypatch.setattr(profiling, "PART", 1000)
    # Blank lines make no rows.
    data = b"a\n" + b"\n" * 10_000
    calls, _ = reports_of(data)
    assert len(calls) >= 10_000 // profiling.TICK_LINES
    # Summing and binning numbers happens after the last byte is read.
    data = ("n\n" + "".join(f"{i}\n" for i in range(20_000))).encode()
    calls, _ = reports_of(data)
    assert calls.count((len(data), len(data))) >= 20


def test_exception_from_report_stops_a_long_header():
    class Stop(Exception):
        pass

    def report(done, total):
        raise Stop

    data = b"a," * (2 * 1024 * 1024) + b"a\n"
    stream = io.BytesIO(data)
    with pytest.raises(Stop):
        profile_csv(stream, len(data), report, CsvLimits(max_row_bytes=8 * 1024 * 1024))
    assert stream.tell() <= profiling.REPORT_BYTES + profiling.READ_CHUNK


def fake_url_for(endpoint: str, **values) -> str:
    """The partial's download links, without an app."""
    return f"/{endpoint}/{values.get('fmt')}"


def render(result: dict) -> str:
    """The partial for a job with ``result``, without an app: strict about undefined names, with the app's filters."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    env.filters["number"] = filters.number
    return env.get_template("results/csv_profile.html").render(
        job=SimpleNamespace(id="job1", result=result), url_for=fake_url_for
    )


def test_partial_escapes_and_draws_histograms():
    hostile = '<script>alert(1)</script>,"""><img src=x>",n,x'
    rows = "".join(f"{i},<b>{i}</b>,{i / 4},{i % 3}\n" for i in range(20))
    result = profile(f"{hostile}\n{rows}")
    html = render(result)
    soup = BeautifulSoup(html, "html.parser")
    assert soup.find("script") is None and soup.find("img") is None and soup.find("b") is None
    assert "<script>alert(1)</script>" in soup.get_text()
    assert soup.select_one(".result")["class"] == ["result", "result-csv"]
    assert "20 rows" in " ".join(soup.find("caption").get_text().split())
    assert len(soup.select("tbody > tr")) == len(result["columns"])
    assert not soup.select("[style]")
    svgs = soup.select("svg.histogram")
    numeric = [c for c in result["columns"] if c["type"] in ("integer", "number")]
    assert len(svgs) == len(numeric) == 3
    for svg, column in zip(svgs, numeric, strict=True):
        assert svg["role"] == "img"
        assert svg["aria-label"].startswith(f"Histogram of {column['name']}: 20 rows from 0 to ")
        assert len(svg.find_all("rect")) == len(column["histogram"])
        assert all(rect["class"] == ["bar"] and rect.title for rect in svg.find_all("rect"))


def test_histograms_name_their_ranges_counts_and_axes():
    """Each bar's <title> gives its range and count; the label sums the picture up; the axes are there to see."""
    result = profile("n,x\n" + "".join(f"{n},{x}\n" for n, x in [(1, 0.5), (2, 0.5), (2, 0.5), (4, 0.5), (1500, 0.5)]))
    chart, single = BeautifulSoup(render(result), "html.parser").select(".chart")
    svg = chart.find("svg")
    assert svg["aria-label"] == "Histogram of n: 5 rows from 1 to 1,500 in 10 bins; the fullest holds 4 rows"
    titles = [rect.title.get_text() for rect in svg.find_all("rect")]
    assert titles[0] == "1–150.9: 4 rows"
    assert titles[1:9] == [
        f"{lo}–{hi}: 0 rows"
        for lo, hi in pairwise(["150.9", "300.8", "450.7", "600.6", "750.5", "900.4", "1,050", "1,200", "1,350"])
    ]
    assert titles[9] == "1,350–1,500: 1 row"
    heights = [float(rect["height"]) for rect in svg.find_all("rect")]
    assert heights[0] == 30 and heights[9] == 7.5 and set(heights[1:9]) == {0}
    assert chart.select_one(".tallest").get_text() == "4"
    assert [span.get_text() for span in chart.select(".axis span")] == ["1", "1,500"]

    # One value in one bin: no range to speak of.
    assert single.find("svg")["aria-label"] == "Histogram of x: 5 rows, all 0.5"
    assert [rect.title.get_text() for rect in single.find_all("rect")] == ["0.5: 5 rows"]
    assert [span.get_text() for span in single.select(".axis span")] == ["0.5"]
    # The figures beside the bars are for the eye; screen readers have them in the label.
    assert all(span["aria-hidden"] == "true" for span in single.select(".chart > span"))


def test_partial_shows_capped_distinct_and_formats_numbers(monkeypatch):
    monkeypatch.setattr(profiling, "DISTINCT_CAP", 2)
    html = render(profile("v,n\na,1.5\nb,1.5\nc,4\n"))
    cells = [
        [td.get_text(strip=True) for td in tr.find_all("td")] for tr in BeautifulSoup(html, "html.parser").tbody("tr")
    ]
    assert cells[0][:4] == ["text", "3", "0", "≥ 2"]
    assert cells[0][7] == "a (1), b (1)"
    assert cells[1][3] == "2"
    assert cells[1][6] == "2.33333"  # the mean
