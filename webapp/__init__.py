"""Tasklight: hand long work to a queue, answer at once, and show it as it changes."""

from __future__ import annotations

from dataclasses import asdict

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Settings

csrf = CSRFProtect()


def create_app(test_config: dict | None = None) -> Flask:
    """Create the app from the environment, overridden by ``test_config``."""
    # Imported here, so that a consumer importing ``webapp.worker`` does not load the web side.
    from . import admin, cli, errors, filters, jobs, pages, security, shares
    from .early_polls import EarlyPolls
    from .kinds import KINDS
    from .overload import OverloadGuard, PollPacer
    from .queue import JobQueue
    from .security import SecurityHeaders
    from .service import Tasklight
    from .sessions import SessionInterface
    from .store import open_store

    settings = Settings.load(test_config)
    app = Flask(__name__, template_folder="../templates", instance_path=settings.INSTANCE_PATH)
    settings = settings.with_secret_key(app.logger)
    app.config.from_mapping(
        asdict(settings),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.BEHIND_TLS,
        # A poll does not re-sign the cookie; SessionInterface refreshes an unchanged one once a day.
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_TIME_LIMIT=None,
        # The request may carry a few form fields beside the largest upload; the upload itself gets the exact limit.
        MAX_CONTENT_LENGTH=settings.MAX_UPLOAD_BYTES + 64 * 1024,
    )
    app.config.update({k: v for k, v in (test_config or {}).items() if not hasattr(settings, k)})
    app.session_interface = SessionInterface()

    store = open_store(settings)
    queue = JobQueue(settings, store)
    app.extensions["tasklight"] = Tasklight(store, queue, settings.MAX_ACTIVE_JOBS, settings.MAX_STORED_UPLOAD_BYTES)
    csrf.init_app(app)
    for blueprint in (pages.bp, jobs.bp, shares.bp, admin.bp):
        app.register_blueprint(blueprint)
    app.cli.add_command(cli.jobs)
    errors.init_app(app)
    filters.init_app(app)
    security.init_app(app)
    # Past capacity, a poll that waited too long gets a quick 503, and the poll interval grows while requests wait.
    app.extensions["poll_pacer"] = PollPacer()
    # Most polls (a waiting or running job's fragment, any job's JSON) are answered before Flask starts.
    app.wsgi_app = EarlyPolls(app, app.wsgi_app)
    if settings.BEHIND_TLS:
        # Behind the proxy that terminates HTTPS, trust its word on the scheme, host and client, so that the
        # links the app builds (the JSON's url, share links), those the early answers build too, say https.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)
    if settings.OVERLOAD_WAIT > 0:
        app.wsgi_app = OverloadGuard(app.wsgi_app, app.extensions["poll_pacer"], settings.OVERLOAD_WAIT)
    # Outermost, so that every answer carries the security headers, those made before Flask starts too.
    app.wsgi_app = SecurityHeaders(app.wsgi_app)
    for kind in KINDS.values():
        # A kind without its result partial fails here, at start-up, not on its first result.
        app.jinja_env.get_template(kind.result_template)
    return app
