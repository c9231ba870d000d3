"""Make the installation tables match the site file, by key.

The site file is the source of truth for areas, schedules, doors, controllers, readers, cameras and access
levels; people and credentials live only in the database. Rows whose key left the file are removed (their
history stays in the audit log, which names doors by key). What the sync changed in the access tables (levels,
schedules, and people who lose a removed level) is one ``admin.site_synced`` event carrying those rows' states
(badge_bridge.audit.access_tables), committed with the change (badge_bridge.audited).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from badge_bridge import models as m
from badge_bridge.audit.access_tables import snapshot
from badge_bridge.config import SiteConfig, weekday_number
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.people import admin_event

T = TypeVar("T", bound=m.Base)


def _remove_stale(session: Session, model: type[m.Base], keys: set[str]) -> None:
    session.execute(delete(model).where(model.key.not_in(keys)))  # type: ignore[attr-defined]


def _upsert(session: Session, model: type[T], wanted: dict[str, dict[str, Any]]) -> dict[str, T]:
    """Create or update rows of ``model`` so that the wanted keys exist with these values."""
    rows = {row.key: row for row in session.scalars(select(model))}  # type: ignore[attr-defined]
    result = {}
    for key, values in wanted.items():
        row = rows.get(key) or model(key=key)
        for name, value in values.items():
            setattr(row, name, value)
        session.add(row)
        result[key] = row
    session.flush()
    return result


def _retire_requested_levels(session: Session, kept: set[str]) -> set[str]:
    """Levels gone from the file that access requests name stay as rows without doors, so the requests (their
    history) keep naming them; they open nothing, and the people who held one lose it as with any removed
    level. Their keys."""
    named = set(session.scalars(select(m.AccessLevel.id).where(
        m.AccessLevel.key.not_in(kept), m.AccessLevel.id.in_(select(m.AccessRequest.level_id)))))
    session.execute(delete(m.PersonLevel).where(m.PersonLevel.level_id.in_(named)))
    return set(session.scalars(select(m.AccessLevel.key).where(m.AccessLevel.id.in_(named))))


def sync_site(session: Session, config: SiteConfig, actor: str = "site-file") -> Event | None:
    """Apply the site file; the event recording the access rows it changed (None: it changed none)."""
    before = snapshot(session)
    _apply(session, config)
    session.expire_all()
    after = snapshot(session)
    changed = [(key, after.get(key)) for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]
    if not changed:
        return None
    return admin_event(EventKind.ADMIN_SITE_SYNCED, actor, {}, {"site": config.site.name, "rows": len(changed)},
                       *changed)


def _apply(session: Session, config: SiteConfig) -> None:
    # Remove what left the file first, dependents before what they reference.
    session.execute(delete(m.AccessLevelDoor))
    retired = _retire_requested_levels(session, {lvl.key for lvl in config.access_levels})
    for model, items in ((m.AccessLevel, config.access_levels), (m.Camera, config.cameras),
                         (m.Reader, config.readers), (m.Controller, config.controllers), (m.Door, config.doors),
                         (m.Schedule, config.schedules), (m.Area, config.areas)):
        _remove_stale(session, model, {item.key for item in items} | (retired if model is m.AccessLevel else set()))
    session.expire_all()
    site = session.scalars(select(m.Site)).first() or m.Site()
    site.name, site.timezone = config.site.name, config.site.timezone
    session.add(site)

    areas = _upsert(session, m.Area, {a.key: dict(name=a.name, anti_passback=a.anti_passback, restricted=a.restricted)
                                      for a in config.areas})
    schedules = _upsert(session, m.Schedule, {
        s.key: dict(
            name=s.name,
            timezone=s.timezone or config.site.timezone,
            intervals=[
                m.ScheduleInterval(weekday=weekday_number(day), start_minute=i.start_minute(), end_minute=i.end_minute())
                for i in s.intervals for day in i.days
            ],
            holidays=[m.Holiday(day=d) for d in s.holidays],
        )
        for s in config.schedules
    })
    doors = _upsert(session, m.Door, {
        d.key: dict(
            name=d.name,
            area_in_id=areas[d.area_in].id if d.area_in else None,
            area_out_id=areas[d.area_out].id if d.area_out else None,
            open_time_s=d.open_time_s, held_open_limit_s=d.held_open_limit_s,
            two_person=d.two_person, two_person_window_s=d.two_person_window_s,
            factors=",".join([*d.factors, *(["face"] if d.face == "required" else [])]),
            interlock=interlock.key if (interlock := config.interlock_of(d.key)) else None,
        )
        for d in config.doors
    })
    # Tenants are never removed: their people's history names them. A tenant gone from the file keeps its
    # row; its admins' limits are gone with it (they can grant nothing).
    _upsert(session, m.Tenant, {t.key: dict(name=t.name) for t in config.tenants})
    controllers = _upsert(session, m.Controller, {c.key: dict(name=c.name, kind=c.kind) for c in config.controllers})
    _upsert(session, m.Reader, {
        r.key: dict(
            controller_id=controllers[r.controller].id, door_id=doors[r.door].id,
            direction=r.direction, kind=r.kind, osdp_address=r.osdp_address,
        )
        for r in config.readers
    })
    _upsert(session, m.Camera, {
        c.key: dict(name=c.name, url=c.url, doors=[doors[d] for d in c.doors]) for c in config.cameras
    })
    levels = _upsert(session, m.AccessLevel, {lvl.key: dict(name=lvl.name) for lvl in config.access_levels})
    for lvl in config.access_levels:
        for ld in lvl.doors:
            session.add(m.AccessLevelDoor(
                level_id=levels[lvl.key].id, door_id=doors[ld.door].id, schedule_id=schedules[ld.schedule].id
            ))
    session.flush()
