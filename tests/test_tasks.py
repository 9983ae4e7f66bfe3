"""Unit tests of the job kinds' bodies, with a stand-in context that records reports."""

import hashlib
import io

import pytest

import tasks
from webapp.forms import ALGORITHMS
from webapp.worker import JobError


class FakeJob:
    """Only what a kind's function uses of JobContext: attempt, rerun_of, report(), log() and open_upload()."""

    def __init__(self, upload: bytes = b"", attempt: int = 1):
        self.attempt = attempt
        self.data = upload
        self.reports: list[tuple] = []
        self.lines: list[str] = []

    def report(self, done, total=None, message=""):
        self.reports.append((done, total, message))

    def log(self, line: str) -> None:
        self.lines.append(line)

    rerun_of = None

    def open_upload(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def test_timer_reports_about_every_100_ms_and_ends_complete():
    job = FakeJob()
    assert tasks.timer(job, 0.35) == {"seconds": 0.35}
    done = [d for d, _, _ in job.reports]
    assert done == sorted(done)
    assert 4 <= len(job.reports) <= 7
    assert job.reports[-1] == (0.35, 0.35, "Done.")


def test_timer_fail_is_a_user_facing_error():
    with pytest.raises(JobError, match="as you asked"):
        tasks.timer(FakeJob(), 0, fail=True)


def test_timer_crashes_only_on_the_first_attempts():
    with pytest.raises(RuntimeError):
        tasks.timer(FakeJob(attempt=2), 0, crash_attempts=2)
    assert tasks.timer(FakeJob(attempt=3), 0, crash_attempts=2) == {"seconds": 0}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_checksum_matches_hashlib(algorithm):
    content = b"x" * (tasks.CHUNK * 2 + 5)
    job = FakeJob(content)
    result = tasks.checksum(job, algorithm)
    assert result == {
        "algorithm": algorithm,
        "hexdigest": hashlib.new(algorithm, content).hexdigest(),
        "size": len(content),
    }
    assert [d for d, _, _ in job.reports] == [tasks.CHUNK, tasks.CHUNK * 2, len(content), len(content)]


def test_checksum_of_an_empty_file():
    assert tasks.checksum(FakeJob(b""), "md5")["hexdigest"] == hashlib.md5(b"").hexdigest()


def test_csv_profile_turns_a_format_error_into_a_user_facing_error():
    with pytest.raises(JobError, match="Line 3"):
        tasks.csv_profile(FakeJob(b"a,b\n1,2\n3\n"))
