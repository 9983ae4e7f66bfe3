"""Lists of jobs, newest first, filtered and paged: My jobs and the admin view share them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from werkzeug.exceptions import BadRequest

from .kinds import KINDS
from .store import STATES, Job, JobStore

#: Jobs on one page of a list.
PAGE_SIZE = 20
#: Seconds between refreshes of a list's rows while a listed job has not ended.
LIST_POLL_SECONDS = 2


@dataclass(frozen=True)
class ListQuery:
    """What a list shows: a state and a kind to filter by, and where the page starts."""

    state: str | None = None
    kind: str | None = None
    #: The page cursor as given in the query string, "<created_at>_<id>" of the last job on the page before.
    before: str | None = None
    #: Words to find in the jobs' labels.
    q: str | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> ListQuery:
        """Read the query string.

        :raises BadRequest: an unknown state or kind, or a page link that is not valid.
        """
        q = (args.get("q") or "").strip()[:80] or None
        query = cls(args.get("state") or None, args.get("kind") or None, args.get("before") or None, q)
        if query.state is not None and query.state not in STATES:
            raise BadRequest(f"“{query.state}” is not a job state.")
        if query.kind is not None and query.kind not in KINDS:
            raise BadRequest(f"“{query.kind}” is not a kind of job.")
        query.cursor()  # A bad cursor is a 400 even when there is nothing to list.
        return query

    def cursor(self) -> tuple[float, str] | None:
        """The creation time and id that the page starts below."""
        if not self.before:
            return None
        created, _, job_id = self.before.partition("_")
        try:
            at = float(created)
        except ValueError:
            at = math.nan
        # float() also accepts "nan" and "inf", which Redis refuses as a score bound.
        if not math.isfinite(at) or not job_id:
            raise BadRequest("The page link is not valid. Start again from the first page.")
        return at, job_id


def job_listing(store: JobStore, query: ListQuery, owner: str | None, everyone: bool = False) -> dict:
    """One page of ``owner``'s jobs (or, with ``everyone``, all jobs), and what the list template needs."""
    jobs = []
    if owner or everyone:
        filters = {"state": query.state, "kind": query.kind, "label": query.q}
        jobs = store.list(owner=owner, **filters, before=query.cursor(), limit=PAGE_SIZE + 1)
    more = len(jobs) > PAGE_SIZE
    jobs = jobs[:PAGE_SIZE]
    return {
        "jobs": jobs,
        "query": query,
        "next_cursor": f"{jobs[-1].created_at!r}_{jobs[-1].id}" if more else None,
        "states": STATES,
        "kinds": KINDS,
        "poll": LIST_POLL_SECONDS if any(not job.terminal for job in jobs) else None,
    }


#: The most jobs one bulk action acts on; run it again for more.
BULK_LIMIT = 10_000


def matching_jobs(
    store: JobStore, state: str | None, kind: str | None, label: str | None, owner: str | None = None
) -> list[Job]:
    """Every job (up to ``BULK_LIMIT``) that a filter matches, newest first, read a page at a time."""
    jobs: list[Job] = []
    cursor = None
    while len(jobs) < BULK_LIMIT:
        page = store.list(owner=owner, state=state, kind=kind, label=label, before=cursor, limit=500)
        jobs += page
        if len(page) < 500:
            break
        cursor = (page[-1].created_at, page[-1].id)
    return jobs[:BULK_LIMIT]
