"""Visitors with escorts: a host registers a visitor for a time window, the desk checks their ID and issues a
temporary badge valid for the window only, and the badge comes back at the end (docs/workflows.md).

Each change checks everything first and returns (row, admin event) with ``detail["state"]`` of every row it
changed, like badge_bridge.people; the caller commits both together (badge_bridge.audited). The badge itself
opens a door only with an escort (policy.decide: ``Credential.visitor``); an unreturned badge raises
``visitor.overdue`` (badge_bridge.visitor_watch).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge.audit import access_tables as rows
from badge_bridge.config import SiteConfig
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.models import ConsoleUser, Credential, Person, Tenant, Visit
from badge_bridge.people import AdminError, _person, add_credential, admin_event, level_rows

STATES = ("expected", "on_site", "returned", "cancelled")
ID_DOCUMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ,.:/#()'-]{2,63}\Z")
ID_DIGITS_MAX = 4
"""A run of more digits than this is a document number, not the "last 4" the desk may note."""
NAME_MAX = 200


def host_of(actor: str) -> str:
    """The host named by an actor: the console user ("console:ana" -> "ana") or the CLI's login."""
    return actor.split(":", 1)[-1][:64]


def register(session: Session, actor: str, *, site: SiteConfig, name: str, company: str, starts_at: datetime,
             ends_at: datetime, levels: list[str], tenant_id: int | None = None,
             purpose: str = "") -> tuple[Visit, Event]:
    """A visitor expected between ``starts_at`` and ``ends_at``, who may be taken through the doors of
    ``levels``; hosted by ``actor``. A tenant admin registers visitors of their own customer only, to that
    customer's levels; every visitor's levels are within ``[visitors] levels`` when the site sets them."""
    name, company, purpose = name.strip(), company.strip(), purpose.strip()
    if not name or len(name) > NAME_MAX:
        raise AdminError(f"a visitor needs a name of 1 to {NAME_MAX} characters")
    if len(company) > NAME_MAX or len(purpose) > 500:
        raise AdminError("company: at most 200 characters; purpose: at most 500")
    _check_window(site, starts_at, ends_at)
    if not levels:
        raise AdminError("a visitor needs at least one access level: the doors they may be taken through")
    _actor_tenant(session, actor, tenant_id)
    allowed = set(site.visitors.levels) if site.visitors.levels else None
    if tenant_id is not None:
        tenant = session.get(Tenant, tenant_id)
        config = site.tenant(tenant.key) if tenant is not None else None
        if tenant is None or config is None:
            raise AdminError(f"no customer with id {tenant_id}")
        allowed = set(config.levels) & allowed if allowed is not None else set(config.levels)
    if allowed is not None and (outside := sorted(set(levels) - allowed)):
        raise AdminError(f"a visitor may not be given level {', '.join(outside)} (allowed: "
                         f"{', '.join(sorted(allowed)) or 'none'})")
    person = Person(name=name, company=company, kind="visitor", tenant_id=tenant_id,
                    levels=level_rows(session, sorted(set(levels))))
    session.add(person)
    session.flush()
    visit = Visit(person_id=person.id, tenant_id=tenant_id, host=host_of(actor), purpose=purpose,
                  starts_at=starts_at, ends_at=ends_at, state="expected")
    session.add(visit)
    session.flush()
    return visit, admin_event(EventKind.ADMIN_VISIT_REGISTERED, actor, {"person": person.id, "visit": visit.id},
                              {"levels": sorted(set(levels)), "purpose": purpose}, rows.person(person),
                              rows.visit(visit))


def check_in(session: Session, actor: str, visit_id: int, *, id_document: str, fmt: str, number: str,
             pepper: bytes = b"", pin: str | None = None, now: datetime) -> tuple[Visit, Event]:
    """The desk saw the visitor's ID (``id_document``: what it was and at most its last 4 digits, never the
    number) and issues badge ``fmt`` ``number``, valid for the visit's window only; with ``pin``, for doors
    that also ask for a PIN (the desk tells the visitor)."""
    visit = visible(session, actor, visit_id)
    if visit.state != "expected":
        raise AdminError(f"visit {visit_id} is {visit.state.replace('_', ' ')}: only an expected visitor checks in")
    if now >= visit.ends_at:
        raise AdminError(f"visit {visit_id} ended at {visit.ends_at.isoformat()}: register a new visit")
    if now < visit.starts_at - timedelta(hours=1):
        raise AdminError(f"visit {visit_id} starts at {visit.starts_at.isoformat()}: check in at most an hour before")
    id_document = check_id_document(id_document)
    credential, _ = add_credential(session, actor, visit.person_id, fmt, number, pepper=pepper, pin=pin,
                                   valid_from=visit.starts_at, valid_until=visit.ends_at)
    visit.state, visit.credential_id = "on_site", credential.id
    visit.id_checked_by, visit.id_checked_at, visit.id_document = host_of(actor), now, id_document
    session.flush()
    return visit, admin_event(EventKind.ADMIN_VISIT_CHECKED_IN, actor,
                              {"person": visit.person_id, "visit": visit.id, "credential": credential.id},
                              {"id_document": id_document, "format": fmt}, rows.visit(visit),
                              rows.credential(credential))


def return_badge(session: Session, actor: str, visit_id: int, now: datetime) -> tuple[Visit, Event]:
    """The badge is back at the desk: revoked, the visit ends (an overdue alarm clears: visitor_watch)."""
    visit = visible(session, actor, visit_id)
    if visit.state != "on_site":
        raise AdminError(f"visit {visit_id} is {visit.state.replace('_', ' ')}: no badge is out")
    visit.state, visit.returned_at = "returned", now
    changed = [rows.visit(visit), *_revoke_badges(session, visit.person_id, now)]
    session.flush()
    return visit, admin_event(EventKind.ADMIN_VISIT_BADGE_RETURNED, actor,
                              {"person": visit.person_id, "visit": visit.id, "credential": visit.credential_id},
                              {"overdue": visit.overdue_at is not None}, *changed)


def cancel(session: Session, actor: str, visit_id: int, reason: str) -> tuple[Visit, Event]:
    """An expected visit that will not happen (a visitor on site returns their badge instead)."""
    if not reason.strip():
        raise AdminError("a reason is required")
    visit = visible(session, actor, visit_id)
    if visit.state != "expected":
        raise AdminError(f"visit {visit_id} is {visit.state.replace('_', ' ')}: only an expected visit is cancelled"
                         + (" (return the badge instead)" if visit.state == "on_site" else ""))
    visit.state = "cancelled"
    changed = [rows.visit(visit), *_revoke_badges(session, visit.person_id, datetime.now(UTC))]
    session.flush()
    return visit, admin_event(EventKind.ADMIN_VISIT_CANCELLED, actor, {"person": visit.person_id, "visit": visit.id},
                              {"reason": reason.strip()[:500]}, *changed)


def _revoke_badges(session: Session, visitor_id: int, now: datetime) -> list[tuple[str, rows.State]]:
    """Every badge the visitor holds, revoked as the visit ends, however it was issued: the states changed."""
    changed = []
    for credential in session.scalars(select(Credential).where(Credential.person_id == visitor_id,
                                                               Credential.status != "revoked")):
        credential.status, credential.revoked_at = "revoked", now
        changed.append(rows.credential(credential))
    return changed


def set_may_escort(session: Session, actor: str, person_id: int, may_escort: bool) -> tuple[Person, Event]:
    """Whether a person may take visitors through doors: site staff any visitor, a customer's person their
    own customer's (policy.Credential.escorts)."""
    person = _person(session, person_id)
    if person.kind == "visitor":
        raise AdminError(f"person {person_id} is a visitor: a visitor never escorts")
    if person.status != "active" and may_escort:
        raise AdminError(f"person {person_id} is {person.status}: only an active person escorts")
    before, person.may_escort = person.may_escort, may_escort
    session.flush()
    return person, admin_event(EventKind.ADMIN_PERSON_CHANGED, actor, {"person": person.id},
                               {"may_escort": may_escort, "may_escort_before": before}, rows.person(person))


def check_id_document(text: str) -> str:
    """What the desk may note of an ID: its kind and at most the last 4 digits, in plain characters."""
    text = " ".join(text.split())
    if not ID_DOCUMENT_RE.match(text):
        raise AdminError("ID document: 3 to 64 letters, digits, spaces or ,.:/#()'- (e.g. \"passport, last 4: "
                         "1234\")")
    # every digit counts, however split ("C01X00T47", "1234 5678 9012"), but the "4" of "last 4"
    if sum(ch.isdigit() for ch in re.sub(r"(?i)\blast \d\b", "", text)) > ID_DIGITS_MAX:
        raise AdminError(f"ID document: note at most the last {ID_DIGITS_MAX} digits of its number, never the "
                         "whole number")
    return text


def visible(session: Session, actor: str, visit_id: int) -> Visit:
    """The visit, if ``actor`` may see it: a tenant admin only their own customer's (another customer's visit
    does not exist for them, the same words as a missing one)."""
    visit = session.get(Visit, visit_id)
    scoped, tenant = tenant_scope(session, actor)
    if visit is None or (scoped and visit.tenant_id != tenant):
        raise AdminError(f"no visit with id {visit_id}")
    return visit


def tenant_scope(session: Session, actor: str) -> tuple[bool, int | None]:
    """(True, their customer) for a tenant admin; (False, None) for site staff and the CLI."""
    if not actor.startswith("console:"):
        return False, None
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == host_of(actor)))
    if user is None or user.role != "tenant_admin":
        return False, None
    return True, user.tenant_id


def _actor_tenant(session: Session, actor: str, tenant_id: int | None) -> None:
    scoped, tenant = tenant_scope(session, actor)
    if scoped and (tenant is None or tenant != tenant_id):
        raise AdminError("a customer's admin registers visitors of their own customer only")


def _check_window(site: SiteConfig, starts_at: datetime, ends_at: datetime) -> None:
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise AdminError("give the visit's times with their time zone")
    if ends_at <= starts_at:
        raise AdminError("the visit must end after it starts")
    hours = site.visitors.max_visit_hours
    if ends_at - starts_at > timedelta(hours=hours):
        raise AdminError(f"a visit lasts at most {hours:g} hours ([visitors] max_visit_hours)")
    if ends_at <= datetime.now(UTC):
        raise AdminError("the visit's window has already ended")
