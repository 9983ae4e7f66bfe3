"""The admin pages: every owner's jobs, their tracebacks, cancel or purge for any job, and the same in bulk.

They exist only when ``ADMIN_TOKEN`` is set; otherwise every /admin URL answers 404.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for

from .listing import ListQuery, job_listing, matching_jobs
from .service import BULK_ACTIONS, service

bp = Blueprint("admin", __name__, url_prefix="/admin")


def token_mark() -> str | None:
    """What the session keeps once the token was given: bound to the token, so changing it logs admins out."""
    token = current_app.config.get("ADMIN_TOKEN")
    if not token:
        return None
    return hmac.new(current_app.secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


@bp.before_request
def require_admin():
    mark = token_mark()
    if mark is None:
        # Without a token there are no admin pages at all, not even a login form.
        abort(404)
    if request.endpoint != "admin.login" and not hmac.compare_digest(session.get("admin", ""), mark):
        return redirect(url_for("admin.login", next=request.path if request.method == "GET" else None), 303)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Ask for the admin token, and remember it in the session when it matches."""
    error = None
    if request.method == "POST":
        given = request.form.get("token", "")
        if hmac.compare_digest(given.encode(), current_app.config["ADMIN_TOKEN"].encode()):
            session["admin"] = token_mark()
            target = request.args.get("next", "")
            # Only a path on this site, never another host.
            return redirect(target if target.startswith("/admin") else url_for("admin.index"), 303)
        error = "That is not the admin token."
    status = 403 if error else 200
    return render_template("pages/admin_login.html", error=error), status


@bp.post("/logout")
def logout():
    """Forget the admin token in this session."""
    session.pop("admin", None)
    return redirect(url_for("pages.catalogue"), 303)


@bp.get("")
def index():
    """List every owner's jobs, newest first, with counts by state, the queue and the workers."""
    store = service().store
    return render_template(
        "pages/admin.html",
        **job_listing(store, ListQuery.from_args(request.args), owner=None, everyone=True),
        counts=store.counts(),
        queue_length=queue_length(),
        workers=store.live_workers(),
    )


def queue_length() -> int | None:
    """Tasks waiting in Huey's queue, or None if the queue cannot be read just now."""
    try:
        return service().queue.pending_count()
    except Exception:
        # The page is for finding out what is wrong, so it still renders without this number.
        current_app.logger.exception("could not read the queue length")
        return None


@bp.get("/jobs/<job_id>")
def show(job_id: str):
    """Show any job with everything stored about it, the traceback included."""
    return render_template("pages/admin_job.html", job=service().store.get(job_id))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    """Cancel any job, or ask it to stop."""
    flash(service().cancel(service().store.get(job_id)))
    return redirect(url_for("admin.show", job_id=job_id), 303)


@bp.post("/jobs/<job_id>/purge")
def purge(job_id: str):
    """Delete any job and its upload now; its id then answers 410."""
    service().store.get(job_id)
    service().store.purge(job_id)
    flash(f"Job {job_id[:8]} was purged.")
    return redirect(url_for("admin.index"), 303)


@bp.route("/bulk/<action>", methods=["GET", "POST"])
def bulk(action: str):
    """Cancel, retry or purge every job matching the list's filter: first a confirmation with the count, then do it."""
    if action not in BULK_ACTIONS:
        abort(404)
    query = ListQuery.from_args(request.values)
    jobs = matching_jobs(service().store, query.state, query.kind, query.q)
    if request.method == "GET":
        return render_template(
            "pages/admin_bulk.html", action=action, verb=BULK_ACTIONS[action], query=query, jobs=jobs
        )
    done = service().act_on_all(action, jobs)
    flash(f"{action.capitalize()}: acted on {done} of the {len(jobs)} matching jobs.")
    return redirect(url_for("admin.index", state=query.state, kind=query.kind, q=query.q), 303)
