"""The bridge's watch on visitors' badges: a badge not back at the desk by the end of its visit raises
``visitor.overdue`` (once per visit, ``visit.overdue_at`` set with it), cleared when the badge is returned or
the visit ends otherwise.

Every partition's bridge runs it: each change is a conditional update in the transaction of its audit entry,
and only the bridge whose update changed the row records the entry (the others' effect finds nothing to do
and appends nothing). It sleeps until the next visit ends, at most ``EVERY_S``, and checks at once after an
admin change (``wake``).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from badge_bridge.audit.writer import AuditWriter, NoEntry
from badge_bridge.event_kinds import EventKind
from badge_bridge.models import Alarm, Visit
from badge_bridge.records import alarm_cleared, alarm_raised

log = logging.getLogger(__name__)

EVERY_S = 5.0
"""The longest sleep between checks."""
CAUSE = "visit-"
"""An overdue alarm's cause: ``visit-<id>``, which names its event ``alarm:visitor.overdue:visit-<id>``."""


class VisitorWatch:
    def __init__(self, engine: Engine, writer: AuditWriter, source: str, stopping: threading.Event) -> None:
        self.engine, self.writer, self.source, self.stopping = engine, writer, source, stopping
        self._wake = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="visitor-watch", daemon=True).start()

    def wake(self) -> None:
        """Check now (a visit changed)."""
        self._wake.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            sleep = EVERY_S
            try:
                sleep = self.check(datetime.now(UTC))
            except Exception:  # the database away, the queue full: the next round tries again
                log.exception("visitor badge check failed; will retry")
            self._wake.wait(sleep)
            self._wake.clear()

    def check(self, now: datetime) -> float:
        """Raise and clear what is due at ``now``; the seconds until the next visit on site ends."""
        with Session(self.engine) as session:
            due = session.execute(select(Visit.id, Visit.person_id, Visit.host, Visit.ends_at).where(
                Visit.state == "on_site", Visit.overdue_at.is_(None), Visit.ends_at <= now)).all()
            causes = [event_id.rsplit(CAUSE, 1)[-1] for event_id in session.scalars(
                select(Alarm.event_id).where(Alarm.kind == EventKind.VISITOR_OVERDUE, Alarm.cleared_at.is_(None)))]
            open_alarms = [int(cause) for cause in causes if cause.isdigit()]
            back = session.scalars(select(Visit.id).where(Visit.id.in_(open_alarms), Visit.state != "on_site")).all()
            upcoming = session.scalar(select(Visit.ends_at).where(Visit.state == "on_site", Visit.ends_at > now)
                                      .order_by(Visit.ends_at).limit(1))
        for visit_id, person_id, host, ends_at in due:
            self._raise(visit_id, person_id, host, ends_at, now)
        for visit_id in back:
            self._clear(visit_id, now)
        return min(EVERY_S, (upcoming - now).total_seconds() + 0.05) if upcoming is not None else EVERY_S

    def _raise(self, visit_id: int, person_id: int, host: str, ends_at: datetime, now: datetime) -> None:
        event, insert_alarm = alarm_raised(
            EventKind.VISITOR_OVERDUE, door=None, source=self.source, cause=f"{CAUSE}{visit_id}", ts=now,
            detail={"visit": visit_id, "person": person_id, "host": host, "ends_at": ends_at.isoformat()})

        def effect(conn: Connection) -> None:
            marked = conn.execute(update(Visit).where(Visit.id == visit_id, Visit.state == "on_site",
                                                      Visit.overdue_at.is_(None)).values(overdue_at=now))
            if marked.rowcount != 1:  # returned meanwhile, or another partition's bridge raised it
                raise NoEntry
            insert_alarm(conn)

        log.warning("visitor badge of visit %d not returned by %s (host %s)", visit_id, ends_at.isoformat(), host)
        self.writer.submit(event, effect=effect)

    def _clear(self, visit_id: int, now: datetime) -> None:
        cause = f"{CAUSE}{visit_id}"
        event, _ = alarm_cleared(EventKind.VISITOR_OVERDUE, door=None, source=self.source, cause=cause, ts=now)
        raised = f"alarm:{EventKind.VISITOR_OVERDUE}:{cause}"

        def effect(conn: Connection) -> None:
            cleared = conn.execute(update(Alarm).where(Alarm.event_id == raised, Alarm.cleared_at.is_(None))
                                   .values(cleared_at=now))
            if cleared.rowcount != 1:  # another partition's bridge cleared it
                raise NoEntry

        self.writer.submit(event, effect=effect)
