"""Tasklight: hand long work to a queue, answer at once, and show it as it changes."""

import os
import secrets
import time
from dataclasses import asdict

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from .config import Settings

csrf = CSRFProtect()


def create_app(test_config: dict | None = None) -> Flask:
    """Create the app from the environment, overridden by ``test_config``."""
    app = Flask(__name__, template_folder="../templates", instance_path=Settings().INSTANCE_PATH)
    app.config.from_mapping(asdict(Settings.from_env()))
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY"),
        ADMIN_TOKEN=os.environ.get("ADMIN_TOKEN"),
        BEHIND_TLS=os.environ.get("TASKLIGHT_BEHIND_TLS", "").lower() in ("1", "true", "yes"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
    )
    if test_config:
        app.config.update(test_config)
    app.instance_path = app.config["INSTANCE_PATH"]
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"] + 64 * 1024
    app.config["SESSION_COOKIE_SECURE"] = app.config["BEHIND_TLS"]
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _instance_secret(app)

    csrf.init_app(app)
    _init_service(app)

    from . import admin, cli, downloads, errors, filters, jobs, pages, security

    for blueprint in (pages.bp, jobs.bp, downloads.bp, admin.bp):
        app.register_blueprint(blueprint)
    app.cli.add_command(cli.jobs)
    errors.init_app(app)
    filters.init_app(app)
    security.init_app(app)
    return app


def _init_service(app: Flask) -> None:
    from .service import Tasklight
    from .store import open_store
    from .worker import create_huey

    settings = Settings.from_mapping(app.config)
    store = open_store(settings)
    app.extensions["tasklight"] = Tasklight(store, create_huey(settings, store))


def _instance_secret(app: Flask) -> str:
    """Read the instance's secret key, making one (readable by this user only) the first time."""
    path = os.path.join(app.instance_path, "secret_key")
    os.makedirs(app.instance_path, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    app.logger.warning(
        "SECRET_KEY is not set: generated one and kept it in %s. Set SECRET_KEY when running on several hosts.", path
    )
    return key


def _read_secret(path: str) -> str:
    # Several web workers start at once; one writes the key, and the others
    # may find the file before the write lands, so give it a moment.
    for _ in range(50):
        with open(path) as f:
            key = f.read().strip()
        if key:
            return key
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty; delete it or set SECRET_KEY")
