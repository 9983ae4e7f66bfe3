"""The kinds of job: each is a form, some execution options and a result partial.

Adding a kind takes a function in tasks.py registered with ``@job_kind``, a
form and a ``Kind`` here, and ``templates/results/<kind>.html``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, DecimalField, IntegerField, SelectField
from wtforms.validators import NumberRange, Optional

ALGORITHMS = ("sha256", "sha512", "sha1", "md5", "blake2b")


class JobForm(FlaskForm):
    """A form that submits a job; subclasses say which fields are inputs."""

    def inputs(self) -> dict:
        """The job's inputs, plain values that are safe to show to the owner."""
        return {}

    def options(self) -> dict:
        """Per-job overrides of the kind's execution options."""
        return {}

    def upload(self):
        """The uploaded file (a ``FileStorage``), if the kind takes one."""
        return None


class TimerForm(JobForm):
    seconds = DecimalField(
        "Seconds to wait",
        default=5,
        places=None,
        validators=[NumberRange(min=0, max=3600, message="Enter a number of seconds from 0 to 3600.")],
        description="Decimals are allowed, for example 2.5.",
    )
    fail = BooleanField("Fail at the end", description="End with an error message instead of a result.")
    crash_attempts = IntegerField(
        "Crash on the first attempts",
        default=0,
        validators=[Optional(), NumberRange(min=0, max=3, message="Enter 0 to 3.")],
        description="Raise an unexpected error on this many attempts, to see automatic retries.",
    )
    time_limit = DecimalField(
        "Time limit (seconds)",
        places=None,
        validators=[Optional(), NumberRange(min=0.1, max=7200, message="Enter 0.1 to 7200 seconds, or nothing.")],
        description="Stop the job if it runs longer than this.",
    )

    start_within = DecimalField(
        "Start within (seconds)",
        places=None,
        validators=[Optional(), NumberRange(min=0.1, max=86400, message="Enter 0.1 to 86400 seconds, or nothing.")],
        description="If no worker starts the job in time, it expires without running.",
    )

    def inputs(self) -> dict:
        return {
            "seconds": float(self.seconds.data),
            "fail": bool(self.fail.data),
            "crash_attempts": int(self.crash_attempts.data or 0),
        }

    def options(self) -> dict:
        options = {}
        if self.time_limit.data:
            options["time_limit"] = float(self.time_limit.data)
        if self.start_within.data:
            options["queue_expiry"] = float(self.start_within.data)
        return options


class ChecksumForm(JobForm):
    file = FileField("File", validators=[FileRequired("Choose a file to hash.")])
    algorithm = SelectField("Algorithm", choices=list(ALGORITHMS), default="sha256")

    def inputs(self) -> dict:
        return {"algorithm": self.algorithm.data}

    def upload(self):
        return self.file.data


class CsvProfileForm(JobForm):
    file = FileField("CSV file", validators=[FileRequired("Choose a CSV file to profile.")])

    def upload(self):
        return self.file.data


@dataclass(frozen=True)
class Kind:
    """A kind of job as the web app knows it."""

    name: str
    title: str
    summary: str
    form: type[JobForm]
    #: Extra attempts after an unexpected error (user-facing errors are final).
    retries: int = 0
    #: Seconds between attempts.
    retry_delay: float = 0
    #: Seconds a job may run before it is stopped and failed.
    time_limit: float | None = None
    #: Seconds a job may wait in the queue before it expires unrun.
    queue_expiry: float | None = None


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "timer",
            "Timer",
            "Waits for a number of seconds, reporting progress. For demos and diagnostics.",
            TimerForm,
            retries=2,
            retry_delay=1,
        ),
        Kind(
            "checksum",
            "Checksum",
            "Computes the hash of a file you upload: SHA-256, SHA-512, SHA-1, MD5 or BLAKE2b.",
            ChecksumForm,
            time_limit=600,
        ),
        Kind(
            "csv_profile",
            "CSV profile",
            "Profiles every column of a CSV file: types, counts, ranges and the most common values.",
            CsvProfileForm,
            time_limit=600,
        ),
    )
}
