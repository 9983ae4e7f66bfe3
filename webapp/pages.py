"""The catalogue of job kinds, the API's description, and front-end packages served from our own origin."""

from flask import Blueprint, Response, abort, render_template, send_from_directory

from .config import PROJECT_ROOT
from .kinds import KINDS

bp = Blueprint("pages", __name__)

#: Front-end files installed from the npm registry by the setup command.
ASSETS = {"htmx.min.js": PROJECT_ROOT / "node_modules" / "htmx.org" / "dist"}

#: The OpenAPI 3.1 document of the JSON API, kept in the repository beside the other docs.
OPENAPI = PROJECT_ROOT / "docs" / "openapi.json"


@bp.get("/")
def catalogue():
    """Show the kinds of job, each linking to its form."""
    return render_template("pages/catalogue.html", kinds=KINDS.values())


@bp.get("/openapi.json")
def openapi():
    """Serve the OpenAPI document of the JSON API, as the repository keeps it."""
    return Response(OPENAPI.read_bytes(), mimetype="application/json")


@bp.get("/assets/<name>")
def asset(name: str):
    """Serve an installed front-end package file, cached for a day."""
    if name not in ASSETS:
        abort(404)
    return send_from_directory(ASSETS[name], name, max_age=86400)
