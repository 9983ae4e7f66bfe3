"""One answer, two forms: JSON for scripts that ask for it, HTML for browsers."""

from __future__ import annotations

import functools

from flask import Response, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header


def wants_json() -> bool:
    """True when the client prefers JSON to HTML (browsers never do)."""
    return prefers_json(request.headers.get("Accept"))


@functools.lru_cache(maxsize=256)
def prefers_json(accept: str | None) -> bool:
    # A client sends the same Accept header with every poll, and there are few distinct ones: parse each once.
    return parse_accept_header(accept, MIMEAccept).best_match(["text/html", "application/json"]) == "application/json"


def add_vary(response: Response, name: str) -> None:
    """Add ``name`` to the response's ``Vary``, as ``response.vary.add`` does, without parsing an empty header."""
    current = response.headers.get("Vary")
    if not current:
        response.headers["Vary"] = name
    elif name.lower() not in {part.strip().lower() for part in current.split(",")}:
        response.headers["Vary"] = f"{current}, {name}"


def respond(
    data: dict, template: str, status: int = 200, headers: dict | None = None, **context
) -> ResponseReturnValue:
    """``data`` as JSON, or ``template`` rendered with ``context``, with the same status and headers."""
    body = jsonify(data) if wants_json() else render_template(template, **context)
    return body, status, headers or {}
