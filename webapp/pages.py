"""The catalogue of job kinds, and front-end packages served from our own origin."""

from flask import Blueprint, abort, render_template, send_from_directory

from .config import PROJECT_ROOT
from .kinds import KINDS

bp = Blueprint("pages", __name__)

#: Front-end files installed from the npm registry by the setup command.
ASSETS = {"htmx.min.js": PROJECT_ROOT / "node_modules" / "htmx.org" / "dist"}


@bp.get("/")
def catalogue():
    """Show the kinds of job, each linking to its form."""
    return render_template("pages/catalogue.html", kinds=KINDS.values())


@bp.get("/assets/<name>")
def asset(name: str):
    """Serve an installed front-end package file, cached for a day."""
    if name not in ASSETS:
        abort(404)
    return send_from_directory(ASSETS[name], name, max_age=86400)
