"""The live feed: the latest events from the log, then every new one as the bridge commits it (SSE)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, stream_with_context
from flask_login import current_user
from sqlalchemy import select

from badge_bridge.config import SiteConfig
from badge_bridge.models import Alarm, AuditEntry
from web import current_services
from web.auth import check_session, current_session_ref, role_required
from web.changes import read

bp = Blueprint("live", __name__)
HEARTBEAT_S = 15.0
SESSION_CHECK_S = 5.0
"""An open stream re-checks its session this often (app config ``SESSION_CHECK_SECONDS`` overrides it)."""


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
    """Server-sent events: ``events`` (a committed batch), ``door`` (a door's state), ``bridge`` (status).

    The session is checked again every ``SESSION_CHECK_SECONDS`` (as a page request would check it, and it
    counts as presence): the stream closes soon after a logout, a password change, a disabled user or a
    changed role, and after the session's absolute end."""
    svc = current_services()
    hub, user_id, ref = svc.hub, int(current_user.id), current_session_ref()
    every = float(current_app.config.get("SESSION_CHECK_SECONDS", SESSION_CHECK_S))

    def still_allowed() -> bool:
        return check_session(ref, user_id).ended is None

    def generate() -> Iterator[str]:
        with hub.subscribe() as q:
            yield "retry: 2000\n\n"
            for state in list(hub.doors.values()):
                yield f"event: door\ndata: {state}\n\n"
            checked = beat = time.monotonic()
            while True:
                try:
                    kind, data = q.get(timeout=max(0.0, min(checked + every, beat + HEARTBEAT_S) - time.monotonic()))
                except queue.Empty:
                    kind = data = ""
                now = time.monotonic()
                if now >= checked + every:
                    if not still_allowed():
                        yield "event: session\ndata: ended\n\n"
                        return
                    checked = now
                if kind:
                    yield f"event: {kind}\ndata: {data}\n\n"
                elif now >= beat + HEARTBEAT_S:
                    yield ": heartbeat\n\n"
                    beat = now

    return Response(stream_with_context(generate()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
