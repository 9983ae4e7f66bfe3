"""The kinds of job, each declared once: its form, execution options, result partial and downloads.

Adding a kind takes a ``Kind`` here with its form (``webapp/forms.py``), its
result partial ``templates/results/<name>.html`` and a body in ``tasks.py``.
The consumer refuses to start if a kind has no body, the app refuses to start
if a kind has no partial, and ``tests/test_kinds.py`` checks that they agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .downloads import Download, checksum_download, checksum_formats, profile_download, profile_formats
from .forms import ChecksumForm, CsvProfileForm, JobForm, TimerForm
from .store import Job


def no_downloads(job: Job) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Kind:
    """A kind of job."""

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
    #: Seconds a job may wait to start before it expires unrun.
    start_within: float | None = None
    #: The formats a succeeded job's result downloads as (file extensions).
    download_formats: Callable[[Job], tuple[str, ...]] = no_downloads
    #: Makes the download of a succeeded job in one of those formats.
    make_download: Callable[[Job, str], Download] | None = None

    @property
    def result_template(self) -> str:
        """The partial that shows a succeeded job's result."""
        return f"results/{self.name}.html"

    def options(self, overrides: dict | None = None) -> dict:
        """The execution options of a job of this kind, with a form's ``overrides``."""
        defaults = {"retry_delay": self.retry_delay, "time_limit": self.time_limit, "start_within": self.start_within}
        return {**defaults, **(overrides or {})}


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
            download_formats=checksum_formats,
            make_download=checksum_download,
        ),
        Kind(
            "csv_profile",
            "CSV profile",
            "Profiles every column of a CSV file: types, counts, ranges and the most common values.",
            CsvProfileForm,
            time_limit=600,
            download_formats=profile_formats,
            make_download=profile_download,
        ),
    )
}
