"""People and their credentials. Guards look people up; admins add, edit, revoke and set expiry. Every
change goes through badge_bridge.people (the same rules as the CLI) and is audited with the user."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, redirect, render_template, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload
from wtforms import BooleanField, DateTimeLocalField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, Regexp

from badge_bridge import biometrics
from badge_bridge import people as admin
from badge_bridge.cards import FORMATS
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.models import AccessLevel, AuditEntry, Credential, Person
from camera import enrollment
from camera.evidence import EvidenceStore
from web import current_services
from web.auth import role_required
from web.changes import admin_change, form_errors, read
from web.evidence import store as evidence_store
from web.params import query_text
from web.present import IN_CLAUSE

bp = Blueprint("people", __name__, url_prefix="/people")


class PersonForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    company = StringField("Company", validators=[Optional(), Length(max=200)])
    employee_no = StringField("Employee no.", validators=[Optional(), Length(max=64)])
    levels = SelectMultipleField("Access levels")
    lockdown_exempt = BooleanField("Responder: may pass during a lockdown")


class CredentialForm(FlaskForm):
    fmt = SelectField("Format", choices=[SelectChoice(f) for f in FORMATS])
    number = StringField("Card", validators=[DataRequired(), Length(max=64)])
    pin = PasswordField("PIN (4-8 digits, optional)",
                        validators=[Optional(), Regexp(r"^[0-9]{4,8}\Z", message="A PIN is 4 to 8 digits.")])
    biometric_ref = StringField("Biometric reference", validators=[Optional(), Length(max=128)])
    valid_until = DateTimeLocalField("Valid until (UTC)", validators=[Optional()])


class ValidityForm(FlaskForm):
    valid_from = DateTimeLocalField("Valid from (UTC)", validators=[Optional()])
    valid_until = DateTimeLocalField("Valid until (UTC)", validators=[Optional()])


class ReasonForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired(message="Give a reason."), Length(min=3, max=500)])


class FaceForm(FlaskForm):
    photo = FileField("Photo with one face (JPEG or PNG)", validators=[
        FileRequired(message="Choose a photo."), FileAllowed(["jpg", "jpeg", "png"], message="A JPEG or PNG photo.")])


class ActionForm(FlaskForm):
    """A button: the CSRF token only."""


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def _level_choices() -> list[SelectChoice]:
    return read(lambda s: [SelectChoice(lvl.key, lvl.name or lvl.key) for lvl in s.scalars(select(AccessLevel).order_by(AccessLevel.key))])


STATUS_KINDS = tuple(f"admin.credential_{status}" for status in admin.CREDENTIAL_STATUSES)


@dataclass(frozen=True)
class Standing:
    """A credential as the desk must read it now: its status, or expired / not yet valid, in words (never by
    colour alone), with the reason it was last suspended, lost or revoked and by whom, from the audit log."""

    css: str
    text: str
    reason: str = ""


def standings(session: Session, people: list[Person], now: datetime) -> dict[int, Standing]:
    """Credential id -> its standing, for every credential of ``people``, with one query of the log (the
    person + time index) for the reasons."""
    reasons: dict[int, str] = {}
    ids = [p.id for p in people]
    for i in range(0, len(ids), IN_CLAUSE):
        for kind, source, subject, detail in session.execute(
                select(AuditEntry.kind, AuditEntry.source, AuditEntry.subject, AuditEntry.detail)
                .where(AuditEntry.person_id.in_(ids[i:i + IN_CLAUSE]),
                       AuditEntry.kind.in_((*STATUS_KINDS, EventKind.ADMIN_PERSON_LEFT)))
                .order_by(AuditEntry.ts_us, AuditEntry.id)):
            said, by = json.loads(detail), source.removeprefix("console:")
            reason = said.get("reason") if isinstance(said.get("reason"), str) else ""
            if kind == EventKind.ADMIN_PERSON_LEFT:
                for cred in said.get("credentials_revoked", []):
                    reasons[cred] = f"left the company: {reason} (by {by})"
            elif isinstance(cred := json.loads(subject).get("credential"), int):
                reasons[cred] = f"{reason} (by {by})"
    return {c.id: standing(c, now, reasons.get(c.id, "")) for p in people for c in p.credentials}


def standing(cred: Credential, now: datetime, reason: str) -> Standing:
    if cred.status != "active":
        return Standing(cred.status, f"✗ {cred.status.upper()}", reason)
    if cred.valid_until is not None and cred.valid_until <= now:
        return Standing("expired", "✗ EXPIRED")
    if cred.valid_from is not None and cred.valid_from > now:
        return Standing("pending", "… NOT YET VALID")
    return Standing("active", "✓ active")


@bp.route("")
@role_required("guard")
def index() -> Any:
    q = query_text("q").strip()

    def query(s: Session) -> tuple[list[Person], dict[int, Standing]]:
        stmt = select(Person).options(selectinload(Person.credentials), selectinload(Person.levels)).order_by(Person.name)
        if q:
            like = f"%{q}%"
            stmt = stmt.where(or_(Person.name.ilike(like), Person.company.ilike(like), Person.employee_no.ilike(like),
                                  Person.id.in_(select(Credential.person_id).where(Credential.number.ilike(like)))))
        found = list(s.scalars(stmt.limit(500)))
        return found, standings(s, found, datetime.now(UTC))

    form = PersonForm()
    form.levels.choices = _level_choices()
    found, cards = read(query)
    return render_template("people.html", people=found, cards=cards, q=q, form=form)


@bp.route("", methods=["POST"])
@role_required("admin")
def add() -> Any:
    form = PersonForm()
    form.levels.choices = _level_choices()
    if form.validate_on_submit():
        person = admin_change(admin.add_person, form.name.data, employee_no=form.employee_no.data or None,
                              company=form.company.data or "", levels=form.levels.data,
                              lockdown_exempt=form.lockdown_exempt.data, done=f"{form.name.data} added.")
        if person is not None:
            return redirect(url_for("people.detail", person_id=person.id))
    else:
        form_errors(form)
    return redirect(url_for("people.index"))


@bp.route("/<id:person_id>")
@role_required("guard")
def detail(person_id: int) -> Any:
    def query(s: Session) -> tuple[Person | None, dict[int, Standing]]:
        found = s.scalars(select(Person).where(Person.id == person_id).options(
            selectinload(Person.credentials), selectinload(Person.levels))).first()
        return found, standings(s, [found] if found else [], datetime.now(UTC))

    person, cards = read(query)
    if person is None:
        abort(404)
    form = PersonForm(obj=person)
    form.levels.choices = _level_choices()
    form.levels.data = [lvl.key for lvl in person.levels]
    return render_template("person.html", person=person, cards=cards, local=current_services().presenter.local,
                           zone=current_services().presenter.zone, form=form, credential=CredentialForm(),
                           validity=ValidityForm(), reason=ReasonForm(), face=FaceForm(), action=ActionForm(),
                           faces=read(lambda s: biometrics.face_count(s, person_id)))


@bp.route("/<id:person_id>", methods=["POST"])
@role_required("admin")
def edit(person_id: int) -> Any:
    form = PersonForm()
    form.levels.choices = _level_choices()
    if form.validate_on_submit():
        admin_change(admin.update_person, person_id, name=form.name.data, company=form.company.data or "",
                     levels=form.levels.data, lockdown_exempt=form.lockdown_exempt.data, done="Saved.")
    else:
        form_errors(form)
    return redirect(url_for("people.detail", person_id=person_id))


@bp.route("/<id:person_id>/left", methods=["POST"])
@role_required("admin")
def left(person_id: int) -> Any:
    form = ReasonForm()
    if form.validate_on_submit():
        admin_change(biometrics.person_left, person_id, form.reason.data, photos=evidence_store(),
                     done="Marked as left; every credential they held is revoked and their faces removed.")
    else:
        form_errors(form)
    return redirect(url_for("people.detail", person_id=person_id))


@bp.route("/<id:person_id>/credentials", methods=["POST"])
@role_required("admin")
def add_credential(person_id: int) -> Any:
    form = CredentialForm()
    if form.validate_on_submit():
        admin_change(admin.add_credential, person_id, form.fmt.data, form.number.data,
                     pepper=current_services().keys.pin_pepper(), pin=form.pin.data or None,
                     biometric_ref=form.biometric_ref.data or None, valid_until=_utc(form.valid_until.data),
                     done=f"Credential {form.fmt.data} {form.number.data} issued.")
    else:
        form_errors(form)
    return redirect(url_for("people.detail", person_id=person_id))


@bp.route("/credentials/<id:credential_id>/revoke", methods=["POST"])
@role_required("admin")
def revoke(credential_id: int) -> Any:
    form = ReasonForm()
    cred = read(lambda s: s.get(Credential, credential_id))
    if cred is None:
        abort(404)
    if form.validate_on_submit():
        admin_change(admin.set_credential_status, credential_id, "revoked", form.reason.data,
                     done=f"Credential {credential_id} revoked.")
    else:
        form_errors(form)
    return redirect(url_for("people.detail", person_id=cred.person_id))


@bp.route("/credentials/<id:credential_id>/validity", methods=["POST"])
@role_required("admin")
def validity(credential_id: int) -> Any:
    form = ValidityForm()
    cred = read(lambda s: s.get(Credential, credential_id))
    if cred is None:
        abort(404)
    if form.validate_on_submit():
        admin_change(admin.set_credential_validity, credential_id, _utc(form.valid_from.data),
                     _utc(form.valid_until.data), done=f"Validity of credential {credential_id} saved.")
    else:
        form_errors(form)
    return redirect(url_for("people.detail", person_id=cred.person_id))



@bp.route("/<id:person_id>/faces", methods=["POST"])
@role_required("admin")
def enroll_face(person_id: int) -> Any:
    form = FaceForm()
    if form.validate_on_submit():
        svc = current_services()
        admin_change(enrollment.enroll_face, person_id, form.photo.data.read(), key=svc.keys.evidence_key(),
                     photos=evidence_store() if svc.config.faces.keep_photos else None, done="Face enrolled.")
    else:
        form_errors(form)
    return redirect(url_for("people.detail", person_id=person_id))


@bp.route("/<id:person_id>/faces/remove", methods=["POST"])
@role_required("admin")
def remove_faces(person_id: int) -> Any:
    if ActionForm().validate_on_submit():
        admin_change(_remove_faces, person_id, photos=evidence_store(), done="Faces removed.")
    return redirect(url_for("people.detail", person_id=person_id))


def _remove_faces(session: Session, actor: str, person_id: int, *, photos: EvidenceStore) -> tuple[int, Event]:
    """biometrics.remove_faces in the (result, event) shape admin_change takes."""
    event = biometrics.remove_faces(session, actor, person_id, photos=photos)
    return event.detail["count"], event
