"""The event log: search by door, area, kind, person and time, newest first, a page at a time.

Pages are keyset-paginated on (device time, id), so the thousandth page costs what the first does; every
filter has an index behind it (docs/console.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, render_template, request
from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from badge_bridge.events import from_us, to_us
from badge_bridge.models import AuditEntry
from web import services
from web.auth import any_role
from web.changes import read
from web.live import areas_of

bp = Blueprint("events", __name__, url_prefix="/events")
PAGE = 50


def _when(value: str) -> int | None:
    try:
        return to_us(datetime.fromisoformat(value).replace(tzinfo=UTC)) if value else None
    except ValueError:
        return None


def search_query(args: dict[str, str], areas: dict[str, list[str]]) -> Select[tuple[AuditEntry]]:
    """The filtered, ordered query for ``args`` (door, area, kind, person, since, until, before)."""
    stmt = select(AuditEntry)
    if args.get("door"):
        stmt = stmt.where(AuditEntry.door == args["door"])
    elif args.get("area") in areas:
        stmt = stmt.where(AuditEntry.door.in_(areas[args["area"]]))
    kind = args.get("kind", "")
    if kind.endswith("."):
        stmt = stmt.where(AuditEntry.kind.startswith(kind, autoescape=True))
    elif kind:
        stmt = stmt.where(AuditEntry.kind == kind)
    if args.get("person", "").isdigit():
        stmt = stmt.where(AuditEntry.person_id == int(args["person"]))
    since, until = _when(args.get("since", "")), _when(args.get("until", ""))
    if since is not None:
        stmt = stmt.where(AuditEntry.ts_us >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.ts_us < until)
    before = args.get("before", "")
    if before.count(":") == 1 and before.replace(":", "").isdigit():
        ts, eid = (int(p) for p in before.split(":"))
        stmt = stmt.where(tuple_(AuditEntry.ts_us, AuditEntry.id) < tuple_(ts, eid))
    return stmt.order_by(AuditEntry.ts_us.desc(), AuditEntry.id.desc()).limit(PAGE + 1)


def search(session: Session, args: dict[str, str], areas: dict[str, list[str]]) -> tuple[list[AuditEntry], str | None]:
    rows = list(session.scalars(search_query(args, areas)))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return rows, (f"{rows[-1].ts_us}:{rows[-1].id}" if more else None)


@bp.route("")
@any_role("guard", "auditor")
def index() -> Any:
    config = services().config
    areas = areas_of(config)
    args = {k: request.args.get(k, "")[:64] for k in ("door", "area", "kind", "person", "since", "until", "before")}
    rows, next_before = read(lambda s: search(s, args, areas))
    return render_template("events.html", rows=rows, args=args, next_before=next_before, doors=config.doors,
                           areas=areas, from_us=from_us, loads=json.loads)


@bp.route("/<int:entry_id>")
@any_role("guard", "auditor")
def detail(entry_id: int) -> Any:
    entry = read(lambda s: s.get(AuditEntry, entry_id))
    if entry is None:
        abort(404)
    return render_template("event.html", e=entry, subject=json.loads(entry.subject), detail=json.loads(entry.detail),
                           from_us=from_us)
