"""The live feed: the latest events from the log, then every new one as the bridge commits it (SSE)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, render_template, request, stream_with_context
from flask_login import current_user
from sqlalchemy import select

from badge_bridge.config import SiteConfig
from badge_bridge.models import Alarm, AuditEntry, ConsoleUser
from web import current_services
from web.auth import role_required
from web.changes import read

bp = Blueprint("live", __name__)
HEARTBEAT_S = 15.0


def areas_of(config: SiteConfig) -> dict[str, list[str]]:
    """Area key -> the doors leading into or out of it, for the area filter."""
    out: dict[str, list[str]] = {a.key: [] for a in config.areas}
    for d in config.doors:
        for area in {d.area_in, d.area_out} - {None}:
            out[area].append(d.key)  # type: ignore[index]
    return out


@bp.route("/")
@role_required("guard")
def feed() -> Any:
    svc = current_services()
    recent = read(lambda s: list(s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(100))))
    open_alarms = read(lambda s: list(s.scalars(select(Alarm).where(Alarm.state == "open").order_by(Alarm.id.desc()))))
    return render_template("live.html", events=recent, open_alarms=open_alarms, doors=svc.config.doors,
                           areas=areas_of(svc.config), filters={k: request.args.get(k, "") for k in ("door", "area", "kind")})


@bp.route("/stream")
@role_required("guard")
def stream() -> Response:
    """Server-sent events: ``events`` (a committed batch), ``door`` (a door's state), ``bridge`` (status)."""
    svc = current_services()
    hub, user_id = svc.hub, int(current_user.id)

    def still_allowed() -> bool:
        """A user disabled while watching loses the feed at the next heartbeat."""
        with svc.session() as s:
            return bool(s.scalar(select(ConsoleUser.active).where(ConsoleUser.id == user_id)))

    def generate() -> Iterator[str]:
        with hub.subscribe() as q:
            yield "retry: 2000\n\n"
            for state in list(hub.doors.values()):
                yield f"event: door\ndata: {state}\n\n"
            while True:
                try:
                    kind, data = q.get(timeout=HEARTBEAT_S)
                except queue.Empty:
                    if not still_allowed():
                        return
                    yield ": heartbeat\n\n"
                    continue
                yield f"event: {kind}\ndata: {data}\n\n"

    return Response(stream_with_context(generate()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

