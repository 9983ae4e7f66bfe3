"""Store errors: every outage is answered with a friendly 503, a genuine bug stays a 500.

These run against real servers: each test that breaks Redis starts a redis-server of its own on a free
port, so the session's shared one is never disturbed, and the SQLite errors come from real files.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import free_port
from faults import OwnRedis
from helpers import JSON, csrf_token, job_id_from, soup, submit

from webapp.config import Settings
from webapp.store import redis as redis_backend
from webapp.store import sqlite as sqlite_backend
from webapp.store.redis import RedisStore, redis_pool
from webapp.store.sqlite import SqliteStore

redis_only = pytest.mark.parametrize("backend", ["redis"], indirect=True)
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def own_redis(tmp_path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "own-redis", durable=False)
    yield server
    server.close()


def assert_unavailable(response) -> None:
    """The friendly 503 page: the store's message, and nothing of the error behind it."""
    text = response.get_data(as_text=True)
    assert response.status_code == 503, (response.status_code, text[:500])
    assert "cannot be reached" in soup(response).select_one(".error-message").get_text()
    assert not any(leak in text for leak in ("Traceback", "Error", "maxmemory", "replica", "WRONGTYPE")), text


# Ways to make a healthy Redis refuse the app; each returns what heals it again.


def out_of_memory(server: OwnRedis, job_id: str) -> Callable[[], object]:
    # With no eviction, every command that may grow memory is refused with OOM; reads still work.
    server.client.config_set("maxmemory-policy", "noeviction")
    server.client.config_set("maxmemory", 1)
    return lambda: server.client.config_set("maxmemory", 0)


def read_only(server: OwnRedis, job_id: str) -> Callable[[], object]:
    # A replica of a master that is not there keeps serving its data but refuses every write with READONLY.
    server.client.replicaof("127.0.0.1", free_port())
    return lambda: server.client.replicaof("NO", "ONE")


def wrong_type(server: OwnRedis, job_id: str) -> Callable[[], object]:
    # The job's record and the index a submit writes become lists, so both get WRONGTYPE.
    keys = [f"tasklight:job:{job_id}", "tasklight:all"]
    saved = {key: server.client.dump(key) for key in keys}
    for key in keys:
        server.client.delete(key)
        server.client.rpush(key, "not a job")

    def heal() -> None:
        for key, dump in saved.items():
            server.client.restore(key, 0, dump, replace=True)

    return heal


@redis_only
@pytest.mark.parametrize("refuse", [out_of_memory, read_only, wrong_type], ids=["OOM", "READONLY", "WRONGTYPE"])
def test_every_redis_error_is_a_503_until_it_heals(make_app, own_redis, refuse):
    """Polls and a submit get the friendly 503 while Redis refuses them, and work again once it heals, same app."""
    app = make_app(TESTING=False, REDIS_URL=own_redis.url)
    client = app.test_client()
    job_id = job_id_from(submit(client, "timer", {"seconds": "5"}))
    # Its worker died: the next poll must write (to suspect it), so a Redis that refuses writes refuses the poll.
    store = app.extensions["tasklight"].store
    store.start(job_id, "gone:1")
    store.update(job_id, {"heartbeat_at": time.time() - 60})
    token = csrf_token(client, "/jobs/new/timer")
    heal = refuse(own_redis, job_id)
    try:
        assert_unavailable(client.get(f"/jobs/{job_id}"))
        assert_unavailable(client.get(f"/jobs/{job_id}/status"))
        assert_unavailable(client.post("/jobs/new/timer", data={"csrf_token": token, "seconds": "1"}))
        json = client.get(f"/jobs/{job_id}", headers=JSON)
        assert json.status_code == 503 and "cannot be reached" in json.get_json()["error"]
    finally:
        heal()
    if refuse is not wrong_type:
        # OOM and READONLY refuse a transaction whole, so the refused submit left nothing behind: no record,
        # no task. (WRONGTYPE fails one command of it only: Redis has no rollback.)
        with client.session_transaction() as session:
            assert [job.id for job in store.list(owner=session["owner"])] == [job_id]
        assert [task.id for task in app.extensions["tasklight"].queue.pending()] == [job_id]
    assert client.get(f"/jobs/{job_id}/status").status_code == 200
    # Right after an outage a stale job is only suspected: a live worker gets a grace to beat again. This
    # one does not, so once the grace has passed it is lost.
    assert client.get(f"/jobs/{job_id}", headers=JSON).get_json()["state"] == "running"
    store.update(job_id, {"stale_since": store.now() - store.lost_grace - 1})
    assert client.get(f"/jobs/{job_id}", headers=JSON).get_json()["state"] == "lost"
    assert client.post("/jobs/new/timer", data={"csrf_token": token, "seconds": "1"}).status_code == 303


@redis_only
def test_a_hung_redis_is_a_503_within_seconds(make_app, own_redis):
    """With REDIS_SOCKET_TIMEOUT 1, a poll against a Redis that answers nothing gets a 503 in seconds, not a hang."""
    app = make_app(TESTING=False, REDIS_URL=own_redis.url, REDIS_SOCKET_TIMEOUT=1)
    client = app.test_client()
    job_id = job_id_from(submit(client, "timer", {"seconds": "5"}))
    answers = []
    with own_redis.hung():
        # In a thread, so that a poll that hangs fails this test instead of hanging the suite.
        poll = threading.Thread(target=lambda: answers.append(client.get(f"/jobs/{job_id}")), daemon=True)
        started = time.monotonic()
        poll.start()
        poll.join(20)
        took = time.monotonic() - started
        assert not poll.is_alive(), "the poll still had no answer after 20 s"
    assert_unavailable(answers[0])
    # A bound, not a benchmark: one socket timeout of 1 s with no retries piling up behind it. It sits below
    # redis-py's own default timeout (5 s), so it shows that the setting, not the library, gave the answer.
    assert took < 4, f"the 503 took {took:.1f} s"
    assert client.get(f"/jobs/{job_id}").status_code == 200


# Which errors are outages: real errors from real SQLite files and a real Redis.


def sqlite_error(path, sql: str = "select count(*) from sqlite_master", timeout: float = 5) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as caught:
        conn = sqlite3.connect(str(path), timeout=timeout)
        try:
            conn.execute(sql).fetchall()
        finally:
            conn.close()
    return caught.value


@pytest.mark.parametrize("sql", ["selec 1", "select * from no_such_table", "select no_such_column from jobs"])
def test_bad_sql_is_not_an_sqlite_outage(tmp_path, sql):
    """A mistake in a statement is a bug (SQLITE_ERROR), so it is left to be the 500 it is."""
    SqliteStore(str(tmp_path / "t.db"), retention=1, tombstone_retention=1, heartbeat_timeout=1).ping()
    error = sqlite_error(tmp_path / "t.db", sql)
    assert isinstance(error, sqlite3.OperationalError)
    assert not sqlite_backend.is_outage(error)


def test_bad_sql_through_the_sqlite_store_passes_through(tmp_path):
    """The store's own connection helper lets a bug out as itself, not as StoreUnavailable."""
    store = SqliteStore(str(tmp_path / "t.db"), retention=1, tombstone_retention=1, heartbeat_timeout=1)
    with pytest.raises(sqlite3.OperationalError, match='near "selec": syntax error'):
        store._select("selec 1")
    store.close()


def test_a_file_that_cannot_be_used_is_an_sqlite_outage(tmp_path):
    """A path that is a folder, a folder that is a file, a file that is not a database, a lock held too long."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "garbage.db").write_bytes(b"this is not an SQLite database" * 100)
    errors = {
        "folder": sqlite_error(tmp_path / "folder"),
        "under a file": sqlite_error(tmp_path / "file" / "t.db"),
        "not a database": sqlite_error(tmp_path / "garbage.db"),
    }
    holder = sqlite3.connect(str(tmp_path / "busy.db"), isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    errors["locked"] = sqlite_error(tmp_path / "busy.db", "insert into t values (1)", timeout=0)
    holder.close()
    for name, error in errors.items():
        assert sqlite_backend.is_outage(error), (name, error, getattr(error, "sqlite_errorname", None))


def redis_error(action: Callable[[], object]) -> redis.RedisError:
    with pytest.raises(redis.RedisError) as caught:
        action()
    return caught.value


def test_a_wrong_command_is_not_a_redis_outage(own_redis):
    """An unknown command or a wrong number of arguments is a bug, whether sent alone or in a pipeline."""
    client = own_redis.client
    errors = [
        redis_error(lambda: client.execute_command("NOSUCHCOMMAND")),
        redis_error(lambda: client.execute_command("GET")),
        redis_error(lambda: client.execute_command("SET", "k")),
        redis_error(lambda: client.pipeline().set("k", "v").execute_command("GET").execute()),
        redis_error(lambda: client.pipeline(transaction=False).execute_command("GET").execute()),
    ]
    for error in errors:
        assert isinstance(error, redis.ResponseError)
        assert not redis_backend.is_outage(error), error


def test_refusals_and_lost_connections_are_redis_outages(own_redis):
    """OOM, READONLY and WRONGTYPE, alone or in a pipeline (which rewords them), and a closed or hung server."""
    client, errors = own_redis.client, {}

    def writes(name: str) -> None:
        errors[name] = redis_error(lambda: client.set("k", "v"))
        errors[name + " in a transaction"] = redis_error(
            lambda: client.pipeline().set("k", "v").zadd("z", {"a": 1}).execute()
        )
        errors[name + " in a pipeline"] = redis_error(
            lambda: client.pipeline(transaction=False).set("k", "v").execute()
        )

    heal = out_of_memory(own_redis, "")
    writes("OOM")
    heal()
    heal = read_only(own_redis, "")
    writes("READONLY")
    heal()
    client.rpush("list", "x")
    errors["WRONGTYPE"] = redis_error(lambda: client.get("list"))
    errors["WRONGTYPE in a transaction"] = redis_error(lambda: client.pipeline().get("k").get("list").execute())
    # Clients built as the app builds them (with the app's timeouts, and so without retries).
    refused = redis.Redis(connection_pool=redis_pool(Settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")))
    errors["refused"] = redis_error(refused.ping)
    hung = redis.Redis(connection_pool=redis_pool(Settings(REDIS_URL=own_redis.url, REDIS_SOCKET_TIMEOUT=0.3)))
    with own_redis.hung():
        errors["hung"] = redis_error(hung.ping)
    hung.close()
    assert isinstance(errors["refused"], redis.ConnectionError)
    assert isinstance(errors["hung"], redis.TimeoutError)
    for name, error in errors.items():
        assert redis_backend.is_outage(error), (name, type(error).__name__, str(error))


def test_a_redis_store_turns_refusals_into_store_unavailable(own_redis):
    """Through the store itself: a refused write raises StoreUnavailable, which the views answer with 503."""
    from webapp.store import Job, StoreUnavailable, new_id

    store = RedisStore(
        redis.ConnectionPool.from_url(own_redis.url), retention=1, tombstone_retention=1, heartbeat_timeout=1
    )
    job = store.create(Job(id=new_id(), kind="timer", owner="a"))
    heal = out_of_memory(own_redis, job.id)
    try:
        with pytest.raises(StoreUnavailable):
            store.create(Job(id=new_id(), kind="timer", owner="a"))
        with pytest.raises(StoreUnavailable):
            store.start(job.id, "w")
        assert store.get(job.id).state == "queued"  # reads still work
    finally:
        heal()
    store.close()


def test_a_bug_is_a_500_not_a_503(make_app, backend, monkeypatch):
    """On the production app, a view that hits a bug in a store query answers 500, not "unavailable"."""
    app = make_app(TESTING=False)
    client = app.test_client()
    job_id = job_id_from(submit(client, "timer", {"seconds": "5"}))
    store = app.extensions["tasklight"].store
    if backend == "sqlite":
        # A typo in a query, run through the store's own connection helper as a careless edit would.
        monkeypatch.setattr(store, "load", lambda job_id: store._select("selec data from jobs where id = ?", job_id))
    else:
        # A command with a wrong number of arguments, inside the store's own error mapping.
        def load(job_id):
            with redis_backend.unavailable_on(redis_backend.is_outage):
                store.redis.execute_command("GET")

        monkeypatch.setattr(store, "load", load)
    response = client.get(f"/jobs/{job_id}")
    text = response.get_data(as_text=True)
    assert response.status_code == 500, (response.status_code, text[:300])
    assert "Something went wrong" in text and "Traceback" not in text and "selec" not in text
