"""The forms that submit jobs, one per kind: what a person fills in, turned into a job's inputs and options."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from flask import current_app
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from werkzeug.exceptions import RequestEntityTooLarge
from wtforms import BooleanField, DecimalField, IntegerField, SelectField
from wtforms.validators import NumberRange, Optional

ALGORITHMS = ("sha256", "sha512", "sha1", "md5", "blake2b")


@dataclass(frozen=True)
class Upload:
    """A file a person uploaded with a job: its name as sent, and its content."""

    name: str
    content: bytes


class JobForm(FlaskForm):
    """A form that submits a job; subclasses say which fields are inputs and options."""

    def inputs(self) -> dict:
        """The job's inputs: plain values, safe to show to the owner, passed to the kind's body."""
        return {}

    def options(self) -> dict:
        """Per-job overrides of the kind's execution options."""
        return {}

    @property
    def multipart(self) -> bool:
        """Whether the form carries a file, and so must be sent as ``multipart/form-data``."""
        return any(isinstance(field, FileField) for field in self)

    def upload(self) -> Upload | None:
        """The uploaded file, read and closed, if the form has one.

        :raises RequestEntityTooLarge: the file is over ``MAX_UPLOAD_BYTES``. The
            request's own limit leaves room for the other fields, so the file
            itself gets the exact limit here.
        """
        file = next((field.data for field in self if isinstance(field, FileField) and field.data), None)
        if file is None:
            return None
        limit = current_app.config["MAX_UPLOAD_BYTES"]
        content = file.read(limit + 1)
        # Close the spooled temporary file now rather than at garbage collection.
        file.close()
        if len(content) > limit:
            raise RequestEntityTooLarge()
        return Upload(file.filename or "upload", content)


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
        validators=[
            Optional(),
            NumberRange(min=Decimal("0.1"), max=7200, message="Enter 0.1 to 7200 seconds, or nothing."),
        ],
        description="Stop the job if it runs longer than this.",
    )
    start_within = DecimalField(
        "Start within (seconds)",
        places=None,
        validators=[
            Optional(),
            NumberRange(min=Decimal("0.1"), max=86400, message="Enter 0.1 to 86400 seconds, or nothing."),
        ],
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
            options["start_within"] = float(self.start_within.data)
        return options


class ChecksumForm(JobForm):
    file = FileField("File", validators=[FileRequired("Choose a file to hash.")])
    algorithm = SelectField("Algorithm", choices=list(ALGORITHMS), default="sha256")

    def inputs(self) -> dict:
        return {"algorithm": self.algorithm.data}


class CsvProfileForm(JobForm):
    file = FileField("CSV file", validators=[FileRequired("Choose a CSV file to profile.")])
