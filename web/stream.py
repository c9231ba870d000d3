"""The server-sent events every console page listens to (static/stream.js hands them to the page's scripts):
``events`` (a committed batch), ``door`` (a door's state), ``bridge`` (an instance's status), ``alarms`` (the
alarm table changed: raised, cleared, acknowledged or resolved in any console process; the page redraws its
panel)."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import cast

from flask import Blueprint, Response, current_app, stream_with_context
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

from web import current_services
from web.alarms import alarm_version
from web.auth import any_role, check_session, current_session_ref
from web.changes import read

log = logging.getLogger(__name__)

bp = Blueprint("stream", __name__)
HEARTBEAT_S = 15.0
SESSION_CHECK_S = 5.0
"""An open stream re-checks its session this often (app config ``SESSION_CHECK_SECONDS`` overrides it)."""
ALARM_CHECK_S = 1.0
"""Each stream looks at the alarm version this often; the process asks the database at most this often."""


class AlarmVersion:
    """The alarm table's version (web.alarms.alarm_version), read at most once per ``every`` seconds for all
    the streams of this process: 50 open pages cost one query a second, not fifty. The console's own
    acknowledgements are not on MQTT, so this is how another gunicorn process's pages learn of them."""

    def __init__(self, read_version: Callable[[], str], every: float = ALARM_CHECK_S) -> None:
        self._read = read_version
        self.every = every
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._data = ""

    def current(self) -> str:
        """The SSE data: ``{"version": ...}``, or ``{"version": null}`` while the database does not answer."""
        with self._lock:
            if time.monotonic() - self._at >= self.every:
                try:
                    version: str | None = self._read()
                except SQLAlchemyError as exc:
                    log.warning("alarm version: the database does not answer: %s", exc.__class__.__name__)
                    version = None
                self._data, self._at = json.dumps({"version": version}), time.monotonic()
            return self._data


def _alarm_version() -> AlarmVersion:
    """This app's one AlarmVersion (made at the first stream)."""
    ext = current_app.extensions
    if "alarm_version" not in ext:
        app = current_app._get_current_object()  # type: ignore[attr-defined]  # the app, not the proxy

        def read_version() -> str:
            with app.app_context():
                return read(alarm_version)

        ext["alarm_version"] = AlarmVersion(read_version, float(app.config.get("ALARM_CHECK_SECONDS", ALARM_CHECK_S)))
    return cast(AlarmVersion, ext["alarm_version"])


def for_wall(data: str) -> str:
    """What a wall display may show of a batch: the door events, without who they were nor the record (a
    screen others walk past; a kiosk's cookie lives a year)."""
    batch = json.loads(data)
    batch["events"] = [{**e, "subject": {}, "detail": {}, "shown": {**e["shown"], "who": None, "text": ""}}
                       for e in batch.get("events", []) if (e.get("shown") or {}).get("door_event")]
    return json.dumps(batch)


@bp.route("/stream")
@any_role("guard", "wall")
def stream() -> Response:
    """The session is checked again every ``SESSION_CHECK_SECONDS`` (as a page request would check it, and it
    counts as presence): the stream closes soon after a logout, a password change, a disabled user or a
    changed role, and after the session's absolute end."""
    svc = current_services()
    hub, user_id, ref = svc.hub, int(current_user.id), current_session_ref()
    every = float(current_app.config.get("SESSION_CHECK_SECONDS", SESSION_CHECK_S))
    alarms = _alarm_version()
    wall = current_user.role == "wall"

    def still_allowed() -> bool:
        return check_session(ref, user_id).ended is None

    subscription = ExitStack()
    q = subscription.enter_context(hub.subscribe(ref))

    def generate() -> Iterator[str]:
        yield "retry: 2000\n\n"
        for state in list(hub.doors.values()):
            yield f"event: door\ndata: {state}\n\n"
        checked = beat = time.monotonic()
        looked, sent = -float("inf"), ""
        while True:
            now = time.monotonic()
            if now >= looked + alarms.every:
                looked, version = now, alarms.current()
                if version != sent:  # the first look too: the page compares it with the version it drew
                    sent = version
                    yield f"event: alarms\ndata: {version}\n\n"
            try:
                wake = min(checked + every, beat + HEARTBEAT_S, looked + alarms.every)
                kind, data = q.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                kind = data = ""
            if q.ended:  # the same login opened more pages than it may hold streams: this, the oldest, ends
                return
            now = time.monotonic()
            if now >= checked + every:
                if not still_allowed():
                    yield "event: session\ndata: ended\n\n"
                    return
                checked = now
            if kind == "events" and wall:
                data = for_wall(data)
            if kind:
                yield f"event: {kind}\ndata: {data}\n\n"
            elif now >= beat + HEARTBEAT_S:
                yield ": heartbeat\n\n"
                beat = now

    response = Response(stream_with_context(generate()), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.call_on_close(subscription.close)
    return response
