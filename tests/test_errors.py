"""Error answers: a store that is down gets a friendly 503, never a traceback."""

import pytest
from helpers import csrf_token, soup

from webapp import create_app


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


def test_a_method_not_allowed_names_the_allowed_ones(client):
    """A 405 keeps werkzeug's Allow header through the app's own error page (RFC 9110 requires it)."""
    for headers in ({}, {"Accept": "application/json"}):
        response = client.delete("/jobs", headers=headers)
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
