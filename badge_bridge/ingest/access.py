"""A credential at a reader becomes a decision, a command to the controller and an audited event; a door
that needs the holder's face holds its answer until the door camera's verdict or the time limit.

Kept apart from the rest of processing because it is the one place that reads the snapshot of people and
credentials and changes the access state (who is where, who waits at a two-person door); ``decide()``
itself stays pure, with the time passed in.

Requests are answered at once (the command leaves before the commit; a door cannot wait for a disk), but
a request older than ``REQUEST_MAX_AGE`` (a redelivery after an outage) is logged and never actuated: the
person has long gone, and a replay must not open a door.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from badge_bridge import cards
from badge_bridge.cameras import CameraDesk, Emitted
from badge_bridge.config import ReaderConfig
from badge_bridge.controllers import contract as c
from badge_bridge.doors import DoorMonitor
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.ingest.admission import Rejected
from badge_bridge.ingest.commands import SendCommand, command_id
from badge_bridge.ingest.counters import Counters
from badge_bridge.ingest.wiring import Wiring
from badge_bridge.keys import check_pin
from badge_bridge.policy import (
    AccessState,
    Decision,
    Door,
    Factor,
    Reason,
    Request,
    decide,
)
from badge_bridge.presence import Presence
from badge_bridge.records import alarm_raised
from badge_bridge.snapshot import CredentialRecord, Snapshot

log = logging.getLogger(__name__)

REQUEST_MAX_AGE = timedelta(seconds=10)
_FACE_DENIALS = {"timeout": Reason.FACE_TIMEOUT, "spoof": Reason.FACE_SPOOF,
                 "unverified_liveness": Reason.FACE_LIVENESS_UNVERIFIED}
"""Face outcomes that deny outright, with their reason, instead of deciding again."""
WAITING = frozenset({Reason.TWO_PERSON_WAITING, Reason.ESCORT_WAITING})
"""Denials that wait for a second person (a beep at the reader, not a red refusal)."""


@dataclass
class Attempt:
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
    busy: frozenset[str] = frozenset()
    """The doors busy when it was last decided (``DoorMonitor.busy``), for its interlock."""
    held: datetime | None = None
    """When the bridge began holding it, live, for its mantrap (the other doors to close, the people count)."""
    notes: dict[str, object] = field(default_factory=dict)
    """What the holds add to the audited decision's detail."""

    def request(self) -> Request:
        return Request(door=self.door, now=self.msg.ts, direction=self.reader.direction,
                       factors=frozenset(self.factors), failed=frozenset(self.failed), busy=self.busy)


@dataclass
class Held:
    """An attempt held for its mantrap, with the id its decision will be audited under."""

    attempt: Attempt
    eid: str


class AccessDecisions:
    def __init__(self, wiring: Wiring, snapshot: Snapshot, pepper: bytes, state: AccessState, doors: DoorMonitor,
                 presence: Presence, cameras: CameraDesk, send: SendCommand, counters: Counters) -> None:
        self.wiring = wiring
        self.snapshot = snapshot
        """People and credentials as of the last admin change; the processor swaps in a new one."""
        self.pepper = pepper
        self.state = state
        self.doors = doors
        self.presence = presence
        self.cameras = cameras
        self.send = send
        self.counters = counters
        self.face_waiting: dict[str, Attempt] = {}
        """Credential events waiting for the door camera's verdict on the holder's face."""
        self.interlock_waiting: dict[str, Held] = {}
        """Grants waiting for the other doors of their mantrap to close and lock (``InterlockConfig.wait_s``)."""
        self.occupancy_waiting: dict[str, Held] = {}
        """Grants at a mantrap's inner door waiting for its camera's people count; their doors count as busy."""

    def credential(self, controller: str, eid: str, msg: c.CredentialPresented, now: datetime) -> Emitted:
        reader = self.wiring.reader_of(controller, msg.reader)
        if (msg.offline is not None and not self.wiring.decides_alone(controller)
                and self.presence.heard_online(controller, msg.ts)):
            raise Rejected("offline_while_online", f"an offline decision dated {msg.ts.isoformat()}, when "
                                                   f"controller {controller!r} was online with the bridge")
        fmt, number = _card(msg.card)
        record = self.snapshot.credential(fmt, number)
        if record is None and self.wiring.decides_alone(controller):
            # an esp-rfid is synced each card number as it prints uids, in lower case: "04A1B2C3" enrolled
            # reaches it, and comes back, as "04a1b2c3"
            record = self.snapshot.credential(fmt, number.upper())
        door = self.snapshot.doors[reader.door]
        factors: set[Factor] = {Factor.CARD}
        failed: set[Factor] = set()
        if msg.pin is not None:
            (factors if record and check_pin(self.pepper, msg.pin, record.pin_hash) else failed).add(Factor.PIN)
        if msg.biometric is not None:
            # The reader must have matched the very identity enrolled for this credential.
            ok = (msg.biometric.match and record is not None and record.biometric_ref is not None
                  and msg.biometric.ref == record.biometric_ref)
            (factors if ok else failed).add(Factor.BIOMETRIC)
        attempt = Attempt(controller, eid, msg, reader, door, record, fmt, number, factors, failed)
        decision = self._decide(attempt, msg.ts)
        if (decision.reason is Reason.FACE_REQUIRED and msg.offline is None and record is not None
                and now - msg.ts <= REQUEST_MAX_AGE):
            return self._await_face(attempt, now)
        return self._mantrap(attempt, decision, eid, now)

    def _decide(self, a: Attempt, at: datetime) -> Decision:
        """decide() with the doors busy at ``at``: open, unlocked, released, or held for a people count."""
        others = a.door.interlock  # only a mantrap's doors are asked: no other door holds a decision
        held = {h.attempt.door.key for h in self.occupancy_waiting.values()}
        a.busy = self.doors.busy(at, others) | (held & others) if others else frozenset()
        return decide(a.record.view if a.record else None, a.request(), self.state)

    def _mantrap(self, a: Attempt, decision: Decision, eid: str, now: datetime) -> Emitted:
        """Conclude, unless the door's mantrap holds the live request: a grant refused only because another
        of its doors is busy waits up to ``wait_s`` for them (``interlocks_ready``), and a grant at the inner
        door of a single-occupancy mantrap waits for its camera to count the people inside (``occupancy``)."""
        group = self.wiring.interlocks.get(a.door.key)
        if group is None or a.msg.offline is not None or (a.held is None and now - a.msg.ts > REQUEST_MAX_AGE):
            return self._conclude(a, decision, eid, now)
        if decision.reason is Reason.INTERLOCK_BUSY and group.wait_s > 0:
            a.held = a.held or now
            self.interlock_waiting[a.eid] = Held(a, eid)
            return []
        if not (decision.granted and group.single_occupancy and a.door.key == group.doors[-1]
                and a.reader.direction == "in" and group.camera is not None):
            return self._conclude(a, decision, eid, now)
        note: dict[str, object] = {"camera": group.camera, "expected": 1 if decision.companion is None else 2}
        a.notes["occupancy"] = note
        if self.cameras.camera_blind(group.camera):  # fail secure: nobody can say who is inside
            note.update(counted=None, why="the mantrap's camera is offline or tampered")
            return self._conclude(a, Decision(False, Reason.MANTRAP_OCCUPANCY), eid, now)
        a.held = a.held or now
        self.occupancy_waiting[a.eid] = Held(a, eid)
        self.cameras.request_people(a.eid, group.camera, a.door.key, a.msg.ts, group.occupancy_timeout_s)
        return []

    def interlocks_ready(self, now: datetime) -> Emitted:
        """Decide again the grants waiting for their mantrap's other doors, in the order they came: one whose
        doors are now closed and locked goes on (and makes its own door busy for those after it); one that
        waited ``wait_s`` is denied ``interlock_busy``."""
        emitted: Emitted = []
        for key, held in list(self.interlock_waiting.items()):
            a = held.attempt
            assert a.held is not None
            decision = self._decide(a, now)
            waited = (now - a.held).total_seconds()
            if decision.reason is Reason.INTERLOCK_BUSY and waited < self.wiring.interlocks[a.door.key].wait_s:
                continue
            del self.interlock_waiting[key]
            a.notes["interlock_waited_s"] = round(waited, 3)
            emitted += self._mantrap(a, decision, held.eid, now) if decision.granted else self._conclude(
                a, decision, held.eid, now)
        return emitted

    def occupancy(self, eid: str, counted: int | None, now: datetime, why: str = "") -> Emitted:
        """The mantrap camera's count for a held grant (None: no answer in time, or no frames): exactly the
        people the grant lets through goes on; anything else denies ``mantrap_occupancy`` and alarms."""
        held = self.occupancy_waiting.pop(eid, None)
        if held is None:
            return []
        a = held.attempt
        note = a.notes["occupancy"]
        assert isinstance(note, dict)
        note["counted"] = counted
        if why:
            note["why"] = why
        decision = self._decide(a, now)  # the other doors stayed busy-free while it was held, unless forced
        if not decision.granted:
            return self._conclude(a, decision, held.eid, now)
        if counted == note["expected"]:
            return self._conclude(a, decision, held.eid, now)
        emitted = self._conclude(a, Decision(False, Reason.MANTRAP_OCCUPANCY), held.eid, now)
        if counted is not None:
            group = self.wiring.interlocks[a.door.key]
            emitted.append(alarm_raised(EventKind.MANTRAP_OCCUPANCY, door=a.door.key, source=group.camera or a.controller,
                                        cause=held.eid, ts=now, detail={"interlock": group.key, **note}))
        return emitted

    def waiting_for(self, eid: str) -> bool:
        """Whether the credential event ``eid`` waits for a face verdict."""
        return eid in self.face_waiting

    def face_verdict(self, eid: str, outcome: str, now: datetime) -> Emitted:
        """Decide again with the face factor's result (or deny on timeout)."""
        a = self.face_waiting.pop(eid, None)
        if a is None:
            return []
        if outcome == "verified":
            a.factors.add(Factor.FACE)
        elif outcome in ("mismatch", "several", "spoof", "unverified_liveness"):
            a.failed.add(Factor.FACE)
        # absent: nobody faced the camera, the factor is missing (face_required), not failed
        # spoof and unverified_liveness deny whatever else the request has: a photo never stands for the face,
        # and a face not known to be live is not verified (fail secure; docs/faces.md "Liveness").
        denied = _FACE_DENIALS.get(outcome)
        if denied is not None:
            return self._conclude(a, Decision(False, denied), f"{eid}:face", now)
        return self._mantrap(a, self._decide(a, now), f"{eid}:face", now)

    def _conclude(self, a: Attempt, decision: Decision, eid: str, now: datetime) -> Emitted:
        """Record the decision, answer the controller, and audit it as ``eid``."""
        msg, reader, door, record = a.msg, a.reader, a.door, a.record
        request = a.request()
        view = record.view if record else None
        subject = _subject(record, a.fmt, a.number)
        detail: dict[str, object] = {"reader": reader.key, "direction": reader.direction,
                                     "factors": sorted(f.value for f in a.factors), **a.notes}
        if a.failed:
            detail["failed"] = sorted(f.value for f in a.failed)
        disagrees = False
        if msg.offline is not None:
            # The controller decided alone; record its decision, and what the bridge would have said.
            granted, reason = msg.offline.granted, msg.offline.reason
            detail.update(offline=True, bridge_reason=decision.reason.value, sync_version=msg.offline.sync_version)
            actuate = False
            # A device that always decides alone let in someone the bridge refuses (a stale list, or a forged
            # report on its topic): flagged and an alarm, never a quiet green line.
            disagrees = granted and not decision.granted and self.wiring.decides_alone(a.controller)
            if disagrees:
                detail["flagged"] = True
        else:
            granted, reason = decision.granted, decision.reason.value
            actuate = a.held is not None or now - msg.ts <= REQUEST_MAX_AGE  # held: live when it began to wait
            detail["actuated"] = actuate
            if decision.flagged:
                detail["flagged"] = True
            if decision.companion is not None:
                detail["companion"] = decision.companion
            self.state.record(view, request, decision)
        detail["reason"] = reason
        Counters.bump(self.counters.decisions, ("granted" if granted else "denied", reason))
        if granted:
            # a live grant releases the door when its command leaves (now), however old the request's stamp: a
            # controller clock behind ours must not end the release early (a mantrap's other door would then be
            # free while this one opens); a device's claimed time ahead never pre-authorizes an offline opening
            self.doors.authorize(door.key, min(msg.ts, now) if msg.offline is not None else max(msg.ts, now))
            if msg.offline is not None and view is not None:
                self.state.location[view.person_id] = door.destination(reader.direction) or ""
        if actuate:
            command: c.Grant | c.Deny
            if granted:
                command = c.Grant(type="grant", id=command_id("grant", eid), ts=now, door=door.key, reader=reader.key,
                                  request=msg.id, open_time_s=self.doors.doors[door.key].open_time_s)
            else:
                command = c.Deny(type="deny", id=command_id("deny", eid), ts=now, door=door.key, reader=reader.key,
                                 request=msg.id, reason=reason,
                                 feedback="beep" if decision.reason in WAITING else "red")
            self.send(a.controller, command)
        kind = EventKind.ACCESS_GRANTED if granted else EventKind.ACCESS_DENIED
        log.debug("%s at %s by %s: %s%s", kind, reader.key, _who(subject), reason, " (offline)" if msg.offline else "")
        emitted: Emitted = [(Event(id=eid, kind=kind, source=a.controller, ts=msg.ts, door=door.key, subject=subject,
                                   detail=detail), None)]
        if disagrees:
            emitted.append(alarm_raised(EventKind.ACCESS_DEVICE_DISAGREES, door=door.key, source=a.controller,
                                        cause=eid, ts=msg.ts, detail={"bridge_reason": decision.reason.value}))
        return emitted

    def _await_face(self, a: Attempt, now: datetime) -> Emitted:
        """Everything else allows the request; the door's camera must now see the holder's face. The
        controller gets its answer when the verdict arrives, or a deny at the door's time limit."""
        assert a.record is not None
        person = a.record.view.person_id
        subject = _subject(a.record, a.fmt, a.number)
        if not self.cameras.enrolled(person):
            return self._conclude(a, Decision(False, Reason.FACE_REQUIRED), a.eid, now)
        if self.cameras.blind(a.door.key):  # fail secure: a covered camera's answer cannot be trusted
            return self._conclude(a, Decision(False, Reason.FACE_CAMERA_BLIND), a.eid, now)
        self.face_waiting[a.eid] = a
        self.cameras.request_faces(a.eid, a.door.key, person, subject, a.msg.ts, mode="required")
        return [(Event(id=f"{a.eid}:face-check", kind=EventKind.ACCESS_FACE_CHECK, source=a.controller, ts=a.msg.ts,
                       door=a.door.key, subject=subject, detail={"reader": a.reader.key}), None)]


def _card(card: c.Card) -> tuple[str, str]:
    try:
        if card.raw_hex is not None and card.bits is not None:
            return cards.decode_wiegand(bytes.fromhex(card.raw_hex), card.bits)
        if card.format is not None and card.number is not None:
            return card.format, cards.canonical(card.format, card.number)
    except (cards.CardFormatError, ValueError) as exc:  # ValueError: hex of odd length
        raise Rejected("bad_card", f"card: {exc}") from None
    raise Rejected("bad_card", "card: give format and number, or raw_hex and bits")


def _who(subject: dict[str, object]) -> str:
    return f"person {subject['person']}" if "person" in subject else f"unknown card {subject.get('card')}"


def _subject(record: CredentialRecord | None, fmt: str, number: str) -> dict[str, object]:
    if record is None:
        return {"card": f"{fmt}:{number}"}
    return {"person": record.view.person_id, "credential": record.view.id}
