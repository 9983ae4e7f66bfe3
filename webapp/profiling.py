"""Profiling of CSV files: the type, counts, range and common values of each column.

Pure Python (standard library only) so that it can be tested without the web app or the worker.
"""

from __future__ import annotations

import csv
import dataclasses
import heapq
import json
import math
import re
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import date
from typing import BinaryIO

#: Distinct values tracked per column; beyond this the distinct count is a lower bound.
DISTINCT_CAP = 100_000
#: Progress is reported every this many data rows,
REPORT_EVERY = 1000
#: every this many bytes read,
REPORT_BYTES = 256 * 1024
#: and after this many seconds of work, whichever comes first (long rows, long headers and the final sums included).
REPORT_SECONDS = 0.1
#: Most bytes read at once: a long line is read in chunks, with a progress check after each.
READ_CHUNK = 64 * 1024
#: Progress is checked after this many bytes or lines read (cheaper than a check after every line).
TICK_BYTES = 16 * 1024
TICK_LINES = 64
#: Numbers summed or binned between progress checks (a few milliseconds of work).
PART = 65_536
#: Most common values listed per column.
TOP = 5
#: Most histogram bins per numeric column.
BINS = 10

# ASCII only: int() and float() also accept other scripts' digits, underscores, "nan" and "inf".
_INTEGER = re.compile(r"[+-]?[0-9]+")
# The digits after the point need the point: "[0-9]+\.?[0-9]*" backtracks quadratically on a long run of digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BOOLEANS = {"true", "false", "yes", "no"}
# A "\r" not followed by "\n" ends a line too, as in universal newlines (old Mac files).
_LONE_CR = re.compile(rb"(?<=\r)(?=[^\n])")
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class CsvLimits:
    """Bounds on the file and on the profile, so that no upload takes unbounded time, memory or space."""

    #: The profile is one table row per column: more is no longer readable, and this bounds the profile's size.
    max_columns: int = 500
    #: Longer column names are cut (ending in "…"): names are stored with the profile and shown on every view.
    max_name_length: int = 200
    #: A longer field fails the file: 10,000 characters is pages of prose, not a tabular value, and it keeps the
    #: work per value small. Above ``csv.field_size_limit()`` (131,072 by default) that limit fails the file first.
    max_cell_length: int = 10_000
    #: Longer text values shown as min, max and most common are cut (ending in "…"): the page shows 40 characters.
    max_value_length: int = 100
    #: A longer row (header included, lines inside quotes included) fails the file: a row is parsed whole, so this
    #: bounds its memory and the work between progress reports; 1 MiB is a thousand times a wide row.
    max_row_bytes: int = MIB
    #: A larger profile (as stored: compact, ASCII-escaped JSON) fails the file: it is stored with the job and
    #: rendered on every view. 500 columns of ASCII names and values at their longest take about 0.55 MiB; other
    #: text is escaped (6 bytes a character), so such names and values can pass this.
    max_result_bytes: int = MIB

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"CsvLimits.{field.name} must be at least 1")


class CsvFormatError(ValueError):
    """The file is not a CSV file that can be profiled; the message is shown to the user as is."""


class _Progress:
    """Calls ``report(done, size)`` every REPORT_BYTES read and after REPORT_SECONDS of work, when ticked."""

    def __init__(self, report: Callable[[int, int], None], size: int):
        self.report_to = report
        self.size = size
        self.done = 0
        self.reported_bytes = 0
        self.reported_at = time.monotonic()

    def tick(self, done: int | None = None) -> None:
        """Note ``done`` bytes read (if given), and report if it is time to."""
        if done is not None:
            self.done = min(done, self.size)
        if self.done - self.reported_bytes >= REPORT_BYTES or time.monotonic() - self.reported_at >= REPORT_SECONDS:
            self.report()

    def report(self) -> None:
        """Report now; exceptions from ``report`` propagate (that is how a job is cancelled or timed out)."""
        self.reported_bytes = self.done
        self.report_to(self.done, self.size)
        # Timed from the end of the report, so that a slow report does not count as work.
        self.reported_at = time.monotonic()


class _Lines:
    """The text lines of a binary stream, read in chunks of at most READ_CHUNK bytes, ticking ``progress`` as it goes.

    Decoding line by line (rather than through ``io.TextIOWrapper``) gives an exact byte count for progress and
    the exact line of an encoding error; UTF-8 never has a "\\n" or "\\r" byte inside a character, so this is safe.
    The reader calls ``next_row`` after each row, so that a row longer than ``max_row_bytes`` (its lines counted
    together) fails before it is read whole.
    """

    def __init__(self, stream: BinaryIO, progress: _Progress, max_row_bytes: int):
        self.stream = stream
        self.progress = progress
        self.max_row_bytes = max_row_bytes
        self.bytes_read = 0
        self.finished = False
        self.line = 0  # the lines handed out so far; the csv reader's ``line_num``
        self.row_start = 1  # the line the current row starts on (rows can span lines)
        self.row_bytes = 0  # the bytes of the current row handed out so far

    def next_row(self) -> None:
        """Note that the lines handed out so far made whole rows."""
        self.row_start = self.line + 1
        self.row_bytes = 0

    def _too_long(self) -> CsvFormatError:
        """The error for a row longer than ``max_row_bytes``."""
        limit = _size(self.max_row_bytes)
        return CsvFormatError(f"Line {self.row_start} starts a row longer than {limit}; rows may be at most {limit}.")

    def __iter__(self) -> Iterator[str]:
        pending = bytearray()  # the start of a line longer than a chunk: no "\n", and a "\r" only at its end
        readline, tick = self.stream.readline, self.progress.tick
        # Progress is checked every TICK_LINES lines or TICK_BYTES bytes, which bounds the work in between.
        unticked, countdown = 0, TICK_LINES
        while True:
            raw = readline(READ_CHUNK)
            unticked += len(raw)
            countdown -= 1
            if unticked >= TICK_BYTES or not countdown or not raw:
                self.bytes_read += unticked
                tick(self.bytes_read)
                unticked, countdown = 0, TICK_LINES
            if raw and raw[-1] == 10 and not pending:  # a whole line ending in "\n", the usual case
                data = raw
            else:
                searched = max(len(pending) - 1, 0)
                pending += raw
                cut = len(pending)
                if raw and raw[-1] != 10:
                    # Part of a long line: only lines ending in a lone "\r" (old Mac files) are complete, and a "\r"
                    # at the very end may still be followed by "\n".
                    cut = pending.rfind(b"\r", searched, len(pending) - 1) + 1
                data = bytes(pending[:cut])
                del pending[:cut]
            # 13 is "\r": bytes find an int faster than a bytes.
            for piece in _LONE_CR.split(data) if 13 in data else (data,) if data else ():
                self.line += 1
                self.row_bytes += len(piece)
                if self.row_bytes > self.max_row_bytes:
                    raise self._too_long()
                try:
                    text = piece.decode()
                except UnicodeDecodeError:
                    message = f"Line {self.line} is not UTF-8 text. Save the file as UTF-8 and try again."
                    raise CsvFormatError(message) from None
                # A byte order mark is dropped at the start of the file only.
                yield text.removeprefix("\ufeff") if self.line == 1 else text
            # Checked once the reader has taken the lines before it, so that the row it belongs to is known.
            if pending and self.row_bytes + len(pending) > self.max_row_bytes:
                raise self._too_long()
            if not raw:
                break
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
                # Without its leading zeros: int() refuses more than 4,300 digits, and a finite float has fewer.
                whole = int(value.lstrip("+-").lstrip("0") or "0") * (-1 if value[0] == "-" else 1)
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

    def result(self, limits: CsvLimits, tick: Callable[[], None]) -> dict:
        """The column's profile, JSON-serialisable, with text cut to ``limits``; ``tick`` is called as it goes."""
        kind = (
            "empty"
            if not self.count
            else next((k for k in ("integer", "number", "boolean", "date") if k in self.kinds), "text")
        )
        low = high = mean = histogram = None
        if kind == "integer":
            low, high, mean = self.int_low, self.int_high, self.int_sum / self.count
            histogram = _histogram(self.numbers, min(BINS, self.int_high - self.int_low + 1), tick)
        elif kind == "number":
            low, high = _range(self.numbers, tick)
            # Divided before summing so that the sum cannot overflow.
            mean = math.fsum(x / self.count for part in _parts(self.numbers, tick) for x in part)
            histogram = _histogram(self.numbers, BINS if low < high else 1, tick)
        elif kind in ("date", "text"):
            low, high = _cut(self.low, limits.max_value_length), _cut(self.high, limits.max_value_length)
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
            "top": [[_cut(value, limits.max_value_length), count] for value, count in top],
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


def _cut(text: str | None, length: int) -> str | None:
    """``text`` cut to ``length`` characters, ending in "…" if it was longer."""
    return text if text is None or len(text) <= length else text[: length - 1] + "…"


def _size(limit: int) -> str:
    """A number of bytes for a message."""
    return f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit:,} bytes"


def _parts(values: array, tick: Callable[[], None]) -> Iterator[array]:
    """``values`` in slices of PART, calling ``tick`` before each: a column can hold millions of numbers."""
    for start in range(0, len(values), PART):
        tick()
        yield values[start : start + PART]


def _range(values: array, tick: Callable[[], None]) -> tuple[float, float]:
    """The minimum and maximum of ``values`` (not empty)."""
    ranges = [(min(part), max(part)) for part in _parts(values, tick)]
    return min(low for low, _ in ranges), max(high for _, high in ranges)


def _histogram(values: array, bins: int, tick: Callable[[], None]) -> list[dict]:
    """Counts of ``values`` in ``bins`` equal bins from their minimum to their maximum."""
    low, high = _range(values, tick)
    # Weighted sums rather than low + i * (high - low), which can overflow for values near the float limits.
    edges = [low * (1 - i / bins) + high * (i / bins) for i in range(bins)] + [high]
    counts = [0] * bins
    for part in _parts(values, tick):
        for value in part:
            # Only the inner edges are searched, so that the maximum falls in the last bin.
            counts[bisect_right(edges, value, 1, bins) - 1] += 1
    return [{"lo": edges[i], "hi": edges[i + 1], "count": counts[i]} for i in range(bins)]


def _column_names(header: list[str], max_length: int) -> list[str]:
    """Unique names for the header's fields: blank ones are numbered, long ones cut and repeated ones suffixed.

    Linear: each base name remembers the next suffix to try. Every suffix below it is taken (names are only ever
    added), and a taken name "b (n)" is stepped over by base b only, so each name is stepped over at most once.
    """
    names: list[str] = []
    seen: set[str] = set()
    next_copy: dict[str, int] = {}
    for number, field in enumerate(header, 1):
        name = _cut(field.strip(), max_length) or f"column {number}"
        unique = name
        if unique in seen:
            copy = next_copy.get(name, 2)
            while (unique := f"{name} ({copy})") in seen:
                copy += 1
            next_copy[name] = copy + 1
        seen.add(unique)
        names.append(unique)
    return names


def profile_csv(
    stream: BinaryIO, size: int, report: Callable[[int, int], None], limits: CsvLimits = CsvLimits()
) -> dict:
    """Profile the UTF-8 CSV file in ``stream`` (``size`` bytes long), calling ``report(bytes_read, size)`` as it goes.

    The first line is the header. Blank lines are skipped. ``report`` is called at least every REPORT_SECONDS of
    work (a little more for one row's work), every REPORT_BYTES read and every REPORT_EVERY rows, and last with
    ``(size, size)``; exceptions raised by ``report`` propagate. Column names longer than
    ``limits.max_name_length`` and text values longer than ``limits.max_value_length`` are cut, ending in "…" (a
    numbered copy of a cut name is a few characters longer); every other bound in ``limits`` fails the file.

    :returns: ``{"rows": int, "columns": [dict, ...]}``, JSON-serialisable; see ``_Column.result``.
    :raises CsvFormatError: the file is empty, not UTF-8, not well-formed CSV or past a bound in ``limits``; the
        message names the line (if any) and the bound.
    """
    progress = _Progress(report, size)
    lines = _Lines(stream, progress, limits.max_row_bytes)
    reader = csv.reader(lines, strict=True)
    columns: list[_Column] | None = None
    rows = 0
    try:
        for record in reader:
            start = lines.row_start
            # A field has no more characters than its row has bytes: most rows need no look at their fields.
            if (
                lines.row_bytes > limits.max_cell_length
                and (longest := max(map(len, record), default=0)) > limits.max_cell_length
            ):
                bound = limits.max_cell_length
                message = f"Line {start} has a field of {longest:,} characters; fields may be at most {bound:,}."
                raise CsvFormatError(message)
            if not record:
                pass
            elif columns is None:
                if len(record) > limits.max_columns:
                    raise CsvFormatError(
                        f"The header has {len(record):,} columns; at most {limits.max_columns:,} can be profiled."
                    )
                columns = [_Column(name) for name in _column_names(record, limits.max_name_length)]
            elif len(record) != len(columns):
                fields = "field" if len(record) == 1 else "fields"
                raise CsvFormatError(f"Line {start} has {len(record)} {fields}, expected {len(columns)}.")
            else:
                rows += 1
                for column, value in zip(columns, record, strict=True):
                    column.add(value)
                if rows % REPORT_EVERY == 0:
                    progress.report()
            lines.next_row()
    except csv.Error as error:
        start = lines.row_start
        if str(error).startswith("field larger than field limit"):
            # The csv module stops at its own bound (131,072 characters by default) before a row is whole.
            most = csv.field_size_limit()
            bound = min(most, limits.max_cell_length)
            message = f"Line {start} has a field of more than {most:,} characters; fields may be at most {bound:,}."
            raise CsvFormatError(message) from None
        # With strict=True the reader fails at the end of the file only on a quoted field left open.
        if lines.finished:
            raise CsvFormatError(f"Line {start} has a quoted field that is never closed.") from None
        raise CsvFormatError(f"Line {reader.line_num} is not valid CSV: {error}.") from None
    if columns is None:
        raise CsvFormatError("The file is empty.")
    results = []
    for column in columns:
        progress.tick()
        results.append(column.result(limits, progress.tick))
    result = {"rows": rows, "columns": results}
    # Measured as the job store writes it.
    stored = len(json.dumps(result, separators=(",", ":")))
    if stored > limits.max_result_bytes:
        raise CsvFormatError(
            f"The profile would take {stored:,} bytes; profiles may be at most {_size(limits.max_result_bytes)}."
        )
    report(size, size)
    return result
