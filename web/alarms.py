"""The alarm queue: open alarms first, newest first. A guard acknowledges with a comment; a supervisor
assigns and resolves. Each step is an audited event whose effect updates the alarm row in the same
transaction, so the queue and the log never disagree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import case, select, update
from sqlalchemy.engine import CursorResult
from wtforms import SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from badge_bridge.event_kinds import EventKind
from badge_bridge.models import Alarm, ConsoleUser
from web import current_services
from web.auth import role_required
from web.changes import form_errors, read

bp = Blueprint("alarms", __name__, url_prefix="/alarms")
STATES = ("open", "acknowledged", "resolved")


class CommentForm(FlaskForm):
    comment = TextAreaField("Comment", validators=[DataRequired(message="Say what you saw or did."),
                                                   Length(max=2000)])


class AssignForm(FlaskForm):
    user = SelectField("Assign to", validators=[DataRequired()])


@bp.route("")
@role_required("guard")
def queue() -> Any:
    order = case({"open": 0, "acknowledged": 1}, value=Alarm.state, else_=2)
    alarms = read(lambda s: list(s.scalars(select(Alarm).order_by(order, Alarm.id.desc()).limit(300))))
    assign = AssignForm()
    assign.user.choices = _assignees()
    return render_template("alarms.html", alarms=alarms, comment=CommentForm(), assign=assign)


def _assignees() -> list[SelectChoice]:
    users = read(lambda s: list(s.scalars(select(ConsoleUser.username).where(
        ConsoleUser.active, ConsoleUser.role.in_(("guard", "supervisor", "admin"))).order_by(ConsoleUser.username))))
    return [SelectChoice(u) for u in users]


def _step(alarm_id: int, kind: EventKind, allowed_from: tuple[str, ...], values: dict[str, object],
          detail: dict[str, object]) -> None:
    """Move the alarm on only if it is still in an allowed state (two operators may click at once: one
    wins, the other is told), then audit the step as ``kind``."""
    done = kind.removeprefix("alarm.").replace("_", " ")
    alarm = read(lambda s: s.get(Alarm, alarm_id))
    if alarm is None:
        abort(404)
    with current_services().session() as session, session.begin():
        result = session.execute(update(Alarm).where(Alarm.id == alarm_id, Alarm.state.in_(allowed_from))
                                 .values(**values))
        moved = cast(CursorResult[Any], result).rowcount  # an UPDATE's result is a cursor result
    if not moved:
        current = read(lambda s: s.get(Alarm, alarm_id))
        flash(f"Alarm {alarm_id} is {current.state if current else 'gone'}: it cannot be {done}.", "error")
        return
    current_services().audit.record(kind, current_user.username, door=alarm.door,
                                    subject={"alarm": alarm.event_id}, detail={"alarm_kind": alarm.kind, **detail})
    flash(f"Alarm {alarm_id} {done}.", "info")


@bp.route("/<id:alarm_id>/acknowledge", methods=["POST"])
@role_required("guard")
def acknowledge(alarm_id: int) -> Any:
    form = CommentForm()
    if form.validate_on_submit():
        now = datetime.now(UTC)
        _step(alarm_id, EventKind.ALARM_ACKNOWLEDGED, ("open",),
              {"state": "acknowledged", "acknowledged_by": current_user.username, "acknowledged_at": now,
               "comment": form.comment.data}, {"comment": form.comment.data})
    else:
        form_errors(form)
    return redirect(url_for("alarms.queue"))


@bp.route("/<id:alarm_id>/assign", methods=["POST"])
@role_required("supervisor")
def assign(alarm_id: int) -> Any:
    form = AssignForm()
    form.user.choices = _assignees()
    if form.validate_on_submit():
        _step(alarm_id, EventKind.ALARM_ASSIGNED, ("open", "acknowledged"), {"assigned_to": form.user.data},
              {"assigned_to": form.user.data})
    else:
        flash("Choose someone on duty to assign the alarm to.", "error")
    return redirect(url_for("alarms.queue"))


@bp.route("/<id:alarm_id>/resolve", methods=["POST"])
@role_required("supervisor")
def resolve(alarm_id: int) -> Any:
    form = CommentForm()
    if form.validate_on_submit():
        _step(alarm_id, EventKind.ALARM_RESOLVED, ("acknowledged",),
              {"state": "resolved", "resolved_at": datetime.now(UTC), "comment": form.comment.data},
              {"comment": form.comment.data})
    else:
        form_errors(form)
    return redirect(url_for("alarms.queue"))
