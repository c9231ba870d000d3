"""What the bridge does with each message from a device or a console, whatever protocol carried it.

Drivers hand in contract messages (``controllers.contract``) with an ``ack`` to call once everything the
message caused is committed to the audit log; they hand refused input to ``reject``. Here a credential
becomes a decision and a command, a door contact becomes door state and alarms, and every one of those
becomes an audited event. The source is acknowledged with the last event it caused: the writer commits in
order, so when that one is committed all are.

Credential requests are answered at once (the command leaves before the commit; a door cannot wait for a
disk), but a request older than ``REQUEST_MAX_AGE`` (a redelivery after an outage) is logged and never
actuated: the person has long gone, and a replay must not open a door.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import update

from badge_bridge import cards
from badge_bridge.audit.writer import AuditWriter, Effect
from badge_bridge.cameras import CameraDesk, CameraRejected, SendRequest
from badge_bridge.config import ReaderConfig, SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.doors import FORCED, DoorMonitor
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event, InvalidEvent
from badge_bridge.keys import check_pin
from badge_bridge.models import Controller
from badge_bridge.presence import Presence
from badge_bridge.policy import AccessState, Decision, Door, Factor, Reason, Request, decide
from badge_bridge.records import alarm_cleared, alarm_raised, dead_letter
from badge_bridge.snapshot import CredentialRecord, Snapshot

log = logging.getLogger(__name__)

REQUEST_MAX_AGE = timedelta(seconds=10)
RECENT_IDS = 200_000
READER_KINDS = {"offline": (EventKind.READER_OFFLINE, EventKind.READER_ONLINE),
                "secure_channel_failed": (EventKind.READER_SECURE_CHANNEL_FAILED, EventKind.READER_SECURE_CHANNEL_OK),
                "plaintext": (EventKind.READER_PLAINTEXT, EventKind.READER_PLAINTEXT_ENDED)}
SILENT_START = timedelta(seconds=30)
"""A controller that has said nothing this long after the bridge started is reported offline."""
Ack = Callable[[], None]
SendCommand = Callable[[str, c.Grant | c.Deny | c.Unlock | c.Lock | c.Lockdown], None]


class Rejected(Exception):
    """Input that cannot be processed: ``code`` for metrics, the message for the operator."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def describe_validation(exc: ValidationError) -> str:
    """'reader: String should match pattern ...; card.bits: ...' rather than pydantic's multi-line text."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in c.EVENT_TYPES)) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


@dataclass
class Counters:
    """What the metrics endpoint reports; plain integers, updated under the processor's lock."""

    events_in: dict[str, int] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def bump(table: dict, key: object) -> None:  # type: ignore[type-arg]
        table[key] = table.get(key, 0) + 1


@dataclass
class _Attempt:
    """A credential presented at a reader, kept while its face is being checked."""

    controller: str
    eid: str
    msg: c.CredentialPresented
    reader: ReaderConfig
    door: Door
    record: CredentialRecord | None
    fmt: str
    number: str
    factors: set[Factor]
    failed: set[Factor]

    def request(self) -> Request:
        return Request(door=self.door, now=self.msg.ts, direction=self.reader.direction,
                       factors=frozenset(self.factors), failed=frozenset(self.failed))


class Processor:
    def __init__(self, config: SiteConfig, writer: AuditWriter, snapshot: Snapshot, pepper: bytes,
                 send: SendCommand, on_door: Callable[[str], None] = lambda d: None,
                 send_camera: SendRequest = lambda camera, request: None) -> None:
        self.config = config
        self.writer = writer
        self.snapshot = snapshot
        self.pepper = pepper
        self.send = send
        self.on_door = on_door
        self.lock = threading.RLock()
        self.state = AccessState()
        self.doors = DoorMonitor({d.key: (d.open_time_s, d.held_open_limit_s) for d in config.doors})
        self.readers = {r.key: r for r in config.readers}
        self.controllers = {ctl.key: ctl for ctl in config.controllers}
        self.door_controllers: dict[str, set[str]] = {}
        for r in config.readers:
            self.door_controllers.setdefault(r.door, set()).add(r.controller)
        self.area_doors: dict[str, set[str]] = {}
        for d in config.doors:
            for area in (d.area_in, d.area_out):
                if area:
                    self.area_doors.setdefault(area, set()).add(d.key)
        self.online: dict[str, bool] = {}
        self.heard: dict[str, datetime] = {}
        """When each controller last said anything valid (the bridge's clock)."""
        self.presence = Presence(timedelta(seconds=config.ingest.offline_grace_s))
        self.max_future = timedelta(seconds=config.ingest.max_future_s)
        self.max_age = timedelta(seconds=config.ingest.offline_window_s)
        self.conditions: dict[tuple[str, str], bool] = {}
        """(reader, condition) -> active, for bus readers."""
        self.started = datetime.now(UTC)
        self.cameras = CameraDesk(config, send_camera, self.started)
        self.face_waiting: dict[str, _Attempt] = {}
        """Credential events waiting for the door camera's verdict on the holder's face."""
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.counters = Counters()

    # --- plumbing ------------------------------------------------------------------------------------

    def remember(self, event_ids: list[str]) -> None:
        """Ids already in the log (loaded at start), so a replay after a restart is recognised."""
        for eid in event_ids:
            self._seen(eid)

    def _seen(self, event_id: str) -> bool:
        if event_id in self.recent:
            return True
        self.recent[event_id] = None
        if len(self.recent) > RECENT_IDS:
            self.recent.popitem(last=False)
        return False

    def _emit(self, events: list[tuple[Event, Effect | None]], ack: Ack | None) -> None:
        """Submit in order; the source is acknowledged with the last one."""
        for i, (event, effect) in enumerate(events):
            last = i == len(events) - 1
            self.cameras.observe(event)

            release = (lambda _e, _dup, _ack=ack: _ack()) if last and ack is not None else None
            self.writer.submit(event, release, timeout=None, effect=effect)
        if not events and ack is not None:
            ack()

    def reject(self, source: str, code: str, reason: str, payload: bytes, *, where: str, ack: Ack | None) -> None:
        with self.lock:
            self._emit(self._refusal(source, Rejected(code, reason), payload, where), ack)

    def _refusal(self, source: str, exc: Rejected | CameraRejected | InvalidEvent, payload: bytes,
                 where: str) -> list[tuple[Event, Effect | None]]:
        """The dead letter for refused input, counted by code."""
        code = exc.code if isinstance(exc, (Rejected, CameraRejected)) else "invalid_event"
        Counters.bump(self.counters.dead_letters, code)
        log.warning("rejected input from %s on %s (%s): %s", source, where, code, exc)
        return [dead_letter(source, code, str(exc), payload, where=where, now=datetime.now(UTC))]

    # --- controller messages -------------------------------------------------------------------------

    def controller_event(self, controller: str, msg: c.CredentialPresented | c.DoorContact | c.RequestToExit |
                         c.Tamper | c.Heartbeat, payload: bytes, where: str, ack: Ack | None) -> None:
        with self.lock:
            try:
                self._check(controller, msg)
                self.heard[controller] = datetime.now(UTC)
                Counters.bump(self.counters.events_in, msg.type)
                events = self._dispatch(controller, msg)
            except (Rejected, InvalidEvent) as exc:
                events = self._refusal(controller, exc, payload, where)
            self._emit(events, ack)

    def _check(self, controller: str, msg: c.Message) -> None:
        if controller not in self.controllers:
            raise Rejected("unknown_controller", f"controller {controller!r} is not in the site file")
        self._fresh(controller, msg)

    def _fresh(self, sender: str, msg: c.Message) -> None:
        """Not from the future, not older than any sender keeps events, not seen before."""
        now = datetime.now(UTC)
        if msg.ts > now + self.max_future:
            raise Rejected("future_time", f"time {msg.ts.isoformat()} is more than {self.max_future} ahead of the "
                                          f"bridge's clock ({now.isoformat()}): check the sender's clock")
        if msg.ts < now - self.max_age:
            raise Rejected("too_old", f"time {msg.ts.isoformat()} is older than the offline window "
                                      f"(ingest.offline_window_s = {self.max_age.total_seconds():.0f} s): "
                                      f"check the sender's clock")
        if self._seen(f"{sender}:{msg.id}"):
            raise Rejected("replayed_id", f"message id {msg.id!r} was already received from {sender}")

    def _door_of(self, controller: str, door: str) -> str:
        if door not in self.doors.doors:
            raise Rejected("unknown_door", f"door {door!r} is not in the site file")
        if controller not in self.door_controllers.get(door, set()):
            raise Rejected("unknown_door", f"door {door!r} is not wired to controller {controller!r}")
        return door

    def _dispatch(self, controller: str, msg: c.Message) -> list[tuple[Event, Effect | None]]:
        eid = f"{controller}:{msg.id}"
        if isinstance(msg, c.CredentialPresented):
            return self._credential(controller, eid, msg)
        if isinstance(msg, c.DoorContact):
            return self._contact(controller, eid, msg)
        if isinstance(msg, c.RequestToExit):
            door = self._door_of(controller, msg.door)
            self.doors.authorize(door, msg.ts)
            return [(Event(id=eid, kind=EventKind.DOOR_EXIT_REQUEST, source=controller, ts=msg.ts, door=door), None)]
        if isinstance(msg, c.Tamper):
            return self._tamper(controller, eid, msg)
        assert isinstance(msg, c.Heartbeat)
        return self._status(controller, True, msg.ts, eid)

    def _credential(self, controller: str, eid: str, msg: c.CredentialPresented) -> list[tuple[Event, Effect | None]]:
        reader = self.readers.get(msg.reader)
        if reader is None or reader.controller != controller:
            raise Rejected("unknown_reader", f"reader {msg.reader!r} is not wired to controller {controller!r}")
        if msg.offline is not None and self.presence.heard_online(controller, msg.ts):
            raise Rejected("offline_while_online", f"an offline decision dated {msg.ts.isoformat()}, when "
                                                   f"controller {controller!r} was online with the bridge")
        fmt, number = self._card(msg.card)
        record = self.snapshot.credential(fmt, number)
        door = self.snapshot.doors[reader.door]
        factors, failed = {Factor.CARD}, set()
        if msg.pin is not None:
            (factors if record and check_pin(self.pepper, msg.pin, record.pin_hash) else failed).add(Factor.PIN)
        if msg.biometric is not None:
            # The reader must have matched the very identity enrolled for this credential.
            ok = (msg.biometric.match and record is not None and record.biometric_ref is not None
                  and msg.biometric.ref == record.biometric_ref)
            (factors if ok else failed).add(Factor.BIOMETRIC)
        attempt = _Attempt(controller, eid, msg, reader, door, record, fmt, number, factors, failed)
        decision = decide(record.view if record else None, attempt.request(), self.state)
        if (decision.reason is Reason.FACE_REQUIRED and msg.offline is None and record is not None
                and datetime.now(UTC) - msg.ts <= REQUEST_MAX_AGE):
            return self._await_face(attempt)
        return self._conclude(attempt, decision, eid)

    def _conclude(self, a: _Attempt, decision: Decision, eid: str) -> list[tuple[Event, Effect | None]]:
        """Record the decision, answer the controller, and audit it as ``eid``."""
        msg, reader, door, record = a.msg, a.reader, a.door, a.record
        request = a.request()
        view = record.view if record else None
        subject = _subject(record, a.fmt, a.number)
        detail: dict[str, object] = {"reader": reader.key, "direction": reader.direction,
                                     "factors": sorted(f.value for f in a.factors)}
        if a.failed:
            detail["failed"] = sorted(f.value for f in a.failed)
        if msg.offline is not None:
            # The controller decided alone; record its decision, and what the bridge would have said.
            granted, reason = msg.offline.granted, msg.offline.reason
            detail.update(offline=True, bridge_reason=decision.reason.value, sync_version=msg.offline.sync_version)
            actuate = False
        else:
            granted, reason = decision.granted, decision.reason.value
            actuate = datetime.now(UTC) - msg.ts <= REQUEST_MAX_AGE
            detail["actuated"] = actuate
            if decision.flagged:
                detail["flagged"] = True
            if decision.companion is not None:
                detail["companion"] = decision.companion
            self.state.record(view, request, decision)
        detail["reason"] = reason
        Counters.bump(self.counters.decisions, ("granted" if granted else "denied", reason))
        if granted:
            self.doors.authorize(door.key, msg.ts)
            if msg.offline is not None and view is not None:
                self.state.location[view.person_id] = door.destination(reader.direction) or ""
        if actuate:
            command: c.Grant | c.Deny
            if granted:
                command = c.Grant(type="grant", id=_command_id("grant", eid), ts=datetime.now(UTC), door=door.key, reader=reader.key,
                                  request=msg.id, open_time_s=self.doors.doors[door.key].open_time_s)
            else:
                command = c.Deny(type="deny", id=_command_id("deny", eid), ts=datetime.now(UTC), door=door.key, reader=reader.key,
                                 request=msg.id, reason=reason,
                                 feedback="beep" if decision.reason is Reason.TWO_PERSON_WAITING else "red")
            self.send(a.controller, command)
        kind = EventKind.ACCESS_GRANTED if granted else EventKind.ACCESS_DENIED
        log.debug("%s at %s by %s: %s%s", kind, reader.key, _who(subject), reason, " (offline)" if msg.offline else "")
        return [(Event(id=eid, kind=kind, source=a.controller, ts=msg.ts, door=door.key, subject=subject,
                       detail=detail), None)]

    # --- the face as a factor --------------------------------------------------------------------------

    def _await_face(self, a: _Attempt) -> list[tuple[Event, Effect | None]]:
        """Everything else allows the request; the door's camera must now see the holder's face. The
        controller gets its answer when the verdict arrives, or a deny at the door's time limit."""
        assert a.record is not None
        person = a.record.view.person_id
        subject = _subject(a.record, a.fmt, a.number)
        if not self.cameras.enrolled(person):
            return self._conclude(a, Decision(False, Reason.FACE_REQUIRED), a.eid)
        self.face_waiting[a.eid] = a
        self.cameras.request_faces(a.eid, a.door.key, person, subject, a.msg.ts, mode="required")
        return [(Event(id=f"{a.eid}:face-check", kind=EventKind.ACCESS_FACE_CHECK, source=a.controller, ts=a.msg.ts,
                       door=a.door.key, subject=subject, detail={"reader": a.reader.key}), None)]

    def _face_verdict(self, eid: str, outcome: str) -> list[tuple[Event, Effect | None]]:
        """Decide again with the face factor's result (or deny on timeout)."""
        a = self.face_waiting.pop(eid, None)
        if a is None:
            return []
        if outcome == "verified":
            a.factors.add(Factor.FACE)
        elif outcome in ("mismatch", "several"):
            a.failed.add(Factor.FACE)
        # absent: nobody faced the camera, the factor is missing (face_required), not failed
        decision = (Decision(False, Reason.FACE_TIMEOUT) if outcome == "timeout"
                    else decide(a.record.view if a.record else None, a.request(), self.state))
        return self._conclude(a, decision, f"{eid}:face")

    @staticmethod
    def _card(card: c.Card) -> tuple[str, str]:
        try:
            if card.raw_hex is not None and card.bits is not None:
                return cards.decode_wiegand(bytes.fromhex(card.raw_hex), card.bits)
            if card.format is not None and card.number is not None:
                return card.format, cards.canonical(card.format, card.number)
        except (cards.CardFormatError, ValueError) as exc:  # ValueError: hex of odd length
            raise Rejected("bad_card", f"card: {exc}") from None
        raise Rejected("bad_card", "card: give format and number, or raw_hex and bits")

    def _contact(self, controller: str, eid: str, msg: c.DoorContact) -> list[tuple[Event, Effect | None]]:
        door = self._door_of(controller, msg.door)
        if msg.state == "opened":
            raised = self.doors.opened(door, msg.ts)
            kind = FORCED if FORCED in raised else EventKind.DOOR_OPENED
            events: list[tuple[Event, Effect | None]] = [
                (Event(id=eid, kind=kind, source=controller, ts=msg.ts, door=door), None)]
            events += [alarm_raised(a, door=door, source=controller, cause=eid, ts=msg.ts) for a in raised]
        else:
            cleared = self.doors.closed(door, msg.ts)
            events = [(Event(id=eid, kind=EventKind.DOOR_CLOSED, source=controller, ts=msg.ts, door=door), None)]
            events += [alarm_cleared(a, door=door, source=controller, cause=eid, ts=msg.ts) for a in cleared]
        self.on_door(door)
        return events

    def _tamper(self, controller: str, eid: str, msg: c.Tamper) -> list[tuple[Event, Effect | None]]:
        source = msg.reader or controller
        detail = {"reader": msg.reader} if msg.reader else {}
        if msg.state == "active":
            return [(Event(id=eid, kind=EventKind.READER_TAMPER, source=controller, ts=msg.ts, detail=detail), None),
                    alarm_raised(EventKind.READER_TAMPER, door=None, source=source, cause=eid, ts=msg.ts)]
        return [(Event(id=eid, kind=EventKind.READER_TAMPER_CLEARED, source=controller, ts=msg.ts,
                       detail=detail), None),
                alarm_cleared(EventKind.READER_TAMPER, door=None, source=source, cause=eid, ts=msg.ts)]

    def controller_status(self, controller: str, status: c.ControllerStatus, payload: bytes, where: str,
                          ack: Ack | None) -> None:
        """Retained status and last will. Only changes are audited: a heartbeat or a repeated status is not."""
        with self.lock:
            if controller not in self.controllers:
                self.reject(controller, "unknown_controller", f"controller {controller!r} is not in the site file",
                            payload, where=where, ack=ack)
                return
            now = datetime.now(UTC)
            ts = min(status.ts or now, now)
            self.heard[controller] = now
            self._emit(self._status(controller, status.online, ts, f"{controller}:status:{ts.isoformat()}"), ack)

    def _status(self, controller: str, online: bool, ts: datetime, cause: str) -> list[tuple[Event, Effect | None]]:
        def effect(conn: object) -> None:
            conn.execute(update(Controller).where(Controller.key == controller)  # type: ignore[attr-defined]
                         .values(online=online, last_seen=datetime.now(UTC)))

        now = datetime.now(UTC)
        (self.presence.online if online else self.presence.offline)(controller, now)
        previous = self.online.get(controller)
        if previous == online:
            return []
        self.online[controller] = online
        for door, ctls in self.door_controllers.items():
            if controller in ctls:
                self.doors.doors[door].online = online
                self.on_door(door)
        kind = EventKind.CONTROLLER_ONLINE if online else EventKind.CONTROLLER_OFFLINE
        events: list[tuple[Event, Effect | None]] = [
            (Event(id=f"{cause}:{kind}"[:128], kind=kind, source=controller, ts=ts), effect)]
        if not online:
            events.append(alarm_raised(EventKind.CONTROLLER_OFFLINE, door=None, source=controller, cause=cause, ts=ts))
        elif previous is False:
            events.append(alarm_cleared(EventKind.CONTROLLER_OFFLINE, door=None, source=controller, cause=cause, ts=ts))
        return events

    def reader_condition(self, controller: str, reader: str, condition: str, active: bool,
                         detail: dict[str, object] | None = None) -> None:
        """A bus reader's own trouble (OSDP): ``offline`` or ``secure_channel_failed``. Changes only: the
        first report of a healthy reader is recorded as such, a trouble raises an alarm, its end clears it."""
        with self.lock:
            previous = self.conditions.get((reader, condition))
            if previous == active or (previous is None and not active and condition != "offline"):
                self.conditions[(reader, condition)] = active
                return
            self.conditions[(reader, condition)] = active
            now = datetime.now(UTC)
            door = self.readers[reader].door
            if condition == "offline":
                self.doors.doors[door].online = not active
                self.on_door(door)
            kind = READER_KINDS[condition][0 if active else 1]
            cause = f"{reader}:{condition}:{now.isoformat()}"
            events: list[tuple[Event, Effect | None]] = [
                (Event(id=cause, kind=kind, source=controller, ts=now, door=door,
                       detail={"reader": reader, **(detail or {})}), None)]
            if active:
                events.append(alarm_raised(f"reader.{condition}", door=door, source=reader, cause=cause, ts=now,
                                           detail=detail))
            elif previous:
                events.append(alarm_cleared(f"reader.{condition}", door=door, source=reader, cause=cause, ts=now,
                                            by_source=True))
            self._emit(events, None)

    # --- cameras -------------------------------------------------------------------------------------

    def camera_event(self, camera: str, msg: c.Motion | c.EvidenceSaved | c.FacesSeen, payload: bytes, where: str,
                     ack: Ack | None) -> None:
        with self.lock:
            try:
                self._fresh(camera, msg)
                Counters.bump(self.counters.events_in, msg.type)
                if isinstance(msg, c.Motion):
                    events = self.cameras.motion(camera, msg)
                    events += self.cameras.tick(datetime.now(UTC))  # decide now what this motion settles
                elif isinstance(msg, c.FacesSeen):
                    events, verdict = self.cameras.faces_seen(camera, msg)
                    if verdict is not None and verdict[0] in self.face_waiting:
                        events += self._face_verdict(*verdict)
                else:
                    events = self.cameras.evidence_saved(camera, msg)
            except (Rejected, CameraRejected, InvalidEvent) as exc:
                events = self._refusal(camera, exc, payload, where)
            self._emit(events, ack)

    def camera_status(self, camera: str, status: c.CameraStatus, payload: bytes, where: str, ack: Ack | None) -> None:
        with self.lock:
            try:
                events = self.cameras.status(camera, status, datetime.now(UTC))
            except (CameraRejected, InvalidEvent) as exc:
                events = self._refusal(camera, exc, payload, where)
            self._emit(events, ack)

    # --- time and operators --------------------------------------------------------------------------

    def link_lost(self) -> None:
        """The bridge lost its broker: it hears no controller until each reports again."""
        with self.lock:
            self.presence.link_lost(datetime.now(UTC))

    def tick(self, now: datetime) -> None:
        """Raise held-open alarms, end timed unlocks, and mark controllers that never reported as offline;
        called a few times a second by the bridge."""
        with self.lock:
            for door in self.doors.relock(now):
                self.on_door(door)
            self._report_silent(now)
            self._emit(self.cameras.tick(now), None)
            unverified, required = self.cameras.faces_expired(now)
            self._emit(unverified, None)
            for eid in required:
                self._emit(self._face_verdict(eid, "timeout"), None)
            for door, kind in self.doors.tick(now):
                event = Event(id=f"{kind}:{door}:{now.isoformat()}", kind=kind, source=self.config.site.instance,
                              ts=now, door=door, detail={"limit_s": self.doors.doors[door].held_open_limit_s})
                self._emit([(event, None), alarm_raised(kind, door=door, source=self.config.site.instance,
                                                        cause=event.id, ts=now)], None)
                self.on_door(door)

    def _report_silent(self, now: datetime) -> None:
        """Controllers that never reported since the bridge started, and those with ``silent_after_s`` (no
        last will to say they died) that have gone quiet, are reported offline."""
        for key, controller in self.controllers.items():
            if key not in self.online and now - self.started > SILENT_START:
                cause = f"{key}:silent-since-start:{self.started.isoformat()}"
                self._emit(self._status(key, False, now, cause), None)
            elif (controller.silent_after_s is not None and self.online.get(key)
                  and now - self.heard.get(key, self.started) > timedelta(seconds=controller.silent_after_s)):
                self._emit(self._status(key, False, now, f"{key}:silent:{now.isoformat()}"), None)

    def console_command(self, cmd: c.ConsoleCommand, payload: bytes, where: str, ack: Ack | None) -> None:
        """An operator's unlock, lock or lockdown: audited with the user, then sent to the controllers."""
        with self.lock:
            try:
                self._fresh("console", cmd)
                doors = self._command_doors(cmd)
            except Rejected as exc:
                self._emit(self._refusal("console", exc, payload, where), ack)
                return
            now = datetime.now(UTC)
            lock = {"unlock": "unlocked", "lock": "locked", "lockdown": "lockdown", "lift_lockdown": "locked"}[cmd.type]
            until = now + timedelta(seconds=cmd.duration_s) if cmd.type == "unlock" and cmd.duration_s else None
            for door in doors:
                self.doors.set_lock(door, lock, until)
                self.on_door(door)
            if cmd.type == "lockdown":
                if cmd.door is None and cmd.area is None:
                    self.state.lockdown_all = True
                self.state.lockdown_doors |= doors
            elif cmd.type == "lift_lockdown":
                self.state.lockdown_all = False
                self.state.lockdown_doors -= doors
            self._send_console(cmd, doors, now)
            event = Event(id=f"console:{cmd.id}", kind=f"console.{cmd.type}", source="console",
                          ts=cmd.ts, door=cmd.door, subject={"user": cmd.user},
                          detail={"reason": cmd.reason, "doors": sorted(doors), "area": cmd.area,
                                  "duration_s": cmd.duration_s})
            self._emit([(event, None)], ack)

    def _command_doors(self, cmd: c.ConsoleCommand) -> set[str]:
        if cmd.door is not None:
            if cmd.door not in self.doors.doors:
                raise Rejected("unknown_door", f"door {cmd.door!r} is not in the site file")
            return {cmd.door}
        if cmd.area is not None:
            if cmd.area not in self.area_doors:
                raise Rejected("unknown_area", f"area {cmd.area!r} has no doors in the site file")
            return set(self.area_doors[cmd.area])
        if cmd.type in ("unlock", "lock"):
            raise Rejected("invalid_message", f"{cmd.type} needs a door")
        return set(self.doors.doors)

    def _send_console(self, cmd: c.ConsoleCommand, doors: set[str], now: datetime) -> None:
        for controller in sorted({ctl for d in doors for ctl in self.door_controllers.get(d, ())}):
            mine = sorted(d for d in doors if controller in self.door_controllers[d])
            base = _command_id(cmd.id, controller)
            if cmd.type in ("lockdown", "lift_lockdown"):
                self.send(controller, c.Lockdown(type="lockdown", id=base, ts=now, active=cmd.type == "lockdown", doors=mine))
                continue
            for door in mine:
                command = (c.Unlock(type="unlock", id=base, ts=now, door=door, duration_s=cmd.duration_s, by=cmd.user,
                                    reason=cmd.reason) if cmd.type == "unlock" else c.Lock(type="lock", id=base, ts=now, door=door))
                self.send(controller, command)


def _command_id(kind: str, cause: str) -> str:
    """A command's id, derived from what caused it (so a retry repeats it) and short enough for the contract."""
    return f"{kind[:20]}-{hashlib.sha256(cause.encode()).hexdigest()[:32]}"


def _who(subject: dict[str, object]) -> str:
    return f"person {subject['person']}" if "person" in subject else f"unknown card {subject.get('card')}"


def _subject(record: CredentialRecord | None, fmt: str, number: str) -> dict[str, object]:
    if record is None:
        return {"card": f"{fmt}:{number}"}
    return {"person": record.view.person_id, "credential": record.view.id}
