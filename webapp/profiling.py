"""Profiling of CSV files: the type, counts, range and common values of each column.

Pure Python (standard library only) so that it can be tested without the web app or the worker.
"""

from __future__ import annotations

import csv
import heapq
import math
import re
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import date
from typing import BinaryIO

#: Distinct values tracked per column; beyond this the distinct count is a lower bound.
DISTINCT_CAP = 100_000
#: Progress is reported every this many data rows.
REPORT_EVERY = 1000
#: Most common values listed per column.
TOP = 5
#: Most histogram bins per numeric column.
BINS = 10

# ASCII only: int() and float() also accept other scripts' digits, underscores, "nan" and "inf".
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BOOLEANS = {"true", "false", "yes", "no"}
# A "\r" not followed by "\n" ends a line too, as in universal newlines (old Mac files).
_LONE_CR = re.compile(r"(?<=\r)(?=[^\n])")


class CsvFormatError(ValueError):
    """The file is not a CSV file that can be profiled; the message is shown to the user as is."""


class _Lines:
    """The text lines of a binary stream, counting the bytes read so far.

    Decoding line by line (rather than through ``io.TextIOWrapper``) gives an exact byte count for progress and
    the exact line of an encoding error; UTF-8 never has a "\\n" byte inside a character, so this is safe.
    """

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.bytes_read = 0
        self.finished = False

    def __iter__(self) -> Iterator[str]:
        encoding = "utf-8-sig"  # drops a byte order mark at the start of the file only
        line = 0
        for raw in self.stream:
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as error:
                line += 1 + error.object.count(b"\r", 0, error.start)
                raise CsvFormatError(f"Line {line} is not UTF-8 text. Save the file as UTF-8 and try again.") from None
            encoding = "utf-8"
            self.bytes_read += len(raw)
            for piece in _LONE_CR.split(text) if "\r" in text else (text,):
                line += 1
                yield piece
        self.finished = True


class _Column:
    """The running profile of one column."""

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self.empty = 0
        self.counts: dict[str, int] = {}
        self.capped = False
        self.low: str | None = None
        self.high: str | None = None
        # The types every value so far could be; "text" is what remains when this is empty.
        self.kinds = {"integer", "number", "boolean", "date"}
        self.numbers = array("d")
        self.int_low = self.int_high = self.int_sum = 0

    def add(self, value: str) -> None:
        """Count one value (surrounding whitespace ignored)."""
        value = value.strip()
        if not value:
            self.empty += 1
            return
        self.count += 1
        if value in self.counts:
            self.counts[value] += 1
        elif len(self.counts) < DISTINCT_CAP:
            self.counts[value] = 1
        else:
            self.capped = True
        if self.low is None or value < self.low:
            self.low = value
        if self.high is None or value > self.high:
            self.high = value
        if self.kinds:
            self._infer(value)

    def _infer(self, value: str) -> None:
        """Rule out the types that ``value`` is not."""
        kinds = self.kinds
        if "number" in kinds:
            number = float(value) if _NUMBER.fullmatch(value) else math.inf
            if math.isfinite(number):
                self.numbers.append(number)
            else:
                # An integer too large for a float is treated as text, so every numeric column has its floats.
                kinds -= {"number", "integer"}
                self.numbers = array("d")
        if "integer" in kinds:
            if _INTEGER.fullmatch(value):
                whole = int(value)
                first = self.count == 1  # every earlier value was an integer too
                self.int_low = whole if first else min(self.int_low, whole)
                self.int_high = whole if first else max(self.int_high, whole)
                self.int_sum += whole
            else:
                kinds.discard("integer")
        if "boolean" in kinds and value.lower() not in _BOOLEANS:
            kinds.discard("boolean")
        if "date" in kinds and not _is_date(value):
            kinds.discard("date")

    def result(self) -> dict:
        """The column's profile, JSON-serialisable."""
        kind = (
            "empty"
            if not self.count
            else next((k for k in ("integer", "number", "boolean", "date") if k in self.kinds), "text")
        )
        low = high = mean = histogram = None
        if kind == "integer":
            low, high, mean = self.int_low, self.int_high, self.int_sum / self.count
            histogram = _histogram(self.numbers, min(BINS, self.int_high - self.int_low + 1))
        elif kind == "number":
            low, high = min(self.numbers), max(self.numbers)
            # Divided before summing so that the sum cannot overflow.
            mean = math.fsum(x / self.count for x in self.numbers)
            histogram = _histogram(self.numbers, BINS if low < high else 1)
        elif kind in ("date", "text"):
            low, high = self.low, self.high
        top = heapq.nsmallest(TOP, self.counts.items(), key=lambda item: (-item[1], item[0]))
        return {
            "name": self.name,
            "type": kind,
            "count": self.count,
            "empty": self.empty,
            "distinct": len(self.counts),
            "distinct_capped": self.capped,
            "min": low,
            "max": high,
            "mean": mean,
            "top": [[value, count] for value, count in top],
            "histogram": histogram,
        }


def _is_date(value: str) -> bool:
    """Whether ``value`` is an ISO 8601 calendar date, YYYY-MM-DD."""
    if not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _histogram(values: array, bins: int) -> list[dict]:
    """Counts of ``values`` in ``bins`` equal bins from their minimum to their maximum."""
    low, high = min(values), max(values)
    # Weighted sums rather than low + i * (high - low), which can overflow for values near the float limits.
    edges = [low * (1 - i / bins) + high * (i / bins) for i in range(bins)] + [high]
    counts = [0] * bins
    for value in values:
        # Only the inner edges are searched, so that the maximum falls in the last bin.
        counts[bisect_right(edges, value, 1, bins) - 1] += 1
    return [{"lo": edges[i], "hi": edges[i + 1], "count": counts[i]} for i in range(bins)]


def _column_names(header: list[str]) -> list[str]:
    """Unique names for the header's fields: blank ones are numbered and repeated ones suffixed."""
    names: list[str] = []
    seen: set[str] = set()
    for number, field in enumerate(header, 1):
        name = field.strip() or f"column {number}"
        unique, copy = name, 1
        while unique in seen:
            copy += 1
            unique = f"{name} ({copy})"
        seen.add(unique)
        names.append(unique)
    return names


def profile_csv(stream: BinaryIO, size: int, report: Callable[[int, int], None]) -> dict:
    """Profile the UTF-8 CSV file in ``stream`` (``size`` bytes long), calling ``report(bytes_read, size)`` as it goes.

    The first line is the header. Blank lines are skipped. Exceptions raised by ``report`` propagate.

    :returns: ``{"rows": int, "columns": [dict, ...]}``, JSON-serialisable; see ``_Column.result``.
    :raises CsvFormatError: the file is empty, not UTF-8 or not well-formed CSV; the message names the line.
    """
    lines = _Lines(stream)
    reader = csv.reader(lines, strict=True)
    columns: list[_Column] | None = None
    rows = 0
    start = 1  # the line the next record starts on (records can span lines)
    try:
        for record in reader:
            if not record:
                pass
            elif columns is None:
                columns = [_Column(name) for name in _column_names(record)]
            elif len(record) != len(columns):
                fields = "field" if len(record) == 1 else "fields"
                raise CsvFormatError(f"Line {start} has {len(record)} {fields}, expected {len(columns)}.")
            else:
                rows += 1
                for column, value in zip(columns, record, strict=True):
                    column.add(value)
                if rows % REPORT_EVERY == 0:
                    report(min(lines.bytes_read, size), size)
            start = reader.line_num + 1
    except csv.Error as error:
        # With strict=True the reader fails at the end of the file only on a quoted field left open.
        if lines.finished:
            raise CsvFormatError(f"Line {start} has a quoted field that is never closed.") from None
        raise CsvFormatError(f"Line {reader.line_num} is not valid CSV: {error}.") from None
    if columns is None:
        raise CsvFormatError("The file is empty.")
    report(size, size)
    return {"rows": rows, "columns": [column.result() for column in columns]}
