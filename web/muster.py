"""Muster: who is inside now, per area, for an evacuation.

Read from the anti-passback positions the bridges keep (``site_state`` rows ``position/<person>`` -> the
area the person last entered, written with the audit entry of the grant that moved them, ingest.persist),
with that grant's door and time from the audit log. It is the bridge's view: someone who walked out through
a door without an exit reader is still "inside" where they last badged in, which is why each row shows
when that was.

What a guard must not miss is listed rather than dropped:

- a row that cannot be read (a DBA's edit, a bad restore): the bridge reads it as "nowhere"; here it is
  listed apart, "position unreadable", so the person is looked for;
- an area the site file no longer has: listed under the area's key;
- a person who has left the company (``person.status`` left): listed with the date, counted apart;
- a grant whose audit entry is gone (pruned) or unknown: the row's own time, door unknown.

Areas that no door leads into (the example's car park) are outside: people there badged out, and are
listed last, not counted as inside.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Blueprint, render_template
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge.config import SiteConfig
from badge_bridge.events import from_us
from badge_bridge.ingest.persist import POSITION
from badge_bridge.models import AuditEntry, Person, SiteState
from web import current_services
from web.auth import role_required
from web.changes import read
from web.plans import site_time

bp = Blueprint("muster", __name__, url_prefix="/muster")
CHUNK = 500
"""Ids per IN (...) query: well inside every database's limit on bound parameters."""


@dataclass(frozen=True)
class Inside:
    person: int
    name: str
    employee_no: str
    company: str
    door: str
    """The door of the grant that put them here ("" when its audit entry is not found)."""
    at: str
    """Site local time of that grant (or of the row, when the entry is not found)."""
    left_company: str
    """The date the person left the company, "" for a current one."""


@dataclass
class AreaList:
    key: str
    name: str
    outside: bool
    people: list[Inside] = field(default_factory=list)

    @property
    def count(self) -> int:
        """People inside, without those who have left the company."""
        return sum(1 for p in self.people if not p.left_company)

    @property
    def left(self) -> int:
        return len(self.people) - self.count


@dataclass(frozen=True)
class Muster:
    areas: list[AreaList]
    unreadable: list[str]
    """Keys of rows that could not be read."""
    as_of: str

    @property
    def inside(self) -> int:
        return sum(a.count for a in self.areas if not a.outside)


def _position(key: str, value: str) -> tuple[int, str] | None:
    """(person, area) of a row, None when it cannot be read (as ingest.persist would refuse it)."""
    text = key.removeprefix(POSITION)
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= 18):
        return None
    try:
        area = json.loads(value)
    except ValueError:
        return None
    return (int(text), area) if isinstance(area, str) and area else None


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def muster(s: Session, config: SiteConfig, now: datetime) -> Muster:
    rows = s.execute(select(SiteState.key, SiteState.value, SiteState.event_id, SiteState.updated_at)
                     .where(SiteState.key.startswith(POSITION))).all()
    read_rows = [(pos, event_id, at) for key, value, event_id, at in rows if (pos := _position(key, value))]
    unreadable = sorted(key for key, value, _, _ in rows if _position(key, value) is None)
    events: dict[str, tuple[str | None, int]] = {}
    for ids in _chunks(sorted({event_id for _, event_id, _ in read_rows})):
        events.update((e, (door, ts)) for e, door, ts in s.execute(
            select(AuditEntry.event_id, AuditEntry.door, AuditEntry.ts_us).where(AuditEntry.event_id.in_(ids))))
    people: dict[int, Person] = {}
    for ids in _chunks(sorted({person for (person, _), _, _ in read_rows})):
        people.update((p.id, p) for p in s.scalars(select(Person).where(Person.id.in_(ids))))
    doors = {d.key: d.name or d.key for d in config.doors}
    entered = {d.area_in for d in config.doors}
    areas = {a.key: AreaList(a.key, a.name or a.key, a.key not in entered) for a in config.areas}
    for (person_id, area), event_id, updated_at in read_rows:
        door, ts = events.get(event_id, (None, 0))
        if area not in areas:
            areas[area] = AreaList(area, f"{area} (not in the site file)", False)
        areas[area].people.append(_inside(person_id, people.get(person_id), doors.get(door or "", door or "unknown door"),
                                          from_us(ts) if door is not None else updated_at, config))
    for a in areas.values():
        a.people.sort(key=lambda i: (bool(i.left_company), i.name.casefold(), i.person))
    ordered = sorted(areas.values(), key=lambda a: a.outside)  # site-file order, the outside last
    return Muster(ordered, unreadable, site_time(now, config))


def _inside(person_id: int, p: Person | None, door: str, when: datetime, config: SiteConfig) -> Inside:
    if p is None:
        return Inside(person_id, f"person {person_id} (not in the database)", "", "", door, site_time(when, config), "")
    left = ""
    if p.status == "left":
        left = p.left_at.astimezone(config.site_tz()).strftime("%Y-%m-%d") if p.left_at else "yes"
    return Inside(person_id, p.name, p.employee_no or "", p.company, door, site_time(when, config), left)


def _current() -> Muster:
    svc = current_services()
    return read(lambda s: muster(s, svc.config, svc.clock()))


@bp.route("")
@role_required("guard")
def index() -> Any:
    site = current_services().config.site
    return render_template("muster.html", m=_current(), timezone=site.timezone, site_name=site.name)


@bp.route("/list")
@role_required("guard")
def current_list() -> Any:
    """The list alone, for static/muster.js to replace it when people badge."""
    return render_template("_muster_list.html", m=_current())
