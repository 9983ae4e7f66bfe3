"""``flask jobs ...``: the same store and service code, from a shell."""

import json

import pytest

from webapp import create_app
from webapp.kinds import KINDS


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def submit(app, owner: str = "owner-1", **inputs) -> str:
    return app.extensions["tasklight"].submit(KINDS["timer"], owner, {"seconds": 30, **inputs}).id


def run(runner, *args: str, code: int = 0):
    result = runner.invoke(args=["jobs", *args])
    assert result.exit_code == code, result.output
    return result


def test_list_filters_and_shows_every_owner(app, runner):
    first, second = submit(app, "alice"), submit(app, "bob")
    app.extensions["tasklight"].cancel(app.extensions["tasklight"].store.get(first))
    lines = run(runner, "list").output.splitlines()
    assert [line.split()[0] for line in lines] == [second, first]
    assert lines[1].split()[1:3] == ["cancelled", "timer"]
    assert lines[1].endswith("alice")
    assert run(runner, "list", "--state", "queued").output.split()[0] == second
    assert run(runner, "list", "--owner", "alice").output.split()[0] == first
    assert run(runner, "list", "--kind", "checksum").output == ""
    assert "Invalid value" in run(runner, "list", "--state", "bogus", code=2).output


def test_show_prints_the_whole_record(app, runner):
    job_id = submit(app)
    record = json.loads(run(runner, "show", job_id).output)
    assert (record["id"], record["owner"], record["state"]) == (job_id, "owner-1", "queued")
    assert "traceback" in record
    assert record["created_at"].endswith("Z")
    assert "no job" in run(runner, "show", "0" * 32, code=1).output


def test_cancel_then_retry(app, runner):
    job_id = submit(app)
    assert "can be retried" in run(runner, "retry", job_id, code=1).output
    assert "cancelled before it ran" in run(runner, "cancel", job_id).output
    assert "already ended" in run(runner, "cancel", job_id).output
    new_id = run(runner, "retry", job_id).output.strip()
    new = app.extensions["tasklight"].store.get(new_id)
    assert (new.retry_of, new.state, new.owner) == (job_id, "queued", "owner-1")


def test_purge_then_the_id_is_gone(app, runner):
    job_id = submit(app)
    assert run(runner, "purge", job_id).output.strip() == f"purged {job_id}"
    assert "was purged" in run(runner, "show", job_id, code=1).output
    assert "no job" in run(runner, "purge", "0" * 32, code=1).output
    assert "Missing argument" in run(runner, "purge", code=2).output
    assert "reaped" in run(runner, "reap").output


def test_stats(app, runner):
    for _ in range(2):
        submit(app)
    app.extensions["tasklight"].cancel(app.extensions["tasklight"].store.get(submit(app)))
    stats = json.loads(run(runner, "stats", "--json").output)
    assert stats["counts"]["queued"] == 2 and stats["counts"]["cancelled"] == 1
    assert stats["queued_tasks"] == 3  # the cancelled job's task is still in Huey's queue, to be skipped
    assert stats["workers"] == []
    text = run(runner, "stats").output
    assert "queued     2" in text and "workers    none" in text


def test_store_down_is_a_clear_error_not_a_traceback(tmp_path):
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "t", "INSTANCE_PATH": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    result = app.test_cli_runner().invoke(args=["jobs", "list"])
    assert result.exit_code == 1
    assert "cannot be reached" in result.output
    assert "Traceback" not in result.output
    app.extensions["tasklight"].close()


def test_bulk_acts_on_every_matching_job(app, runner):
    jobs = [submit(app, "alice") for _ in range(3)] + [submit(app, "bob")]
    assert "acted on 3 of 3" in run(runner, "bulk", "cancel", "--owner", "alice", "--yes").output
    states = [app.extensions["tasklight"].store.get(job_id).state for job_id in jobs]
    assert states == ["cancelled"] * 3 + ["queued"]
    assert "Aborted" in run(runner, "bulk", "purge", code=1).output  # it asks first; no answer is no
    assert "acted on 4 of 4" in run(runner, "bulk", "purge", "--yes").output
