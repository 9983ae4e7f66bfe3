"""Security headers sent with every response, so the browser enforces what the templates promise."""

from flask import Flask, Response, abort, request

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


def refuse_unnamed_fields() -> None:
    """Answer 400 to a multipart form with a part whose name cannot be read (``name="\\"``).

    Werkzeug gives such a part the name None, and Flask-WTF, looking through the names for the CSRF
    token, would fail on it with a 500.
    """
    if request.mimetype == "multipart/form-data" and (None in request.form or None in request.files):
        abort(400, description="The form has a field whose name cannot be read. Reload the page and send it again.")


def add_security_headers(response: Response) -> Response:
    """Add the security headers, leaving any a view has set on purpose."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response
