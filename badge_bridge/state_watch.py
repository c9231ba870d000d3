"""The bridge's watch on the access tables: at start, every ``audit.state_check_seconds`` and after each
admin change it compares people, credentials, levels, schedules, console users and faces with what the log's
admin entries record (badge_bridge.audit.state_check), and raises ``audit.state_mismatch`` naming the rows
that differ, cleared once they agree again.

It runs on its own thread and only reads: a mismatch never holds a door. It keeps the replayed states and
reads only the admin entries new since the last check, so a check costs one read of the tables.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from badge_bridge.audit.access_tables import Difference, Replay, compare
from badge_bridge.audit.state_check import NO_STATE, admin_entries, reading, signed_through, tables
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import to_us
from badge_bridge.models import Alarm
from badge_bridge.records import alarm_cleared, alarm_raised

log = logging.getLogger(__name__)

ROWS_MAX = 20
"""Rows an alarm names; ``count`` says how many differ, `audit verify` names them all."""
LATE_US = 3_600_000_000
"""Admin entries are read again back to this long before the newest one seen: an entry received earlier but
committed later (a slow transaction on another chain) is still found."""


class StateWatch:
    def __init__(self, engine: Engine, writer: AuditWriter, source: str, every_s: float,
                 stopping: threading.Event, trusted: Mapping[str, Ed25519PublicKey]) -> None:
        self.engine = engine
        self.trusted = trusted
        """Only admin entries a valid signature of these keys covers vouch for the tables (a planted one
        carrying a state of its own does not)."""
        self.writer = writer
        self.source = source
        self.every_s = every_s
        self.stopping = stopping
        self._wake = threading.Event()
        self._replay = Replay()
        self._seen: dict[tuple[str, int], int] = {}
        """(chain, seq) -> received_us of the admin entries applied in the last LATE_US."""
        self._newest = 0
        self._last_id = 0
        """The highest row id applied: an entry found below it was written earlier but committed later."""
        self._alarmed: set[str] | None = None
        """Keys the open alarm names (None: not yet read from the alarm table)."""
        self._cause = ""
        self.differences: list[Difference] = []

    def start(self) -> None:
        threading.Thread(target=self._run, name="state-watch", daemon=True).start()

    def wake(self) -> None:
        """Check now (an admin change was committed)."""
        self._wake.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.check()
            except Exception:  # the database away, the queue full: the next round tries again
                log.exception("access tables check failed; will retry")
            self._wake.wait(self.every_s)
            self._wake.clear()

    def check(self) -> list[Difference]:
        with reading(self.engine) as conn:
            self._catch_up(conn)
            if self._alarmed is None:
                self._alarmed = {""} if self._open_alarm(conn) else set()
            if self._replay.last is None:
                if tables(conn):
                    log.warning("access tables not checked: %s", NO_STATE)
                self.differences = []
            else:
                self.differences = compare(tables(conn), self._replay.rows)
        self._report(self.differences)
        return self.differences

    def _catch_up(self, conn: Connection) -> None:
        through = signed_through(conn, self.trusted)
        fresh = [row for row in admin_entries(conn, max(0, self._newest - LATE_US))
                 if row[:2] not in self._seen and row[1] <= through.get(row[0], 0)]
        if fresh and fresh[0][4] < self._last_id:  # one lands before entries applied: replay all
            self._replay, self._seen, self._newest, self._last_id = Replay(), {}, 0, 0
            fresh = [row for row in admin_entries(conn) if row[1] <= through.get(row[0], 0)]
        for chain, seq, received, detail, row_id in fresh:
            self._replay.apply(detail, (chain, seq))
            self._seen[(chain, seq)] = received
            self._newest = max(self._newest, received)
            self._last_id = max(self._last_id, row_id)
        self._seen = {k: r for k, r in self._seen.items() if r >= self._newest - LATE_US}

    def _open_alarm(self, conn: Connection) -> bool:
        return conn.scalar(select(Alarm.id).where(Alarm.kind == EventKind.AUDIT_STATE_MISMATCH,
                                                  Alarm.source == self.source, Alarm.cleared_at.is_(None))
                           .limit(1)) is not None

    def _report(self, differences: list[Difference]) -> None:
        keys = {d.key for d in differences}
        alarmed = self._alarmed or set()
        now = datetime.now(UTC)
        if keys - alarmed:  # rows newly differing: an alarm of their own, however many are open
            self._cause = str(to_us(now))
            rows = [str(d) for d in differences[:ROWS_MAX]]
            log.error("access tables differ from the audit log in %d rows: %s", len(differences), "; ".join(rows))
            event, effect = alarm_raised(EventKind.AUDIT_STATE_MISMATCH, door=None, source=self.source,
                                         cause=self._cause, ts=now, detail={"rows": rows, "count": len(differences)})
            self.writer.submit(event, effect=effect)
        elif alarmed and not keys:
            log.info("access tables agree with the audit log again")
            event, effect = alarm_cleared(EventKind.AUDIT_STATE_MISMATCH, door=None, source=self.source,
                                          cause=self._cause or str(to_us(now)), ts=now, by_source=True)
            self.writer.submit(event, effect=effect)
        self._alarmed = keys
