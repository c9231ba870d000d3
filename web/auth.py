"""Login, logout and roles, with sessions kept on the server (badge_bridge.console_sessions).

Passwords are argon2id (badge_bridge.people.hasher). The session cookie carries a random token; a request is
served only while its console_session row is open, not idle, not past its absolute end, and the user is still
active, so logout, a password change or reset, disabling a user and changing a role end every copy of the
cookie at once. Failed logins (never successes) are limited per user name (tight) and per address
(generous: a desk shares one address); a failed login names the user only when the account exists.

Roles nest: admin can do what a supervisor can, a supervisor what a guard can. The auditor stands apart:
read-only access to the event log and the audit pages.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, Flask, abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask.wrappers import Response
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_login.utils import login_url
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.middleware.proxy_fix import ProxyFix
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from badge_bridge import console_sessions, roles
from badge_bridge.event_kinds import EventKind
from badge_bridge.models import ConsoleUser
from badge_bridge.people import hasher
from web.params import same_site_path

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
limiter = Limiter(get_remote_address, storage_uri="memory://", default_limits=[])

DUMMY_HASH = hasher.hash("not a password of anyone's")
"""Verified against when the user does not exist, so a wrong user name takes as long as a wrong password."""
TOKEN_KEY = "sid"
"""The session cookie's key for the session token."""
UNKNOWN_USER = "(unknown user)"
"""The audited name for a failed login with a name no account has: what was typed may be a password."""
ENDED = {
    "logout": "it was logged out",
    "logout_everywhere": "you logged out everywhere",
    "replaced": "a new login replaced it",
    "password_changed": "the password was changed",
    "user_disabled": "the user was disabled",
    "role_changed": "the role was changed",
    "idle": "it was idle too long",
    "expired": "it reached its time limit",
    "revoked": "an administrator revoked this wall display",
    "exchanged": "its one-time link was used",
}
"""Why a session ended, as the login page says it."""
class User(UserMixin):
    def __init__(self, row: ConsoleUser) -> None:
        self.id = str(row.id)
        self.username = row.username
        self.role = row.role
        self.tenant_id: int | None = row.tenant_id
        """For a tenant admin, the one customer whose data exists for them (web.tenant)."""

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
    proxies = app.extensions["badge_bridge"].config.console.trusted_proxies
    if proxies:  # only then is X-Forwarded-For the client's address; otherwise the header changes nothing
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)  # type: ignore[method-assign]
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "strong"
    limiter.init_app(app)

    @login_manager.user_loader
    def load(user_id: str) -> User | None:
        """The user of a request whose session is still open on the server; None logs the request out."""

        token = session.get(TOKEN_KEY)
        if not isinstance(token, str) or not user_id.isdigit():
            _refused(None)
            return None
        verdict = check_session(console_sessions.digest(token), int(user_id))
        if verdict.user is None or verdict.ended is not None:
            _refused(verdict.ended)
            return None
        return User(verdict.user)

    @login_manager.unauthorized_handler
    def unauthorized() -> Any:
        flash(g.pop("session_ended", "Please log in."), "info")
        return redirect(login_url(url_for("auth.login"), request.url))

    @app.errorhandler(RateLimitExceeded)
    def too_many(error: RateLimitExceeded) -> Any:
        limit = limiter.current_limit
        wait = max(1, int(limit.reset_at - time.time())) if limit is not None else 60
        return render_template("error.html", title="Too many login attempts",
                               message=f"{error.description} Try again in {_minutes(wait)}."), 429, {
            "Retry-After": str(wait)}

    @app.context_processor
    def inject() -> dict[str, object]:
        return {"me": current_user}


def _refused(reason: str | None) -> None:
    """Log the request out, saying why on the login page when the session was ended."""
    session.clear()
    g.session_end_reason = reason
    if reason in ENDED:
        g.session_ended = f"Your session has ended: {ENDED[reason]}. Please log in again."


def _minutes(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{(seconds + 59) // 60} minutes"


def check_session(ref: str, user_id: int) -> console_sessions.Verdict:
    """The server's verdict on the session ``ref`` of ``user_id`` (for a page request and for an open live
    stream alike); a session found lapsed just now is ended for good and that is audited."""
    from web import current_services

    svc = current_services()
    with svc.session() as s, s.begin():
        verdict = console_sessions.check(s, ref, user_id, now=svc.clock(),
                                         idle=timedelta(minutes=svc.config.console.session_minutes))
    if verdict.lapsed_now:
        svc.audit.record(EventKind.CONSOLE_SESSION_ENDED, verdict.user.username if verdict.user else "",
                         detail={"reason": verdict.ended})
    return verdict


def current_session_ref() -> str:
    """The hex SHA-256 of this request's session token, as stored in ``ConsoleSession.token_sha256``: a
    signed console command names its session with it, and the bridge checks that row is still live."""
    token = session.get(TOKEN_KEY)
    if not isinstance(token, str) or not current_user.is_authenticated:
        raise LookupError("no logged-in console session in this request")
    return console_sessions.digest(token)


class LoginForm(FlaskForm):
    username = StringField("User", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


def typed_name() -> str:
    """The user name as typed, normalized as names are stored (lower case, no surrounding space)."""
    return request.form.get("username", "").strip().lower()[:64]


def account_key() -> str:
    """The per-account limit's key: a keyed hash of the typed name, so the limiter's storage and its log
    lines never hold what was typed (it may be a password)."""
    secret = current_app.secret_key
    key = secret if isinstance(secret, bytes) else str(secret).encode()
    return "account:" + hmac.new(key, typed_name().encode(), hashlib.sha256).hexdigest()[:32]


def _failed(_response: Response) -> bool:
    """Deduct from the login limits only for a refused name or password, never for a login that worked."""
    return bool(g.get("login_failed"))


def _limit(setting: str) -> Callable[[], str]:
    def value() -> str:
        from web import current_services

        console = current_services().config.console
        return f"{getattr(console, setting)} per {console.login_window_minutes} minutes"

    return value


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_limit("login_failures_per_address"), methods=["POST"], deduct_when=_failed,
               error_message="Too many failed logins from this address.")
@limiter.limit(_limit("login_failures_per_account"), methods=["POST"], deduct_when=_failed, key_func=account_key,
               error_message="Too many failed logins for this user name.")
def login() -> Any:
    from web import current_services

    form = LoginForm()
    if form.validate_on_submit():
        svc = current_services()
        console = svc.config.console
        name = typed_name()
        with svc.session() as s, s.begin():
            row = s.scalar(select(ConsoleUser).where(ConsoleUser.username == name))
            # a wall display never logs in with a password (web.wall): checked as long as any wrong password
            usable = row is not None and row.active and row.role != "wall"
            granted = _check(row.password_hash if row and usable else DUMMY_HASH, form.password.data or "")
            granted = granted and usable
            if granted and row is not None:
                now = svc.clock()
                row.last_login_at = now
                user = User(row)
                old = session.get(TOKEN_KEY)
                if isinstance(old, str):  # a login on top of another: that one ends, its cookie with it
                    console_sessions.end(s, console_sessions.digest(old), "replaced", now)
                token = console_sessions.start(s, row.id, now=now, lifetime=timedelta(hours=console.session_max_hours),
                                               address=request.remote_addr or "",
                                               user_agent=request.user_agent.string)
            known = row.username if row is not None else None
        if granted:
            session.clear()  # nothing from before the login carries over: a new token, a new CSRF token
            session.permanent = True
            session[TOKEN_KEY] = token
            login_user(user)
            svc.audit.record(EventKind.CONSOLE_LOGIN, user.username, detail={"address": request.remote_addr})
            home = url_for({"auditor": "events.index", "tenant_admin": "tenant.index"}.get(user.role, "live.feed"))
            asked = same_site_path(request.args.get("next", ""))
            # "/" is everyone's way in (the login page is reached from it): it means this role's home
            return redirect(home if asked in (None, url_for("live.feed")) else asked)
        g.login_failed = True
        svc.audit.record(EventKind.CONSOLE_LOGIN_FAILED, known or UNKNOWN_USER,
                         detail={"address": request.remote_addr})
        flash("Wrong user name or password.", "error")
    return render_template("login.html", form=form)


def _check(stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


class LogoutForm(FlaskForm):
    pass


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Any:
    """Ends this session; with ``everywhere`` set, every session of the user (another desk, a lost laptop)."""
    from web import current_services

    svc = current_services()
    everywhere = request.form.get("everywhere") == "1"
    with svc.session() as s, s.begin():
        if everywhere:
            ended = console_sessions.end_all(s, int(current_user.id), "logout_everywhere", svc.clock())
        else:
            ended = console_sessions.end(s, current_session_ref(), "logout", svc.clock())
    svc.audit.record(EventKind.CONSOLE_LOGOUT, current_user.username,
                     detail={"everywhere": everywhere, "sessions_ended": ended})
    logout_user()
    session.clear()
    flash("Logged out everywhere." if everywhere else "Logged out.", "info")
    return redirect(url_for("auth.login"))
