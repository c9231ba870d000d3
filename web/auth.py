"""Login, logout and roles. Passwords are argon2id (badge_bridge.people.hasher); a failed login is
rate-limited per address and audited; sessions end after ``console.session_minutes`` idle.

Roles nest: admin can do what a supervisor can, a supervisor what a guard can. The auditor stands apart:
read-only access to the event log and the audit pages.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from badge_bridge import roles
from badge_bridge.event_kinds import EventKind
from badge_bridge.models import ConsoleUser
from badge_bridge.people import hasher

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
limiter = Limiter(get_remote_address, storage_uri="memory://", default_limits=[])

DUMMY_HASH = hasher.hash("not a password of anyone's")
"""Verified against when the user does not exist, so a wrong user name takes as long as a wrong password."""


class User(UserMixin):
    def __init__(self, row: ConsoleUser) -> None:
        self.id = str(row.id)
        self.username = row.username
        self.role = row.role

    def can(self, need: str) -> bool:
        """``need``: a role name (badge_bridge.roles)."""
        return roles.can(self.role, need)


def role_required(need: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        @login_required
        def inner(*args: Any, **kwargs: Any) -> Any:
            if not current_user.can(need):
                abort(403)
            return view(*args, **kwargs)

        return inner

    return wrap


def any_role(*needs: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        @login_required
        def inner(*args: Any, **kwargs: Any) -> Any:
            if not any(current_user.can(n) for n in needs):
                abort(403)
            return view(*args, **kwargs)

        return inner

    return wrap


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in."
    login_manager.session_protection = "strong"
    limiter.init_app(app)

    @login_manager.user_loader
    def load(user_id: str) -> User | None:
        from web import current_services

        with current_services().session() as s:
            row = s.get(ConsoleUser, int(user_id)) if user_id.isdigit() else None
            return User(row) if row is not None and row.active else None

    @app.context_processor
    def inject() -> dict[str, object]:
        return {"me": current_user}


def current_session_ref() -> str:
    """The operator's console session as a signed door command names it: the hex SHA-256 of the session's
    token (``console_session.token_sha256``), which the bridge looks up before it obeys."""
    return str(session.get("sid_sha256", ""))


class LoginForm(FlaskForm):
    username = StringField("User", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per 5 minutes", methods=["POST"], error_message="Too many login attempts: wait five minutes.")
def login() -> Any:
    from web import current_services

    form = LoginForm()
    if form.validate_on_submit():
        svc = current_services()
        with svc.session() as s, s.begin():
            row = s.scalar(select(ConsoleUser).where(ConsoleUser.username == form.username.data))
            ok = _check(row.password_hash if row and row.active else DUMMY_HASH, form.password.data or "")
            if ok and row is not None and row.active:
                row.last_login_at = datetime.now(UTC)
                user = User(row)
        name = form.username.data or ""
        if ok and row is not None and row.active:
            session.clear()
            session.permanent = True
            login_user(user)
            svc.audit.record(EventKind.CONSOLE_LOGIN, user.username, detail={"address": request.remote_addr})
            return redirect(_safe_next() or url_for("live.feed" if user.role != "auditor" else "events.index"))
        svc.audit.record(EventKind.CONSOLE_LOGIN_FAILED, name[:64] if name.isprintable() else "?",
                         detail={"address": request.remote_addr})
        flash("Wrong user name or password.", "error")
    return render_template("login.html", form=form)


def _check(stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _safe_next() -> str | None:
    """A path on this site, or None: a browser reads ``//host`` and ``/\\host`` as another host, and a control
    character such as a tab is dropped on the way (``/<tab>/host`` leaves as ``//host``)."""
    target = request.args.get("next", "")
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target and target.isprintable()
    return target if local else None


class LogoutForm(FlaskForm):
    pass


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Any:
    from web import current_services

    current_services().audit.record(EventKind.CONSOLE_LOGOUT, current_user.username)
    logout_user()
    session.clear()
    flash("Logged out.", "info")
    return redirect(url_for("auth.login"))
