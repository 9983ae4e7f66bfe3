"""Template filters that turn record values into words for people, and the form fields' ARIA attributes."""

import math
import time

from flask import Flask, current_app
from markupsafe import Markup

LABELS = {
    "queued": "Queued",
    "running": "Running",
    "retrying": "Retrying",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "lost": "Lost",
    "expired": "Expired",
}


def init_app(app: Flask) -> None:
    for function in (iso, when, filesize, duration, iso_duration, number, relative, state_label):
        app.add_template_filter(function)
    for function in (aria, run_time, timestamp):
        app.add_template_global(function)


def aria(field) -> dict[str, str]:
    """The ARIA attributes of a form field: what describes it (help and errors), and whether it is invalid."""
    described = [f"{field.id}-help"] if field.description else []
    described += [f"{field.id}-error"] if field.errors else []
    attributes = {"aria-describedby": " ".join(described)} if described else {}
    if field.errors:
        attributes["aria-invalid"] = "true"
    return attributes


def iso(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC, with milliseconds."""
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"


def when(timestamp: float) -> str:
    """For people: "2026-11-27 11:03:51 UTC"."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def timestamp(at: float) -> Markup:
    """A moment, readable by people and, through ``datetime``, by machines: ``<time datetime="...">...</time>``.

    A function, not a macro: the timeline calls it once per event on every poll that changes it.
    """
    return Markup('<time datetime="{}">{}</time>').format(iso(at), when(at))


def filesize(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def duration(seconds: float) -> str:
    """A short, rounded duration: "0.4 s", "12 s", "3 min 5 s", "2 h 1 min"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def iso_duration(seconds: float) -> str:
    """A duration as HTML's <time datetime> takes it: "PT75.250S"."""
    return f"PT{max(seconds, 0):.3f}S"


def run_time(job) -> float | None:
    """Seconds a job has run: start to end once it has ended, start to now (by the store's clock) while it runs.

    None when nothing is running and nothing ran to an end: never started, or waiting between attempts.
    """
    if job.started_at is None:
        return None
    if job.finished_at is not None:
        return max(job.finished_at - job.started_at, 0.0)
    if job.state == "running":
        return max(current_app.extensions["tasklight"].store.now() - job.started_at, 0.0)
    return None


def number(value: float) -> str:
    """A number from a file, short and exact enough to read: "1,880,919", "463.9", "0.0125", "1.798e+308"."""
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if 1e3 <= abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:,.4g}"


def relative(timestamp: float, now: float) -> str:
    delta = timestamp - now
    return "in " + duration(delta) if delta > 0.5 else "any moment now"


def state_label(state: str, job=None) -> str:
    if job is not None and job.cancel_requested and state == "running":
        return "Cancelling…"
    return LABELS.get(state, state)
