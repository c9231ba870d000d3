"""The bridge's round of access requests whose window has ended: each is marked expired through the audited
path (``admin.request_expired``, the bridge instance as the actor), so it leaves the snapshot at the next
reload and the log says when its level was revoked.

The door never waits for this: an approved request opens its level inside its window only (the snapshot bounds
its schedules by it), so a card is refused ``outside_window`` from the end on, whether or not this has run.
Several bridges may run it at once: each transition is a conditional UPDATE, and only the bridge whose UPDATE
changed the row writes the entry (badge_bridge.access_requests.expire).
"""

from __future__ import annotations

import functools
import logging
import threading
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from badge_bridge import access_requests
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change

log = logging.getLogger(__name__)

EVERY_S = 30.0


class RequestExpiry:
    def __init__(self, engine: Engine, writer: AuditWriter, actor: str, stopping: threading.Event,
                 every_s: float = EVERY_S) -> None:
        self.engine = engine
        self.writer = writer
        self.actor = actor
        self.stopping = stopping
        self.every_s = every_s
        self._wake = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="request-expiry", daemon=True).start()

    def wake(self) -> None:
        """Look now rather than at the next round."""
        self._wake.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.run_once(datetime.now(UTC))
            except Exception:  # the database away, the writer stopping: the next round tries again
                log.exception("access request expiry failed; will retry")
            self._wake.wait(self.every_s)
            self._wake.clear()

    def run_once(self, now: datetime) -> int:
        """Expire what is due at ``now``; how many this bridge expired."""
        with Session(self.engine) as session:
            due = access_requests.due(session, now)
        expired = 0
        for request_id in due:
            if self.stopping.is_set():
                break
            row, _ = commit_change(self.writer, self.actor, functools.partial(
                access_requests.expire, actor=self.actor, request_id=request_id, now=now))
            if row is not None:
                expired += 1
                log.info("access request %d expired at the end of its window", request_id)
        return expired
