"""Settings from the environment, each parsed by its own rule, and the generated secret key."""

import logging
import os
import stat

import pytest

from webapp import create_app
from webapp.config import Settings, flag, instance_secret_key


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TASKLIGHT_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("TASKLIGHT_HEARTBEAT_TIMEOUT", "12.5")
    monkeypatch.setenv("SECRET_KEY", "from-env")
    monkeypatch.delenv("REDIS_URL", raising=False)
    app = create_app()
    assert app.config["HEARTBEAT_TIMEOUT"] == 12.5
    assert app.config["SECRET_KEY"] == "from-env"
    assert app.extensions["tasklight"].store.path == str(tmp_path / "tasklight.db")
    app.extensions["tasklight"].close()


def test_without_secret_key_one_is_made_once_and_kept_private(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    config = {"INSTANCE_PATH": str(tmp_path), "REDIS_URL": ""}
    with caplog.at_level(logging.WARNING):
        first = create_app(config)
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert "SECRET_KEY is not set" in caplog.text
    second = create_app(config)
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"] == key_file.read_text()
    for app in (first, second):
        app.extensions["tasklight"].close()


def test_settings_are_typed_by_their_own_parsers(monkeypatch):
    monkeypatch.setenv("TASKLIGHT_MAX_UPLOAD_BYTES", "2048")
    monkeypatch.setenv("TASKLIGHT_BEHIND_TLS", "no")
    monkeypatch.setenv("ADMIN_TOKEN", "t")
    settings = Settings.load({"HEARTBEAT_TIMEOUT": "3"})
    assert (settings.MAX_UPLOAD_BYTES, settings.BEHIND_TLS, settings.ADMIN_TOKEN) == (2048, False, "t")
    assert settings.HEARTBEAT_TIMEOUT == 3.0 and isinstance(settings.HEARTBEAT_TIMEOUT, float)
    assert [flag(v) for v in ("1", "TRUE", "yes", "on", True, "0", "", "off", False)] == [True] * 5 + [False] * 4


def test_a_crash_while_writing_the_key_leaves_no_empty_key_file(tmp_path, monkeypatch):
    """The key file appears whole or not at all, so the next start makes one rather than failing on an empty file."""
    real_fdopen = os.fdopen

    def crash(fd, *args, **kwargs):
        real_fdopen(fd).close()
        raise KeyboardInterrupt("killed while writing the key")

    monkeypatch.setattr(os, "fdopen", crash)
    with pytest.raises(KeyboardInterrupt):
        instance_secret_key(str(tmp_path), logging.getLogger("test"))
    monkeypatch.undo()
    key = instance_secret_key(str(tmp_path), logging.getLogger("test"))
    assert len(key) == 64 and (tmp_path / "secret_key").read_text() == key
    assert stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode) == 0o600
