"""Access requests: a person asks for an access level for a time window, with a reason or a ticket; site
staff (a supervisor or admin) approve or refuse it, after the person's tenant admin for a customer's person;
an approved request opens the level's doors inside the window only (badge_bridge.snapshot) and is marked
expired at its end by the bridge (badge_bridge.request_expiry).

Each change checks everything first and returns (the request, its audit event) with ``detail["state"]``,
committed by the caller through badge_bridge.audited, like badge_bridge.people. A transition is one
conditional UPDATE (``WHERE state IN (...)``): two supervisors approving at once, or a replayed form, change
the request once; the other is told what happened meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, select, update
from sqlalchemy.orm import Session

from badge_bridge.audit import access_tables as rows
from badge_bridge.config import SiteConfig
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.models import AccessLevel, AccessLevelDoor, AccessRequest, Door, Person, Tenant
from badge_bridge.people import AdminError, admin_event
from badge_bridge.roles import can

STATES = ("open", "approved", "refused", "expired", "cancelled")
MAX_DAYS = 31
"""The longest window a request may ask for (a customer's person: also within their tenant's
``max_validity_days`` from today)."""
PAST_GRACE = timedelta(minutes=15)
"""A window may start this long before now (a form filled in "from now" and sent a few minutes later)."""
REASON_MAX, TICKET_MAX, COMMENT_MIN = 500, 64, 3


@dataclass(frozen=True)
class Who:
    """Who acts, as the console or the CLI knows them: the audit source (``console:alice``, ``cli:root``),
    their role, and for a tenant admin their tenant's id."""

    actor: str
    role: str
    tenant_id: int | None = None

    @property
    def name(self) -> str:
        """The person behind the actor: ``console:alice`` and ``cli:alice`` are the same pair of eyes."""
        return self.actor.split(":", 1)[-1]

    @property
    def tenant_admin(self) -> bool:
        return can(self.role, "tenant_admin")


def _event(kind: str, who: Who, r: AccessRequest, level_key: str, **detail: object) -> Event:
    return admin_event(kind, who.actor, {"person": r.person_id, "request": r.id}, dict(detail),
                       rows.access_request(r, level_key))


def _when(value: datetime) -> str:
    return value.isoformat()


def _get(session: Session, who: Who, request_id: int) -> AccessRequest:
    """The request, if ``who`` may see it: another tenant's request does not exist for a tenant admin."""
    r = session.get(AccessRequest, request_id)
    if r is None or (who.tenant_admin and r.tenant_id != who.tenant_id):
        raise AdminError(f"no access request with id {request_id}")
    return r


def _transition(session: Session, r: AccessRequest, was: tuple[str, ...], to: str, *also: ColumnElement[bool],
                **values: object) -> bool:
    """Move ``r`` from one of ``was`` to ``to`` with ``values``, only if it is still there (another console
    or bridge may have moved it since it was read) and ``also`` holds: whether it moved."""
    result = session.execute(update(AccessRequest).where(AccessRequest.id == r.id, AccessRequest.state.in_(was), *also)
                             .values(state=to, **values).execution_options(synchronize_session=False))
    moved = cast(CursorResult[Any], result).rowcount
    session.refresh(r)
    return moved == 1


def _move(session: Session, r: AccessRequest, was: tuple[str, ...], to: str, *also: ColumnElement[bool],
          **values: object) -> None:
    if r.state not in was or not _transition(session, r, was, to, *also, **values):
        raise AdminError(_not_now(r, to))


def _not_now(r: AccessRequest, to: str) -> str:
    done = "endorsed" if to == "open" else to
    if r.state == "approved" and to == "approved":
        return (f"access request {r.id} is already approved (by {r.decided_by} at {r.decided_at:%Y-%m-%d %H:%M} "
                "UTC): nothing to do")
    by = f" by {r.decided_by}" if r.decided_by and r.state in ("approved", "refused") else ""
    return f"access request {r.id} is {r.state}{by}: it cannot be {done} now (open a new request)" \
        if r.state != "open" else f"access request {r.id} changed meanwhile; reload and try again"


def level_doors(session: Session, level_id: int) -> list[str]:
    """The doors a level opens (what "the area" of a request means to the people who pick it)."""
    return sorted(session.scalars(select(Door.key).join(AccessLevelDoor, AccessLevelDoor.door_id == Door.id)
                                  .where(AccessLevelDoor.level_id == level_id)))


def open_request(session: Session, who: Who, config: SiteConfig, person_id: int, level_key: str,
                 starts_at: datetime, ends_at: datetime, *, reason: str = "", ticket: str = "",
                 now: datetime) -> tuple[AccessRequest, Event]:
    """A request by a guard or above for anyone, by a tenant admin for their own tenant's people."""
    if not (can(who.role, "guard") or who.tenant_admin):
        raise AdminError(f"role {who.role} may not request access")
    reason, ticket = reason.strip(), ticket.strip()
    if not (reason or ticket):
        raise AdminError("give a reason or a ticket number")
    if len(reason) > REASON_MAX or len(ticket) > TICKET_MAX:
        raise AdminError(f"a reason has at most {REASON_MAX} characters, a ticket number at most {TICKET_MAX}")
    person = session.get(Person, person_id)
    if person is None or (who.tenant_admin and person.tenant_id != who.tenant_id):
        raise AdminError(f"no person with id {person_id}")
    if person.status not in ("active", "pending"):
        raise AdminError(f"person {person_id} is {person.status}: no access can be requested for them")
    level = session.scalar(select(AccessLevel).where(AccessLevel.key == level_key))
    if level is None or not level_doors(session, level.id):
        known = ", ".join(lvl.key for lvl in config.access_levels) or "none"
        raise AdminError(f"unknown access level {level_key!r} (known: {known})")
    _check_window(starts_at, ends_at, now)
    if person.tenant_id is not None:
        tenant_key = session.scalar(select(Tenant.key).where(Tenant.id == person.tenant_id)) or ""
        limits = config.tenant(tenant_key)
        if limits is None:
            raise AdminError(f"tenant {tenant_key!r} is not in the site file: its people cannot be given access")
        if who.tenant_admin and level_key not in limits.levels:
            raise AdminError(f"level {level_key!r} is not one tenant {tenant_key} may request "
                             f"(theirs: {', '.join(limits.levels)})")
        if ends_at > now + timedelta(days=limits.max_validity_days):
            raise AdminError(f"tenant {tenant_key}'s access runs at most {limits.max_validity_days} days from today")
    overlapping = session.scalar(select(AccessRequest.id).where(
        AccessRequest.person_id == person_id, AccessRequest.level_id == level.id,
        AccessRequest.state.in_(("open", "approved")), AccessRequest.starts_at < ends_at,
        AccessRequest.ends_at > starts_at).limit(1))
    if overlapping is not None:
        raise AdminError(f"access request {overlapping} already asks for {level_key} for this person in that window")
    r = AccessRequest(person_id=person_id, level_id=level.id, tenant_id=person.tenant_id, starts_at=starts_at,
                      ends_at=ends_at, reason=reason, ticket=ticket, state="open", requested_by=who.name,
                      requested_at=now, comment="")
    session.add(r)
    session.flush()
    return r, _event(EventKind.ADMIN_REQUEST_OPENED, who, r, level_key, level=level_key,
                     doors=level_doors(session, level.id), starts_at=_when(starts_at), ends_at=_when(ends_at),
                     reason=reason, ticket=ticket)


def _check_window(starts_at: datetime, ends_at: datetime, now: datetime) -> None:
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ValueError("request windows are aware datetimes (UTC)")
    if ends_at <= starts_at:
        raise AdminError("the window must end after it starts")
    if starts_at < now - PAST_GRACE:
        raise AdminError("the window starts in the past: a request is for access to come")
    if ends_at - starts_at > timedelta(days=MAX_DAYS):
        raise AdminError(f"a request's window is at most {MAX_DAYS} days; for longer, give the person the level")


def endorse(session: Session, who: Who, request_id: int, *, now: datetime, comment: str = "",
            on_behalf_of: str | None = None) -> tuple[AccessRequest, Event]:
    """The person's tenant admin agrees; site staff decide next. ``on_behalf_of``: the CLI records a tenant
    admin's endorsement given to the operator (their console user name)."""
    if not who.tenant_admin:
        raise AdminError("only the person's tenant admin endorses a request")
    r = _get(session, who, request_id)
    if r.tenant_id is None:
        raise AdminError(f"access request {r.id} is for site staff: site staff decide it alone")
    if r.tenant_approved_by is not None:
        raise AdminError(f"access request {r.id} is already endorsed by {r.tenant_approved_by}")
    if r.ends_at <= now:
        raise AdminError(f"access request {r.id}'s window has ended")
    _move(session, r, ("open",), "open", AccessRequest.tenant_approved_by.is_(None),
          tenant_approved_by=on_behalf_of or who.name)
    return r, _event(EventKind.ADMIN_REQUEST_ENDORSED, who, r, r.level.key, comment=comment.strip()[:REASON_MAX])


def approve(session: Session, who: Who, request_id: int, *, now: datetime,
            comment: str = "") -> tuple[AccessRequest, Event]:
    """Site staff grant it: a supervisor or admin other than the requester, after the tenant's endorsement."""
    if not can(who.role, "supervisor"):
        raise AdminError("a supervisor or admin approves access requests")
    r = _get(session, who, request_id)
    if r.state != "open":
        raise AdminError(_not_now(r, "approved"))
    if who.name == r.requested_by:
        raise AdminError(f"access request {r.id} was opened by you: another supervisor approves it (four eyes)")
    if r.tenant_id is not None and r.tenant_approved_by is None:
        raise AdminError(f"access request {r.id} awaits its tenant admin's endorsement")
    if r.ends_at <= now:
        raise AdminError(f"access request {r.id}'s window has ended")
    person = session.get(Person, r.person_id)
    if person is None or person.status not in ("active", "pending"):
        raise AdminError(f"person {r.person_id} is {person.status if person else 'gone'}: refuse the request")
    _move(session, r, ("open",), "approved", decided_by=who.name, decided_at=now, comment=comment.strip()[:REASON_MAX])
    return r, _event(EventKind.ADMIN_REQUEST_APPROVED, who, r, r.level.key, comment=r.comment)


def refuse(session: Session, who: Who, request_id: int, *, now: datetime,
           comment: str) -> tuple[AccessRequest, Event]:
    """Refused, with the reason: by site staff, or by the person's tenant admin."""
    if not (can(who.role, "supervisor") or who.tenant_admin):
        raise AdminError("a supervisor, an admin or the person's tenant admin refuses access requests")
    comment = comment.strip()
    if len(comment) < COMMENT_MIN:
        raise AdminError("say why the request is refused")
    r = _get(session, who, request_id)
    _move(session, r, ("open",), "refused", decided_by=who.name, decided_at=now, comment=comment[:REASON_MAX])
    return r, _event(EventKind.ADMIN_REQUEST_REFUSED, who, r, r.level.key, comment=r.comment)


def cancel(session: Session, who: Who, request_id: int, *, now: datetime,
           comment: str = "") -> tuple[AccessRequest, Event]:
    """Withdrawn by whoever opened it, or ended early by site staff: an approved one stops opening doors."""
    r = _get(session, who, request_id)
    if who.name != r.requested_by and not can(who.role, "supervisor"):
        raise AdminError(f"access request {r.id} is {r.requested_by}'s: they or a supervisor cancel it")
    _move(session, r, ("open", "approved"), "cancelled", decided_at=now,
          comment=comment.strip()[:REASON_MAX] or r.comment)
    return r, _event(EventKind.ADMIN_REQUEST_CANCELLED, who, r, r.level.key, comment=r.comment)


def expire(session: Session, actor: str, request_id: int, *, now: datetime) -> tuple[AccessRequest | None, Event | None]:
    """An open or approved request whose window has ended is expired (an approved one's level is revoked).
    (None, None) when another bridge, or a supervisor, moved it first: only the one that changed it audits."""
    r = session.get(AccessRequest, request_id)
    if r is None or r.ends_at > now:
        return None, None
    was = r.state
    if was not in ("open", "approved") or not _transition(session, r, (was,), "expired"):
        return None, None
    return r, _event(EventKind.ADMIN_REQUEST_EXPIRED, Who(actor, "bridge"), r, r.level.key, was=was)


def due(session: Session, now: datetime, limit: int = 100) -> list[int]:
    """Requests past their end still open or approved, oldest end first."""
    return list(session.scalars(select(AccessRequest.id).where(
        AccessRequest.state.in_(("open", "approved")), AccessRequest.ends_at <= now)
        .order_by(AccessRequest.ends_at).limit(limit)))
