"""Security headers sent with every response, so the browser enforces what the templates promise; form tokens."""

from __future__ import annotations

import functools

from flask import Flask, Response, abort, current_app, request, session
from flask_wtf.csrf import generate_csrf
from itsdangerous import URLSafeTimedSerializer

#: Only our own origin may supply scripts, styles and frames' parents; there is no inline code to allow.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def init_app(app: Flask) -> None:
    app.after_request(add_security_headers)
    # First of all, before CSRFProtect's own check reads the form's field names.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_unnamed_fields)
    # After CSRFProtect's: the templates' csrf_token() is this one, in imported macros and in pages alike.
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.context_processor(lambda: {"csrf_token": csrf_token})
    # The one-button POST form, made once: an import in a template made the macros' module again on each render.
    app.jinja_env.globals["post_button"] = app.jinja_env.get_template("partials/macros.html").module.post_button


def refuse_unnamed_fields() -> None:
    """Answer 400 to a multipart form with a part whose name cannot be read (``name="\\"``).

    Werkzeug gives such a part the name None, and Flask-WTF, looking through the names for the CSRF
    token, would fail on it with a 500.
    """
    if request.mimetype == "multipart/form-data" and (None in request.form or None in request.files):
        abort(400, description="The form has a field whose name cannot be read. Reload the page and send it again.")


def add_security_headers(response: Response) -> Response:
    """Add the security headers, leaving any a view has set on purpose (one pass over the headers, not three)."""
    present = {name.lower() for name, _ in response.headers.items()}
    response.headers.extend([(name, value) for name, value in HEADERS.items() if name.lower() not in present])
    return response


def csrf_token() -> str:
    """The signed CSRF token for this session's forms, as Flask-WTF's ``csrf_token()`` makes it.

    Signing it costs a tenth of a status poll's fragment, which carries a
    cancel button, so this process signs each session's token once. A token
    signed earlier is as good as a new one while tokens do not expire
    (``WTF_CSRF_TIME_LIMIT`` is None, as ``create_app`` sets it); otherwise,
    and for a session with no token yet, Flask-WTF makes it.
    """
    config = current_app.config
    raw = session.get(config["WTF_CSRF_FIELD_NAME"])
    if raw is None or config["WTF_CSRF_TIME_LIMIT"] is not None:
        return generate_csrf()
    return signed_csrf_token(config.get("WTF_CSRF_SECRET_KEY") or current_app.secret_key, raw)


@functools.lru_cache(maxsize=4096)
def signed_csrf_token(secret_key: str, raw: str) -> str:
    # Flask-WTF's signing, salt included, so that its validate_csrf accepts the token.
    return URLSafeTimedSerializer(secret_key, salt="wtf-csrf-token").dumps(raw)
