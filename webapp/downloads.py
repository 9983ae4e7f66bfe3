"""A finished job's result as a file: a CSV profile as JSON or CSV, a checksum as a ``sha256sum``-style line."""

from __future__ import annotations

import csv
import io
import json
import os
import unicodedata
from dataclasses import dataclass

from werkzeug.utils import secure_filename

from .store import Job

#: Columns of the CSV download, one row per column of the profiled file.
PROFILE_FIELDS = ("name", "type", "count", "empty", "distinct", "distinct_capped", "min", "max", "mean", "top")


@dataclass(frozen=True)
class Download:
    """A file to send: its content, its media type and the name to save it as."""

    content: bytes
    #: Without a charset: a text type is sent as UTF-8, and says so, by ``send_file`` itself.
    mimetype: str
    filename: str


def checksum_formats(job: Job) -> tuple[str, ...]:
    """A checksum downloads as a file named after its algorithm, as ``sha256sum`` and friends write."""
    return (job.inputs.get("algorithm", "sha256"),)


def checksum_download(job: Job, fmt: str) -> Download:
    """The same line as ``sha256sum`` and friends print, so ``sha256sum -c`` can check the file."""
    line = f"{job.result['hexdigest']}  {upload_name(job, safe=False)}\n"
    return Download(line.encode(), "text/plain", f"{upload_name(job, safe=True)}.{fmt}")


def profile_formats(job: Job) -> tuple[str, ...]:
    return ("json", "csv")


def profile_download(job: Job, fmt: str) -> Download:
    """The profile as indented JSON, or as CSV with one row per profiled column."""
    stem = os.path.splitext(upload_name(job, safe=True))[0]
    if fmt == "json":
        body = json.dumps(job.result, indent=2, ensure_ascii=False) + "\n"
        return Download(body.encode(), "application/json", f"{stem}-profile.json")
    return Download(profile_as_csv(job.result).encode(), "text/csv", f"{stem}-profile.csv")


def upload_name(job: Job, safe: bool) -> str:
    """The uploaded file's name: made safe for a file name, or as given when it fits on one line."""
    original = job.upload_name or "upload"
    # Browsers may send a full path, with either separator.
    base = original.replace("\\", "/").rsplit("/", 1)[-1]
    printable = base and all(unicodedata.category(c)[0] != "C" for c in base)
    if not safe and printable:
        return base
    return secure_filename(base) or "upload"


def profile_as_csv(profile: dict) -> str:
    """The profile as CSV text, one row per column; ``top`` is a JSON list of [value, count]."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(PROFILE_FIELDS)
    for column in profile["columns"]:
        row = [column.get(name) for name in PROFILE_FIELDS]
        row[-1] = json.dumps(column.get("top") or [], ensure_ascii=False)
        writer.writerow([cell(value) for value in row])
    return out.getvalue()


def cell(value) -> str | int | float:
    """A CSV cell; text from the upload that a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
