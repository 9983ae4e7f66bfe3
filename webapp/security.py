"""Security headers sent with every response, so the browser enforces what the templates promise."""

from flask import Flask, Response

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


def add_security_headers(response: Response) -> Response:
    """Add the security headers, leaving any a view has set on purpose."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response
