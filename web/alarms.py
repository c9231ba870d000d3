"""The alarm queue and the alarm panel beside every page.

The queue lists alarms one by one: open first, newest first. A guard acknowledges with a comment; a
supervisor assigns and resolves with a comment of their own (the acknowledgement is never overwritten).

The panel groups the alarms still on the desk (open or acknowledged) by kind and door (or source, for
alarms of no door), so a reader that flaps five times is one row counting five: highest priority first
(``config.alarms.priority``), then newest. A guard acknowledges a whole group from the panel without
leaving the page. Each step is an audited event whose effect updates the alarm row in the same
transaction, so the queue and the log never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import case, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from wtforms import HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from badge_bridge.config import SiteConfig
from badge_bridge.event_kinds import EventKind
from badge_bridge.models import Alarm, AuditEntry, ConsoleUser
from web import current_services
from web.auth import any_role, role_required
from web.changes import form_errors, read
from web.params import same_site_path

log = logging.getLogger(__name__)
bp = Blueprint("alarms", __name__, url_prefix="/alarms")
STATES = ("open", "acknowledged", "resolved")
ON_DESK = ("open", "acknowledged")
PANEL_ROWS = 500
"""The newest alarms on the desk the panel groups (a storm of thousands still draws in milliseconds)."""
RANK = {"high": 0, "medium": 1, "low": 2}
CONDITIONS = frozenset({
    "door.forced", "door.held_open", "door.loitering", "reader.tamper", "reader.offline",
    "reader.secure_channel_failed", "reader.plaintext", "controller.offline", "camera.tamper", "camera.offline",
    "audit.witness_unreachable", "audit.state_mismatch"})
"""Alarm kinds the bridge clears when the condition ends (``alarm.cleared``). Every other kind (unauthorized
entry, tailgating, face mismatch, a forged command ...) is a moment: shown as an event, never as ACTIVE."""

DB_AWAY = "The database does not answer: the alarm list is not up to date."
Step = tuple[bool, str]
"""(moved, what to tell the operator)."""


class CommentForm(FlaskForm):
    comment = TextAreaField("Comment", validators=[DataRequired(message="Say what you saw or did."),
                                                   Length(max=2000)])


class GroupForm(CommentForm):
    """Acknowledge every open alarm of one panel row; ``next`` is where the page goes back to (without script)."""
    kind = HiddenField("Alarm kind", validators=[DataRequired(), Length(max=64)])
    place = HiddenField("Door or source", validators=[DataRequired(), Length(max=128)])
    next = StringField("Back to", validators=[Length(max=500)])


class AssignForm(FlaskForm):
    user = SelectField("Assign to", validators=[DataRequired()])


# --- what the panel shows ----------------------------------------------------------------------------


def condition(alarm: Alarm) -> str:
    """``active``, ``cleared`` (the bridge saw the condition end) or ``event`` (a moment, nothing to end)."""
    if alarm.kind not in CONDITIONS:
        return "event"
    return "cleared" if alarm.cleared_at is not None else "active"


@dataclass
class AlarmGroup:
    """One panel row: the alarms on the desk of one kind at one door (or source), newest first."""
    kind: str
    place: str
    """The door's key, or the source's for an alarm of no door."""
    place_name: str
    priority: str
    alarms: list[Alarm] = field(default_factory=list)
    entry_id: int | None = None
    """The newest alarm's ``alarm.raised`` audit entry (its event page)."""

    @property
    def newest(self) -> Alarm:
        return self.alarms[0]

    @property
    def open_count(self) -> int:
        return sum(a.state == "open" for a in self.alarms)

    @property
    def state(self) -> str:
        return "open" if self.open_count else "acknowledged"

    @property
    def condition(self) -> str:
        states = {condition(a) for a in self.alarms}
        return "active" if "active" in states else "event" if "event" in states else "cleared"

    @property
    def key(self) -> str:
        return f"{self.kind}@{self.place}"


def group_alarms(alarms: Iterable[Alarm], config: SiteConfig) -> list[AlarmGroup]:
    """``alarms`` newest first -> panel rows, highest priority first, then newest."""
    names = {d.key: d.name or d.key for d in config.doors}
    groups: dict[tuple[str, str], AlarmGroup] = {}
    for a in alarms:
        place = a.door or a.source
        group = groups.get((a.kind, place))
        if group is None:
            group = groups[(a.kind, place)] = AlarmGroup(a.kind, place, names.get(a.door or "", place),
                                                         config.alarms.priority(a.kind))
        group.alarms.append(a)
    return sorted(groups.values(), key=lambda g: (RANK[g.priority], -g.newest.id))


def raised_entries(session: Session, alarms: Iterable[Alarm]) -> dict[str, int]:
    """Alarm event id -> its ``alarm.raised`` audit entry id (one indexed IN query)."""
    ids = list({a.event_id for a in alarms})
    if not ids:
        return {}
    rows = session.execute(select(AuditEntry.event_id, AuditEntry.id).where(AuditEntry.event_id.in_(ids)))
    return {event_id: entry_id for event_id, entry_id in rows}


def panel_groups(session: Session, config: SiteConfig) -> list[AlarmGroup]:
    alarms = list(session.scalars(select(Alarm).where(Alarm.state.in_(ON_DESK)).order_by(Alarm.id.desc())
                                  .limit(PANEL_ROWS)))
    groups = group_alarms(alarms, config)
    entries = raised_entries(session, (g.newest for g in groups))
    for g in groups:
        g.entry_id = entries.get(g.newest.event_id)
    return groups


def alarm_version(session: Session) -> str:
    """Changes whenever an alarm is raised, cleared, acknowledged, assigned or resolved, by any process. Read
    over the rows on the desk only (the state index; resolved rows pile up for ever): resolving one takes it
    off the desk and changes the count, a new one changes the newest id."""
    newest = select(func.max(Alarm.id)).scalar_subquery()
    row = session.execute(select(
        newest, func.count(), func.sum(case((Alarm.state == "open", 1), else_=0)), func.max(Alarm.acknowledged_at),
        func.max(Alarm.cleared_at), func.sum(case((Alarm.assigned_to.is_not(None), 1), else_=0)))
        .where(Alarm.state.in_(ON_DESK))).one()
    return ":".join("" if v is None else v.isoformat() if isinstance(v, datetime) else str(v) for v in row)


@bp.app_context_processor
def panel_helpers() -> dict[str, object]:
    """``alarm_panel()`` for _alarm_panel.html: read only when the partial is drawn (not on every page render)."""

    def alarm_panel() -> dict[str, object]:
        config = current_services().config
        groups, version = read(lambda s: (panel_groups(s, config), alarm_version(s)))
        return {"groups": groups, "version": version}

    return {"alarm_panel": alarm_panel, "alarm_condition": condition}


@bp.route("/panel")
@any_role("guard", "wall")
def panel() -> Any:
    """The panel alone, for alarms.js to redraw it; read-only for a wall display."""
    try:
        return render_template("_alarm_panel.html", fragment=True, read_only=not current_user.can("guard"))
    except SQLAlchemyError:
        log.exception("alarm panel: the database does not answer")
        return Response(DB_AWAY, 503, mimetype="text/plain")


# --- the queue ----------------------------------------------------------------------------------------


@bp.route("")
@role_required("guard")
def queue() -> Any:
    order = case({"open": 0, "acknowledged": 1}, value=Alarm.state, else_=2)

    def load(s: Session) -> tuple[list[Alarm], dict[str, int]]:
        alarms = list(s.scalars(select(Alarm).order_by(order, Alarm.id.desc()).limit(300)))
        return alarms, raised_entries(s, alarms)

    alarms, entries = read(load)
    assign = AssignForm()
    assign.user.choices = _assignees()
    svc = current_services()
    return render_template("alarms.html", alarms=alarms, entries=entries, comment=CommentForm(), assign=assign,
                           priority=svc.config.alarms.priority, local=svc.presenter.local, where=svc.presenter.where,
                           zone=svc.presenter.zone, today=svc.presenter.local(datetime.now(UTC))[0][:10])


def _assignees() -> list[SelectChoice]:
    users = read(lambda s: list(s.scalars(select(ConsoleUser.username).where(
        ConsoleUser.active, ConsoleUser.role.in_(("guard", "supervisor", "admin"))).order_by(ConsoleUser.username))))
    return [SelectChoice(u) for u in users]


def _step(alarm_id: int, kind: EventKind, allowed_from: tuple[str, ...], values: dict[str, object],
          detail: dict[str, object]) -> Step:
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
        return False, f"Alarm {alarm_id} is {current.state if current else 'gone'}: it cannot be {done}."
    current_services().audit.record(kind, current_user.username, door=alarm.door,
                                    subject={"alarm": alarm.event_id}, detail={"alarm_kind": alarm.kind, **detail})
    return True, f"Alarm {alarm_id} {done}."


def _flash(step: Step) -> None:
    flash(step[1], "info" if step[0] else "error")


def _acknowledgement(comment: str) -> dict[str, object]:
    return {"state": "acknowledged", "acknowledged_by": current_user.username, "acknowledged_at": datetime.now(UTC),
            "comment": comment}


@bp.route("/<id:alarm_id>/acknowledge", methods=["POST"])
@role_required("guard")
def acknowledge(alarm_id: int) -> Any:
    form = CommentForm()
    if form.validate_on_submit():
        _flash(_step(alarm_id, EventKind.ALARM_ACKNOWLEDGED, ("open",), _acknowledgement(form.comment.data),
                     {"comment": form.comment.data}))
    else:
        form_errors(form)
    return redirect(url_for("alarms.queue"))


@bp.route("/group/acknowledge", methods=["POST"])
@role_required("guard")
def acknowledge_group() -> Any:
    """Acknowledge every open alarm of one panel row, each audited. Answers JSON to alarms.js (the page
    stays where it is), else redirects back to ``next`` when it is a path on this site, else to the queue."""
    form = GroupForm()
    steps: list[Step] = []
    done = 0
    if form.validate_on_submit():
        kind, place = form.kind.data, form.place.data
        ids = read(lambda s: list(s.scalars(select(Alarm.id).where(
            Alarm.kind == kind, Alarm.state == "open",
            (Alarm.door == place) | (Alarm.door.is_(None) & (Alarm.source == place))).order_by(Alarm.id))))
        steps = [_step(i, EventKind.ALARM_ACKNOWLEDGED, ("open",), _acknowledgement(form.comment.data),
                       {"comment": form.comment.data}) for i in ids]
        done = sum(ok for ok, _ in steps)
        if not steps:
            steps = [(False, "Nothing left to acknowledge there: someone else already did.")]
        elif len(steps) > 1 and done == len(steps):
            names = {d.key: d.name or d.key for d in current_services().config.doors}
            steps = [(True, f"{len(steps)} alarms acknowledged: {kind} at {names.get(place, place)}.")]
    else:
        steps = [(False, f"{form[name].label.text}: {error}") for name, errors in form.errors.items() for error in errors]
    if request.accept_mimetypes.best == "application/json":
        return jsonify(acknowledged=done, messages=[text for _, text in steps], ok=done > 0)
    for step in steps:
        _flash(step)
    return redirect(same_site_path(form.next.data or "") or url_for("alarms.queue"))


@bp.route("/<id:alarm_id>/assign", methods=["POST"])
@role_required("supervisor")
def assign(alarm_id: int) -> Any:
    form = AssignForm()
    form.user.choices = _assignees()
    if form.validate_on_submit():
        _flash(_step(alarm_id, EventKind.ALARM_ASSIGNED, ("open", "acknowledged"), {"assigned_to": form.user.data},
                     {"assigned_to": form.user.data}))
    else:
        flash("Choose someone on duty to assign the alarm to.", "error")
    return redirect(url_for("alarms.queue"))


@bp.route("/<id:alarm_id>/resolve", methods=["POST"])
@role_required("supervisor")
def resolve(alarm_id: int) -> Any:
    """The resolution goes beside the acknowledgement (``resolution``, ``resolved_by``), never over it."""
    form = CommentForm()
    if form.validate_on_submit():
        _flash(_step(alarm_id, EventKind.ALARM_RESOLVED, ("acknowledged",),
                     {"state": "resolved", "resolved_at": datetime.now(UTC), "resolution": form.comment.data,
                      "resolved_by": current_user.username}, {"comment": form.comment.data}))
    else:
        form_errors(form)
    return redirect(url_for("alarms.queue"))
