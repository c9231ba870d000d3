"""The one entry for every message from a device or a console: one lock around the concerns, the clock
read once per message, and every event the message caused submitted to the audit writer in order.

The concerns live in their own modules (``access``, ``door_events``, ``liveness``, ``console``; the
cameras' in ``badge_bridge.cameras``) and return their events; this facade holds the state they share,
dispatches, audits refusals as dead letters, and answers the bridge's questions about doors, controllers
and counts, so nothing outside reaches into the concerns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from badge_bridge.audit.writer import AuditWriter, Effect
from badge_bridge.cameras import CameraDesk, CameraRejected, Emitted, SendRequest
from badge_bridge.clock import Clock, system_clock
from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.doors import DoorMonitor
from badge_bridge.events import InvalidEvent
from badge_bridge.ingest import persist
from badge_bridge.ingest.access import AccessDecisions
from badge_bridge.ingest.admission import Admission, Rejected, Retransmitted, digest
from badge_bridge.ingest.commands import SendCommand
from badge_bridge.ingest.console import ConsoleCommands
from badge_bridge.ingest.console_auth import ConsoleAuthority, Forged
from badge_bridge.ingest.counters import Counters
from badge_bridge.ingest.door_events import DoorEvents
from badge_bridge.ingest.liveness import Liveness
from badge_bridge.ingest.shared_facts import SharedFacts
from badge_bridge.ingest.wiring import Wiring
from badge_bridge.policy import AccessState
from badge_bridge.presence import Presence
from badge_bridge.records import dead_letter
from badge_bridge.snapshot import Snapshot

if TYPE_CHECKING:
    from badge_bridge.face_match import Gallery

log = logging.getLogger(__name__)

Ack = Callable[[], None]
FRESHNESS = {"replayed_id": "replayed", "future_time": "from the future", "too_old": "stale"}
"""How a console command's refusal by the contract's id and time rules is named in its dead letter."""


class Processor:
    """Thread-safe: drivers call it from their own threads and the bridge from its timer; every public
    method takes the one lock."""

    def __init__(self, config: SiteConfig, writer: AuditWriter, snapshot: Snapshot, pepper: bytes,
                 send: SendCommand, on_door: Callable[[str], None] = lambda d: None,
                 send_camera: SendRequest = lambda camera, request: None, clock: Clock = system_clock,
                 console_authority: ConsoleAuthority | None = None) -> None:
        """``console_authority``: what checks console commands; without one, every console command is refused."""
        self.config = config
        self._console_authority = console_authority
        self._writer = writer
        self._clock = clock
        self._lock = threading.RLock()
        self._counters = Counters()
        started = clock()
        wiring = Wiring(config)
        doors = DoorMonitor({d.key: (d.open_time_s, d.held_open_limit_s) for d in config.doors})
        presence = Presence(timedelta(seconds=config.ingest.offline_grace_s))
        state = AccessState()
        self._wiring, self._state, self._doors, self._send = wiring, state, doors, send
        self._admission = Admission(timedelta(seconds=config.ingest.max_future_s),
                                    timedelta(seconds=config.ingest.offline_window_s))
        self._cameras = CameraDesk(config, send_camera, started, clock)
        self._access = AccessDecisions(wiring, snapshot, pepper, state, doors, presence, self._cameras, send,
                                       self._counters)
        self._door_events = DoorEvents(wiring, doors, on_door, config.site.instance)
        self._liveness = Liveness(wiring, doors, presence, on_door, clock, started)
        self._console = ConsoleCommands(config, wiring, doors, state, send, on_door)
        self._shared = SharedFacts(config, wiring, state, doors, send, on_door)
        self._changed_at: dict[str, datetime] = {}
        """Fact key -> when this bridge last changed it (``apply_shared`` keeps a newer decision of ours)."""

    # --- what the bridge sets and asks -----------------------------------------------------------------

    def remember(self, event_ids: list[str]) -> None:
        """Ids already in the log (loaded at start), so a replay after a restart is recognised. A console
        command is logged per partition (``console:<id>@<partition>``) and checked as ``console:<id>``."""
        suffix = f"@{self.config.site.instance}"
        with self._lock:
            self._admission.remember([eid.removesuffix(suffix) if eid.startswith("console:") else eid
                                      for eid in event_ids])

    def restore_alarms(self, alarms: list[tuple[str, str]]) -> None:
        """Door alarms still open in the log at start, as (door, kind)."""
        with self._lock:
            self._door_events.restore_alarms(alarms)

    def restore_state(self, rows: list[tuple[str, str]]) -> persist.Restored:
        """The persisted state (``persist``), before any driver starts: the first card after a restart is
        decided with it. Timed unlocks that ended while the bridge was down are relocked now, and audited."""
        with self._lock:
            now = self._clock()
            windows = {d.key: d.two_person_window_s for d in self.config.doors if d.two_person}
            restored = persist.restore(rows, self._state, self._doors, windows, now, frozenset(self.config.foreign_doors))
            self._emit(self._door_events.relock(now), None)
            log.info("state restored from the database: %s", restored.summary())
            return restored

    def command_restored(self) -> None:
        """Tell the controllers again which doors are locked down or unlocked (they may have restarted too)."""
        with self._lock:
            for controller, command in persist.commands(self._doors, self._wiring.by_controller(self._doors.doors), self._clock()):
                self._send(controller, command)

    @property
    def snapshot(self) -> Snapshot:
        """People and credentials that decisions read (and controllers' offline lists are built from)."""
        return self._access.snapshot

    def set_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._access.snapshot = snapshot

    def set_gallery(self, gallery: Gallery) -> None:
        """The enrolled faces, decrypted; loaded at start and again with every change to people."""
        with self._lock:
            self._cameras.gallery = gallery

    def door_state(self, door: str) -> c.DoorState:
        """A door's state as the bridge publishes it."""
        with self._lock:
            return self._door_events.state(door, self._clock())

    def controllers_online(self) -> dict[str, bool]:
        """Controllers that have reported, and whether each is online now."""
        with self._lock:
            return dict(self._liveness.online)

    def counts(self) -> Counters:
        """A copy of the counters, for the metrics endpoint."""
        with self._lock:
            return self._counters.copy()

    # --- controllers ---------------------------------------------------------------------------------

    def controller_event(self, controller: str, msg: c.CredentialPresented | c.DoorContact | c.RequestToExit |
                         c.Tamper | c.Heartbeat, payload: bytes, where: str, ack: Ack | None) -> None:
        with self._lock:
            now = self._clock()
            try:
                self._wiring.known(controller)
                self._admission.check(controller, msg, now, digest(payload))
                self._liveness.heard_from(controller, now)
                Counters.bump(self._counters.events_in, msg.type)
                events = self._dispatch(controller, msg, now)
                if isinstance(msg, c.DoorContact):
                    events += self._access.interlocks_ready(now)  # a mantrap door closed: who waited goes on
            except Retransmitted:  # decided before: its receipt goes again once that is committed (receipts.py)
                Counters.bump(self._counters.retransmitted, controller)
                events = []
            except (Rejected, InvalidEvent) as exc:
                events = self._refusal(controller, exc, payload, where, now)
            self._emit(events, ack)

    def _dispatch(self, controller: str, msg: c.Message, now: datetime) -> Emitted:
        eid = f"{controller}:{msg.id}"
        if isinstance(msg, c.CredentialPresented):
            return self._access.credential(controller, eid, msg, now)
        if isinstance(msg, c.DoorContact):
            return self._door_events.contact(controller, eid, msg)
        if isinstance(msg, c.RequestToExit):
            return self._door_events.exit_request(controller, eid, msg)
        if isinstance(msg, c.Tamper):
            return self._door_events.tamper(controller, eid, msg)
        assert isinstance(msg, c.Heartbeat)
        return self._liveness.status(controller, True, msg.ts, eid, now)

    def controller_status(self, controller: str, status: c.ControllerStatus, payload: bytes, where: str,
                          ack: Ack | None) -> None:
        """Retained status and last will. Only changes are audited: a heartbeat or a repeated status is not."""
        with self._lock:
            now = self._clock()
            try:
                self._wiring.known(controller)
            except Rejected as exc:
                self._emit(self._refusal(controller, exc, payload, where, now), ack)
                return
            self._emit(self._liveness.controller_status(controller, status, now), ack)

    def reader_condition(self, controller: str, reader: str, condition: str, active: bool,
                         detail: dict[str, object] | None = None) -> None:
        """A bus reader's own trouble (OSDP): ``offline``, ``secure_channel_failed`` or ``plaintext``."""
        with self._lock:
            self._emit(self._liveness.reader_condition(controller, reader, condition, active, detail, self._clock()),
                       None)

    def link_lost(self) -> None:
        """The bridge lost its broker: it hears no controller until each reports again."""
        with self._lock:
            self._liveness.link_lost(self._clock())

    # --- cameras -------------------------------------------------------------------------------------

    def camera_event(self, camera: str, msg: c.Motion | c.EvidenceSaved | c.FacesSeen | c.PeopleCounted, payload: bytes, where: str,
                     ack: Ack | None) -> None:
        with self._lock:
            now = self._clock()
            try:
                self._admission.check(camera, msg, now)
                Counters.bump(self._counters.events_in, msg.type)
                if isinstance(msg, c.Motion):
                    events = self._cameras.motion(camera, msg)
                    events += self._cameras.tick(now)  # decide now what this motion settles
                elif isinstance(msg, c.FacesSeen):
                    events, verdict = self._cameras.faces_seen(camera, msg)
                    if verdict is not None and self._access.waiting_for(verdict[0]):
                        events += self._access.face_verdict(*verdict, now)
                elif isinstance(msg, c.PeopleCounted):
                    count = self._cameras.people_counted(camera, msg)
                    events = self._access.occupancy(count[0], count[1], now, count[2]) if count is not None else []
                else:
                    events = self._cameras.evidence_saved(camera, msg)
            except (Rejected, CameraRejected, InvalidEvent) as exc:
                events = self._refusal(camera, exc, payload, where, now)
            self._emit(events, ack)

    def camera_status(self, camera: str, status: c.CameraStatus, payload: bytes, where: str, ack: Ack | None) -> None:
        with self._lock:
            now = self._clock()
            try:
                events = self._cameras.status(camera, status, now)
            except (CameraRejected, InvalidEvent) as exc:
                events = self._refusal(camera, exc, payload, where, now)
            self._emit(events, ack)

    # --- operators and time --------------------------------------------------------------------------

    def console_command(self, cmd: c.ConsoleCommand, payload: bytes, where: str, ack: Ack | None) -> None:
        """An operator's unlock, lock or lockdown: checked (signature, freshness, user, role, session; the
        database query outside the lock), audited with the user, then sent to the controllers."""
        unchecked: Rejected | None = None
        try:
            if self._console_authority is None:
                raise Forged(cmd, "bad signature: this bridge checks no console commands (no console key)")
            self._console_authority.check(cmd, self._clock())
        except Rejected as exc:
            unchecked = exc
        with self._lock:
            now = self._clock()
            try:
                if unchecked is not None:
                    raise unchecked
                try:
                    self._admission.check("console", cmd, now)
                except Rejected as exc:
                    raise Forged(cmd, f"{FRESHNESS.get(exc.code, exc.code)}: {exc}") from None
                events = self._console.command(cmd, now)
                events += self._access.interlocks_ready(now)  # a lock may free a mantrap
            except Rejected as exc:
                events = self._refusal("console", exc, payload, where, now)
            self._emit(events, ack)

    def tick(self) -> None:
        """Raise held-open alarms, end timed unlocks, settle the cameras' findings and face checks, and mark
        devices that never reported (or went quiet) as offline; called a few times a second by the bridge."""
        with self._lock:
            now = self._clock()
            self._emit(self._door_events.relock(now), None)
            self._emit(self._liveness.silent(now), None)
            self._emit(self._cameras.tick(now), None)
            unverified, required = self._cameras.faces_expired(now)
            self._emit(unverified, None)
            for eid in required:
                self._emit(self._access.face_verdict(eid, "timeout", now), None)
            for eid in self._cameras.people_expired(now):
                self._emit(self._access.occupancy(eid, None, now, "no answer from the mantrap's camera in time"), None)
            self._emit(self._access.interlocks_ready(now), None)
            self._emit(self._door_events.held_open(now), None)

    def apply_shared(self, facts: list[tuple[str, str | None, datetime | None]], origin: str) -> None:
        """Facts another partition committed (``failover.shared_state``): kept in memory, not written again;
        a lockdown reaching our doors is commanded and audited. A fact decided before our own latest change of
        it is older news (its notification overtook our commit): ours stands."""
        with self._lock:
            newer = [(key, value) for key, value, at in facts
                     if at is None or key not in self._changed_at or at >= self._changed_at[key]]
            self._emit(self._shared.apply(newer, origin, self._clock()), None)

    # --- refusals and the audit log ------------------------------------------------------------------

    def reject(self, source: str, code: str, reason: str, payload: bytes, *, where: str, ack: Ack | None) -> None:
        """Input a driver refused before it became a message: audited as a dead letter."""
        with self._lock:
            self._emit(self._refusal(source, Rejected(code, reason), payload, where, self._clock()), ack)

    def _refusal(self, source: str, exc: Rejected | CameraRejected | InvalidEvent, payload: bytes, where: str,
                 now: datetime) -> Emitted:
        """The dead letter for refused input, counted by code."""
        code = exc.code if isinstance(exc, (Rejected, CameraRejected)) else "invalid_event"
        Counters.bump(self._counters.dead_letters, code)
        log.warning("rejected input from %s on %s (%s): %s", source, where, code, exc)
        letter = dead_letter(source, code, str(exc), payload, where=where, now=now)
        return [letter, exc.alarm(now)] if isinstance(exc, Forged) else [letter]

    def _emit(self, events: Emitted, ack: Ack | None) -> None:
        """Submit in order; the source is acknowledged with the last one, which also carries the state the
        message changed (``persist``), so that commits with it."""
        if events and (self._state.journal or self._doors.changed):
            event, effect = events[-1]
            now, rows = self._clock(), persist.take(self._state, self._doors)
            self._changed_at.update((key, now) for key, _ in rows)
            events = [*events[:-1], (event, _both(effect, persist.effect(self.config.site.instance, rows, event.id,
                                                                         now)))]
        for i, (event, effect) in enumerate(events):
            last = i == len(events) - 1
            self._cameras.observe(event)
            release = (lambda _e, _dup, _ack=ack: _ack()) if last and ack is not None else None
            self._writer.submit(event, release, timeout=None, effect=effect)
        if not events and ack is not None:
            ack()


def _both(first: Effect | None, second: Effect) -> Effect:
    if first is None:
        return second

    def run(conn: Connection) -> None:
        first(conn)
        second(conn)

    return run
