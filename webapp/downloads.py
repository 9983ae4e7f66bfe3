"""Download a finished job's result as a file: a CSV profile as JSON or CSV, a checksum as a ``.sha256``-style line."""

from __future__ import annotations

import csv
import io
import json
import os
import unicodedata

from flask import Blueprint, Response, abort, send_file
from werkzeug.utils import secure_filename

from .jobs import owned_job
from .store import SUCCEEDED, Job

bp = Blueprint("downloads", __name__, url_prefix="/jobs")

#: Columns of the CSV download, one row per column of the profiled file.
PROFILE_FIELDS = ("name", "type", "count", "empty", "distinct", "distinct_capped", "min", "max", "mean", "top")


def formats(job: Job) -> tuple[str, ...]:
    """The file extensions a job's result can be downloaded as."""
    if job.kind == "csv_profile":
        return ("json", "csv")
    if job.kind == "checksum":
        return (job.inputs.get("algorithm", "sha256"),)
    return ()


@bp.get("/<job_id>/download.<fmt>")
def download(job_id: str, fmt: str):
    """Send a succeeded job's result as an attachment; only its owner may."""
    job = owned_job(job_id)
    if fmt not in formats(job):
        abort(404, description=f"This job's result cannot be downloaded as .{fmt}.")
    if job.state != SUCCEEDED:
        abort(409, description=f"This job is {job.state}; its result can be downloaded once it has succeeded.")
    stem = os.path.splitext(upload_name(job, safe=True))[0]
    if job.kind == "checksum":
        # The same line as sha256sum and friends print, so ``sha256sum -c`` can check the file.
        line = f"{job.result['hexdigest']}  {upload_name(job, safe=False)}\n"
        return attachment(line.encode(), "text/plain; charset=utf-8", f"{upload_name(job, safe=True)}.{fmt}")
    if fmt == "json":
        body = json.dumps(job.result, indent=2, ensure_ascii=False) + "\n"
        return attachment(body.encode(), "application/json", f"{stem}-profile.json")
    return attachment(profile_csv(job.result).encode(), "text/csv; charset=utf-8", f"{stem}-profile.csv")


def attachment(body: bytes, mimetype: str, name: str) -> Response:
    """A download; send_file writes Content-Disposition, with RFC 6266 ``filename*`` when the name needs it."""
    response = send_file(io.BytesIO(body), mimetype=mimetype, as_attachment=True, download_name=name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def upload_name(job: Job, safe: bool) -> str:
    """The uploaded file's name: made safe for a file name, or as given when it fits on one line."""
    original = (job.upload or {}).get("name") or "upload"
    # Browsers may send a full path, with either separator.
    base = original.replace("\\", "/").rsplit("/", 1)[-1]
    printable = base and all(unicodedata.category(c)[0] != "C" for c in base)
    if not safe and printable:
        return base
    return secure_filename(base) or "upload"


def profile_csv(profile: dict) -> str:
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
