"""Compile the database into the immutable views `policy.decide()` reads.

Decisions must take microseconds, so nothing is queried at the door: the bridge loads a snapshot at start
and swaps in a new one whenever people, credentials or the site change. A snapshot is plain frozen data,
safe to share between threads.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from badge_bridge import models as m
from badge_bridge import policy
from badge_bridge.audit import access_tables
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import to_us
from badge_bridge.models import AuditEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A credential's policy view plus what is needed to check its other factors at the door."""

    view: policy.Credential
    pin_hash: str | None
    biometric_ref: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    doors: dict[str, policy.Door]
    credentials: dict[tuple[str, str], CredentialRecord]
    """Keyed by (format, canonical number)."""

    def credential(self, fmt: str, number: str) -> CredentialRecord | None:
        return self.credentials.get((fmt, number))


def _schedules(session: Session) -> dict[int, policy.Schedule]:
    out = {}
    for s in session.scalars(select(m.Schedule).options(selectinload(m.Schedule.intervals),
                                                        selectinload(m.Schedule.holidays))):
        out[s.id] = policy.Schedule(
            key=s.key, tz=ZoneInfo(s.timezone),
            intervals=tuple(sorted((i.weekday, i.start_minute, i.end_minute) for i in s.intervals)),
            holidays=frozenset(h.day for h in s.holidays),
        )
    return out


def _doors(session: Session, escort_window_s: float) -> dict[int, policy.Door]:
    areas = {a.id: a for a in session.scalars(select(m.Area))}
    groups: dict[str, set[str]] = defaultdict(set)
    for key, group in session.execute(select(m.Door.key, m.Door.interlock).where(m.Door.interlock.is_not(None))):
        groups[group or ""].add(key)
    out = {}
    for d in session.scalars(select(m.Door)):
        area_in = areas.get(d.area_in_id) if d.area_in_id else None
        area_out = areas.get(d.area_out_id) if d.area_out_id else None
        out[d.id] = policy.Door(
            key=d.key,
            area_in=area_in.key if area_in else None,
            area_out=area_out.key if area_out else None,
            factors=frozenset(policy.Factor(f) for f in d.factors.split(",") if f),
            anti_passback=policy.AntiPassback(area_in.anti_passback if area_in else "none"),
            anti_passback_out=policy.AntiPassback(area_out.anti_passback if area_out else "none"),
            two_person=d.two_person,
            two_person_window_s=d.two_person_window_s,
            interlock=frozenset(groups[d.interlock] - {d.key}) if d.interlock else frozenset(),
            escort_window_s=escort_window_s,
        )
    return out


def _requested(session: Session, level_doors: dict[int, dict[str, list[policy.Schedule]]]
               ) -> dict[int, dict[str, list[policy.Schedule]]]:
    """Person -> door -> the schedules of their approved access requests, each bounded by its window: the
    level opens inside the window only, whether or not the bridge has recorded the request's end yet.

    Only a request whose row is exactly as the log's newest entry for it records it counts: one set to
    approved (or given a longer window) directly in the table opens nothing, besides raising
    audit.state_mismatch (badge_bridge.state_watch)."""
    out: dict[int, dict[str, list[policy.Schedule]]] = defaultdict(lambda: defaultdict(list))
    R = m.AccessRequest
    approved = session.execute(select(R.__table__, m.AccessLevel.key.label("level_key"))
                               .join(m.AccessLevel, m.AccessLevel.id == R.level_id).where(R.state == "approved")).all()
    logged = _logged_requests(session, min((r.requested_at for r in approved), default=None))
    bounded: dict[tuple[str, datetime, datetime], policy.Schedule] = {}
    """One bounded copy per schedule and window, shared by the requests that have both."""
    for r in approved:
        key, state = access_tables.access_request(r, r.level_key)
        if logged.get(key) != state:
            log.error("%s is approved in the table but not in the audit log: it opens nothing", key)
            continue
        for door, scheds in level_doors.get(r.level_id, {}).items():
            for s in scheds:
                window = (s.key, r.starts_at, r.ends_at)
                if window not in bounded:
                    bounded[window] = policy.Schedule(s.key, s.tz, s.intervals, s.holidays, (r.starts_at, r.ends_at))
                out[r.person_id][door].append(bounded[window])
    return out


REQUEST_KINDS = (EventKind.ADMIN_REQUEST_OPENED, EventKind.ADMIN_REQUEST_ENDORSED, EventKind.ADMIN_REQUEST_APPROVED,
                 EventKind.ADMIN_REQUEST_REFUSED, EventKind.ADMIN_REQUEST_EXPIRED, EventKind.ADMIN_REQUEST_CANCELLED)


LOGGED_SLACK = timedelta(days=1)
"""Entries are read from this long before the oldest approved request was opened (clocks of other hosts)."""


def _logged_requests(session: Session, since: datetime | None) -> dict[str, access_tables.State]:
    """``request/<id>`` -> its state as the newest request entry since ``since`` records it."""
    if since is None:
        return {}
    out: dict[str, access_tables.State] = {}
    for (detail,) in session.execute(select(AuditEntry.detail).where(
            AuditEntry.kind.in_(REQUEST_KINDS), AuditEntry.ts_us >= to_us(since - LOGGED_SLACK)).order_by(AuditEntry.id)):
        out.update((k, v) for k, v in json.loads(detail).get("state", {}).items() if k.startswith("request/"))
    return out


def load_snapshot(session: Session, escort_window_s: float = 30.0) -> Snapshot:
    """Plain column reads rather than ORM objects: 50,000 credentials load in about a second.
    ``escort_window_s``: the site's ``visitors.escort_window_s``."""
    schedules = _schedules(session)
    doors = _doors(session, escort_window_s)
    level_doors: dict[int, dict[str, list[policy.Schedule]]] = defaultdict(lambda: defaultdict(list))
    for level_id, door_id, schedule_id in session.execute(
        select(m.AccessLevelDoor.level_id, m.AccessLevelDoor.door_id, m.AccessLevelDoor.schedule_id)
    ):
        level_doors[level_id][doors[door_id].key].append(schedules[schedule_id])
    person_levels: dict[int, list[int]] = defaultdict(list)
    for person_id, level_id in session.execute(select(m.PersonLevel.person_id, m.PersonLevel.level_id)):
        person_levels[person_id].append(level_id)
    requested = _requested(session, level_doors)
    person_doors: dict[int, dict[str, tuple[policy.Schedule, ...]]] = {}
    for person_id in person_levels.keys() | requested.keys():
        merged: dict[str, list[policy.Schedule]] = defaultdict(list)
        for level_id in person_levels.get(person_id, ()):
            for door, scheds in level_doors[level_id].items():
                merged[door].extend(scheds)
        for door, scheds in requested.get(person_id, {}).items():
            merged[door].extend(scheds)
        person_doors[person_id] = {door: tuple(s) for door, s in merged.items()}
    tenants = {tenant_id: key for tenant_id, key in session.execute(select(m.Tenant.id, m.Tenant.key))}
    P = m.Person
    persons = {row[0]: row[1:] for row in
               session.execute(select(P.id, P.status, P.lockdown_exempt, P.tenant_id, P.kind, P.may_escort)).tuples()}
    credentials = {}
    C = m.Credential
    for cid, pid, fmt, number, status, valid_from, valid_until, pin_hash, biometric_ref in session.execute(
        select(C.id, C.person_id, C.format, C.number, C.status, C.valid_from, C.valid_until, C.pin_hash,
               C.biometric_ref)
    ):
        person_status, exempt, tenant_id, kind, may_escort = persons[pid]
        credentials[(fmt, number)] = CredentialRecord(
            view=policy.Credential(
                id=cid, person_id=pid, status=status, valid_from=valid_from, valid_until=valid_until,
                person_active=person_status in ("active", "pending"), lockdown_exempt=exempt,
                doors=person_doors.get(pid, {}), person_approved=person_status != "pending",
                tenant=tenants.get(tenant_id) if tenant_id is not None else None, visitor=kind == "visitor",
                may_escort=bool(may_escort),
            ),
            pin_hash=pin_hash,
            biometric_ref=biometric_ref,
        )
    return Snapshot(doors={d.key: d for d in doors.values()}, credentials=credentials)
