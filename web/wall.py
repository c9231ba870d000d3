"""The wall display: a read-only kiosk page (alarm panel, site plan, live feed) for a screen on the wall.

A wall is a console user of role wall (badge_bridge.people.add_wall) that never logs in with a password. An
administrator's one-time link (``/wall/connect#<token>``: the token rides in the fragment, so no server log
holds it) is exchanged once, on the screen, for the screen's own long-lived session cookie; the link's
session ends as it is used (badge_bridge.console_sessions.exchange_wall_link). The screen's session has no
idle end; revoking the wall ends it, the open stream closes at its next session check, and the reloaded
page says the wall was revoked. A wall reaches nothing but this page, its stream and the static files
(``confine_walls``), whatever decorator another route has.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask.wrappers import Request
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from itsdangerous import BadSignature
from sqlalchemy.orm import Session
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from badge_bridge import console_sessions
from badge_bridge.event_kinds import EventKind
from badge_bridge.models import AuditEntry
from web import current_services
from web.auth import ENDED, TOKEN_KEY, User, limiter
from web.changes import read
from web.events import areas_of, search
from web.present import Shown, entries

bp = Blueprint("wall", __name__, url_prefix="/wall")

WALL_ENDPOINTS = frozenset({"wall.show", "wall.connect", "wall.exchange", "stream.stream", "static", "plans.drawing",
                            "alarms.panel"})
"""All a wall may reach: its page, the page's stream, static files, the plan's drawing and the alarm panel
(read-only); every other route answers 403."""
WALL_KEY = "wall"
"""Set in a wall screen's session: its cookie lives as long as the wall's session (WallCookies)."""
LINK_FAILURES = 10
"""Wrong wall links per address per login window before the address is refused (429): a token of 256
random bits is not guessed, but nobody gets to try."""
FEED_ROWS = 40


class WallCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, except that a wall screen's lasts as long as its session on the server
    (console_sessions.WALL_LIFETIME) rather than an operator's ``session_max_hours``."""

    def get_expiration_time(self, app: Flask, session: Any) -> datetime | None:
        if session.get(WALL_KEY) and session.permanent:
            return datetime.now().astimezone() + console_sessions.WALL_LIFETIME
        return super().get_expiration_time(app, session)

    def open_session(self, app: Flask, request: Request) -> Any:
        signer = self.get_signing_serializer(app)
        value = request.cookies.get(self.get_cookie_name(app))
        if signer is None or not value:
            return super().open_session(app, request)
        try:
            data, signed = signer.loads(value, max_age=int(console_sessions.WALL_LIFETIME.total_seconds()),
                                        return_timestamp=True)
        except BadSignature:
            return self.session_class()
        if not data.get(WALL_KEY) and time.time() - signed.timestamp() > app.permanent_session_lifetime.total_seconds():
            return self.session_class()
        return self.session_class(data)


@bp.record_once
def _install(state: Any) -> None:
    state.app.session_interface = WallCookies()


@bp.before_app_request
def confine_walls() -> None:
    """A wall's session serves the wall page and nothing else, however the other route is guarded."""
    if request.endpoint not in WALL_ENDPOINTS and current_user.is_authenticated and current_user.role == "wall":
        abort(403)


class ConnectForm(FlaskForm):
    token = StringField("Wall link", validators=[DataRequired(), Length(max=128)])


@bp.route("")
def show() -> Any:
    """The wall; without a wall session, a page that says why the screen shows nothing (never a login form:
    nobody types a password on a wall)."""
    if not current_user.is_authenticated:
        reason = g.get("session_end_reason")
        return render_template("wall_ended.html", reason=reason, why=ENDED.get(reason or "")), 401
    if current_user.role != "wall":
        abort(403)
    svc = current_services()

    def load(s: Session) -> list[tuple[AuditEntry, Shown]]:
        rows, _ = search(s, {}, areas_of(svc.config), door_only=True, limit=FEED_ROWS)
        return list(zip(rows, entries(s, svc.presenter, rows), strict=True))

    return render_template("wall.html", events=read(load), site_name=svc.config.site.name, zone=svc.presenter.zone)


@bp.route("/connect")
def connect() -> Any:
    """The page the one-time link opens: static/wall-connect.js posts the fragment's token once and drops it
    from the address bar; without script, the token can be typed."""
    return render_template("wall_connect.html", form=ConnectForm())


def _link_limit() -> str:
    return f"{LINK_FAILURES} per {current_services().config.console.login_window_minutes} minutes"


@bp.route("/connect", methods=["POST"])
@limiter.limit(_link_limit, deduct_when=lambda _response: bool(g.get("wall_refused")),
               error_message="Too many wrong wall links from this address.")
def exchange() -> Any:
    """The link's token for this screen's session cookie, once."""
    svc = current_services()
    form = ConnectForm()
    if not form.validate_on_submit():
        return render_template("wall_connect.html", form=form), 400
    address = request.remote_addr or ""
    with svc.session() as s, s.begin():
        now = svc.clock()
        wall, token, refused = console_sessions.exchange_wall_link(
            s, form.token.data or "", now=now, address=address, user_agent=request.user_agent.string)
        user = User(wall) if wall is not None else None
        old = session.get(TOKEN_KEY)
        if refused is None and isinstance(old, str):  # this browser's session before: it ends, as on a login
            console_sessions.end(s, console_sessions.digest(old), "replaced", now)
    if refused is not None or user is None:
        g.wall_refused = True
        svc.audit.record(EventKind.CONSOLE_WALL_REFUSED, user.username if user else "(no wall)",
                         detail={"reason": refused, "address": address})
        flash("This wall link does not work: it is wrong, was used already, has expired or was revoked. "
              "Ask an administrator for a new one.", "error")
        return render_template("wall_connect.html", form=ConnectForm(formdata=None))
    session.clear()
    session.permanent = True
    session[TOKEN_KEY] = token
    session[WALL_KEY] = True
    login_user(user)
    svc.audit.record(EventKind.CONSOLE_WALL_CONNECTED, user.username, detail={"address": address})
    return redirect(url_for("wall.show"))

