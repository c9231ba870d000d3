"""Security desk console: a Flask app factory with blueprints (see docs/console.md).

    auth      login, logout, roles, the login rate limit
    live      the live feed page
    stream    the server-sent events every page listens to
    alarms    the alarm queue: acknowledge, assign, resolve
    doors     the doors board, remote unlock, lockdown
    people    people, credentials, access levels
    events    the event log: search, detail
    auditing  chain status, checkpoints, verification
    users     console users (admin)
    wall      the wall display: a read-only kiosk page with its own revocable link
    visitors  visits, the desk's check-in and the visitor's badge, escorts
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import Engine, func, select
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from badge_bridge.config import SiteConfig
from badge_bridge.events import from_us
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm
from web.params import CONVERTERS, refuse_control_characters
from web.services import Services

csrf = CSRFProtect()

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")


def create_app(config: SiteConfig, engine: Engine, keys: KeyStore, *, mqtt_link: bool = True,
               overrides: dict[str, Any] | None = None) -> Flask:
    """``mqtt_link`` False: no broker connection (route tests); the live pages then stay empty."""
    from web import alarms, auditing, auth, doors, events, evidence, live, muster, people, plans, stream, users, wall
    from web import tenant as tenant_view  # customer cages

    app = Flask(__name__)
    console = config.console
    secure = console.secure_cookies if console.secure_cookies is not None else bool(console.tls_cert)
    app.config.update(
        SECRET_KEY=keys.console_secret(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_NAME="bb_session",
        # the cookie lasts as long as a session can; the server decides idle, ended and expired (web.auth)
        PERMANENT_SESSION_LIFETIME=timedelta(hours=console.session_max_hours),
        SESSION_REFRESH_EACH_REQUEST=False,
        REMEMBER_COOKIE_DURATION=timedelta(seconds=0),
        WTF_CSRF_TIME_LIMIT=None,  # the session's own lifetime bounds the token
        MAX_CONTENT_LENGTH=8 * 1024 * 1024,
    )
    app.config.update(overrides or {})
    app.extensions["badge_bridge"] = Services(config, engine, keys, mqtt_link=mqtt_link)
    app.url_map.converters.update(CONVERTERS)
    app.before_request(refuse_control_characters)  # first: a NUL never reaches the CSRF check or a login attempt
    csrf.init_app(app)
    auth.init_app(app)
    app.jinja_env.globals["from_us"] = from_us

    @app.context_processor
    def alarm_count() -> dict[str, object]:
        from flask_login import current_user

        if not (current_user.is_authenticated and current_user.can("guard")):
            return {"open_alarm_count": 0}
        with current_services(app).session() as s:
            return {"open_alarm_count": s.scalar(select(func.count()).select_from(Alarm).where(Alarm.state == "open"))}
    for module in (auth, live, stream, alarms, doors, people, events, evidence, auditing, users, plans, muster, wall, tenant_view):
        app.register_blueprint(module.bp)
    from web import requests as access_requests  # access requests (docs/workflows.md)
    app.register_blueprint(access_requests.bp)
    from web import visitors

    app.register_blueprint(visitors.bp)

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if response.mimetype == "text/html":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(CSRFError)
    def csrf_refused(error: CSRFError):
        return render_template("error.html", title="Form refused",
                               message=f"{error.description} Reload the page and try again."), 400

    @app.errorhandler(403)
    def forbidden(_error: Exception):
        return render_template("error.html", title="Not allowed",
                               message="Your role does not allow this page or action."), 403

    @app.errorhandler(400)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def refused(error: HTTPException):
        """The console's own page; a 400 says why (our reasons name the parameter, never echo the value)."""
        title, message = ERRORS[error.code or 400]
        headers = {"Allow": ", ".join(sorted(error.valid_methods or ()))} if isinstance(error, MethodNotAllowed) else {}
        return render_template("error.html", title=title, message=error.description if error.code == 400 else message), \
            error.code, headers

    @app.errorhandler(500)
    def failed(_error: Exception):
        """Plain, without the template: whatever failed (the database, say) may fail again in the layout.
        No detail: the exception is in the log, with the time."""
        return SERVER_ERROR, 500, {"Content-Type": "text/html; charset=utf-8"}

    return app


ERRORS = {
    400: ("Request refused", ""),
    404: ("Not found", "There is nothing here."),
    405: ("Not allowed here", "This address does not take that kind of request."),
    413: ("Too large", "What was sent is larger than the console accepts."),
}
SERVER_ERROR = ("<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Error · badge-bridge</title>"
                "<h1>Something went wrong</h1><p>The console could not answer this request. The error is logged; "
                "try again, and if it persists tell the administrator the time it happened.</p></html>")


def current_services(app: Flask | None = None) -> Services:
    """The Services of ``app``, by default of the app serving the request."""
    from flask import current_app

    return (app or current_app).extensions["badge_bridge"]
