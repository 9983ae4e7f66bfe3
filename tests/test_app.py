"""App set-up: settings, the generated secret key, and answers when the store is down."""

import logging
import os
import stat

import pytest
from helpers import csrf_token, soup

from webapp import create_app
from webapp.kinds import KINDS
from webapp.service import Tasklight
from webapp.store import FAILED, StoreUnavailable


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


@pytest.fixture
def down_app(tmp_path):
    """An app whose Redis is not there (nothing listens on port 1)."""
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "t", "INSTANCE_PATH": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    yield app
    app.extensions["tasklight"].close()


def test_store_down_answers_503_pages_and_loses_nothing(down_app):
    client = down_app.test_client()
    assert client.get("/").status_code == 200
    token = csrf_token(client, "/jobs/new/timer")
    response = client.post("/jobs/new/timer", data={"csrf_token": token, "seconds": "1"})
    assert response.status_code == 503
    assert "cannot be reached" in soup(response).select_one(".error-message").get_text()
    assert "Traceback" not in response.get_data(as_text=True)
    with client.session_transaction() as session:
        session["owner"] = "someone"
    assert client.get("/jobs/" + "a" * 32).status_code == 503
    assert client.get("/jobs").status_code == 503
    json = client.get("/jobs/" + "a" * 32, headers={"Accept": "application/json"})
    assert json.status_code == 503 and "cannot be reached" in json.get_json()["error"]


def test_a_failed_enqueue_marks_the_record_failed(app):
    """Unit test of Tasklight.submit: the queue refuses, the record must not stay queued."""
    service: Tasklight = app.extensions["tasklight"]

    def refuse(task):
        raise ConnectionError("queue is down")

    service.huey.enqueue = refuse
    with app.app_context(), pytest.raises(StoreUnavailable):
        service.submit(KINDS["timer"], "alice", {"seconds": 1})
    [job] = service.store.list(owner="alice")
    assert job.state == FAILED
    assert "could not be queued" in job.error["message"]
