"""Share links: a finished job's result, read-only, for anyone with the link, until it expires or is revoked."""

import io

from helpers import csrf_token, job_id_from, soup, submit, wait_for

PEOPLE = b"name,age\nada,36\ngrace,45\n"


def share(client, job_id: str, inputs: bool = False) -> str:
    """Make a share link as the owner's page does; return the link."""
    data = {"csrf_token": csrf_token(client, f"/jobs/{job_id}")} | ({"inputs": "y"} if inputs else {})
    client.post(f"/jobs/{job_id}/shares", data=data)
    return soup(client.get(f"/jobs/{job_id}")).select(".share-list a")[-1]["href"]


def test_a_share_link_shows_the_result_and_its_downloads_and_nothing_else(app, client, consumer):
    files = {"file": (io.BytesIO(PEOPLE), "people.csv"), "label": "census"}
    job_id = job_id_from(submit(client, "csv_profile", files, content_type="multipart/form-data"))
    wait_for(client, job_id, "succeeded")
    link = share(client, job_id)
    stranger = app.test_client()
    assert stranger.get(f"/jobs/{job_id}").status_code == 404  # without the link, still the owner's alone

    response = stranger.get(link)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    page = soup(response)
    assert page.select_one("main h1").get_text() == "census"
    assert page.select_one(".csv-profile") is not None
    assert page.select_one(".job-facts") is None  # no inputs unless the owner ticked them
    assert not page.select("form") and not page.select("[hx-get]")  # no cancel, no retry, no polling
    downloads = [a["href"] for a in page.select(".downloads a")]
    assert len(downloads) == 2 and all(href.startswith("/shared/") for href in downloads)
    assert stranger.get(downloads[0]).status_code == 200

    with_inputs = soup(stranger.get(share(client, job_id, inputs=True)))
    assert "people.csv" in with_inputs.select_one(".job-facts").get_text()


def test_a_revoked_or_forged_link_answers_404(app, client):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    token = csrf_token(client, f"/jobs/{job_id}")
    assert client.post(f"/jobs/{job_id}/shares", data={"csrf_token": token}).status_code == 409  # not finished
    client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    link = share(client, job_id)
    stranger = app.test_client()
    assert stranger.get(link).status_code == 200
    share_id = soup(client.get(f"/jobs/{job_id}")).select_one(".share-list button")["id"].removeprefix("revoke-")
    client.post(f"/jobs/{job_id}/shares/{share_id}/revoke", data={"csrf_token": token})
    gone = stranger.get(link)
    assert gone.status_code == 404 and "expired, was revoked" in soup(gone).select_one(".error-message").get_text()
    assert stranger.get(link[:-3] + "abc").status_code == 404
    # Only the owner can make or revoke links.
    assert stranger.post(f"/jobs/{job_id}/shares", data={"csrf_token": token}).status_code in (400, 404)


def test_an_expired_link_answers_404(app, client, store):
    job_id = job_id_from(submit(client, "timer", {"seconds": "0"}))
    client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_token(client, f"/jobs/{job_id}")})
    link = share(client, job_id)
    job = store.get(job_id)
    store.update(job_id, {"shares": [{**job.shares[0], "expires_at": store.now() - 1}]})
    assert app.test_client().get(link).status_code == 404
