"""Access requests on the console: the list (by state), a form to ask for a level for a window, and the
decisions. Guards and above ask for anyone; supervisors and admins approve or refuse; a tenant admin asks for,
endorses and refuses only their own customer's people's requests, and any other request does not exist for
them (404). Every change goes through badge_bridge.access_requests, audited with the user."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from wtforms import DateTimeLocalField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from badge_bridge import access_requests as ar
from badge_bridge.events import Event
from badge_bridge.models import AccessLevel, AccessRequest, AuditEntry, Person, Tenant
from badge_bridge.snapshot import REQUEST_KINDS
from web import current_services
from web.auth import any_role, role_required
from web.changes import actor, admin_change, form_errors, read

bp = Blueprint("requests", __name__, url_prefix="/requests")
FILTERS = ("live", *ar.STATES, "all")
"""``live``: open and approved, what the desk acts on."""
PEOPLE_MAX = 2000


class RequestForm(FlaskForm):
    person = SelectField("Person", coerce=int)
    level = SelectField("Area (access level)")
    starts_at = DateTimeLocalField("From (UTC)", validators=[DataRequired(message="Give the start.")])
    ends_at = DateTimeLocalField("Until (UTC)", validators=[DataRequired(message="Give the end.")])
    reason = StringField("Reason", validators=[Optional(), Length(max=ar.REASON_MAX)])
    ticket = StringField("Ticket or change number", validators=[Optional(), Length(max=ar.TICKET_MAX)])


class CommentForm(FlaskForm):
    comment = StringField("Comment", validators=[Optional(), Length(max=ar.REASON_MAX)])


def _who() -> ar.Who:
    return ar.Who(actor(), current_user.role, current_user.tenant_id)


def _scoped(stmt: Any) -> Any:
    """A tenant admin's queries see their own customer's requests only."""
    return stmt.where(AccessRequest.tenant_id == current_user.tenant_id) if current_user.can("tenant_admin") else stmt


def _visible(request_id: int) -> AccessRequest:
    """The request, or 404: missing, or another customer's for a tenant admin."""
    found = read(lambda s: s.scalar(_scoped(select(AccessRequest).where(AccessRequest.id == request_id))))
    if found is None:
        abort(404)
    return found


def _choices(form: RequestForm, s: Session) -> None:
    people = select(Person).where(Person.status.in_(("active", "pending"))).order_by(Person.name).limit(PEOPLE_MAX)
    levels = [lvl.key for lvl in current_services().config.access_levels]
    if current_user.can("tenant_admin"):
        people = people.where(Person.tenant_id == current_user.tenant_id)
        tenant = current_services().config.tenant(s.scalar(select(Tenant.key).where(Tenant.id == current_user.tenant_id))
                                                  or "")
        levels = [lvl for lvl in levels if tenant is not None and lvl in tenant.levels]
    form.person.choices = [SelectChoice(p.id, f"{p.name} ({p.company})" if p.company else p.name)
                           for p in s.scalars(people)]
    rows = {lvl.key: lvl for lvl in s.scalars(select(AccessLevel).where(AccessLevel.key.in_(levels)))}
    form.level.choices = [SelectChoice(key, f"{rows[key].name or key} — doors: {', '.join(ar.level_doors(s, rows[key].id))}")
                          for key in levels if key in rows]


@bp.route("")
@any_role("guard", "auditor", "tenant_admin")
def index() -> Any:
    shown = request.args.get("state", "live")
    if shown not in FILTERS:
        abort(400, "state: expected one of " + ", ".join(FILTERS))
    stmt = _scoped(select(AccessRequest).options(selectinload(AccessRequest.level))
                   .order_by(AccessRequest.starts_at.desc(), AccessRequest.id.desc()).limit(500))
    if shown != "all":
        stmt = stmt.where(AccessRequest.state.in_(("open", "approved") if shown == "live" else (shown,)))
    form = RequestForm()
    now = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
    form.starts_at.data, form.ends_at.data = now, now + timedelta(hours=8)
    if request.args.get("person", "").isdigit():
        form.person.data = int(request.args["person"])

    def query(s: Session) -> tuple[list[AccessRequest], dict[int, str]]:
        found = list(s.scalars(stmt))
        names = {pid: name for pid, name in s.execute(select(Person.id, Person.name).where(Person.id.in_({r.person_id for r in found})))}
        _choices(form, s)
        return found, names

    found, names = read(query)
    return render_template("requests.html", requests=found, names=names, shown=shown, filters=FILTERS, form=form,
                           comment=CommentForm(), doors=read(lambda s: {r.id: ar.level_doors(s, r.level_id) for r in found}),
                           now=datetime.now(UTC))


@bp.route("", methods=["POST"])
@any_role("guard", "tenant_admin")
def open_() -> Any:
    form = RequestForm()
    read(lambda s: _choices(form, s))
    if form.validate_on_submit():
        starts, ends = form.starts_at.data.replace(tzinfo=UTC), form.ends_at.data.replace(tzinfo=UTC)
        config, person, level = current_services().config, form.person.data, form.level.data
        reason, ticket = form.reason.data or "", form.ticket.data or ""
        made = _change(lambda s, who: ar.open_request(s, who, config, person, level, starts, ends, reason=reason,
                                                      ticket=ticket, now=datetime.now(UTC)),
                       "Access request opened.")
        if made is not None:
            return redirect(url_for("requests.detail", request_id=made.id))
    else:
        form_errors(form)
    return redirect(url_for("requests.index"))


@bp.route("/<id:request_id>")
@any_role("guard", "auditor", "tenant_admin")
def detail(request_id: int) -> Any:
    r = _visible(request_id)

    def query(s: Session) -> tuple[str, str, list[str], list[AuditEntry]]:
        level = s.get_one(AccessLevel, r.level_id)
        log = [e for e in s.scalars(select(AuditEntry).where(AuditEntry.kind.in_(REQUEST_KINDS),
                                                             AuditEntry.person_id == r.person_id)
                                    .order_by(AuditEntry.id))
               if json.loads(e.subject).get("request") == r.id]
        return s.get_one(Person, r.person_id).name, level.name or level.key, ar.level_doors(s, level.id), log

    name, level, doors, log = read(query)
    return render_template("request.html", r=r, name=name, level=level, doors=doors, log=log, comment=CommentForm(),
                           now=datetime.now(UTC), local=current_services().presenter.local)


def _change(change: Callable[[Session, ar.Who], tuple[AccessRequest, Event]], done: str) -> AccessRequest | None:
    """``change`` made as the current user (web.changes.admin_change names them by their actor string only)."""
    who = _who()
    return admin_change(lambda session, _actor: change(session, who), done=done)


Decision = Callable[..., tuple[AccessRequest, Event]]
"""access_requests.approve, refuse, endorse or cancel: (session, who, request id, now=, comment=)."""


def _decide(request_id: int, decide: Decision, done: str) -> Any:
    _visible(request_id)
    form = CommentForm()
    if form.validate_on_submit():
        comment = form.comment.data or ""
        _change(lambda s, who: decide(s, who, request_id, now=datetime.now(UTC), comment=comment),
                done.format(id=request_id))
    else:
        form_errors(form)
    return redirect(url_for("requests.detail", request_id=request_id))


@bp.route("/<id:request_id>/approve", methods=["POST"])
@role_required("supervisor")
def approve(request_id: int) -> Any:
    return _decide(request_id, ar.approve, "Access request {id} approved.")


@bp.route("/<id:request_id>/refuse", methods=["POST"])
@any_role("supervisor", "tenant_admin")
def refuse(request_id: int) -> Any:
    return _decide(request_id, ar.refuse, "Access request {id} refused.")


@bp.route("/<id:request_id>/endorse", methods=["POST"])
@role_required("tenant_admin")
def endorse(request_id: int) -> Any:
    return _decide(request_id, ar.endorse, "Access request {id} endorsed: site staff decide next.")


@bp.route("/<id:request_id>/cancel", methods=["POST"])
@any_role("guard", "tenant_admin")
def cancel(request_id: int) -> Any:
    return _decide(request_id, ar.cancel, "Access request {id} cancelled.")
