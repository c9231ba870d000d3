"""The live feed page: the latest door events from the log, as people read them (web.present); the browser
then adds every new one from the stream (web.stream, static/feed.js). Motion, evidence, cameras and the
system's own events show only when asked for (``all=1``), on the page and on live rows alike."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge.models import Alarm, AuditEntry
from web import current_services
from web.auth import role_required
from web.changes import read
from web.events import areas_of, search
from web.present import Shown, entries, label

bp = Blueprint("live", __name__)
RECENT = 100
"""Rows the page starts with; live rows add up to 500 (feed.js)."""
KINDS = ("access.", "access.denied", "door.", "alarm.", "controller.", "console.", "input.rejected")
"""The kind filter's choices."""


@bp.route("/")
@role_required("guard")
def feed() -> Any:
    svc = current_services()
    areas = areas_of(svc.config)
    filters = {k: request.args.get(k, "")[:64] for k in ("door", "area", "kind", "all")}
    show_all = filters["all"] == "1"

    def load(s: Session) -> list[tuple[AuditEntry, Shown]]:
        rows, _ = search(s, {"kind": filters["kind"] if filters["kind"] in KINDS else ""}, areas,
                         door_only=not show_all, limit=RECENT)
        return list(zip(rows, entries(s, svc.presenter, rows), strict=True))

    open_alarms = read(lambda s: list(s.scalars(select(Alarm).where(Alarm.state == "open").order_by(Alarm.id.desc()))))
    return render_template("live.html", events=read(load), open_alarms=open_alarms, doors=svc.config.doors,
                           areas=areas, area_names={a.key: a.name or a.key for a in svc.config.areas},
                           filters=filters, kinds=KINDS, zone=svc.presenter.zone, label=label, where=svc.presenter.where)
