"""Customer cages: what a customer's own administrator (a tenant admin) may change, within the limits the
operator sets in ``[[tenants]]`` (the levels they may give, the longest validity), and site staff's approval
of the people a customer adds.

Each change returns ``(row, admin_event)`` with the changed rows' states, like badge_bridge.people, and is
committed through badge_bridge.audited. A person or credential a tenant admin names that is not of their
tenant is refused with the very message a missing id gets: for them it does not exist, and the error must
not tell them it does. A customer's new person is ``pending`` until site staff approve them; until then
their cards are denied at the door (policy Reason.PERSON_NOT_APPROVED)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit import access_tables as rows
from badge_bridge.config import SiteConfig, TenantConfig
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.models import AccessLevel, ConsoleUser, Credential, Person, Tenant
from badge_bridge.people import AdminError, admin_event


@dataclass(frozen=True)
class Scope:
    """A tenant admin's reach: their tenant's row and the operator's limits for it from the site file."""

    tenant_id: int
    limits: TenantConfig

    @property
    def key(self) -> str:
        return self.limits.key

    def may_give(self, level: str) -> bool:
        return level in self.limits.levels

    def latest_until(self, now: datetime) -> datetime:
        return now + timedelta(days=self.limits.max_validity_days)


def scope(session: Session, config: SiteConfig, key: str) -> Scope:
    """The scope of tenant ``key``: in the site file and synced to the database (``badge-bridge init``)."""
    limits = config.tenant(key)
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.key == key))
    if limits is None or tenant_id is None:
        known = ", ".join(t.key for t in config.tenants) or "none"
        raise AdminError(f"no tenant {key!r} (in the site file: {known}; run `badge-bridge init` after adding one)")
    return Scope(tenant_id, limits)


def scope_of_id(session: Session, config: SiteConfig, tenant_id: int | None) -> Scope | None:
    """The scope of a tenant admin's tenant id; None when the tenant is gone from the site file (they then
    reach nothing)."""
    key = session.scalar(select(Tenant.key).where(Tenant.id == tenant_id)) if tenant_id is not None else None
    limits = config.tenant(key) if key is not None else None
    return Scope(tenant_id, limits) if limits is not None and tenant_id is not None else None


def their_person(session: Session, sc: Scope, person_id: int) -> Person:
    person = session.get(Person, person_id)
    # a visitor is not one of their people: a visitor's badge comes only from the desk's check-in, for the visit
    if person is None or person.tenant_id != sc.tenant_id or person.kind == "visitor":
        raise AdminError(f"no person with id {person_id}")  # people._person's words: no existence oracle
    return person


def their_credential(session: Session, sc: Scope, credential_id: int) -> Credential:
    cred = session.get(Credential, credential_id)
    if cred is None or session.scalar(select(Person.tenant_id).where(Person.id == cred.person_id)) != sc.tenant_id:
        raise AdminError(f"no credential with id {credential_id}")
    return cred


def _allowed(sc: Scope, levels: Sequence[str]) -> list[str]:
    """``levels`` if the tenant may give each; a level they may not give reads as unknown, whether or not the
    site has it."""
    refused = [lvl for lvl in levels if not sc.may_give(lvl)]
    if refused:
        raise AdminError(f"unknown access level {', '.join(refused)} (yours: {', '.join(sc.limits.levels)})")
    return list(dict.fromkeys(levels))


def _validity(sc: Scope, valid_from: datetime | None, valid_until: datetime | None, now: datetime) -> None:
    if valid_until is None:
        raise AdminError(f"a valid-until date is required (at most {sc.limits.max_validity_days} days from now)")
    if valid_until > sc.latest_until(now):
        raise AdminError(f"valid-until {valid_until:%Y-%m-%d %H:%M} UTC is beyond the {sc.limits.max_validity_days} "
                         f"days the site allows {sc.key} (latest {sc.latest_until(now):%Y-%m-%d %H:%M} UTC)")
    if valid_from is not None and valid_from > sc.latest_until(now):
        raise AdminError("valid-from is beyond the longest validity the site allows")


def add_admin(session: Session, actor: str, sc: Scope, username: str, password: str) -> tuple[ConsoleUser, Event]:
    """A console user of role tenant_admin for the tenant (the operator's command)."""
    return people.add_user(session, actor, username, "tenant_admin", password, tenant_id=sc.tenant_id)


def add_person(session: Session, actor: str, sc: Scope, name: str, *, levels: Sequence[str] = (),
               company: str = "") -> tuple[Person, Event]:
    """A person of the tenant, pending site staff's approval, with levels from the tenant's list only."""
    chosen = _allowed(sc, levels)
    name = name.strip()
    if not name or len(name) > 200:
        raise AdminError("a person needs a name of 1 to 200 characters")
    person = Person(name=name, company=(company.strip() or sc.limits.name or sc.key)[:200], status="pending",
                    tenant_id=sc.tenant_id, levels=people.level_rows(session, chosen))
    session.add(person)
    session.flush()
    return person, admin_event(EventKind.ADMIN_PERSON_ADDED, actor, {"person": person.id},
                               {"levels": chosen, "tenant": sc.key, "lockdown_exempt": False}, rows.person(person))


def add_credential(session: Session, actor: str, sc: Scope, person_id: int, fmt: str, number: str, *,
                   pepper: bytes, valid_until: datetime | None, now: datetime, pin: str | None = None,
                   ) -> tuple[Credential, Event]:
    """A card for the tenant's person, valid at most ``max_validity_days`` from now (a date is required)."""
    their_person(session, sc, person_id)
    _validity(sc, None, valid_until, now)
    return people.add_credential(session, actor, person_id, fmt, number, pepper=pepper, pin=pin,
                                 valid_until=valid_until)


def set_validity(session: Session, actor: str, sc: Scope, credential_id: int, valid_from: datetime | None,
                 valid_until: datetime | None, *, now: datetime) -> tuple[Credential, Event]:
    their_credential(session, sc, credential_id)
    _validity(sc, valid_from, valid_until, now)
    return people.set_credential_validity(session, actor, credential_id, valid_from, valid_until)


def revoke(session: Session, actor: str, sc: Scope, credential_id: int, reason: str) -> tuple[Credential, Event]:
    their_credential(session, sc, credential_id)
    return people.set_credential_status(session, actor, credential_id, "revoked", reason)


def set_levels(session: Session, actor: str, sc: Scope, person_id: int, levels: Sequence[str]
               ) -> tuple[Person, Event]:
    """The tenant's levels of their person become ``levels``; any other level the person holds (given by site
    staff, which the tenant admin does not see) stays as it is."""
    person = their_person(session, sc, person_id)
    chosen = _allowed(sc, levels)
    before = sorted(lvl.key for lvl in person.levels)
    kept = [lvl.key for lvl in person.levels if not sc.may_give(lvl.key)]
    person.levels = people.level_rows(session, kept + chosen)
    session.flush()
    return person, admin_event(EventKind.ADMIN_PERSON_CHANGED, actor, {"person": person.id},
                               {"levels": sorted(kept + chosen), "levels_before": before, "tenant": sc.key},
                               rows.person(person))


def person_left(session: Session, actor: str, sc: Scope, person_id: int, reason: str) -> tuple[Person, Event]:
    """The tenant's person no longer comes: their cards are revoked with them."""
    their_person(session, sc, person_id)
    return people.person_left(session, actor, person_id, reason)


def approve(session: Session, actor: str, person_id: int) -> tuple[Person, Event]:
    """Site staff approve a customer's pending person: their cards work from now on."""
    person = _pending(session, person_id)
    person.status = "active"
    session.flush()
    return person, admin_event(EventKind.ADMIN_PERSON_APPROVED, actor, {"person": person.id},
                               {"tenant": _tenant_key(session, person)}, rows.person(person))


def refuse(session: Session, actor: str, person_id: int, reason: str) -> tuple[Person, Event]:
    """Site staff refuse a customer's pending person: any card issued to them is revoked."""
    if not reason.strip():
        raise AdminError("a reason is required")
    person = _pending(session, person_id)
    person.status = "refused"
    revoked = [c for c in person.credentials if c.status != "revoked"]
    for cred in revoked:
        cred.status, cred.revoked_at = "revoked", datetime.now(UTC)
    session.flush()
    return person, admin_event(EventKind.ADMIN_PERSON_REFUSED, actor, {"person": person.id},
                               {"tenant": _tenant_key(session, person), "reason": reason.strip(),
                                "credentials_revoked": [c.id for c in revoked]},
                               rows.person(person), *map(rows.credential, revoked))


def _pending(session: Session, person_id: int) -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise AdminError(f"no person with id {person_id}")
    if person.status != "pending":
        raise AdminError(f"person {person_id} is not awaiting approval (status {person.status})")
    return person


def _tenant_key(session: Session, person: Person) -> str | None:
    return session.scalar(select(Tenant.key).where(Tenant.id == person.tenant_id))


def pending(session: Session, tenant_id: int | None = None) -> list[Person]:
    """People awaiting approval, oldest first (of one tenant when ``tenant_id`` is given)."""
    stmt = select(Person).where(Person.status == "pending").order_by(Person.created_at, Person.id)
    if tenant_id is not None:
        stmt = stmt.where(Person.tenant_id == tenant_id)
    return list(session.scalars(stmt))


def their_levels(session: Session, sc: Scope) -> list[AccessLevel]:
    """The levels the tenant may give, as the site has them."""
    return list(session.scalars(select(AccessLevel).where(AccessLevel.key.in_(sc.limits.levels))
                                .order_by(AccessLevel.key)))
