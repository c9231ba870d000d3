"""Visitors at the desk: today's visits (expected, on site, overdue, returned), registering a visit (the
logged-in user is the host), checking the visitor in (the ID seen, the temporary badge issued), taking the badge
back, cancelling, printing the badge; and, for admins, who may escort. Every change goes through
badge_bridge.visitors, as the CLI's do.

A customer's admin (tenant_admin) registers and cancels their own customer's visits only: another customer's
visit does not exist for them (404, as a missing one)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session
from wtforms import BooleanField, DateTimeLocalField, IntegerField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from badge_bridge import visitors
from badge_bridge.cards import FORMATS
from badge_bridge.models import AccessLevel, Person, Tenant, Visit
from badge_bridge.people import AdminError
from badge_bridge.visitor_badge import badge_text, render
from web import current_services
from web.auth import any_role, role_required
from web.changes import admin_change, form_errors, read

bp = Blueprint("visitors", __name__, url_prefix="/visitors")


class RegisterForm(FlaskForm):
    name = StringField("Visitor's name", validators=[DataRequired(), Length(max=200)])
    company = StringField("Company", validators=[Optional(), Length(max=200)])
    starts_at = DateTimeLocalField("From", validators=[DataRequired()])
    ends_at = DateTimeLocalField("Until", validators=[DataRequired()])
    levels = SelectMultipleField("Where they may be taken", validators=[DataRequired()])
    tenant = SelectField("Hosted by", validators=[Optional()])
    purpose = StringField("Purpose", validators=[Optional(), Length(max=500)])


class CheckInForm(FlaskForm):
    id_document = StringField("ID checked", validators=[DataRequired(), Length(min=3, max=64)])
    fmt = SelectField("Badge format", choices=[SelectChoice(f) for f in FORMATS])
    number = StringField("Badge", validators=[DataRequired(), Length(max=64)])


class CancelForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired(message="Give a reason."), Length(min=3, max=500)])


class EscortForm(FlaskForm):
    person = IntegerField("Person", validators=[InputRequired(), NumberRange(min=1)])
    may_escort = BooleanField("May escort visitors")


class ActionForm(FlaskForm):
    """A button: the CSRF token only."""


def _scope() -> tuple[bool, int | None]:
    """(True, their customer) for a customer's admin, (False, None) for site staff."""
    return current_user.role == "tenant_admin", current_user.tenant_id


def _visit_or_404(visit_id: int) -> Visit:
    """The visit, if the user may see it; 404 alike for a missing one and another customer's."""
    scoped, tenant = _scope()
    visit = read(lambda s: s.get(Visit, visit_id))
    if visit is None or (scoped and (tenant is None or visit.tenant_id != tenant)):
        abort(404)
    return visit


def _local(value: datetime) -> datetime:
    """A form's date-time, typed in the site's local time, as UTC."""
    return value.replace(tzinfo=current_services().presenter.tz).astimezone(UTC)


def _register_form() -> RegisterForm:
    config = current_services().config
    scoped, tenant = _scope()

    def choices(s: Session) -> tuple[list[SelectChoice], list[SelectChoice]]:
        allowed = set(config.visitors.levels)
        tenants = list(s.scalars(select(Tenant).order_by(Tenant.name)))
        if scoped:
            mine = next((t for t in tenants if t.id == tenant), None)
            limits = config.tenant(mine.key) if mine is not None else None
            allowed = (allowed & set(limits.levels) if allowed else set(limits.levels)) if limits else set()
            tenants = [mine] if mine is not None else []
        levels = [SelectChoice(lvl.key, lvl.name or lvl.key) for lvl in s.scalars(select(AccessLevel).order_by(AccessLevel.key))
                  if (not allowed and not scoped) or lvl.key in allowed]
        hosts = ([] if scoped else [SelectChoice("", "the site (no customer)")]) + [
            SelectChoice(str(t.id), t.name or t.key) for t in tenants]
        return levels, hosts

    form = RegisterForm()
    form.levels.choices, form.tenant.choices = read(choices)
    return form


@bp.route("")
@any_role("guard", "tenant_admin")
def index() -> Any:
    presenter = current_services().presenter
    today = datetime.combine(datetime.now(presenter.tz).date(), time(), presenter.tz).astimezone(UTC)
    scoped, tenant = _scope()

    def query(s: Session) -> list[tuple[Visit, Person]]:
        stmt = (select(Visit, Person).join(Person, Person.id == Visit.person_id)
                .where(or_(Visit.state == "on_site", (Visit.ends_at >= today) & (Visit.starts_at < today + timedelta(days=1))))
                .order_by(Visit.starts_at, Visit.id))
        if scoped:
            stmt = stmt.where(Visit.tenant_id == tenant) if tenant is not None else stmt.where(false())
        return [(v, p) for v, p in s.execute(stmt)]

    def escorts(s: Session) -> tuple[list[Person], list[Person]]:
        staff = list(s.scalars(select(Person).where(Person.kind == "staff", Person.status == "active")
                               .order_by(Person.name)))
        return [p for p in staff if p.may_escort], [p for p in staff if not p.may_escort]

    allowed_escorts, others = read(escorts) if current_user.can("admin") else ([], [])
    form = _register_form()
    now = datetime.now(presenter.tz).replace(second=0, microsecond=0, tzinfo=None)
    form.starts_at.data = form.starts_at.data or now
    form.ends_at.data = form.ends_at.data or now + timedelta(hours=2)
    return render_template("visitors.html", visits=read(query), form=form, check_in=CheckInForm(),
                           cancel=CancelForm(), action=ActionForm(), escort=EscortForm(), escorts=allowed_escorts,
                           others=others, local=presenter.local, zone=presenter.zone, now=datetime.now(UTC))


@bp.route("", methods=["POST"])
@any_role("guard", "tenant_admin")
def register() -> Any:
    form = _register_form()
    scoped, tenant = _scope()
    return _act(form, lambda: admin_change(
        visitors.register, site=current_services().config, name=form.name.data, company=form.company.data or "",
        starts_at=_local(form.starts_at.data), ends_at=_local(form.ends_at.data), levels=form.levels.data,
        tenant_id=tenant if scoped else (int(form.tenant.data) if form.tenant.data else None),
        purpose=form.purpose.data or "", done=f"Visit of {form.name.data} registered."))


@bp.route("/<id:visit_id>/check-in", methods=["POST"])
@role_required("guard")
def check_in(visit_id: int) -> Any:
    _visit_or_404(visit_id)
    form = CheckInForm()
    return _act(form, lambda: admin_change(
        visitors.check_in, visit_id, id_document=form.id_document.data, fmt=form.fmt.data, number=form.number.data,
        pepper=current_services().keys.pin_pepper(), now=datetime.now(UTC),
        done=f"Visit {visit_id}: badge {form.number.data} issued; print it below."))


@bp.route("/<id:visit_id>/return", methods=["POST"])
@role_required("guard")
def return_badge(visit_id: int) -> Any:
    _visit_or_404(visit_id)
    return _act(ActionForm(), lambda: admin_change(visitors.return_badge, visit_id, datetime.now(UTC),
                                                   done=f"Visit {visit_id}: badge returned and revoked."))


@bp.route("/<id:visit_id>/cancel", methods=["POST"])
@any_role("guard", "tenant_admin")
def cancel(visit_id: int) -> Any:
    _visit_or_404(visit_id)
    form = CancelForm()
    return _act(form, lambda: admin_change(visitors.cancel, visit_id, form.reason.data,
                                           done=f"Visit {visit_id} cancelled."))


def _act(form: FlaskForm, change: Callable[[], object]) -> Any:
    """``change`` if the form is valid (its CSRF token included), else the form's errors; back to the list."""
    if form.validate_on_submit():
        change()
    else:
        form_errors(form)
    return redirect(url_for("visitors.index"))


@bp.route("/<id:visit_id>/badge.pdf")
@role_required("guard")
def badge(visit_id: int) -> Any:
    _visit_or_404(visit_id)
    try:
        text = read(lambda s: badge_text(s, visit_id, current_services().presenter.tz))
    except AdminError as exc:  # not checked in, or already returned: no badge to print
        flash(str(exc), "error")
        return redirect(url_for("visitors.index"))
    return Response(render(text), mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="visitor-badge-{visit_id}.pdf"'})


@bp.route("/escorts", methods=["POST"])
@role_required("admin")
def escort() -> Any:
    form = EscortForm()
    allowed = bool(form.may_escort.data)
    return _act(form, lambda: admin_change(
        visitors.set_may_escort, form.person.data, allowed,
        done=f"Person {form.person.data} {'may escort visitors' if allowed else 'no longer escorts'}."))
