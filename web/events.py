"""The event log: search by door, area, kind, person and time, newest first, a page at a time.

Pages are keyset-paginated on (device time, id), so the thousandth page costs what the first does; every
filter has an index behind it (docs/console.md). A kind prefix (``access.``) is searched as the exact kinds
in the log that start with it, one index range each: a ``LIKE`` has no index that keeps time order, so a
rare or absent prefix used to scan the whole log (a third of a second at a million entries).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, redirect, render_template, url_for
from sqlalchemy import Select, false, select, text, tuple_, union_all
from sqlalchemy.orm import Session

from badge_bridge.config import SiteConfig
from badge_bridge.models import Alarm, AuditEntry
from web import current_services
from web.auth import any_role
from web.changes import read
from web.evidence import evidence_for
from web.params import cursor, db_id, instant, query_text
from web.present import Shown, door_event, entries

bp = Blueprint("events", __name__, url_prefix="/events")
PAGE = 50
FILTERS: dict[str, Callable[[str], Any] | None] = {
    "door": None, "area": None, "kind": None, "person": db_id, "since": instant, "until": instant, "before": cursor}
"""The query parameters of a search, each with the parser that must accept it (web.params)."""


def areas_of(config: SiteConfig) -> dict[str, list[str]]:
    """Area key -> the doors leading into or out of it, for the area filter."""
    out: dict[str, list[str]] = {a.key: [] for a in config.areas}
    for d in config.doors:
        for area in {d.area_in, d.area_out} - {None}:
            out[area].append(d.key)  # type: ignore[index]
    return out


def search_query(args: dict[str, str], areas: dict[str, list[str]], kinds: Iterable[str] | None = None, *,
                 door_only: bool = False, limit: int = PAGE) -> Select[AuditEntry]:
    """The filtered, ordered query for ``args`` (door, area, kind, person, since, until, before), each one
    valid for its parser in FILTERS (a ValueError otherwise), ``limit`` + 1 rows (the one more says there is
    an older page).

    ``kinds``: the distinct kinds in the log (``log_kinds``); with them a kind prefix becomes those exact
    kinds, each read newest first through the (kind, time) index. Without them, a ``LIKE``. ``door_only``
    (with ``kinds``, and no kind asked for): the desk's door events only (web.present.door_event), the same
    way."""
    where: list[Any] = []
    if args.get("door"):
        where.append(AuditEntry.door == args["door"])
    elif args.get("area") in areas:
        where.append(AuditEntry.door.in_(areas[args["area"]]))
    if args.get("person"):
        where.append(AuditEntry.person_id == db_id(args["person"]))
    if args.get("since"):
        where.append(AuditEntry.ts_us >= instant(args["since"]))
    if args.get("until"):
        where.append(AuditEntry.ts_us < instant(args["until"]))
    if args.get("before"):
        ts, eid = cursor(args["before"])
        where.append(tuple_(AuditEntry.ts_us, AuditEntry.id) < tuple_(ts, eid))
    kind = args.get("kind", "")
    door_only = door_only and not kind
    if (kind.endswith(".") or door_only) and kinds is not None:
        exact = sorted(k for k in kinds if k.startswith(kind) and (door_event(k) or not door_only))
        if not exact:
            where.append(false())
        elif len(exact) == 1:
            where.append(AuditEntry.kind == exact[0])
        else:  # the newest PAGE + 1 ids of each kind, then the newest of those
            each = (select(AuditEntry.id).where(*where, AuditEntry.kind == k)
                    .order_by(AuditEntry.ts_us.desc(), AuditEntry.id.desc()).limit(limit + 1).subquery() for k in exact)
            where = [AuditEntry.id.in_(union_all(*(select(q.c.id) for q in each)))]
    elif kind.endswith("."):
        where.append(AuditEntry.kind.startswith(kind, autoescape=True))
    elif kind:
        where.append(AuditEntry.kind == kind)
    return select(AuditEntry).where(*where).order_by(AuditEntry.ts_us.desc(), AuditEntry.id.desc()).limit(limit + 1)


LOG_KINDS = text(
    "WITH RECURSIVE k(kind) AS (SELECT MIN(kind) FROM audit_entry UNION ALL "
    "SELECT (SELECT MIN(kind) FROM audit_entry WHERE kind > k.kind) FROM k WHERE k.kind IS NOT NULL) "
    "SELECT kind FROM k WHERE kind IS NOT NULL")
"""The distinct kinds, one index seek each (a loose index scan): a few dozen seeks, not a million rows."""


def log_kinds(session: Session) -> list[str]:
    return list(session.scalars(LOG_KINDS))


def search(session: Session, args: dict[str, str], areas: dict[str, list[str]], *, door_only: bool = False,
           limit: int = PAGE) -> tuple[list[AuditEntry], str | None]:
    kinds = log_kinds(session) if args.get("kind", "").endswith(".") or door_only else None
    rows = list(session.scalars(search_query(args, areas, kinds, door_only=door_only, limit=limit)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (f"{rows[-1].ts_us}:{rows[-1].id}" if more else None)


@bp.route("")
@any_role("guard", "auditor")
def index() -> Any:
    svc = current_services()
    areas = areas_of(svc.config)
    args = {name: query_text(name, parse) for name, parse in FILTERS.items()}
    in_utc = {**args, **{name: utc_text(name, args[name], svc.presenter.tz) for name in ("since", "until")}}

    def load(s: Session) -> tuple[list[tuple[AuditEntry, Shown]], str | None]:
        rows, next_before = search(s, in_utc, areas)
        return list(zip(rows, entries(s, svc.presenter, rows), strict=True)), next_before

    rows, next_before = read(load)
    return render_template("events.html", rows=rows, args=args, next_before=next_before, doors=svc.config.doors,
                           areas=areas, zone=svc.presenter.zone)


def utc_text(name: str, local: str, tz: ZoneInfo) -> str:
    """A From / Until typed in the site's time, as the UTC text ``search`` takes ('' stays ''); a time that
    has no UTC equivalent (year 1 east of Greenwich) is a 400 naming the field."""
    if not local:
        return ""
    try:
        return datetime.fromisoformat(local).replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None).isoformat()
    except (OverflowError, ValueError):
        abort(400, f"{name}: out of the calendar's range.")


@bp.route("/find")
@any_role("guard", "auditor")
def find() -> Any:
    """An event by its id (``?event=``), as a live row links to it (the stream carries the event's id, not its
    row in the log) and as exports list it; without one, the form to type it into."""
    event_id = query_text("event").strip()
    if not event_id:
        return render_template("event_find.html")
    found = read(lambda s: s.scalar(select(AuditEntry.id).where(AuditEntry.event_id == event_id)))
    if found is None:
        abort(404)
    return redirect(url_for("events.detail", entry_id=found))


@bp.route("/<id(bits=64):entry_id>")
@any_role("guard", "auditor")
def detail(entry_id: int) -> Any:
    svc = current_services()

    def load(s: Session) -> tuple[AuditEntry | None, Shown | None, Alarm | None, list[dict[str, Any]]]:
        entry = s.get(AuditEntry, entry_id)
        if entry is None:
            return None, None, None, []
        alarm = s.scalar(select(Alarm).where(Alarm.event_id == entry.event_id)) if entry.kind == "alarm.raised" else None
        return entry, entries(s, svc.presenter, [entry], with_facts=True)[0], alarm, evidence_for(s, entry)

    entry, shown, alarm, evidence = read(load)
    if entry is None:
        abort(404)
    return render_template("event.html", e=entry, v=shown, alarm=alarm, zone=svc.presenter.zone,
                           received=svc.presenter.local(entry.received_us)[0],
                           raw={"subject": raw_json(entry.subject), "detail": raw_json(entry.detail)},
                           evidence=evidence)


def raw_json(text: str) -> str:
    """Stored JSON, indented for reading (as stored if it does not parse)."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
