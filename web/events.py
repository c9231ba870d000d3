"""The event log: search by door, area, kind, person and time, newest first, a page at a time.

Pages are keyset-paginated on (device time, id), so the thousandth page costs what the first does; every
filter has an index behind it (docs/console.md). A kind prefix (``access.``) is searched as the exact kinds
in the log that start with it, one index range each: a ``LIKE`` has no index that keeps time order, so a
rare or absent prefix used to scan the whole log (a third of a second at a million entries).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, abort, render_template
from sqlalchemy import Select, false, select, text, tuple_, union_all
from sqlalchemy.orm import Session

from badge_bridge.events import from_us
from badge_bridge.models import AuditEntry
from web import current_services
from web.auth import any_role
from web.changes import read
from web.evidence import evidence_for
from web.live import areas_of
from web.params import cursor, db_id, instant, query_text

bp = Blueprint("events", __name__, url_prefix="/events")
PAGE = 50
FILTERS: dict[str, Callable[[str], Any] | None] = {
    "door": None, "area": None, "kind": None, "person": db_id, "since": instant, "until": instant, "before": cursor}
"""The query parameters of a search, each with the parser that must accept it (web.params)."""


def search_query(args: dict[str, str], areas: dict[str, list[str]],
                 kinds: Iterable[str] | None = None) -> Select[AuditEntry]:
    """The filtered, ordered query for ``args`` (door, area, kind, person, since, until, before), each one
    valid for its parser in FILTERS (a ValueError otherwise).

    ``kinds``: the distinct kinds in the log (``log_kinds``); with them a kind prefix becomes those exact
    kinds, each read newest first through the (kind, time) index. Without them, a ``LIKE``."""
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
    if kind.endswith(".") and kinds is not None:
        exact = sorted(k for k in kinds if k.startswith(kind))
        if not exact:
            where.append(false())
        elif len(exact) == 1:
            where.append(AuditEntry.kind == exact[0])
        else:  # the newest PAGE + 1 ids of each kind, then the newest of those
            each = (select(AuditEntry.id).where(*where, AuditEntry.kind == k)
                    .order_by(AuditEntry.ts_us.desc(), AuditEntry.id.desc()).limit(PAGE + 1).subquery() for k in exact)
            where = [AuditEntry.id.in_(union_all(*(select(q.c.id) for q in each)))]
    elif kind.endswith("."):
        where.append(AuditEntry.kind.startswith(kind, autoescape=True))
    elif kind:
        where.append(AuditEntry.kind == kind)
    return select(AuditEntry).where(*where).order_by(AuditEntry.ts_us.desc(), AuditEntry.id.desc()).limit(PAGE + 1)


LOG_KINDS = text(
    "WITH RECURSIVE k(kind) AS (SELECT MIN(kind) FROM audit_entry UNION ALL "
    "SELECT (SELECT MIN(kind) FROM audit_entry WHERE kind > k.kind) FROM k WHERE k.kind IS NOT NULL) "
    "SELECT kind FROM k WHERE kind IS NOT NULL")
"""The distinct kinds, one index seek each (a loose index scan): a few dozen seeks, not a million rows."""


def log_kinds(session: Session) -> list[str]:
    return list(session.scalars(LOG_KINDS))


def search(session: Session, args: dict[str, str], areas: dict[str, list[str]]) -> tuple[list[AuditEntry], str | None]:
    kinds = log_kinds(session) if args.get("kind", "").endswith(".") else None
    rows = list(session.scalars(search_query(args, areas, kinds)))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return rows, (f"{rows[-1].ts_us}:{rows[-1].id}" if more else None)


@bp.route("")
@any_role("guard", "auditor")
def index() -> Any:
    config = current_services().config
    areas = areas_of(config)
    args = {name: query_text(name, parse) for name, parse in FILTERS.items()}
    rows, next_before = read(lambda s: search(s, args, areas))
    return render_template("events.html", rows=rows, args=args, next_before=next_before, doors=config.doors,
                           areas=areas, from_us=from_us, loads=json.loads)


@bp.route("/<id(bits=64):entry_id>")
@any_role("guard", "auditor")
def detail(entry_id: int) -> Any:
    def load(s: Session) -> tuple[AuditEntry | None, list[dict[str, Any]]]:
        entry = s.get(AuditEntry, entry_id)
        return entry, evidence_for(s, entry) if entry is not None else []

    entry, evidence = read(load)
    if entry is None:
        abort(404)
    return render_template("event.html", e=entry, subject=json.loads(entry.subject), detail=json.loads(entry.detail),
                           from_us=from_us, evidence=evidence)
