"""Submit jobs, show them as they change, cancel and retry them, and list them."""

from __future__ import annotations

import hashlib
import math
import time
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
    session,
    url_for,
)

from .filters import iso
from .kinds import KINDS, Kind
from .service import RETRYABLE, Upload, service
from .store import QUEUED, RETRYING, RUNNING, STATES, Job, JobNotFound

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


def wants_json() -> bool:
    """True when the client prefers JSON to HTML (browsers never do)."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


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


def poll_interval(job: Job) -> int:
    """Seconds until the next poll: short at first, longer for long jobs."""
    age = time.time() - job.created_at
    return 1 if age < 10 else 2 if age < 60 else 5


def seconds_left(job: Job) -> float | None:
    """Estimate the time left from the progress so far, once that is possible."""
    progress, now = job.progress, time.time()
    done, total = progress.get("done") or 0, progress.get("total")
    if job.state != RUNNING or not total or done <= 0 or not job.started_at:
        return None
    elapsed = now - job.started_at
    if elapsed < 1 or done >= total:
        return None
    return elapsed * (total - done) / done


def job_context(job: Job) -> dict:
    """Everything the job page and its status fragment render from."""
    store = service().store
    waiting = job.state == QUEUED or (job.state == RETRYING and not job.next_attempt_at)
    return {
        "job": job,
        "kind": KINDS.get(job.kind),
        "poll": poll_interval(job),
        "eta": seconds_left(job),
        "no_worker": waiting and not store.live_workers(),
        "retryable": job.state in RETRYABLE,
        "now": time.time(),
    }


def job_json(job: Job) -> dict:
    """The public JSON view of a job (the README's public contract); never the traceback."""
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
        "url": url_for("jobs.show", job_id=job.id, _external=True),
    }


def get_kind(name: str) -> Kind:
    kind = KINDS.get(name)
    if kind is None:
        abort(404, description=f"There is no kind of job called “{name}”.")
    return kind


@bp.after_request
def vary_on_accept(response: Response) -> Response:
    response.vary.add("Accept")
    response.headers.setdefault("Cache-Control", "private, no-cache")
    return response


@bp.get("/new/<kind_name>")
def new(kind_name: str):
    """Show the form for a kind of job."""
    kind = get_kind(kind_name)
    form = kind.form()
    if wants_json():
        return jsonify(
            kind=kind.name,
            fields=[f.name for f in form if f.name != "csrf_token"],
            csrf_token=form.csrf_token.current_token,
        )
    return render_template("pages/form.html", kind=kind, form=form)


@bp.post("/new/<kind_name>")
def submit(kind_name: str):
    """Record and enqueue a job, then redirect to its page (303), or show the form's errors (400)."""
    kind = get_kind(kind_name)
    if request.is_json and not isinstance(request.get_json(silent=True), dict):
        abort(400, description="The JSON body must be an object of form fields.")
    form = kind.form()
    if not form.validate():
        if wants_json():
            messages = {name: " ".join(errors) for name, errors in form.errors.items()}
            return jsonify(error="The form has errors.", fields=messages), 400
        return render_template("pages/form.html", kind=kind, form=form), 400
    file = form.upload()
    upload = None
    if file:
        upload = Upload(file.filename or "upload", file.read())
        # Close the spooled temporary file now rather than at garbage collection.
        file.close()
        # MAX_CONTENT_LENGTH leaves room for the other fields; the file itself gets the exact limit.
        if len(upload.content) > current_app.config["MAX_UPLOAD_BYTES"]:
            abort(413)
    job = service().submit(kind, current_owner(create=True), form.inputs(), form.options(), upload)
    location = url_for("jobs.show", job_id=job.id)
    if wants_json():
        return jsonify(job_json(job)), 202, {"Location": location}
    return redirect(location, 303)


@bp.get("/<job_id>")
def show(job_id: str):
    """Show a job's page, with the status fragment that follows it to its end."""
    job = owned_job(job_id)
    if wants_json():
        return jsonify(job_json(job))
    return render_template("pages/job.html", **job_context(job))


@bp.get("/<job_id>/status")
def status(job_id: str):
    """Return the status fragment alone; 304 when nothing has changed."""
    job = owned_job(job_id)
    if wants_json():
        return jsonify(job_json(job))
    context = job_context(job)
    tag = hashlib.sha1(repr(fragment_version(context)).encode()).hexdigest()[:20]
    if request.if_none_match.contains(tag):
        response = Response(status=304)
    else:
        response = Response(render_template("partials/job_status.html", **context))
    response.set_etag(tag)
    return response


def fragment_version(context: dict) -> tuple:
    """Everything the fragment shows that can change: the record, and a few things the clock moves."""
    job = context["job"]
    countdown = round(job.next_attempt_at - context["now"]) if job.next_attempt_at else None
    return job.id, job.version, context["poll"], context["no_worker"], countdown


@bp.post("/<job_id>/cancel")
def cancel(job_id: str):
    """Cancel a job, or ask it to stop, then go back to its page."""
    job = owned_job(job_id)
    message = service().cancel(job)
    if wants_json():
        return jsonify(job_json(service().store.get(job_id)) | {"message": message}), 202
    flash(message)
    return redirect(url_for("jobs.show", job_id=job_id), 303)


@bp.post("/<job_id>/retry")
def retry(job_id: str):
    """Start a new job with the same inputs and go to it."""
    job = owned_job(job_id)
    if job.state not in RETRYABLE:
        message = f"Only a failed, lost, cancelled or expired job can be retried; this one is {job.state}."
        if wants_json():
            return jsonify(error=message), 409
        flash(message)
        return redirect(url_for("jobs.show", job_id=job_id), 303)
    new_job = service().retry(job)
    location = url_for("jobs.show", job_id=new_job.id)
    if wants_json():
        return jsonify(job_json(new_job)), 202, {"Location": location}
    return redirect(location, 303)


@bp.get("")
def index():
    """List this session's jobs, newest first, filtered and paged."""
    listing = job_listing()
    if wants_json():
        return jsonify(jobs=[job_json(j) for j in listing["jobs"]], next=listing["next_cursor"])
    return render_template("pages/jobs.html", **listing)


@bp.get("/rows")
def rows():
    """Return the list's rows alone, for the list to refresh itself."""
    return render_template("partials/job_rows.html", **job_listing())


#: Jobs on one page of the list.
PAGE_SIZE = 20


def job_listing(everyone: bool = False) -> dict:
    """One page of this session's jobs (or, for admins, ``everyone``'s), from the query string."""
    state = request.args.get("state") or None
    kind = request.args.get("kind") or None
    if state is not None and state not in STATES:
        abort(400, description=f"“{state}” is not a job state.")
    if kind is not None and kind not in KINDS:
        abort(400, description=f"“{kind}” is not a kind of job.")
    before = request.args.get("before") or None
    # Parse the cursor even when there is nothing to list, so that a bad one is always a 400.
    cursor = parse_cursor(before)
    owner = None if everyone else current_owner()
    jobs = []
    if owner or everyone:
        jobs = service().store.list(owner=owner, state=state, kind=kind, before=cursor, limit=PAGE_SIZE + 1)
    more = len(jobs) > PAGE_SIZE
    jobs = jobs[:PAGE_SIZE]
    return {
        "jobs": jobs,
        "state": state,
        "kind": kind,
        "before": before,
        "next_cursor": f"{jobs[-1].created_at!r}_{jobs[-1].id}" if more else None,
        "states": STATES,
        "kinds": KINDS,
        "polling": any(not job.terminal for job in jobs),
    }


def parse_cursor(value: str | None) -> tuple[float, str] | None:
    """A page cursor is the creation time and id of the last job on the page before."""
    if not value:
        return None
    created, _, job_id = value.partition("_")
    try:
        at = float(created)
    except ValueError:
        at = math.nan
    # float() also accepts "nan" and "inf", which Redis refuses as a score bound (a 500, not a 400).
    if not math.isfinite(at) or not job_id:
        abort(400, description="The page link is not valid. Start again from the first page.")
    return at, job_id
