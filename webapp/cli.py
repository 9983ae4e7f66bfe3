"""``flask --app wsgi jobs ...``: list, show, cancel, retry and purge jobs, and see the counts, from a shell."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from .filters import iso
from .kinds import KINDS
from .listing import matching_jobs
from .service import BULK_ACTIONS, NotRetryable, OverLimit, UploadGone, service
from .store import STATES, Job, JobNotFound, JobPurged, StoreUnavailable


class JobsGroup(AppGroup):
    """Commands that say plainly when the store is down, rather than print a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StoreUnavailable as exc:
            raise click.ClickException(f"the job store cannot be reached ({exc}); nothing was changed") from None


jobs = JobsGroup("jobs", help="Look after Tasklight's jobs (every owner's).")


def load(job_id: str) -> Job:
    """The job, or a clean error message and exit status 1."""
    try:
        return service().store.get(job_id)
    except JobNotFound:
        raise click.ClickException(f"no job {job_id}") from None
    except JobPurged as exc:
        raise click.ClickException(f"job {job_id} was purged at {iso(exc.purged_at)}") from None


@jobs.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--kind", type=click.Choice(sorted(KINDS)), help="Only jobs of this kind.")
@click.option("--owner", help="Only this owner's jobs.")
@click.option("--label", help="Only jobs whose label has these words.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
def list_jobs(state: str | None, kind: str | None, owner: str | None, label: str | None, limit: int) -> None:
    """List jobs, newest first: id, state, kind, created (UTC), owner, label."""
    for job in service().store.list(owner=owner, state=state, kind=kind, limit=limit, label=label):
        click.echo(
            f"{job.id}  {job.state:<9}  {job.kind:<11}  {iso(job.created_at)}  {job.owner}  {job.label}".rstrip()
        )


@jobs.command("show")
@click.argument("job_id")
def show(job_id: str) -> None:
    """Print everything stored about a job as JSON, the traceback included."""
    record = load(job_id).as_dict()
    for name in ("created_at", "started_at", "finished_at", "heartbeat_at", "purge_at", "start_by"):
        record[name] = iso(record[name])
    click.echo(json.dumps(record, indent=2, ensure_ascii=False))


@jobs.command("cancel")
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a waiting job, or ask a running one to stop."""
    click.echo(service().cancel(load(job_id)))


@jobs.command("retry")
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Start a new job with the same inputs and print its id."""
    try:
        click.echo(service().retry(load(job_id)).id)
    except (NotRetryable, UploadGone, OverLimit) as exc:
        raise click.ClickException(str(exc)) from None


@jobs.command("purge")
@click.argument("job_ids", nargs=-1, required=True)
def purge(job_ids: tuple[str, ...]) -> None:
    """Delete jobs and their uploads now; their ids then answer 410."""
    for job_id in job_ids:
        load(job_id)
        service().store.purge(job_id)
        click.echo(f"purged {job_id}")


@jobs.command("bulk")
@click.argument("action", type=click.Choice(sorted(BULK_ACTIONS)))
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--kind", type=click.Choice(sorted(KINDS)), help="Only jobs of this kind.")
@click.option("--owner", help="Only this owner's jobs.")
@click.option("--label", help="Only jobs whose label has these words.")
@click.option("--yes", is_flag=True, help="Do it without asking.")
def bulk(action: str, state: str | None, kind: str | None, owner: str | None, label: str | None, yes: bool) -> None:
    """Cancel, retry or purge every job matching the filter, after saying how many that is."""
    matching = matching_jobs(service().store, state, kind, label, owner)
    if not yes:
        click.confirm(f"{len(matching)} jobs match; {action} them?", abort=True)
    click.echo(f"{action}: acted on {service().act_on_all(action, matching)} of {len(matching)} matching jobs")


@jobs.command("reap")
def reap() -> None:
    """Do a reaper's round now: mark stale jobs lost, overdue ones expired, and purge those past retention."""
    lost = service().store.reap()
    click.echo(f"reaped: {lost} job(s) marked lost; overdue ones expired; those past retention purged")


@jobs.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(as_json: bool) -> None:
    """Print the number of jobs in each state, the queue length and the live workers."""
    counts = service().store.counts()
    numbers = {
        "counts": {state: counts.get(state, 0) for state in STATES},
        "queued_tasks": service().queue.pending_count(),
        "workers": service().store.live_workers(),
    }
    if as_json:
        click.echo(json.dumps(numbers, indent=2))
        return
    for state, count in numbers["counts"].items():
        click.echo(f"{state:<10} {count}")
    click.echo(f"queue      {numbers['queued_tasks']}")
    click.echo(f"workers    {', '.join(numbers['workers']) or 'none'}")
