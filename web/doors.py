"""The doors board (live from the bridge's retained door states) and the operator's door commands.

Unlock, lock and lockdown go to the bridge as ``ConsoleCommand`` messages signed with the console command
key and naming the user and their session; the bridge checks them, audits them with the user and the
reason and drives the controllers. A reason is always required. An unlock of a mantrap door while another
of its doors is open or unlocked is refused (here from the live door states, and by the bridge, which knows
grants in flight too) unless it is an emergency override, audited with its reason.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from pydantic import ValidationError
from sqlalchemy import select
from wtforms import BooleanField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from badge_bridge import roles
from badge_bridge.controllers.contract import ConsoleAction, ConsoleCommand
from badge_bridge.keys import KeyMaterialError
from badge_bridge.models import Controller
from web import current_services
from web.auth import current_session_ref, role_required
from web.changes import form_errors, read

bp = Blueprint("doors", __name__, url_prefix="/doors")


class UnlockForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired(message="A remote unlock needs a reason."),
                                               Length(min=3, max=500)])
    duration_s = IntegerField("Seconds (empty: until locked)", validators=[Optional(), NumberRange(1, 86_400)])
    override = BooleanField("Emergency override (the reason is audited)")
    """Shown for mantrap doors: unlock although another door of the mantrap is open or unlocked."""


class ReasonForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired(message="Give a reason."), Length(min=3, max=500)])


class LockdownForm(ReasonForm):
    scope = SelectField("Scope")


@bp.route("")
@role_required("guard")
def board() -> Any:
    svc = current_services()
    states = {key: json.loads(raw) for key, raw in list(svc.hub.doors.items())}
    online: dict[str, bool] = read(lambda s: {k: v for k, v in s.execute(select(Controller.key, Controller.online))})
    door_controllers: dict[str, list[str]] = {}
    for r in svc.config.readers:  # a door's readers often share a controller: list it once
        if r.controller not in door_controllers.setdefault(r.door, []):
            door_controllers[r.door].append(r.controller)
    # the bridge's door state decides, as it does when the page updates live; without one, the database
    offline_doors = {door for door, ctls in door_controllers.items()
                     if (not states[door]["online"] if door in states else any(not online.get(c) for c in ctls))}
    lockdown = LockdownForm()
    lockdown.scope.choices = _scopes()
    interlocked = {door for group in svc.config.interlocks for door in group.doors}
    return render_template("doors.html", doors=svc.config.doors, states=states, controllers=svc.config.controllers,
                           interlocked=interlocked,
                           online=online, door_controllers=door_controllers, offline_doors=offline_doors, unlock=UnlockForm(), lock=ReasonForm(), lockdown=lockdown,
                           connected=svc.link is not None and svc.link.connected.is_set())


def _scopes() -> list[SelectChoice]:
    return [SelectChoice("site", "the whole site")] + [SelectChoice(f"area:{a.key}", f"area {a.name or a.key}")
                                                          for a in current_services().config.areas]


def _send(type_: ConsoleAction, reason: str, **fields: Any) -> bool:
    svc = current_services()
    if svc.link is None:
        flash("This console has no connection to the bridge.", "error")
        return False
    try:
        cmd = ConsoleCommand(id=f"c-{uuid.uuid4().hex[:20]}", ts=datetime.now(UTC), type=type_,
                             user=current_user.username, session=current_session_ref(), reason=reason, **fields)
        svc.link.command(svc.sign(cmd))
    except (ValidationError, ConnectionError, KeyMaterialError) as exc:
        flash(f"Not sent: {exc}", "error")
        return False
    return True


def _door(key: str) -> str:
    if key not in {d.key for d in current_services().config.doors}:
        abort(404)
    return key


@bp.route("/<key>/unlock", methods=["POST"])
@role_required(roles.COMMAND_ROLE["unlock"])
def unlock(key: str) -> Any:
    form = UnlockForm()
    if not form.validate_on_submit():
        form_errors(form)
    elif (busy := _mantrap_busy(_door(key))) and not form.override.data:
        flash(f"Not sent: {key} is a mantrap door and {', '.join(busy)} of its mantrap is open or unlocked. "
              "Close and lock it first, or tick the emergency override (audited with your reason).", "error")
    elif _send("unlock", form.reason.data, door=key, duration_s=form.duration_s.data,
               override=True if form.override.data else None):
        how = f"for {form.duration_s.data} s" if form.duration_s.data else "until locked"
        flash(f"{'Emergency override unlock' if form.override.data else 'Unlock'} of {key} {how} sent to the bridge.",
              "info")
    return redirect(url_for("doors.board"))


def _mantrap_busy(door: str) -> list[str]:
    """The other doors of ``door``'s mantrap that the bridge last reported open or unlocked."""
    svc = current_services()
    group = svc.config.interlock_of(door)
    states = [(d, json.loads(raw)) for d in (group.doors if group else []) if d != door
              and (raw := svc.hub.doors.get(d)) is not None]
    return [d for d, state in states if state["contact"] == "open" or state["lock"] == "unlocked"]


@bp.route("/<key>/lock", methods=["POST"])
@role_required(roles.COMMAND_ROLE["lock"])
def lock(key: str) -> Any:
    form = ReasonForm()
    if not form.validate_on_submit():
        form_errors(form)
    elif _send("lock", form.reason.data, door=_door(key)):
        flash(f"Lock of {key} sent to the bridge.", "info")
    return redirect(url_for("doors.board"))


@bp.route("/lockdown", methods=["POST"])
@role_required(roles.COMMAND_ROLE["lockdown"])
def lockdown() -> Any:
    return _lockdown("lockdown")


@bp.route("/lockdown/lift", methods=["POST"])
@role_required(roles.COMMAND_ROLE["lift_lockdown"])
def lift() -> Any:
    return _lockdown("lift_lockdown")


def _lockdown(type_: ConsoleAction) -> Any:
    form = LockdownForm()
    form.scope.choices = _scopes()
    if not form.validate_on_submit():
        form_errors(form)
    else:
        area = form.scope.data.removeprefix("area:") if form.scope.data.startswith("area:") else None
        if _send(type_, form.reason.data, area=area):
            what = "Lockdown" if type_ == "lockdown" else "Lifting the lockdown"
            flash(f"{what} of {'area ' + area if area else 'the whole site'} sent to the bridge.", "info")
    return redirect(url_for("doors.board"))
