"""The store's contract, against real SQLite and a real (private) Redis."""

import os
import shutil
import subprocess
import threading
import time
from dataclasses import replace

import pytest
import redis
from conftest import free_port

from webapp.config import Settings
from webapp.queue import JobQueue
from webapp.store import (
    CANCELLED,
    EXPIRED,
    FAILED,
    LOST,
    QUEUED,
    RETRYING,
    RUNNING,
    SUCCEEDED,
    Job,
    JobNotFound,
    JobPurged,
    ParsedRecords,
    StoreUnavailable,
    new_id,
    open_store,
)
from webapp.store.redis import RedisStore
from webapp.store.sqlite import SqliteStore


def make(store, owner="alice", **fields) -> Job:
    return store.create(Job(id=new_id(), kind="timer", owner=owner, inputs={"seconds": 1}, **fields))


def test_create_then_get_round_trips(store):
    job = make(store, upload_name="a.csv", upload_size=3)
    store.create(Job(id=new_id(), kind="checksum", owner="bob"), upload_content=b"abc")
    loaded = store.get(job.id)
    assert loaded == job
    assert store.upload_content(job.id) is None


def test_upload_travels_with_the_job(store):
    job = store.create(Job(id=new_id(), kind="checksum", owner="bob"), upload_content=b"\x00\xffdata")
    assert store.upload_content(job.id) == b"\x00\xffdata"


def test_unknown_id_is_not_found(store):
    with pytest.raises(JobNotFound):
        store.get(new_id())


def test_get_for_hides_other_owners_jobs(store):
    job = make(store, owner="alice")
    assert store.get_for(job.id, "alice").id == job.id
    with pytest.raises(JobNotFound):
        store.get_for(job.id, "mallory")


def test_update_is_guarded_by_state_and_attempt(store):
    job = make(store)
    assert store.update(job.id, {"state": RUNNING}, states={RETRYING}) is None
    started = store.start(job.id, "host:1")
    assert (started.state, started.attempt, started.worker) == (RUNNING, 1, "host:1")
    assert store.update(job.id, {"progress": {"done": 1}}, states={RUNNING}, attempt=2) is None
    updated = store.update(job.id, {"progress": {"done": 1}}, states={RUNNING}, attempt=1)
    assert updated.progress == {"done": 1}
    assert updated.version == started.version + 1


def test_states_only_move_forward(store):
    job = make(store)
    assert store.update(job.id, {"state": SUCCEEDED}) is None  # queued cannot succeed without running
    store.start(job.id, "w")
    assert store.finish(job.id, SUCCEEDED, {"result": 1}).state == SUCCEEDED
    for state in (QUEUED, RUNNING, FAILED, CANCELLED, LOST):
        assert store.update(job.id, {"state": state}) is None
    assert store.get(job.id).state == SUCCEEDED
    assert store.start(job.id, "w") is None


def test_finish_sets_finished_and_expiry(store):
    job = make(store)
    store.start(job.id, "w")
    done = store.finish(job.id, FAILED, {"error": {"message": "no"}})
    assert done.finished_at is not None
    assert done.purge_at == pytest.approx(done.finished_at + store.retention)


def test_concurrent_updates_are_never_lost(store):
    job = make(store)
    store.start(job.id, "w")
    per_thread, threads = 25, 4

    def bump():
        for _ in range(per_thread):
            store.modify(job.id, lambda j: Job(**{**j.__dict__, "progress": {"done": j.progress.get("done", 0) + 1}}))

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert store.get(job.id).progress["done"] == per_thread * threads


def test_a_stale_running_job_is_suspected_then_lost_on_read_and_by_the_reaper(store):
    read, reaped = make(store), make(store)
    for job in (read, reaped):
        store.start(job.id, "w")
        store.update(job.id, {"heartbeat_at": store.now() - store.heartbeat_timeout - 5})
    assert store.get(read.id).state == RUNNING and store.load(read.id).stale_since is not None
    assert store.reap() == 0 and store.load(reaped.id).stale_since is not None
    for job in (read, reaped):  # the grace passes with no beat
        store.update(job.id, {"stale_since": store.now() - store.lost_grace - 1})
    assert store.get(read.id).state == LOST
    assert store.reap() == 1
    assert store.load(reaped.id).state == LOST
    assert store.get(read.id).error["message"] == "The worker running this job stopped."


def test_a_worker_that_beats_after_an_outage_keeps_its_job(store):
    """The store was unreachable, so the worker could not beat; its first beat after refutes the suspicion."""
    job = make(store)
    store.start(job.id, "w")
    store.update(job.id, {"heartbeat_at": store.now() - store.heartbeat_timeout - 5})
    suspected = store.get(job.id)
    assert suspected.state == RUNNING and suspected.stale_since is not None
    # It beats, and the grace that followed the suspicion passes.
    store.update(job.id, {"stale_since": store.now() - store.lost_grace - 1, "heartbeat_at": store.now()})
    assert store.mark_lost(store.load(job.id)) is None
    assert store.get(job.id).state == RUNNING and store.reap() == 0


def test_a_job_past_its_start_deadline_expires(store):
    job = make(store, start_by=store.now() - 1)
    assert store.start(job.id, "w") is None
    assert store.get(job.id).state == EXPIRED
    other = make(store, start_by=store.now() - 1)
    store.reap()
    assert store.load(other.id).state == EXPIRED


def test_purged_jobs_answer_expired_with_the_time(store):
    job = store.create(Job(id=new_id(), kind="checksum", owner="a"), upload_content=b"x")
    store.start(job.id, "w")
    store.finish(job.id, SUCCEEDED)
    store.modify(job.id, lambda j: replace(j, purge_at=store.now() - 1))
    before = store.now()
    store.reap()
    with pytest.raises(JobPurged) as caught:
        store.get(job.id)
    assert caught.value.purged_at >= before
    assert store.upload_content(job.id) is None
    assert store.list(owner="a") == []


def test_list_is_newest_first_filtered_and_paged(store):
    now = store.now()
    jobs = [make(store, owner="alice", created_at=now + i) for i in range(5)]
    make(store, owner="bob")
    store.start(jobs[1].id, "w")
    assert [j.id for j in store.list(owner="alice")] == [j.id for j in reversed(jobs)]
    assert [j.id for j in store.list(owner="alice", state=RUNNING)] == [jobs[1].id]
    page = store.list(owner="alice", limit=2)
    rest = store.list(owner="alice", before=(page[-1].created_at, page[-1].id), limit=10)
    assert [j.id for j in page + rest] == [j.id for j in reversed(jobs)]


def test_counts_and_workers(store):
    make(store)
    store.start(make(store).id, "w")
    assert store.counts() == {QUEUED: 1, RUNNING: 1}
    store.beat_worker("host:1")
    store.beat_worker("host:2")
    assert store.live_workers() == ["host:1", "host:2"]
    store.forget_worker("host:1")
    assert store.live_workers() == ["host:2"]


def test_redis_down_raises_store_unavailable():
    pool = redis.ConnectionPool.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = RedisStore(pool, retention=1, tombstone_retention=1, heartbeat_timeout=1)
    with pytest.raises(StoreUnavailable):
        store.get(new_id())
    with pytest.raises(StoreUnavailable):
        store.create(Job(id=new_id(), kind="timer", owner="a"))
    store.close()


def test_sqlite_unreadable_raises_store_unavailable(tmp_path):
    store = SqliteStore(str(tmp_path / "t.db"), retention=1, tombstone_retention=1, heartbeat_timeout=1)
    job = make(store)
    os.remove(tmp_path / "t.db")
    (tmp_path / "t.db").mkdir()  # the file is now a directory: any new connection fails
    store.close()  # the next use opens a new connection
    with pytest.raises(StoreUnavailable):
        store.get(job.id)


def test_sentinel_pool_reaches_the_master(redis_server, tmp_path):
    """REDIS_SENTINELS makes store and queue follow the master that a real Sentinel names."""
    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    sentinel_port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor mymaster 127.0.0.1 {port} 1\n"
    )
    proc = subprocess.Popen([shutil.which("redis-server"), str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        settings = Settings(REDIS_URL="redis://unused/0", REDIS_SENTINELS=f"127.0.0.1:{sentinel_port}")
        deadline = time.monotonic() + 10
        while True:
            try:
                store = open_store(settings)
                store.ping()
                break
            except StoreUnavailable:
                store.close()
                assert time.monotonic() < deadline, "the sentinel did not come up"
                time.sleep(0.1)
        job = make(store)
        assert redis.Redis.from_url(redis_server).exists(f"tasklight:job:{job.id}")
        queue = JobQueue(settings, store)
        queue.enqueue_job(job)
        assert queue.pending_count() == 1
        store.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_job_that_beats_again_before_the_write_is_not_lost(store):
    job = make(store)
    store.start(job.id, "w")
    stale = store.update(job.id, {"heartbeat_at": store.now() - store.heartbeat_timeout - 1})
    store.update(job.id, {"heartbeat_at": store.now()})  # the worker beats after the reaper read
    assert store.mark_lost(stale) is None
    assert store.get(job.id).state == RUNNING


def test_waiting_lists_queued_and_retrying_jobs_that_have_waited_long(store):
    old = make(store, created_at=store.now() - 100)
    make(store)  # too recent
    started = make(store, created_at=store.now() - 100)
    store.start(started.id, "w")
    retrying = make(store, created_at=store.now() - 100)
    store.start(retrying.id, "w")
    store.update(retrying.id, {"state": RETRYING, "next_attempt_at": store.now() - 60})
    assert {job.id for job in store.waiting(store.now() - 50)} == {old.id, retrying.id}
    store.start(retrying.id, "w")
    assert [job.id for job in store.waiting(store.now() - 50)] == [old.id]


def test_usage_counts_active_jobs_and_stored_upload_bytes(store):
    assert store.usage("alice") == (0, 0)
    running = make(store, upload_size=3)
    store.create(Job(id=new_id(), kind="checksum", owner="alice", upload_name="b", upload_size=5), b"12345")
    make(store, owner="bob")
    store.start(running.id, "w")
    assert store.usage("alice") == (2, 8)
    store.finish(running.id, SUCCEEDED)
    assert store.usage("alice") == (1, 8)
    store.purge(running.id)
    assert store.usage("alice") == (1, 5)


def test_a_record_read_again_as_the_same_text_is_decoded_once():
    parsed = ParsedRecords(size=2, max_text=2000)
    job = Job(id=new_id(), kind="timer", owner="me")
    text = job.to_json()
    first = parsed.parse(job.id, text)
    assert first == job and parsed.parse(job.id, text) is first
    changed = replace(job, state=RUNNING, version=2).to_json()
    second = parsed.parse(job.id, changed)
    assert second.state == RUNNING and parsed.parse(job.id, changed) is second
    # At most ``size`` records are kept, the oldest out first; a long record is decoded but not kept.
    for other in [Job(id=new_id(), kind="timer", owner="me") for _ in range(2)]:
        parsed.parse(other.id, other.to_json())
    assert parsed.parse(job.id, changed) is not second
    long = replace(job, label="x" * 2000).to_json()
    assert parsed.parse(job.id, long) is not parsed.parse(job.id, long)


def test_a_start_from_a_carried_record_needs_no_read_and_never_overrides_a_newer_one(store, monkeypatch):
    carried = store.create(Job(id=new_id(), kind="timer", owner="a"))
    with monkeypatch.context() as patched:
        patched.setattr(store, "load", lambda job_id: pytest.fail("read the record"))
        assert store.start(carried.id, "w", known=carried).state == RUNNING
    # The copy a task carries may be behind: the owner cancelled the job after it was enqueued.
    carried = store.create(Job(id=new_id(), kind="timer", owner="a"))
    store.finish(carried.id, CANCELLED, states={QUEUED})
    assert store.start(carried.id, "w", known=carried) is None
    assert store.get(carried.id).state == CANCELLED
