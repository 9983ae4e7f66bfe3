"""Share a finished job's result on purpose: signed, read-only, expiring and revocable links.

Without a link, every job stays its owner's alone. A link shows the result and
its downloads, and the inputs only if the owner ticked that; never cancel or
retry. It is signed with the app's secret key and names one share kept in the
job's record, so revoking that share, or its expiry, ends the link.
"""

from __future__ import annotations

import io
import secrets

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from itsdangerous import BadSignature, URLSafeSerializer

from .jobs import owned_job, state_title
from .kinds import KINDS
from .service import service
from .store import SUCCEEDED, Job, JobNotFound, JobPurged

bp = Blueprint("shares", __name__)

#: Days a share link works unless the owner revokes it sooner.
SHARE_DAYS = 7


def serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt="tasklight-share")


@bp.app_template_global()
def share_url(job: Job, share: dict) -> str:
    """The link of one of ``job``'s shares."""
    token = serializer().dumps({"job": job.id, "share": share["id"]})
    return url_for("shares.shared", token=token, _external=True)


@bp.record_once
def add_share_days(state) -> None:
    # A template global, not a context processor, which would run on every render, status polls included.
    state.app.jinja_env.globals["share_days"] = SHARE_DAYS


def shared_job(token: str) -> tuple[Job, dict]:
    """The job and the share a link names, while the share stands; otherwise a 404 that says why."""
    gone = "This share link is not valid: it has expired, was revoked, or was never made."
    try:
        claim = serializer().loads(token)
        job = service().store.get(claim["job"])
    except (BadSignature, KeyError, TypeError, JobNotFound, JobPurged):
        abort(404, description=gone)
    now = service().store.now()
    share = next((s for s in job.shares if s["id"] == claim["share"] and s["expires_at"] > now), None)
    if share is None:
        abort(404, description=gone)
    return job, share


@bp.post("/jobs/<job_id>/shares")
def create(job_id: str):
    """Make a share link for a finished job of this session."""
    job = owned_job(job_id)
    if not job.terminal:
        abort(409, description="A job can be shared once it has finished.")
    now = service().store.now()
    share = {
        "id": secrets.token_urlsafe(8),
        "created_at": now,
        "expires_at": now + SHARE_DAYS * 86400,
        "inputs": request.form.get("inputs") == "y",
    }
    service().store.update(job.id, {"shares": [*job.shares, share]})
    flash(f"Anyone with this link can see the result until it expires or you revoke it: {share_url(job, share)}")
    return redirect(url_for("jobs.show", job_id=job.id), 303)


@bp.post("/jobs/<job_id>/shares/<share_id>/revoke")
def revoke(job_id: str, share_id: str):
    """End a share link of this session's job at once."""
    job = owned_job(job_id)
    service().store.update(job.id, {"shares": [s for s in job.shares if s["id"] != share_id]})
    flash("The share link was revoked; it no longer works.")
    return redirect(url_for("jobs.show", job_id=job.id), 303)


@bp.get("/shared/<token>")
def shared(token: str):
    """Show a shared job's result, read-only."""
    job, share = shared_job(token)
    kind = KINDS.get(job.kind)

    def share_url_for(endpoint: str, **values) -> str:
        # The result partials link their downloads with url_for("jobs.download"), which is owner-only;
        # on this page those links go through the share instead.
        if endpoint == "jobs.download":
            return url_for("shares.download", token=token, fmt=values["fmt"])
        return url_for(endpoint, **values)

    context = {"job": job, "kind": kind, "share": share, "title": state_title(job, kind, None, False)}
    return render_template("pages/shared.html", **context, url_for=share_url_for), 200, {"Cache-Control": "no-store"}


@bp.get("/shared/<token>/download.<fmt>")
def download(token: str, fmt: str):
    """Send a shared job's result as a file."""
    job, _ = shared_job(token)
    kind = KINDS.get(job.kind)
    if job.state != SUCCEEDED or kind is None or fmt not in kind.download_formats(job):
        abort(404, description=f"This result cannot be downloaded as .{fmt}.")
    file = kind.make_download(job, fmt)
    return send_file(io.BytesIO(file.content), mimetype=file.mimetype, as_attachment=True, download_name=file.filename)
