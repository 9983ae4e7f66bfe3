"""Security headers sent with every response, so the browser enforces what the templates promise; form tokens."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping

from flask import Flask, abort, current_app, request, session
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
    # Flask-WTF's hook and context processor run on every request and render, polls included. They are
    # taken out: check_unsafe_request checks the token only for the methods Flask-WTF protects, and the
    # templates' csrf_token() is this module's, a global.
    for functions in (app.before_request_funcs[None], app.template_context_processors[None]):
        functions[:] = [f for f in functions if f.__module__ != "flask_wtf.csrf"]
    app.before_request_funcs[None].insert(0, check_unsafe_request)
    app.jinja_env.globals["csrf_token"] = csrf_token
    # The one-button POST form, made once: an import in a template made the macros' module again on each render.
    app.jinja_env.globals["post_button"] = app.jinja_env.get_template("partials/macros.html").module.post_button


def check_unsafe_request() -> None:
    """For a request that may change something (POST and the like), the checks before its view runs.

    A multipart form with a part whose name cannot be read (``name="\\"``) gets a 400: Werkzeug gives
    such a part the name None, and Flask-WTF, looking through the names for the CSRF token, would fail
    on it with a 500. Then the CSRF token is checked, as Flask-WTF's default hook would.
    """
    config = current_app.config
    if request.method not in config["WTF_CSRF_METHODS"]:
        return
    if request.mimetype == "multipart/form-data" and (None in request.form or None in request.files):
        abort(400, description="The form has a field whose name cannot be read. Reload the page and send it again.")
    if config["WTF_CSRF_ENABLED"]:
        current_app.extensions["csrf"].protect(apply_exemptions=True)


class SecurityHeaders:
    """WSGI middleware: add the security headers to every response, leaving any a view has set on purpose.

    Outside Flask, so that answers made before Flask starts (a quick 304 or 503) carry them too, and
    a plain list of headers is cheaper to check than a response's ``Headers``.
    """

    def __init__(self, wsgi_app: Callable):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        def with_headers(status: str, headers: list, exc_info=None):
            present = {name.lower() for name, _ in headers}
            missing = [(name, value) for name, value in HEADERS.items() if name.lower() not in present]
            return start_response(status, headers + missing, exc_info)

        return self.wsgi_app(environ, with_headers)


def csrf_token() -> str:
    """The signed CSRF token for this session's forms, as Flask-WTF's ``csrf_token()`` makes it.

    Signing it costs a tenth of a status poll's fragment, which carries a cancel button, so
    this process signs each session's token once (``session_csrf_token``); for a session
    with no token yet, Flask-WTF makes one and puts it in the session.
    """
    return session_csrf_token(current_app, session) or generate_csrf()


def session_csrf_token(app: Flask, data: Mapping) -> str | None:
    """The signed CSRF token of a session's ``data``, made without a request; None if it has none yet.

    A token signed earlier is as good as a new one while tokens do not expire
    (``WTF_CSRF_TIME_LIMIT`` is None, as ``create_app`` sets it); otherwise this is None too.
    """
    config = app.config
    raw = data.get(config["WTF_CSRF_FIELD_NAME"])
    if raw is None or config["WTF_CSRF_TIME_LIMIT"] is not None:
        return None
    return signed_csrf_token(config.get("WTF_CSRF_SECRET_KEY") or app.secret_key, raw)


#: One per open page, as for the session cookies (webapp/sessions.py): past that, every poll signs again.
@functools.lru_cache(maxsize=8192)
def signed_csrf_token(secret_key: str, raw: str) -> str:
    # Flask-WTF's signing, salt included, so that its validate_csrf accepts the token.
    return URLSafeTimedSerializer(secret_key, salt="wtf-csrf-token").dumps(raw)
