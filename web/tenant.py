"""Customer cages in the console: a tenant admin's own view (their people, cards, cages, events), and site
staff's approval of the people customers add.

A tenant admin (role tenant_admin, ``User.tenant_id``) reaches the pages of this view and nothing else
(``confine_tenant_admins``: an allow-list of endpoints, as web.wall confines a wall; a staff page answers
403, whatever decorator it has). Within the view, whatever they name by id that is not of their tenant
(a person, a card, an event, a cage) answers 404, exactly as a missing id does. Every change goes through
badge_bridge.tenants and is audited with the user. Names of people who are not theirs never reach them: an
event at their cage's door by someone else reads "not one of yours", without name or card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, selectinload
from wtforms import DateTimeLocalField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from badge_bridge import tenants
from badge_bridge.cards import FORMATS
from badge_bridge.models import AuditEntry, Credential, Person, Tenant
from web import current_services
from web.auth import role_required
from web.changes import admin_change, form_errors, read
from web.events import PAGE, areas_of
from web.muster import Muster, muster
from web.params import cursor, query_text
from web.people import ReasonForm, Standing, _utc, standings
from web.present import Names, Shown, lookup

bp = Blueprint("tenant", __name__)

SHARED_WITH_TENANTS = frozenset({
    "visitors.index", "visitors.register", "visitors.cancel",
    "requests.index", "requests.detail", "requests.open_", "requests.endorse", "requests.refuse", "requests.cancel"})
"""Staff pages a tenant admin also uses, each scoped there to their own customer (web.visitors, web.requests):
another customer's or the site's visit or request answers 404."""
TENANT_ENDPOINTS = frozenset({
    "tenant.index", "tenant.add_person", "tenant.person", "tenant.set_levels", "tenant.add_credential",
    "tenant.revoke", "tenant.validity", "tenant.left", "tenant.cages", "tenant.events", "tenant.event",
    "auth.login", "auth.logout", "static", "wall.connect", "wall.exchange", *SHARED_WITH_TENANTS})
"""All a tenant admin may reach (and the pages anyone may: login, a wall's link); every other route answers
403, and "/" leads to their own view."""
SHOWN_DETAIL = ("reason", "factors", "failed", "direction")
"""What of an event's detail a tenant admin sees: why and how, never a companion or a state."""
EVENT_KINDS = ("access.", "door.")


@bp.before_app_request
def confine_tenant_admins() -> Any:
    """A tenant admin's session serves their view and nothing else, however the other route is guarded."""
    if request.endpoint is None or not (current_user.is_authenticated and current_user.role == "tenant_admin"):
        return None  # no route matched: the 404 (or 405) anyone gets, which says nothing of a staff page
    if request.endpoint == "live.feed":  # everyone's way in: theirs is their people
        return redirect(url_for("tenant.index"))
    if request.endpoint not in TENANT_ENDPOINTS:
        abort(403)
    return None


class TenantPersonForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    levels = SelectMultipleField("Access levels")


class LevelsForm(FlaskForm):
    levels = SelectMultipleField("Access levels")


class CardForm(FlaskForm):
    fmt = SelectField("Format", choices=[SelectChoice(f) for f in FORMATS])
    number = StringField("Card", validators=[DataRequired(), Length(max=64)])
    valid_until = DateTimeLocalField("Valid until (UTC)", validators=[DataRequired()])


class UntilForm(FlaskForm):
    valid_until = DateTimeLocalField("Valid until (UTC)", validators=[DataRequired()])


def scope() -> tenants.Scope:
    """The signed-in tenant admin's scope; a tenant gone from the site file leaves them nothing (404)."""
    svc = current_services()
    found = read(lambda s: tenants.scope_of_id(s, svc.config, current_user.tenant_id))
    if found is None:
        abort(404)
    return found


def _change(change: Any, *args: Any, done: str, **kwargs: Any) -> Any:
    """A badge_bridge.tenants change in the admin's scope, audited with them."""
    return admin_change(change, scope(), *args, done=done, **kwargs)


def _level_choices(sc: tenants.Scope) -> list[SelectChoice]:
    return read(lambda s: [SelectChoice(lvl.key, lvl.name or lvl.key) for lvl in tenants.their_levels(s, sc)])


WAITING = Standing("pending", "… AWAITS SITE APPROVAL")
"""A working card of a person site staff have not approved yet: the door refuses it, so it must not read
as active."""


def _standings(s: Session, found: list[Person]) -> dict[int, Standing]:
    cards = standings(s, found, datetime.now(UTC))
    waiting = {c.id for p in found if p.status == "pending" for c in p.credentials}
    return {cid: WAITING if cid in waiting and st.css == "active" else st for cid, st in cards.items()}


def _tenant_name(sc: tenants.Scope) -> str:
    return sc.limits.name or sc.key


@bp.route("/tenant")
@role_required("tenant_admin")
def index() -> Any:
    sc = scope()

    def load(s: Session) -> tuple[list[Person], dict[int, Standing]]:
        found = list(s.scalars(select(Person).where(Person.tenant_id == sc.tenant_id).order_by(Person.name, Person.id)
                               .options(selectinload(Person.credentials), selectinload(Person.levels))))
        return found, _standings(s, found)

    found, cards = read(load)
    form = TenantPersonForm()
    form.levels.choices = _level_choices(sc)
    return render_template("tenant.html", people=found, cards=cards, form=form, sc=sc, tenant=_tenant_name(sc))


@bp.route("/tenant/people", methods=["POST"])
@role_required("tenant_admin")
def add_person() -> Any:
    sc = scope()
    form = TenantPersonForm()
    form.levels.choices = _level_choices(sc)
    if form.validate_on_submit():
        person = _change(tenants.add_person, form.name.data, levels=form.levels.data,
                         done=f"{form.name.data} added; site staff approve them before their cards work.")
        if person is not None:
            return redirect(url_for("tenant.person", person_id=person.id))
    else:
        form_errors(form)
    return redirect(url_for("tenant.index"))


def _their_person(sc: tenants.Scope, person_id: int) -> tuple[Person, dict[int, Standing]]:
    def load(s: Session) -> tuple[Person | None, dict[int, Standing]]:
        found = s.scalars(select(Person).where(Person.id == person_id, Person.tenant_id == sc.tenant_id).options(
            selectinload(Person.credentials), selectinload(Person.levels))).first()
        return found, _standings(s, [found] if found else [])

    person, cards = read(load)
    if person is None:
        abort(404)
    return person, cards


@bp.route("/tenant/people/<id:person_id>")
@role_required("tenant_admin")
def person(person_id: int) -> Any:
    sc = scope()
    found, cards = _their_person(sc, person_id)
    levels = LevelsForm()
    levels.levels.choices = _level_choices(sc)
    levels.levels.data = [lvl.key for lvl in found.levels if sc.may_give(lvl.key)]
    svc = current_services()
    latest = sc.latest_until(datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M")
    return render_template("tenant_person.html", person=found, cards=cards, levels=levels, card=CardForm(),
                           until=UntilForm(), reason=ReasonForm(), sc=sc, latest=latest, local=svc.presenter.local,
                           zone=svc.presenter.zone, tenant=_tenant_name(sc))


@bp.route("/tenant/people/<id:person_id>/levels", methods=["POST"])
@role_required("tenant_admin")
def set_levels(person_id: int) -> Any:
    sc = scope()
    _their_person(sc, person_id)
    form = LevelsForm()
    form.levels.choices = _level_choices(sc)
    if form.validate_on_submit():
        _change(tenants.set_levels, person_id, form.levels.data, done="Access levels saved.")
    else:
        form_errors(form)
    return redirect(url_for("tenant.person", person_id=person_id))


@bp.route("/tenant/people/<id:person_id>/credentials", methods=["POST"])
@role_required("tenant_admin")
def add_credential(person_id: int) -> Any:
    _their_person(scope(), person_id)
    form = CardForm()
    if form.validate_on_submit():
        _change(tenants.add_credential, person_id, form.fmt.data, form.number.data,
                pepper=current_services().keys.pin_pepper(), valid_until=_utc(form.valid_until.data),
                now=datetime.now(UTC), done=f"Card {form.number.data} issued.")
    else:
        form_errors(form)
    return redirect(url_for("tenant.person", person_id=person_id))


@bp.route("/tenant/people/<id:person_id>/left", methods=["POST"])
@role_required("tenant_admin")
def left(person_id: int) -> Any:
    _their_person(scope(), person_id)
    form = ReasonForm()
    if form.validate_on_submit():
        _change(tenants.person_left, person_id, form.reason.data, done="Marked as gone; their cards are revoked.")
    else:
        form_errors(form)
    return redirect(url_for("tenant.person", person_id=person_id))


def _their_credential(sc: tenants.Scope, credential_id: int) -> int:
    """The person of the tenant's credential ``credential_id``; 404 for any other."""
    owner = read(lambda s: s.execute(select(Credential.person_id).join(Person, Person.id == Credential.person_id)
                                     .where(Credential.id == credential_id, Person.tenant_id == sc.tenant_id)).scalar())
    if owner is None:
        abort(404)
    return owner


@bp.route("/tenant/credentials/<id:credential_id>/revoke", methods=["POST"])
@role_required("tenant_admin")
def revoke(credential_id: int) -> Any:
    owner = _their_credential(scope(), credential_id)
    form = ReasonForm()
    if form.validate_on_submit():
        _change(tenants.revoke, credential_id, form.reason.data, done=f"Card {credential_id} revoked.")
    else:
        form_errors(form)
    return redirect(url_for("tenant.person", person_id=owner))


@bp.route("/tenant/credentials/<id:credential_id>/validity", methods=["POST"])
@role_required("tenant_admin")
def validity(credential_id: int) -> Any:
    owner = _their_credential(scope(), credential_id)
    form = UntilForm()
    if form.validate_on_submit():
        _change(tenants.set_validity, credential_id, None, _utc(form.valid_until.data), now=datetime.now(UTC),
                done=f"Validity of card {credential_id} saved.")
    else:
        form_errors(form)
    return redirect(url_for("tenant.person", person_id=owner))


@dataclass(frozen=True)
class Cage:
    key: str
    name: str
    doors: list[str]
    theirs: list[str]
    """Their people inside now (by name)."""
    others: int
    """Anyone else inside (site staff, escorts): counted, not named."""


@bp.route("/tenant/cages")
@role_required("tenant_admin")
def cages() -> Any:
    """Their cages, the doors into them, and who is inside now (the muster's positions)."""
    sc = scope()
    svc = current_services()

    def load(s: Session) -> tuple[Muster, set[int]]:
        return muster(s, svc.config, svc.clock()), set(s.scalars(select(Person.id).where(
            Person.tenant_id == sc.tenant_id)))

    now, mine = read(load)
    inside = {a.key: a.people for a in now.areas}
    doors = areas_of(svc.config)
    shown = [Cage(key, svc.presenter.areas.get(key, key), [svc.presenter.where(d, "")[0] for d in doors.get(key, [])],
                  [p.name for p in inside.get(key, []) if p.person in mine],
                  sum(1 for p in inside.get(key, []) if p.person not in mine)) for key in sc.limits.areas]
    return render_template("tenant_cages.html", cages=shown, as_of=now.as_of, tenant=_tenant_name(sc))


def their_doors(sc: tenants.Scope, areas: dict[str, list[str]]) -> list[str]:
    """The doors into or out of the tenant's areas."""
    return sorted({d for a in sc.limits.areas for d in areas.get(a, [])})


def scoped_events(sc: tenants.Scope, doors: list[str], *, area_doors: list[str] | None = None,
                  before: str = "", limit: int = PAGE) -> Select[Any]:
    """Access and door events at the tenant's doors or of the tenant's people, newest first (``limit`` + 1)."""
    theirs = select(Person.id).where(Person.tenant_id == sc.tenant_id).scalar_subquery()
    where: list[Any] = [or_(*(AuditEntry.kind.startswith(k) for k in EVENT_KINDS)),
                        or_(AuditEntry.door.in_(doors), AuditEntry.person_id.in_(theirs))]
    if area_doors is not None:
        where.append(AuditEntry.door.in_(area_doors))
    if before:
        ts, eid = cursor(before)
        where.append(or_(AuditEntry.ts_us < ts, (AuditEntry.ts_us == ts) & (AuditEntry.id < eid)))
    return select(AuditEntry).where(*where).order_by(AuditEntry.ts_us.desc(), AuditEntry.id.desc()).limit(limit + 1)


def shown(s: Session, sc: tenants.Scope, rows: list[AuditEntry]) -> list[tuple[AuditEntry, Shown]]:
    """Rows as shown to the tenant: their people by name, anyone else as "not one of yours", and of the
    detail only why and how."""
    mine = set(s.scalars(select(Person.id).where(Person.tenant_id == sc.tenant_id,
                                                 Person.id.in_({r.person_id for r in rows if r.person_id}))))
    presenter = current_services().presenter
    out = []
    for row in rows:
        subject, detail = json.loads(row.subject), json.loads(row.detail)
        own = isinstance(subject, dict) and subject.get("person") in mine
        subject = {k: subject[k] for k in ("person", "credential") if k in subject} if own else {}
        detail = {k: detail[k] for k in SHOWN_DETAIL if isinstance(detail, dict) and k in detail}
        names: Names = lookup(s, [subject])
        out.append((row, presenter.show(event_id=row.event_id, kind=row.kind, ts=row.ts_us, door=row.door,
                                        source="", subject=subject, detail=detail, names=names)))
    return out


@bp.route("/tenant/events")
@role_required("tenant_admin")
def events() -> Any:
    sc = scope()
    areas = areas_of(current_services().config)
    area = query_text("area")
    if area and area not in sc.limits.areas:
        abort(404)
    before = query_text("before", cursor)

    def load(s: Session) -> tuple[list[tuple[AuditEntry, Shown]], str | None]:
        rows = list(s.scalars(scoped_events(sc, their_doors(sc, areas), area_doors=areas.get(area) if area else None,
                                            before=before)))
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        return shown(s, sc, rows), (f"{rows[-1].ts_us}:{rows[-1].id}" if more else None)

    rows, next_before = read(load)
    return render_template("tenant_events.html", rows=rows, next_before=next_before, area=area,
                           areas=[(a, current_services().presenter.areas.get(a, a)) for a in sc.limits.areas],
                           zone=current_services().presenter.zone, tenant=_tenant_name(sc))


@bp.route("/tenant/events/<id(bits=64):entry_id>")
@role_required("tenant_admin")
def event(entry_id: int) -> Any:
    sc = scope()
    doors = their_doors(sc, areas_of(current_services().config))

    def load(s: Session) -> list[tuple[AuditEntry, Shown]]:
        found = s.scalars(scoped_events(sc, doors).where(AuditEntry.id == entry_id)).first()
        return shown(s, sc, [found]) if found is not None else []

    found = read(load)
    if not found:
        abort(404)
    return render_template("tenant_event.html", e=found[0][0], v=found[0][1], tenant=_tenant_name(sc))


# --- site staff: approving the people customers add -------------------------------------------------------


class ApprovalForm(FlaskForm):
    """Approve: the CSRF token only; refuse: with a reason."""

    reason = StringField("Reason", validators=[Optional(), Length(max=500)])


@bp.route("/approvals")
@role_required("supervisor")
def approvals() -> Any:
    def load(s: Session) -> tuple[list[Person], dict[int, str]]:
        waiting = tenants.pending(s)
        for p in waiting:
            _ = p.levels, p.credentials
        return waiting, dict(s.execute(select(Tenant.id, Tenant.name)).all())

    waiting, names = read(load)
    return render_template("approvals.html", waiting=waiting, tenants=names, form=ApprovalForm())


@bp.route("/approvals/<id:person_id>/approve", methods=["POST"])
@role_required("supervisor")
def approve(person_id: int) -> Any:
    if ApprovalForm().validate_on_submit():  # a forged form without the token never gets here (400)
        admin_change(tenants.approve, person_id, done=f"Person {person_id} approved: their cards work now.")
    return redirect(url_for("tenant.approvals"))


@bp.route("/approvals/<id:person_id>/refuse", methods=["POST"])
@role_required("supervisor")
def refuse(person_id: int) -> Any:
    form = ApprovalForm()
    if form.validate_on_submit():
        admin_change(tenants.refuse, person_id, form.reason.data or "", done=f"Person {person_id} refused.")
    return redirect(url_for("tenant.approvals"))

