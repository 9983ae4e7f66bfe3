"""Error pages: a clear answer with the right status, never a traceback."""

import uuid

from flask import Flask, current_app, make_response, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from .filters import when
from .negotiate import respond
from .service import OverLimit
from .store import JobNotFound, JobPurged, StoreUnavailable


def init_app(app: Flask) -> None:
    app.register_error_handler(JobNotFound, not_found)
    app.register_error_handler(JobPurged, purged)
    app.register_error_handler(StoreUnavailable, unavailable)
    app.register_error_handler(OverLimit, over_limit)
    app.register_error_handler(CSRFError, csrf_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(InternalServerError, internal_error)


def error_page(status: int, title: str, message: str, **extra):
    """The error page, or JSON for clients that ask for it."""
    data = {"error": message, "status": status, **extra}
    headers = {"Cache-Control": "no-store", "Vary": "Accept"}
    return respond(data, "pages/error.html", status, headers, title=title, message=message, **extra)


def not_found(exc: JobNotFound):
    return error_page(404, "Job not found", "There is no job with this id in your session.")


def purged(exc: JobPurged):
    at = when(exc.purged_at)
    return error_page(410, "Job expired", f"This job's result expired at {at} and was deleted.", expired_at=at)


def unavailable(exc: StoreUnavailable):
    message = "The job store cannot be reached just now, so nothing was changed. Please try again in a moment."
    body, status, headers = error_page(503, "Service unavailable", message)
    if request.headers.get("HX-Request") == "true":
        # htmx swaps a 503 in (base.html), for the status fragment's outage answer; this page must not be.
        headers["HX-Reswap"] = "none"
    return body, status, headers


def over_limit(exc: OverLimit):
    return error_page(429, "Too many jobs", str(exc))


def csrf_error(exc: CSRFError):
    message = "The form was missing its security token or it had expired. Go back, reload the page and send it again."
    return error_page(400, "Form expired", message)


def http_error(exc: HTTPException):
    titles = {413: "File too large"}
    message = exc.description
    if exc.code == 413:
        limit = current_app.config["MAX_UPLOAD_BYTES"]
        message = f"The upload is larger than the limit of {limit / 1048576:.0f} MiB. Choose a smaller file."
    response = make_response(error_page(exc.code or 500, titles.get(exc.code, exc.name), message))
    # A 405 names the methods the URL does take (RFC 9110, 15.5.6), as werkzeug's own answer would.
    if getattr(exc, "valid_methods", None):
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def internal_error(exc: InternalServerError):
    ref = uuid.uuid4().hex[:8]
    original = getattr(exc, "original_exception", None)
    current_app.logger.error("unhandled error, ref %s", ref, exc_info=original)
    return error_page(500, "Something went wrong", f"An unexpected error occurred (ref {ref}).", ref=ref)
