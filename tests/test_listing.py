"""The "My jobs" list: newest first, filters, stable cursor paging and self-refreshing rows; and store.list()."""

import time

import pytest
from helpers import JSON, csrf_token, job_id_from, soup, submit

from webapp.listing import PAGE_SIZE
from webapp.store import CANCELLED, QUEUED, SUCCEEDED, Job, new_id


def listed_ids(response) -> list[str]:
    assert response.status_code == 200
    return [a["href"].rsplit("/", 1)[-1] for a in soup(response).select("#job-rows tr td:first-child a")]


def owner_of(client) -> str:
    with client.session_transaction() as session:
        return session["owner"]


def add_jobs(store, owner: str, created: list[float], kind: str = "timer") -> list[Job]:
    """Record jobs directly, with chosen creation times (ties included), without enqueueing them."""
    return [store.create(Job(id=new_id(), kind=kind, owner=owner, created_at=at)) for at in created]


def newest_first(jobs: list[Job]) -> list[str]:
    return [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)]


def test_newest_first(client):
    ids = [job_id_from(submit(client, "timer", {"seconds": "5"})) for _ in range(3)]
    assert listed_ids(client.get("/jobs")) == ids[::-1]
    assert [j["id"] for j in client.get("/jobs", headers=JSON).get_json()["jobs"]] == ids[::-1]


def test_filters_by_state_and_kind(app, client):
    waiting = job_id_from(submit(client, "timer", {"seconds": "5"}))
    cancelled = job_id_from(submit(client, "timer", {"seconds": "5"}))
    client.post(f"/jobs/{cancelled}/cancel", data={"csrf_token": csrf_token(client, "/jobs/new/timer")})
    owner = owner_of(client)
    (checksum,) = add_jobs(app.extensions["tasklight"].store, owner, [time.time()], kind="checksum")

    assert listed_ids(client.get("/jobs?state=cancelled")) == [cancelled]
    assert listed_ids(client.get("/jobs?state=queued&kind=timer")) == [waiting]
    assert listed_ids(client.get("/jobs?kind=checksum")) == [checksum.id]
    assert listed_ids(client.get("/jobs?kind=csv_profile")) == []
    page = soup(client.get("/jobs?state=cancelled&kind=timer"))
    assert page.select_one("#filter-state option[selected]")["value"] == "cancelled"
    assert page.select_one("#filter-kind option[selected]")["value"] == "timer"


def follow_pages(client, url: str) -> list[list[str]]:
    pages = []
    while url:
        response = client.get(url)
        pages.append(listed_ids(response))
        link = soup(response).select_one("a[rel=next]")
        url = link["href"] if link else None
    return pages


def test_cursor_paging_is_stable_when_new_jobs_arrive(app, client):
    submit(client, "timer", {"seconds": "5"})
    store = app.extensions["tasklight"].store
    now = time.time()
    # Several jobs share each creation time, so that page boundaries fall inside ties.
    jobs = add_jobs(store, owner_of(client), [now - 100 - i // 4 for i in range(2 * PAGE_SIZE + 5)])
    jobs += store.list(owner=owner_of(client), limit=1)
    expected = newest_first(jobs)

    pages = follow_pages(client, "/jobs")
    assert [len(p) for p in pages] == [PAGE_SIZE, PAGE_SIZE, 6]
    assert sum(pages, []) == expected

    second = soup(client.get("/jobs")).select_one("a[rel=next]")["href"]
    job_id_from(submit(client, "timer", {"seconds": "5"}))
    assert listed_ids(client.get(second)) == pages[1]
    # The first page now starts with the new job, and the rest moved down by one.
    assert listed_ids(client.get("/jobs"))[1:] == pages[0][:-1]


def test_json_listing_pages_with_next(app, client):
    submit(client, "timer", {"seconds": "5"})
    add_jobs(app.extensions["tasklight"].store, owner_of(client), [time.time() - 50] * (PAGE_SIZE + 3))
    first = client.get("/jobs", headers=JSON).get_json()
    assert len(first["jobs"]) == PAGE_SIZE and first["next"]
    second = client.get(f"/jobs?before={first['next']}", headers=JSON).get_json()
    assert len(second["jobs"]) == 4 and second["next"] is None
    assert not {j["id"] for j in first["jobs"]} & {j["id"] for j in second["jobs"]}


def test_empty_list_links_to_the_catalogue(client):
    page = soup(client.get("/jobs"))
    assert page.select_one("#job-rows") is None
    assert page.select_one(".empty a")["href"] == "/"


def test_rows_poll_only_while_a_job_is_not_terminal(app, client):
    job_id = job_id_from(submit(client, "timer", {"seconds": "5"}))
    rows = soup(client.get("/jobs")).select_one("#job-rows")
    assert rows["hx-get"].startswith("/jobs/rows")
    assert rows["hx-trigger"].startswith("every ")
    assert rows["hx-swap"] == "outerHTML"
    fragment = soup(client.get("/jobs/rows")).select_one("#job-rows")
    assert fragment.has_attr("hx-trigger")
    assert fragment.select_one(f"tr[data-state={QUEUED}]") is not None

    client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_token(client, "/jobs/new/timer")})
    for url in ("/jobs", "/jobs/rows"):
        rows = soup(client.get(url)).select_one("#job-rows")
        assert rows.select_one("tr")["data-state"] == CANCELLED
        for attribute in ("hx-get", "hx-trigger", "hx-swap"):
            assert not rows.has_attr(attribute)


@pytest.mark.parametrize(
    "query",
    [
        "state=bogus",
        "kind=bogus",
        "before=garbage",
        "before=nan_abc",
        "before=inf_abc",
        "before=-inf_abc",
        "before=1e999_abc",
        "before=1712345678.5",
        "before=_abc",
    ],
)
def test_bad_filters_and_cursors_are_400(app, client, query):
    fresh = app.test_client()  # a session with no jobs: the values are checked all the same
    submit(client, "timer", {"seconds": "5"})  # so that the store is really asked
    for url in ("/jobs", "/jobs/rows"):
        assert client.get(f"{url}?{query}").status_code == 400
        assert fresh.get(f"{url}?{query}").status_code == 400
    response = client.get(f"/jobs?{query}", headers=JSON)
    assert response.status_code == 400
    assert response.get_json()["error"]


# The store itself, on both backends: the cursor logic lives there.


def walk(store, limit: int, **filters) -> list[str]:
    """Page through store.list by cursor, as the list page does."""
    ids, before = [], None
    while True:
        page = store.list(before=before, limit=limit, **filters)
        ids += [j.id for j in page]
        if len(page) < limit:
            return ids
        before = (page[-1].created_at, page[-1].id)


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_store_list_pages_through_ties_in_order(app, limit):
    store = app.extensions["tasklight"].store
    t = 1_700_000_000.123456
    jobs = add_jobs(store, "me", [t] * 30 + [t - 1] * 10 + [t + 1] * 10)
    add_jobs(store, "someone-else", [t] * 5)
    assert walk(store, limit, owner="me") == newest_first(jobs)
    assert len(walk(store, limit)) == 55


def test_store_list_filters_with_cursor_inside_ties(app):
    store = app.extensions["tasklight"].store
    t = 1_700_000_000.5
    jobs = add_jobs(store, "me", [t] * 40)
    done = set()
    for job in jobs[::3]:
        store.update(job.id, {"state": "running"})
        store.finish(job.id, SUCCEEDED)
        done.add(job.id)
    expected = [i for i in newest_first(jobs) if i in done]
    assert walk(store, 4, owner="me", state=SUCCEEDED) == expected
    assert walk(store, 4, owner="me", state=QUEUED) == [i for i in newest_first(jobs) if i not in done]
    assert walk(store, 4, owner="me", kind="checksum") == []
    # A cursor in the middle of the tie: strictly after it in (created_at, id) order.
    middle = newest_first(jobs)[17]
    assert [j.id for j in store.list(owner="me", before=(t, middle), limit=100)] == newest_first(jobs)[18:]
