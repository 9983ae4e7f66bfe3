"""One answer, two forms: JSON for scripts that ask for it, HTML for browsers."""

from __future__ import annotations

from flask import jsonify, render_template, request
from flask.typing import ResponseReturnValue


def wants_json() -> bool:
    """True when the client prefers JSON to HTML (browsers never do)."""
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def respond(
    data: dict, template: str, status: int = 200, headers: dict | None = None, **context
) -> ResponseReturnValue:
    """``data`` as JSON, or ``template`` rendered with ``context``, with the same status and headers."""
    body = jsonify(data) if wants_json() else render_template(template, **context)
    return body, status, headers or {}
