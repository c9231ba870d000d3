"""What the audit log records of the access tables, so that the tables can be checked against the log.

Every administrative change (``admin.*`` entries) carries ``detail["state"]``: for each row it changed, the
row's state after the change, or ``null`` for a row it removed, under a key naming the row. Replaying
every such entry in log order gives what the tables must hold; a row that differs was edited around the
audited commands (directly in the database, or in a backup later restored). The same states rebuild the
monthly access review as of any date.

Keys and states (secrets appear only as SHA-256 digests of their stored hashes, enough to see a change):

==================  ====================================================================================
``person/<id>``     name, employee_no, company, status, lockdown_exempt, left_at, levels (sorted keys);
                    and only when not their default: tenant (id), kind (visitor), may_escort (true)
``credential/<id>`` person, format, number, status, valid_from, valid_until, revoked_at, pin_sha256, biometric_ref
``level/<key>``     name, doors (sorted [door key, schedule key])
``schedule/<key>``  name, timezone, intervals (sorted [weekday, start minute, end minute]), holidays
``user/<name>``     role, active, password_sha256; tenant (id) only for a tenant admin
``face/<id>``       person, photo_sha256, sealed
``tenant/<key>``    name
``visit/<id>``      person, tenant, host, starts_at, ends_at, state, credential, returned_at
``request/<id>``    person, level (key), tenant, starts_at, ends_at, state, tenant_approved_by, decided_by
==================  ====================================================================================

Times are UTC ISO 8601 with microseconds, or null. The digests are named ``*_sha256``: an event whose detail
has a key ``pin`` or ``password`` is refused (events.SECRET_KEYS), whatever the value. Columns that are not access rights (when a card was
last used, a user's last login, creation times) are not recorded: the bridge updates them as it runs.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from badge_bridge.models import (
    AccessLevel,
    AccessLevelDoor,
    AccessRequest,
    ConsoleUser,
    Credential,
    Door,
    FaceTemplate,
    Holiday,
    Person,
    PersonLevel,
    Schedule,
    ScheduleInterval,
    Tenant,
    Visit,
)

State = dict[str, Any]
"""One row's recorded state."""
Changes = dict[str, State | None]
"""``detail["state"]`` of an admin entry: row key -> state after the change (None: removed)."""


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value is not None else None


def _digest(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


def person(p: Person) -> tuple[str, State]:
    return _person(p, [level.key for level in p.levels])


def _person(p: Person | Row[Any], levels: list[str]) -> tuple[str, State]:
    state: State = {
        "name": p.name, "employee_no": p.employee_no, "company": p.company, "status": p.status,
        "lockdown_exempt": bool(p.lockdown_exempt), "left_at": _when(p.left_at), "levels": sorted(levels),
    }
    # Added with tenants and visitors: recorded only when set, so states logged before them still compare equal.
    if p.tenant_id is not None:
        state["tenant"] = p.tenant_id
    if p.kind not in (None, "staff"):
        state["kind"] = p.kind
    if p.may_escort:
        state["may_escort"] = True
    return f"person/{p.id}", state


def credential(c: Credential | Row[Any]) -> tuple[str, State]:
    return f"credential/{c.id}", {
        "person": c.person_id, "format": c.format, "number": c.number, "status": c.status,
        "valid_from": _when(c.valid_from), "valid_until": _when(c.valid_until), "revoked_at": _when(c.revoked_at),
        "pin_sha256": _digest(f"{c.id}:{c.pin_hash}" if c.pin_hash else None), "biometric_ref": c.biometric_ref,
    }


def level(lvl: AccessLevel) -> tuple[str, State]:
    return _level(lvl, [[d.door.key, d.schedule.key] for d in lvl.doors])


def _level(lvl: AccessLevel | Row[Any], doors: list[list[str]]) -> tuple[str, State]:
    return f"level/{lvl.key}", {"name": lvl.name, "doors": sorted(doors)}


def schedule(s: Schedule) -> tuple[str, State]:
    return _schedule(s, [[i.weekday, i.start_minute, i.end_minute] for i in s.intervals], [h.day for h in s.holidays])


def _schedule(s: Schedule | Row[Any], intervals: list[list[int]], holidays: list[date]) -> tuple[str, State]:
    return f"schedule/{s.key}", {
        "name": s.name, "timezone": s.timezone, "intervals": sorted(intervals),
        "holidays": sorted(day.isoformat() for day in holidays),
    }


def user(u: ConsoleUser | Row[Any]) -> tuple[str, State]:
    state: State = {"role": u.role, "active": bool(u.active), "password_sha256": _digest(u.password_hash)}
    if u.tenant_id is not None:
        state["tenant"] = u.tenant_id
    return f"user/{u.username}", state


def tenant(t: Tenant | Row[Any]) -> tuple[str, State]:
    return f"tenant/{t.key}", {"name": t.name}


def visit(v: Visit | Row[Any]) -> tuple[str, State]:
    return f"visit/{v.id}", {
        "person": v.person_id, "tenant": v.tenant_id, "host": v.host, "starts_at": _when(v.starts_at),
        "ends_at": _when(v.ends_at), "state": v.state, "credential": v.credential_id,
        "returned_at": _when(v.returned_at),
    }


def access_request(r: AccessRequest | Row[Any], level_key: str) -> tuple[str, State]:
    return f"request/{r.id}", {
        "person": r.person_id, "level": level_key, "tenant": r.tenant_id, "starts_at": _when(r.starts_at),
        "ends_at": _when(r.ends_at), "state": r.state, "tenant_approved_by": r.tenant_approved_by,
        "decided_by": r.decided_by,
    }


def face(f: FaceTemplate | Row[Any]) -> tuple[str, State]:
    return f"face/{f.id}", {"person": f.person_id, "photo_sha256": f.photo_sha256, "sealed": _digest(f.sealed)}


def states(*rows: tuple[str, State]) -> Changes:
    """``detail["state"]`` for the rows a change made or altered: ``states(person(p), credential(c))``."""
    return dict(rows)


def snapshot(session: Session) -> dict[str, State]:
    """Every recorded row as the tables hold it now. Read as plain rows, not ORM objects: the bridge does this
    every minute, and building 30,000 objects costs ten times the query."""
    run = session.execute
    by: dict[str, defaultdict[Any, list[Any]]] = {name: defaultdict(list) for name in ("levels", "doors", "times", "off")}
    for person_id, key in run(select(PersonLevel.person_id, AccessLevel.key).join(AccessLevel)):
        by["levels"][person_id].append(key)
    for level_id, door, sched in run(select(AccessLevelDoor.level_id, Door.key, Schedule.key)
                                     .join(Door, Door.id == AccessLevelDoor.door_id)
                                     .join(Schedule, Schedule.id == AccessLevelDoor.schedule_id)):
        by["doors"][level_id].append([door, sched])
    for schedule_id, *interval in run(select(ScheduleInterval.schedule_id, ScheduleInterval.weekday,
                                             ScheduleInterval.start_minute, ScheduleInterval.end_minute)):
        by["times"][schedule_id].append(interval)
    for schedule_id, day in run(select(Holiday.schedule_id, Holiday.day)):
        by["off"][schedule_id].append(day)
    out = dict(_person(p, by["levels"][p.id]) for p in run(select(Person.__table__)))
    out.update(credential(c) for c in run(select(Credential.__table__)))
    out.update(_level(lvl, by["doors"][lvl.id]) for lvl in run(select(AccessLevel.__table__)))
    out.update(_schedule(s, by["times"][s.id], by["off"][s.id]) for s in run(select(Schedule.__table__)))
    out.update(user(u) for u in run(select(ConsoleUser.__table__)))
    out.update(face(f) for f in run(select(FaceTemplate.__table__)))
    out.update(tenant(t) for t in run(select(Tenant.__table__)))
    out.update(visit(v) for v in run(select(Visit.__table__)))
    level_keys = {level_id: key for level_id, key in run(select(AccessLevel.id, AccessLevel.key))}
    out.update(access_request(r, level_keys[r.level_id]) for r in run(select(AccessRequest.__table__)))
    return out


class Replay:
    """Admin entries applied one at a time, in log order: the rows they produce and, for each key, the entry
    that last recorded it (a check that runs again and again applies only the entries new since)."""

    def __init__(self) -> None:
        self.rows: dict[str, State] = {}
        self.recorded_by: dict[str, tuple[str, int]] = {}
        """Key -> (chain, seq) of the entry that last set or removed it."""
        self.last: tuple[str, int] | None = None
        """(chain, seq) of the last entry applied that carried a state."""

    def apply(self, detail: str | Mapping[str, Any], where: tuple[str, int] = ("", 0)) -> None:
        changes = (json.loads(detail) if isinstance(detail, str) else detail).get("state")
        if not isinstance(changes, dict):
            return
        self.last = where
        for key, state in changes.items():
            self.recorded_by[key] = where
            if state is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = state


def replay(details: Iterable[str | Mapping[str, Any]]) -> dict[str, State]:
    """The rows the admin entries' ``detail`` (JSON text or parsed), taken in log order, produce."""
    done = Replay()
    for detail in details:
        done.apply(detail)
    return done.rows


@dataclass(frozen=True)
class Difference:
    key: str
    problem: str
    """``changed`` (the row differs from its last recorded state), ``unrecorded`` (no audited change made
    it) or ``missing`` (the log says it exists, the table has no such row)."""
    fields: tuple[str, ...] = ()
    """For ``changed``: the fields that differ."""

    def __str__(self) -> str:
        if self.problem == "changed":
            return f"{self.key}: {', '.join(self.fields)} differ from the last audited change"
        if self.problem == "unrecorded":
            return f"{self.key}: no audited change made this row"
        return f"{self.key}: the log's admin entries say it exists, the table has no such row"


def compare(tables: Mapping[str, State], logged: Mapping[str, State]) -> list[Difference]:
    """Every row where the tables and the log disagree, in key order."""
    out = []
    for key in sorted(tables.keys() | logged.keys()):
        have, want = tables.get(key), logged.get(key)
        if want is None:
            out.append(Difference(key, "unrecorded"))
        elif have is None:
            out.append(Difference(key, "missing"))
        elif have != want:
            out.append(Difference(key, "changed", tuple(sorted(k for k in have.keys() | want.keys()
                                                              if have.get(k) != want.get(k)))))
    return out
