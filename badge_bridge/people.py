"""People, credentials and console users: the changes an administrator makes, each returning the audit
event that records it, with ``detail["state"]``: every row it changed as the change left it
(badge_bridge.audit.access_tables). The caller commits the change and its event together
(badge_bridge.audited). Each checks everything before it writes: a refused change leaves nothing to undo."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import cards, console_sessions
from badge_bridge.audit import access_tables as rows
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import hash_pin
from badge_bridge.models import AccessLevel, ConsoleUser, Credential, Person
from badge_bridge.roles import ROLES

CREDENTIAL_STATUSES = ("active", "suspended", "lost", "revoked")
PASSWORD_MIN = 12
PIN_LENGTHS = range(4, 9)
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}\Z")  # \Z: $ would take "guard\n"
LOGIN_ROLES = tuple(r for r in ROLES if r != "wall")
"""The roles of people, who log in with a password; a wall display never does (add_wall)."""
hasher = PasswordHasher()


class AdminError(ValueError):
    """A change that cannot be made as asked; the message says why."""


def admin_event(kind: str, actor: str, subject: dict[str, object], detail: dict[str, object],
                *changed: tuple[str, rows.State | None]) -> Event:
    """An administrative change (people, credentials, faces, users), audited with who made it as the source
    and the state of every row it ``changed`` (access_tables.person(p), ..., or (key, None) for a removed row)."""
    now = datetime.now(UTC)
    return Event(id=Event.new_id(kind), kind=kind, source=actor, ts=now, subject=subject,
                 detail={**detail, "state": dict(changed)}, received_ts=now)


def level_rows(session: Session, keys: list[str]) -> list[AccessLevel]:
    found = {lvl.key: lvl for lvl in session.scalars(select(AccessLevel).where(AccessLevel.key.in_(keys)))}
    missing = [k for k in keys if k not in found]
    if missing:
        known = ", ".join(session.scalars(select(AccessLevel.key).order_by(AccessLevel.key))) or "none"
        raise AdminError(f"unknown access level {', '.join(missing)} (known: {known})")
    return [found[k] for k in keys]


def add_person(
    session: Session, actor: str, name: str, *, employee_no: str | None = None, company: str = "",
    levels: Sequence[str] = (), lockdown_exempt: bool = False,
) -> tuple[Person, Event]:
    name = name.strip()
    if not name or len(name) > 200:
        raise AdminError("a person needs a name of 1 to 200 characters")
    if employee_no is not None and session.scalar(select(Person.id).where(Person.employee_no == employee_no)):
        raise AdminError(f"employee number {employee_no!r} is already used by another person")
    person = Person(name=name, employee_no=employee_no, company=company, levels=level_rows(session, list(levels)),
                    lockdown_exempt=lockdown_exempt)
    session.add(person)
    session.flush()
    return person, admin_event(EventKind.ADMIN_PERSON_ADDED, actor, {"person": person.id},
                          {"levels": list(levels), "lockdown_exempt": lockdown_exempt}, rows.person(person))


def add_credential(
    session: Session, actor: str, person_id: int, fmt: str, number: str, *, pepper: bytes, pin: str | None = None,
    biometric_ref: str | None = None, valid_from: datetime | None = None, valid_until: datetime | None = None,
) -> tuple[Credential, Event]:
    person = session.get(Person, person_id)
    if person is None:
        raise AdminError(f"no person with id {person_id}")
    if person.status not in ("active", "pending"):  # pending: a customer's person, whose cards wait for approval
        state = "has left" if person.status == "left" else f"is {person.status}"
        raise AdminError(f"person {person_id} {state}; a credential cannot be issued to them")
    try:
        number = cards.canonical(fmt, number.strip())  # as typed by an operator; a device's number is exact
    except cards.CardFormatError as exc:
        raise AdminError(str(exc)) from None
    if pin is not None and (not (pin.isascii() and pin.isdigit()) or len(pin) not in PIN_LENGTHS):  # not "１２３４"
        raise AdminError("a PIN is 4 to 8 digits")
    if valid_from and valid_until and valid_until <= valid_from:
        raise AdminError("valid-until must be after valid-from")
    if session.scalar(select(Credential.id).where(Credential.format == fmt, Credential.number == number)):
        raise AdminError(f"card {fmt} {number} is already issued; revoke it first")
    cred = Credential(
        person_id=person_id, format=fmt, number=number, pin_hash=hash_pin(pepper, pin) if pin else None,
        biometric_ref=biometric_ref, valid_from=valid_from, valid_until=valid_until,
    )
    session.add(cred)
    session.flush()
    return cred, admin_event(EventKind.ADMIN_CREDENTIAL_ADDED, actor, {"person": person_id, "credential": cred.id},
                        {"format": fmt, "has_pin": pin is not None, "biometric": biometric_ref is not None,
                         "valid_until": valid_until.isoformat() if valid_until else None}, rows.credential(cred))


def set_credential_status(
    session: Session, actor: str, credential_id: int, status: str, reason: str
) -> tuple[Credential, Event]:
    if status not in CREDENTIAL_STATUSES:
        raise AdminError(f"status {status!r}: expected one of {', '.join(CREDENTIAL_STATUSES)}")
    if not reason.strip():
        raise AdminError("a reason is required")
    cred = session.get(Credential, credential_id)
    if cred is None:
        raise AdminError(f"no credential with id {credential_id}")
    if cred.status == "revoked":
        raise AdminError(f"credential {credential_id} is revoked; issue a new one instead")
    cred.status = status
    if status == "revoked":
        cred.revoked_at = datetime.now(UTC)
    session.flush()
    return cred, admin_event(f"admin.credential_{status}", actor, {"person": cred.person_id, "credential": cred.id},
                        {"reason": reason.strip()}, rows.credential(cred))


def add_user(session: Session, actor: str, username: str, role: str, password: str, *,
             tenant_id: int | None = None) -> tuple[ConsoleUser, Event]:
    """``tenant_id``: the customer of a tenant admin (badge_bridge.tenants.add_admin); no other role has one."""
    if not USERNAME_RE.match(username):
        raise AdminError(f"user name {username!r}: expected 2-64 lowercase letters, digits or _.- (starting "
                         "with a letter or digit)")
    _login_role(role)
    if (role == "tenant_admin") != (tenant_id is not None):
        raise AdminError("a tenant admin is added for a tenant (badge-bridge tenant admin-add), and only they have one")
    if len(password) < PASSWORD_MIN:
        raise AdminError(f"a console password has at least {PASSWORD_MIN} characters")
    if session.scalar(select(ConsoleUser.id).where(ConsoleUser.username == username)):
        raise AdminError(f"console user {username!r} already exists")
    user = ConsoleUser(username=username, role=role, password_hash=hasher.hash(password), tenant_id=tenant_id)
    session.add(user)
    session.flush()
    return user, admin_event(EventKind.ADMIN_USER_ADDED, actor, {"user": username}, {"role": role}, rows.user(user))


def update_person(session: Session, actor: str, person_id: int, *, name: str, company: str, levels: list[str],
                  lockdown_exempt: bool) -> tuple[Person, Event]:
    person = _person(session, person_id)
    name = name.strip()
    if not name or len(name) > 200:
        raise AdminError("a person needs a name of 1 to 200 characters")
    before = sorted(lvl.key for lvl in person.levels)
    person.name, person.company, person.lockdown_exempt = name, company.strip()[:200], lockdown_exempt
    person.levels = level_rows(session, levels)
    session.flush()
    return person, admin_event(EventKind.ADMIN_PERSON_CHANGED, actor, {"person": person.id},
                          {"levels": sorted(levels), "levels_before": before, "lockdown_exempt": lockdown_exempt},
                               rows.person(person))


def person_left(session: Session, actor: str, person_id: int, reason: str) -> tuple[Person, Event]:
    """The person left: every credential they hold is revoked with them, their history stays."""
    if not reason.strip():
        raise AdminError("a reason is required")
    person = _person(session, person_id)
    now = datetime.now(UTC)
    person.status, person.left_at = "left", now
    revoked = []
    for cred in person.credentials:
        if cred.status != "revoked":
            cred.status, cred.revoked_at = "revoked", now
            revoked.append(cred)
    session.flush()
    return person, admin_event(EventKind.ADMIN_PERSON_LEFT, actor, {"person": person.id},
                               {"reason": reason.strip(), "credentials_revoked": [c.id for c in revoked]},
                               rows.person(person), *map(rows.credential, revoked))


def set_credential_validity(session: Session, actor: str, credential_id: int, valid_from: datetime | None,
                            valid_until: datetime | None) -> tuple[Credential, Event]:
    cred = session.get(Credential, credential_id)
    if cred is None:
        raise AdminError(f"no credential with id {credential_id}")
    if valid_from and valid_until and valid_until <= valid_from:
        raise AdminError("valid-until must be after valid-from")
    cred.valid_from, cred.valid_until = valid_from, valid_until
    session.flush()
    return cred, admin_event(EventKind.ADMIN_CREDENTIAL_VALIDITY, actor,
                             {"person": cred.person_id, "credential": cred.id},
                        {"valid_from": valid_from.isoformat() if valid_from else None,
                         "valid_until": valid_until.isoformat() if valid_until else None},
                             rows.credential(cred))


def set_user_active(session: Session, actor: str, user_id: int, active: bool) -> tuple[ConsoleUser, Event]:
    """Disabling a user ends every session of theirs."""
    user = _user(session, user_id)
    if active and user.role == "wall":
        raise AdminError(f"{user.username} is a revoked wall display: add a new one for the screen")
    user.active = active
    ended = 0 if active else console_sessions.end_all(session, user.id, "user_disabled", datetime.now(UTC))
    session.flush()
    return user, admin_event(EventKind.ADMIN_USER_ENABLED if active else EventKind.ADMIN_USER_DISABLED, actor,
                             {"user": user.username}, {} if active else {"sessions_ended": ended}, rows.user(user))


def reset_password(session: Session, actor: str, user_id: int, password: str) -> tuple[ConsoleUser, Event]:
    """A new password ends every session of the user: whoever knew the old one is out."""
    user = _user(session, user_id)
    if user.role == "wall":
        raise AdminError(f"{user.username} is a wall display: it has no password (revoke it and add a new one)")
    if len(password) < PASSWORD_MIN:
        raise AdminError(f"a console password has at least {PASSWORD_MIN} characters")
    user.password_hash = hasher.hash(password)
    ended = console_sessions.end_all(session, user.id, "password_changed", datetime.now(UTC))
    session.flush()
    return user, admin_event(EventKind.ADMIN_PASSWORD_RESET, actor, {"user": user.username},
                             {"sessions_ended": ended}, rows.user(user))


def set_role(session: Session, actor: str, user_id: int, role: str) -> tuple[ConsoleUser, Event]:
    """A new role ends every session of the user: pages and forms opened under the old role stop working."""
    _login_role(role)
    user = _user(session, user_id)
    if user.role == "wall":
        raise AdminError(f"{user.username} is a wall display: it keeps its role (revoke it, add a user)")
    if "tenant_admin" in (role, user.role) and role != user.role:  # their tenant goes with the role
        raise AdminError(f"{user.username}: a tenant admin is neither made from nor turned into another role "
                         "(disable the user and add a new one)")
    before, user.role = user.role, role
    ended = console_sessions.end_all(session, user.id, "role_changed", datetime.now(UTC))
    session.flush()
    return user, admin_event(EventKind.ADMIN_ROLE_CHANGED, actor, {"user": user.username},
                             {"role": role, "role_before": before, "sessions_ended": ended}, rows.user(user))


WALL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{1,63}\Z")


def wall_username(name: str) -> str:
    """The console user name of a wall display called ``name`` ("NOC wall" -> "noc-wall")."""
    if not WALL_NAME_RE.match(name.strip()):
        raise AdminError(f"wall name {name!r}: expected 2-64 letters, digits, spaces or _.-")
    return re.sub(r" +", "-", name.strip().lower())


def add_wall(session: Session, actor: str, name: str, *, now: datetime) -> tuple[tuple[ConsoleUser, str], Event]:
    """A wall display: a console user of role wall that can never log in with a password (its hash is of a
    random secret nobody keeps, and web.auth refuses the role), with a one-time link token for its screen
    (returned, never stored: console_session keeps its SHA-256)."""
    username = wall_username(name)
    if session.scalar(select(ConsoleUser.id).where(ConsoleUser.username == username)):
        raise AdminError(f"console user {username!r} already exists")
    user = ConsoleUser(username=username, role="wall", password_hash=hasher.hash(secrets.token_urlsafe(32)))
    session.add(user)
    session.flush()
    link = console_sessions.start(session, user.id, now=now, lifetime=console_sessions.WALL_LINK_LIFETIME,
                                  address="", user_agent=console_sessions.WALL_LINK_AGENT)
    expires = now + console_sessions.WALL_LINK_LIFETIME
    return (user, link), admin_event(EventKind.ADMIN_WALL_ADDED, actor, {"user": username},
                                     {"link_expires": expires.isoformat()}, rows.user(user))


def revoke_wall(session: Session, actor: str, user_id: int) -> tuple[ConsoleUser, Event]:
    """Revoke a wall display for good: its link and its screen's session end ("revoked"); an open screen
    closes its stream at its next session check and says it was revoked."""
    user = _user(session, user_id)
    if user.role != "wall":
        raise AdminError(f"{user.username} is not a wall display")
    user.active = False
    ended = console_sessions.end_all(session, user.id, "revoked", datetime.now(UTC))
    session.flush()
    return user, admin_event(EventKind.ADMIN_WALL_REVOKED, actor, {"user": user.username},
                             {"sessions_ended": ended}, rows.user(user))


def _login_role(role: str) -> None:
    if role == "wall":
        raise AdminError("a wall display is added as a wall (badge-bridge wall add, or Add a wall display)")
    if role not in LOGIN_ROLES:
        raise AdminError(f"role {role!r}: expected one of {', '.join(LOGIN_ROLES)}")


def user_id(session: Session, username: str) -> int:
    """The id of a console user by name (the CLI names users, the console uses ids)."""
    found = session.scalar(select(ConsoleUser.id).where(ConsoleUser.username == username))
    if found is None:
        raise AdminError(f"no console user {username!r}")
    return found


def _user(session: Session, user_id: int) -> ConsoleUser:
    user = session.get(ConsoleUser, user_id)
    if user is None:
        raise AdminError(f"no console user with id {user_id}")
    return user


def _person(session: Session, person_id: int) -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise AdminError(f"no person with id {person_id}")
    return person
