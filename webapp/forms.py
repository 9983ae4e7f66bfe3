"""The forms that submit jobs, one per kind: what a person fills in, turned into a job's inputs and options."""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass
from decimal import Decimal

from flask import current_app, request
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from werkzeug.datastructures import FileStorage, ImmutableMultiDict, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from wtforms import BooleanField, DateTimeLocalField, DecimalField, Field, IntegerField, SelectField, StringField
from wtforms.validators import Length, NumberRange, Optional, ValidationError

ALGORITHMS = ("sha256", "sha512", "sha1", "md5", "blake2b")

#: How far ahead a job may be scheduled.
MAX_SCHEDULE_DAYS = 30

#: What a JSON value that no field can parse is, for its message.
NOT_SCALARS = {type(None): "null", list: "a list", dict: "an object"}


def refusal(field: Field, value: object) -> str | None:
    """Why ``value`` cannot be handed to ``field`` at all, or None when the field may parse it.

    Browsers send text and files; scripts may send any JSON. A value a field
    was never written for is refused here, so that no field's parsing can fail
    on it with anything but a message.
    """
    if isinstance(value, tuple(NOT_SCALARS)):
        return f"Send text, a number or true/false here, not {NOT_SCALARS[type(value)]}."
    if isinstance(field, FileField):
        return None if isinstance(value, FileStorage) else "Choose a file to upload."
    if isinstance(value, FileStorage):
        return "Enter a value here, not a file."
    if isinstance(field, DateTimeLocalField) and not isinstance(value, str):
        return "Send a date and time as text, such as 2026-12-01T09:30."
    if isinstance(value, float) and not math.isfinite(value):
        # Python's JSON reader takes NaN and Infinity, and reads 1e999 as infinity.
        return "Send a finite number here, not NaN or infinity."
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            # A lone surrogate escape is valid JSON, but the form page showing it again could not be encoded.
            return "Send valid Unicode text here."
    return None


def too_large(number: Decimal | int) -> bool:
    """Whether ``number`` is beyond the largest float: a validator comparing it with its bounds would raise."""
    try:
        return math.isinf(float(number))
    except OverflowError:
        return True


class NumberField(DecimalField):
    """A decimal that is an ordinary number: not NaN or infinity, and small enough to be a float."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("places", None)
        super().__init__(*args, **kwargs)

    def process_formdata(self, valuelist: list) -> None:
        super().process_formdata(valuelist)
        if not valuelist or self.data is None:
            return
        # Comparing a signalling NaN raises, so no validator may see one.
        if not self.data.is_finite():
            self.data = None
            raise ValueError("Enter a finite number, not NaN or infinity.")
        if too_large(self.data):
            self.data = None
            raise ValueError("This number is too large.")


class WholeNumberField(IntegerField):
    """An integer small enough to be a float; a JSON number with a fraction is refused, not cut short."""

    def process_formdata(self, valuelist: list) -> None:
        if valuelist and isinstance(valuelist[0], float) and not valuelist[0].is_integer():
            self.data = None
            raise ValueError("Enter a whole number.")
        super().process_formdata(valuelist)
        if valuelist and self.data is not None and too_large(self.data):
            self.data = None
            raise ValueError("This number is too large.")


@dataclass(frozen=True)
class Upload:
    """A file a person uploaded with a job: its name as sent, and its content."""

    name: str
    content: bytes


class JobForm(FlaskForm):
    """A form that submits a job; subclasses say which fields are inputs and options."""

    label = StringField(
        "Label (optional)",
        validators=[Optional(), Length(max=80, message="Keep the label to 80 characters or fewer.")],
        filters=[lambda text: text.strip() if isinstance(text, str) else text],
        description="A short name for the job, shown in your list of jobs.",
    )
    start_at = DateTimeLocalField(
        "Start at (UTC, optional)",
        format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
        validators=[Optional()],
        description="A date and time in UTC, at most 30 days ahead. Leave it empty to start as soon as possible.",
    )
    start_in = NumberField(
        "Or start in (minutes, optional)",
        validators=[Optional(), NumberRange(min=0, max=MAX_SCHEDULE_DAYS * 24 * 60, message="Enter 0 to 43200.")],
        description="Minutes from now, instead of a date and time.",
    )

    def validate_start_at(self, field: Field) -> None:
        if field.data is None:
            return
        if self.start_in.data is not None:
            raise ValidationError("Give a start time or a number of minutes, not both.")
        when = field.data.replace(tzinfo=datetime.UTC).timestamp()
        if when < time.time() - 60:
            raise ValidationError("This time has passed. Give a time in the future, in UTC.")
        if when > time.time() + MAX_SCHEDULE_DAYS * 86400:
            raise ValidationError(f"Give a time at most {MAX_SCHEDULE_DAYS} days ahead.")

    def scheduled_for(self) -> float | None:
        """When the job should start, in seconds since the epoch; None for as soon as possible."""
        if self.start_at.data is not None:
            return max(self.start_at.data.replace(tzinfo=datetime.UTC).timestamp(), time.time())
        if self.start_in.data:
            return time.time() + float(self.start_in.data) * 60
        return None

    #: Fields that are testing aids, not user input: shown and read only when the DIAGNOSTICS setting is on.
    diagnostic_fields: tuple[str, ...] = ()

    class Meta(FlaskForm.Meta):
        def wrap_formdata(self, form: JobForm, formdata):
            wrapped = super().wrap_formdata(form, formdata)
            if wrapped is not None and wrapped is not formdata and request.is_json:
                # Flask-WTF spreads a JSON list over several values of its field; keep each value whole instead,
                # so that a list is refused rather than read as its first item.
                return ImmutableMultiDict(list(request.get_json().items()))
            return wrapped

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not current_app.config["DIAGNOSTICS"]:
            for name in self.diagnostic_fields:
                del self[name]

    def process(self, formdata=None, obj=None, data=None, extra_filters=None, **kwargs) -> None:
        """Process the submitted values, holding back those that no field could parse (see ``refusal``)."""
        formdata = self.meta.wrap_formdata(self, formdata)
        self._refused: dict[str, str] = {}
        if formdata is not None:
            accepted = MultiDict()
            for name, value in formdata.items(multi=True):
                message = refusal(self[name], value) if name in self._fields else None
                if message:
                    self._refused.setdefault(name, message)
                    if isinstance(value, FileStorage):
                        value.close()  # A refused file is never read; release its temporary file now.
                else:
                    accepted.add(name, value)
            formdata = accepted
        super().process(formdata, obj, data, extra_filters, **kwargs)

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        # A diagnostic field removed after processing has no message to show.
        refused = {name: message for name, message in self._refused.items() if name in self._fields}
        for name, message in refused.items():
            # Said after validation, so that no validator (Optional clears errors) can take it back.
            self[name].errors = [message]
        return valid and not refused

    @classmethod
    def filled_from(cls, job) -> JobForm:
        """This form filled in with what ``job`` was given, to edit it and run it again."""
        values = {name: value for name, value in {**job.options, **job.inputs}.items() if value is not None}
        return cls(data={**values, "label": job.label})

    def keep_upload(self, name: str, size: int) -> None:
        """Let the file field be left empty: the job then runs again on the file it had."""
        for field in self:
            if isinstance(field, FileField):
                field.validators = [v for v in field.validators if not isinstance(v, FileRequired)]
                field.flags.required = False
                field.description = f"Leave it empty to keep {name} ({size:,} bytes)."

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
        file = next((field.data for field in self if isinstance(field.data, FileStorage) and field.data), None)
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
    diagnostic_fields = ("crash_attempts",)

    seconds = NumberField(
        "Seconds to wait",
        default=5,
        validators=[NumberRange(min=0, max=3600, message="Enter a number of seconds from 0 to 3600.")],
        description="Decimals are allowed, for example 2.5.",
    )
    fail = BooleanField("Fail at the end", description="End with an error message instead of a result.")
    crash_attempts = WholeNumberField(
        "Crash on the first attempts",
        default=0,
        validators=[Optional(), NumberRange(min=0, max=3, message="Enter 0 to 3.")],
        description="Raise an unexpected error on this many attempts, to see automatic retries.",
    )
    # Decimal bounds: the float 0.1 is a little more than 0.1, so it would refuse "0.1".
    time_limit = NumberField(
        "Time limit (seconds)",
        validators=[
            Optional(),
            NumberRange(min=Decimal("0.1"), max=7200, message="Enter 0.1 to 7200 seconds, or nothing."),
        ],
        description="Stop the job if it runs longer than this.",
    )
    start_within = NumberField(
        "Start within (seconds)",
        validators=[
            Optional(),
            NumberRange(min=Decimal("0.1"), max=86400, message="Enter 0.1 to 86400 seconds, or nothing."),
        ],
        description="If no worker starts the job in time, it expires without running.",
    )

    def inputs(self) -> dict:
        inputs = {"seconds": float(self.seconds.data), "fail": bool(self.fail.data)}
        # A testing aid: its field is absent unless DIAGNOSTICS is on, and it is recorded only when used.
        if self.crash_attempts and self.crash_attempts.data:
            inputs["crash_attempts"] = int(self.crash_attempts.data)
        return inputs

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
