"""Compile the database into the immutable views `policy.decide()` reads.

Decisions must take microseconds, so nothing is queried at the door: the bridge loads a snapshot at start
and swaps in a new one whenever people, credentials or the site change. A snapshot is plain frozen data,
safe to share between threads.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from badge_bridge import models as m
from badge_bridge import policy


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


def _doors(session: Session) -> dict[int, policy.Door]:
    areas = {a.id: a for a in session.scalars(select(m.Area))}
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
            two_person=d.two_person,
            two_person_window_s=d.two_person_window_s,
        )
    return out


def load_snapshot(session: Session) -> Snapshot:
    schedules = _schedules(session)
    doors = _doors(session)
    level_doors: dict[int, dict[str, list[policy.Schedule]]] = defaultdict(lambda: defaultdict(list))
    for ld in session.scalars(select(m.AccessLevelDoor)):
        level_doors[ld.level_id][doors[ld.door_id].key].append(schedules[ld.schedule_id])
    person_doors: dict[int, dict[str, tuple[policy.Schedule, ...]]] = {}
    for person in session.scalars(select(m.Person).options(selectinload(m.Person.levels))):
        merged: dict[str, list[policy.Schedule]] = defaultdict(list)
        for level in person.levels:
            for door, scheds in level_doors[level.id].items():
                merged[door].extend(scheds)
        person_doors[person.id] = {door: tuple(s) for door, s in merged.items()}
    persons = {p.id: p for p in session.scalars(select(m.Person))}
    credentials = {}
    for c in session.scalars(select(m.Credential)):
        person = persons[c.person_id]
        credentials[(c.format, c.number)] = CredentialRecord(
            view=policy.Credential(
                id=c.id, person_id=c.person_id, status=c.status, valid_from=c.valid_from, valid_until=c.valid_until,
                person_active=person.status == "active", lockdown_exempt=person.lockdown_exempt,
                doors=person_doors.get(c.person_id, {}),
            ),
            pin_hash=c.pin_hash,
            biometric_ref=c.biometric_ref,
        )
    return Snapshot(doors={d.key: d for d in doors.values()}, credentials=credentials)
