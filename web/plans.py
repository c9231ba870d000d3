"""The site on one screen: floor plans with live door icons, and the lockdown banner on every page.

A plan's drawing (``[[plans]]`` in the site file) is checked once when the console starts
(``PlanConfig.drawing``); a plan whose drawing is refused is shown as the reason, not as a picture, and the
console still starts: the desk needs its alarms more than a picture. The drawing is served as an image
only (``<image>`` in the page's own SVG, never inlined), under a CSP of its own that allows no script
even when someone opens its address directly. The door icons are the console's own markup over it, placed
in percent of the drawing, so they keep a legible size at any width; static/plan.js keeps them live from
the bridge's door states (``bb:door``) and shows or hides the lockdown banner.

The banner is drawn from the database at render (``site_state``: ``lockdown`` and ``lockdown/door/<door>``,
ingest.persist; a row that cannot be read counts as a lockdown, as the bridge reads it) and then follows
the door states live.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask.blueprints import BlueprintSetupState
from flask_login import current_user
from sqlalchemy import or_, select

from badge_bridge.config import SiteConfig
from badge_bridge.floor_plan import DrawingError, ViewBox
from badge_bridge.ingest.persist import LOCKDOWN, LOCKDOWN_DOOR
from badge_bridge.models import Controller, SiteState
from web import current_services
from web.auth import any_role
from web.changes import read

log = logging.getLogger(__name__)
bp = Blueprint("plans", __name__, url_prefix="/plans")
EXTENSION = "badge_bridge.plans"
DRAWING_CSP = ("default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; connect-src 'none'; "
               "frame-ancestors 'none'; form-action 'none'; base-uri 'none'; object-src 'none'; sandbox")
"""For the drawing itself, opened as an image or directly: no script at all (``sandbox`` and ``script-src
'none'``), no inline style, pictures only from itself (embedded) or the console."""
LABELS = {"offline": "OFFLINE", "forced": "FORCED", "held-open": "HELD OPEN", "lockdown": "LOCKDOWN",
          "open": "OPEN", "unlocked": "UNLOCKED", "locked": "LOCKED", "unknown": "NO STATE"}
"""Each icon state and the word shown under the door's name (never colour alone); plan.js has the same."""


@dataclass(frozen=True)
class Drawing:
    data: bytes
    box: ViewBox
    etag: str


@dataclass(frozen=True)
class Icon:
    door: str
    name: str
    left: float
    top: float
    """Percent of the drawing's width and height."""
    state: str


@dataclass(frozen=True)
class PlanView:
    key: str
    name: str
    area: str
    error: str
    """Why the drawing cannot be shown ("" when it can)."""
    icons: list[Icon]


@bp.record_once
def _load(state: BlueprintSetupState) -> None:
    """Check every drawing once, and give the drawing its own CSP (this hook is registered before the
    app's security headers, so it runs after them: Flask calls after-request hooks in reverse)."""
    app = state.app
    config: SiteConfig = app.extensions["badge_bridge"].config
    drawings: dict[str, Drawing | str] = {}
    for i, plan in enumerate(config.plans):
        try:
            data, box = plan.drawing(f"plans[{i}]", config.base_dir)
            drawings[plan.key] = Drawing(data, box, hashlib.sha256(data).hexdigest()[:32])
        except DrawingError as exc:
            log.error("console: floor plan %r is not shown: %s", plan.key, exc)
            drawings[plan.key] = str(exc)
    app.extensions[EXTENSION] = drawings
    app.after_request(_drawing_policy)
    app.add_template_global(site_plans)
    app.add_template_global(lockdown_now)
    app.jinja_env.globals["door_labels"] = LABELS


def _drawing_policy(response: Response) -> Response:
    if request.endpoint == "plans.drawing" and response.mimetype == "image/svg+xml":
        response.headers["Content-Security-Policy"] = DRAWING_CSP
    return response


def _drawings() -> dict[str, Drawing | str]:
    return current_app.extensions[EXTENSION]


# --- door icons ----------------------------------------------------------------------------------------


def icon_state(state: dict[str, Any] | None, offline: bool) -> str:
    """One word for a door's icon, most urgent first (as the doors board orders them)."""
    if state is None:
        return "offline" if offline else "unknown"
    if not state["online"]:
        return "offline"
    for alarm, word in (("door.forced", "forced"), ("door.held_open", "held-open")):
        if alarm in state["alarms"]:
            return word
    if state["lock"] == "lockdown":
        return "lockdown"
    if state["contact"] == "open":
        return "open"
    return "unlocked" if state["lock"] == "unlocked" else "locked"


def _door_states(config: SiteConfig) -> dict[str, str]:
    """Door -> icon state: the bridge's latest door state; without one, offline if a controller of the door
    is marked offline in the database."""
    states = {key: json.loads(raw) for key, raw in list(current_services().hub.doors.items())}
    online: dict[str, bool] = read(lambda s: {k: v for k, v in s.execute(select(Controller.key, Controller.online))})
    controllers: dict[str, set[str]] = {}
    for r in config.readers:
        controllers.setdefault(r.door, set()).add(r.controller)
    return {d.key: icon_state(states.get(d.key), any(not online.get(c) for c in controllers.get(d.key, ())))
            for d in config.doors}


def _views(keys: list[str] | None = None) -> list[PlanView]:
    config = current_services().config
    drawings = _drawings()
    states = _door_states(config)
    names = {d.key: d.name or d.key for d in config.doors}
    areas = {a.key: a.name or a.key for a in config.areas}
    out = []
    for plan in config.plans:
        if keys is not None and plan.key not in keys:
            continue
        drawing = drawings[plan.key]
        icons = []
        if isinstance(drawing, Drawing):
            box = drawing.box
            icons = [Icon(door, names[door], round((x - box.x) / box.width * 100, 3),
                          round((y - box.y) / box.height * 100, 3), states.get(door, "unknown"))
                     for door, (x, y) in plan.doors.items()]
        out.append(PlanView(plan.key, plan.name or plan.key, areas.get(plan.area or "", ""),
                            drawing if isinstance(drawing, str) else "", icons))
    return out


def site_plans() -> list[PlanView]:
    """The plans for the live page (template global; the live page's view need not know about plans)."""
    if not (current_user.is_authenticated and (current_user.can("guard") or current_user.can("wall"))):
        return []
    return _views()


# --- the lockdown banner -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockdownNow:
    site: bool
    doors: dict[str, str]
    """Locked-down door -> since (ISO 8601), for plan.js."""
    names: dict[str, str]
    """Every door -> its name, for plan.js."""
    text: str
    timezone: str

    @property
    def active(self) -> bool:
        return self.site or bool(self.doors)


def lockdown_now() -> LockdownNow:
    """What is locked down now, from the database (template global: every page's banner). A row whose
    value cannot be read counts: the bridge reads it as locked down too."""
    config = current_services().config
    query = select(SiteState.key, SiteState.updated_at).where(
        or_(SiteState.key == LOCKDOWN, SiteState.key.startswith(LOCKDOWN_DOOR)))
    rows: list[tuple[str, datetime]] = read(lambda s: [(key, at) for key, at in s.execute(query)])
    names = {d.key: d.name or d.key for d in config.doors}
    site = any(key == LOCKDOWN for key, _ in rows)
    doors = {key.removeprefix(LOCKDOWN_DOOR): at for key, at in rows if key != LOCKDOWN}
    doors = {door: at for door, at in doors.items() if door in names}  # the bridge ignores a door it does not know
    since = [at for key, at in rows if key == LOCKDOWN or key.removeprefix(LOCKDOWN_DOOR) in doors]
    text = lockdown_text(site, [names[d] for d in doors], min(since) if since else None, config)
    return LockdownNow(site, {d: at.isoformat() for d, at in doors.items()}, names, text, config.site.timezone)


def lockdown_text(site: bool, doors: list[str], since: datetime | None, config: SiteConfig) -> str:
    """The banner's sentence (plan.js builds the same one live)."""
    what = "The whole site is locked down" if site else f"Locked down: {', '.join(sorted(doors))}"
    return f"{what}, since {site_time(since, config)}" if since else what


def site_time(at: datetime, config: SiteConfig) -> str:
    """Site local time with its zone, the day too: a lockdown or an entry may be days old."""
    return at.astimezone(config.site_tz()).strftime("%a %d %b %H:%M:%S %Z")


# --- pages ---------------------------------------------------------------------------------------------


@bp.route("")
@any_role("guard", "wall")
def index() -> Any:
    return render_template("plans.html", plans=_views(), single=False)


@bp.route("/<key>")
@any_role("guard", "wall")
def show(key: str) -> Any:
    if key not in _drawings():
        abort(404)
    return render_template("plans.html", plans=_views([key]), single=True)


@bp.route("/<key>/drawing.svg")
@any_role("guard", "wall")
def drawing(key: str) -> Any:
    """The checked drawing, as read at start (a file changed since is not served until the next start)."""
    found = _drawings().get(key)
    if not isinstance(found, Drawing):
        abort(404)
    response = Response(found.data, mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "private, no-cache"
    response.set_etag(found.etag)
    return response.make_conditional(request)
