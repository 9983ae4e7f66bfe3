"""Submit jobs, show them as they change, cancel and retry them, download their results, and list them."""

from __future__ import annotations

import functools
import hashlib
import io
import re
import uuid

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from jinja2 import Environment
from werkzeug.http import quote_etag
from werkzeug.routing import Map

from .filters import iso, state_label
from .kinds import KINDS, Kind
from .listing import ListQuery, job_listing
from .negotiate import add_vary, respond, wants_json
from .security import csrf_token
from .service import NotRetryable, UploadGone, service
from .store import RUNNING, SUCCEEDED, WAITING, Job, JobNotFound, JobStore, StoreUnavailable

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

#: Seconds between polls of a job's status, by the job's age: short at first, longer for long jobs.
POLL_SECONDS = ((10, 1), (60, 2), (float("inf"), 5))


def current_owner(create: bool = False) -> str | None:
    """The id of this browser session, which owns the jobs it submits."""
    if "owner" not in session and create:
        session["owner"] = uuid.uuid4().hex
        session.permanent = True
    return session.get("owner")


def owned_job(job_id: str) -> Job:
    """The job if this session owns it; otherwise the same 404 as for an unknown id."""
    owner = current_owner()
    if owner is None:
        raise JobNotFound(job_id)
    return service().store.get_for(job_id, owner)


#: Where the early path (webapp.early_polls) leaves what it read for a poll it passes on to Flask:
#: the job, or the error reading it raised.
EARLY_READ = "tasklight.early_read"


def polled_job(job_id: str) -> Job:
    """The job a status poll is about, if this session owns it: as the early path read it, or read now.

    So a poll passed on to Flask (a finished job, an unknown one, a store that does not answer
    within its timeout) costs one store read, not two.
    """
    early = request.environ.get(EARLY_READ)
    if isinstance(early, Exception):
        raise early
    return early or owned_job(job_id)


def get_kind(name: str) -> Kind:
    kind = KINDS.get(name)
    if kind is None:
        abort(404, description=f"There is no kind of job called “{name}”.")
    return kind


def poll_interval(job: Job, now: float) -> int:
    """Seconds until the next poll of ``job``."""
    age = now - job.created_at
    return next(seconds for younger_than, seconds in POLL_SECONDS if age < younger_than)


def seconds_left(job: Job, now: float) -> float | None:
    """Estimate the time left from the progress so far, once that is possible."""
    done, total = job.progress.get("done") or 0, job.progress.get("total")
    if job.state != RUNNING or not total or done <= 0 or not job.started_at:
        return None
    elapsed = now - job.started_at
    if elapsed < 1 or done >= total:
        return None
    return elapsed * (total - done) / done


def clock_driven(job: Job, store: JobStore, pace: int) -> dict:
    """What the fragment shows that changes with the clock, not the record: read once, before any rendering.

    ``pace`` is the pacer's factor on the poll interval: while requests wait for a worker, this
    process asks for fewer polls (webapp/overload.py). The "no worker" flag costs a second store
    read, so only a waiting job, which shows it, pays for it.
    """
    now = store.now()
    return {
        "now": now,
        "poll": poll_interval(job, now) * pace,
        "pace": pace,
        "scheduled": job.scheduled(now),
        "no_worker": job.waiting and not store.live_workers(),
    }


def current_clock(job: Job) -> dict:
    """``clock_driven`` for this app's store and pacer."""
    return clock_driven(job, service().store, current_app.extensions["poll_pacer"].factor)


def fragment_tag(job: Job, clock: dict) -> str:
    """The fragment's ETag: the record's version, and the few things the clock moves that it shows.

    It ends with the pacer's factor in clear (``-f2``): under load, the overload guard lets some
    polls from pages still at a lower factor through, so that they learn the longer interval.
    """
    countdown = round(job.next_attempt_at - clock["now"]) if job.next_attempt_at else None
    version = (job.id, job.version, clock["poll"], clock["no_worker"], clock["scheduled"], countdown)
    return f"{hashlib.sha1(repr(version).encode()).hexdigest()[:20]}-f{clock['pace']}"


#: A polling fragment sends the state it shows in this header (its hx-headers), for an answer during an outage.
SHOWN_STATE_HEADER = "Tasklight-Shown-State"
#: It sends which timeline its page shows in this one, so that a poll sends the timeline only when it has changed.
SHOWN_TIMELINE_HEADER = "Tasklight-Shown-Timeline"
#: Seconds between polls while the store cannot be reached.
OUTAGE_POLL_SECONDS = 10
#: What a fragment's answer varies on: the timeline its page shows, Accept (JSON or HTML) and the session's cookie.
FRAGMENT_VARY = f"{SHOWN_TIMELINE_HEADER}, Accept, Cookie"
#: The status route's path, for the middleware that sees a poll before Flask routes it; the group is the job's id.
STATUS_PATH = re.compile(r"/jobs/([^/]+)/status")


def fragment_headers(tag: str) -> list[tuple[str, str]]:
    """The fragment's headers beside its body, for a 200 and a 304 alike.

    The browser may keep a fragment, but must ask again each time: its ETag then makes the answer
    a 304. The whole ``Vary`` is set here at once, so the hooks that would add to it find it done.
    """
    return [("ETag", quote_etag(tag)), ("Cache-Control", "private, no-cache"), ("Vary", FRAGMENT_VARY)]


def outage_fragment(job_id: str) -> Response | None:
    """During a store outage, a polling page's answer: its state as it shows it, polling more slowly.

    htmx swaps a 503 (see base.html), so a page learns the longer interval and says why it is
    stale. Only a poll that says which state it shows gets this; it reveals nothing the page did not send.
    """
    shown = request.headers.get(SHOWN_STATE_HEADER)
    if request.headers.get("HX-Request") != "true" or wants_json() or shown not in WAITING | {RUNNING}:
        return None
    html = render_template("partials/job_status_outage.html", job_id=job_id, state=shown, poll=OUTAGE_POLL_SECONDS)
    headers = {"Retry-After": str(OUTAGE_POLL_SECONDS), "Cache-Control": "no-store"}
    return Response(html, 503, headers)


def timeline_mark(job: Job) -> str:
    """Names the timeline as it stands: how many events, and when the last one happened."""
    return f"{len(job.events)}@{job.events[-1]['at']:.6f}" if job.events else "0"


def job_context(job: Job, clock: dict | None = None, page_url: str | None = None, csrf: str | None = None) -> dict:
    """Everything the job page and its status fragment render from.

    Outside a request (``webapp.early_polls``), give the job page's URL and the session's CSRF token.
    """
    clock = clock or current_clock(job)
    total = job.progress.get("total")
    shown_attempt = job.attempt + (1 if job.state == "retrying" else 0)
    kind = KINDS.get(job.kind)
    percent = round(100 * job.progress["done"] / total) if total else None
    return {
        **clock,
        "job": job,
        "job_url": page_url or job_url(job.id),
        "csrf": csrf or csrf_token(),
        "kind": kind,
        "name": job_name(job, kind),
        "title": state_title(job, kind, percent, clock["scheduled"]),
        "eta": seconds_left(job, clock["now"]),
        "percent": percent,
        "timeline_mark": timeline_mark(job),
        # Shown once a job has been tried more than once, while it may still be tried again.
        "attempt": (shown_attempt, max(job.max_attempts, shown_attempt))
        if shown_attempt > 1 and not job.terminal
        else None,
    }


def job_url(job_id: str, external: bool = False) -> str:
    """The URL of this request's job page, its path or (``external``) in full."""
    site = (request.scheme, request.host) if external else None
    return built_job_url(current_app.url_map, request.script_root, site, job_id)


@functools.lru_cache(maxsize=4096)
def built_job_url(url_map: Map, script_root: str, site: tuple[str, str] | None, job_id: str) -> str:
    """A job page's URL under ``script_root``, in full on ``site`` (scheme, host); built once per job and site.

    As url_for builds it, from nothing else of a request, so it can be built without one, and each
    open page, which polls many times, pays for it once.
    """
    scheme, host = site or ("http", "localhost")
    adapter = url_map.bind(host, script_name=script_root or "/", url_scheme=scheme)
    return adapter.build("jobs.show", {"job_id": job_id}, force_external=site is not None)


def job_name(job: Job, kind: Kind | None) -> str:
    """What a person calls the job: its label, or its kind's title."""
    return job.label or f"{kind.title if kind else job.kind} job"


def state_title(job: Job, kind: Kind | None, percent: int | None, scheduled: bool) -> str:
    """The tab's title, state first, so a person who switched tabs sees it change: "Running 34% · Timer job"."""
    state = "Scheduled" if scheduled else state_label(job.state, job)
    if job.state == RUNNING and percent is not None and not job.cancel_requested:
        state += f" {percent}%"
    return f"{state} · {job_name(job, kind)}"


def job_json(job: Job, page_url: str | None = None) -> dict:
    """The public JSON view of a job (the README's public contract); never the traceback.

    Outside a request (``webapp.early_polls``), give the job page's full URL.
    """
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "result": job.result,
        "error": job.error,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "retry_of": job.retry_of,
        "retried_by": job.retried_by,
        "label": job.label,
        "scheduled_for": iso(job.scheduled_for),
        "status": job.status,
        "is_finished": job.terminal,
        "events": owner_events(job),
        "log": job.log,
        "url": page_url or job_url(job.id, external=True),
    }


#: What the owner may see of an event; the worker and traceback are for admins.
OWNER_EVENT_FIELDS = ("at", "event", "attempt", "message")


def owner_events(job: Job) -> list[dict]:
    """The job's timeline as its owner sees it, with times in ISO 8601."""
    return [{k: iso(v) if k == "at" else v for k, v in e.items() if k in OWNER_EVENT_FIELDS} for e in job.events]


def to_job(job: Job, data: dict, status: int, message: str | None = None) -> Response:
    """After a POST: JSON ``data`` with ``status`` and the job's Location, or ``message`` flashed and a 303 there."""
    location = url_for("jobs.show", job_id=job.id)
    if wants_json():
        return jsonify(data), status, {"Location": location}
    if message:
        flash(message)
    return redirect(location, 303)


@bp.after_request
def private_and_varying(response: Response) -> Response:
    """Job pages and JSON are private and change: never stored. Every answer here depends on Accept."""
    add_vary(response, "Accept")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.get("/new/<kind_name>")
def new(kind_name: str):
    """Show the form for a kind of job, empty or (``?from=<id>``) filled in from a job to run again."""
    kind = get_kind(kind_name)
    source = rerun_source(kind)
    form = kind.form.filled_from(source) if source else kind.form()
    if source and source.upload_size is not None:
        form.keep_upload(source.upload_name, source.upload_size)
    fields = [f.name for f in form if f.name != "csrf_token"]
    data = {"kind": kind.name, "fields": fields, "csrf_token": form.csrf_token.current_token}
    return respond(data, "pages/form.html", kind=kind, form=form, source=source)


def rerun_source(kind: Kind) -> Job | None:
    """The job that a form edits to run again (``?from=<id>``), if this session owns it and it is of this kind."""
    job_id = request.args.get("from")
    if not job_id:
        return None
    job = owned_job(job_id)
    if job.kind != kind.name:
        raise JobNotFound(job_id)
    return job


@bp.post("/new/<kind_name>")
def submit(kind_name: str):
    """Record and enqueue a job, then redirect to its page (303), or show the form's errors (400)."""
    kind = get_kind(kind_name)
    if request.is_json and not isinstance(request.get_json(silent=True), dict):
        abort(400, description="The JSON body must be an object of form fields.")
    source = rerun_source(kind)
    form = kind.form()
    if source and source.upload_size is not None:
        form.keep_upload(source.upload_name, source.upload_size)
    if not form.validate():
        data = {"error": "The form has errors.", "fields": {name: " ".join(e) for name, e in form.errors.items()}}
        return respond(data, "pages/form.html", 400, kind=kind, form=form, source=source)
    label, scheduled_for = form.label.data or "", form.scheduled_for()
    try:
        if source:
            upload = form.upload() or service().kept_upload(source)
            job = service().rerun(source, form.inputs(), form.options(), upload, label, scheduled_for)
        else:
            owner = current_owner(create=True)
            job = service().submit(
                kind, owner, form.inputs(), form.options(), form.upload(), label=label, scheduled_for=scheduled_for
            )
    except UploadGone as exc:
        return to_job(source, {"error": str(exc)}, 409, str(exc))
    except StoreUnavailable:
        if wants_json():
            raise
        # Nothing was recorded; the form comes back with what the person typed, to send again in a moment.
        return render_template("pages/form.html", kind=kind, form=form, source=source, unavailable=True), 503
    return to_job(job, job_json(job), 202)


@bp.get("/<job_id>")
def show(job_id: str):
    """Show a job's page, with the status fragment that follows it to its end."""
    job = owned_job(job_id)
    if wants_json():
        return jsonify(job_json(job))
    return render_template("pages/job.html", **job_context(job))


@bp.get("/<job_id>/status")
def status(job_id: str):
    """Return the status fragment alone; 304 when nothing it shows has changed, before anything is rendered."""
    try:
        job = polled_job(job_id)
    except StoreUnavailable:
        if (answer := outage_fragment(job_id)) is not None:
            return answer
        raise
    if wants_json():
        return jsonify(job_json(job))
    clock = current_clock(job)
    tag = fragment_tag(job, clock)
    if request.if_none_match.contains(tag):
        return Response(status=304, headers=fragment_headers(tag))
    html = render_poll_answer(
        current_app.jinja_env, job_context(job, clock), request.headers.get(SHOWN_TIMELINE_HEADER)
    )
    return Response(html, headers=fragment_headers(tag))


#: The template of a job's status, which a poll's answer renders alone.
STATUS_TEMPLATE = "partials/job_status.html"


def render_poll_answer(env: Environment, context: dict, shown_timeline: str | None) -> str:
    """The status fragment as a poll's answer, for a page that shows ``shown_timeline``.

    The timeline goes out of band, and only to a page that does not show it as it stands.
    Rendered straight from the template, not through ``render_template``, whose context
    processors add ``request``, ``session`` and ``g`` again, beside the same names among
    the template globals, at an eighth of the render's cost: so it can be rendered before
    Flask starts too (``webapp.early_polls``). A test holds the template to its context and
    the globals.
    """
    send_timeline = shown_timeline != context["timeline_mark"]
    return env.get_template(STATUS_TEMPLATE).render(poll_answer=True, send_timeline=send_timeline, **context)


@bp.post("/<job_id>/cancel")
def cancel(job_id: str):
    """Cancel a job, or ask it to stop, then go back to its page."""
    message = service().cancel(owned_job(job_id))
    job = service().store.get(job_id)
    return to_job(job, job_json(job) | {"message": message}, 202, message)


@bp.post("/<job_id>/retry")
def retry(job_id: str):
    """Start a new job with the same inputs and go to it."""
    job = owned_job(job_id)
    try:
        new_job = service().retry(job)
    except (NotRetryable, UploadGone) as exc:
        return to_job(job, {"error": str(exc)}, 409, str(exc))
    return to_job(new_job, job_json(new_job), 202)


@bp.get("/<job_id>/download.<fmt>")
def download(job_id: str, fmt: str):
    """Send a succeeded job's result as an attachment; only its owner may."""
    job = owned_job(job_id)
    kind = KINDS.get(job.kind)
    if kind is None or fmt not in kind.download_formats(job):
        abort(404, description=f"This job's result cannot be downloaded as .{fmt}.")
    if job.state != SUCCEEDED:
        abort(409, description=f"This job is {job.state}; its result can be downloaded once it has succeeded.")
    file = kind.make_download(job, fmt)
    # send_file writes Content-Disposition, with RFC 6266 ``filename*`` when the name needs it.
    return send_file(io.BytesIO(file.content), mimetype=file.mimetype, as_attachment=True, download_name=file.filename)


@bp.get("")
def index():
    """List this session's jobs, newest first, filtered and paged."""
    listing = job_listing(service().store, ListQuery.from_args(request.args), current_owner())
    data = {"jobs": [job_json(job) for job in listing["jobs"]], "next": listing["next_cursor"]}
    return respond(data, "pages/jobs.html", **listing)


@bp.get("/rows")
def rows():
    """Return the list's rows alone, for the list to refresh itself."""
    listing = job_listing(service().store, ListQuery.from_args(request.args), current_owner())
    return render_template("partials/job_rows.html", **listing)
