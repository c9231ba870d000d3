"""What a controller reports at a door besides a credential (contact, exit request, tamper) and the door
timers (timed unlocks ending, doors held open), as door state, alarms and audited events.

The door logic itself is pure (``doors.DoorMonitor``, time passed in); here its results become events, and
every change of a door's state is announced through ``on_door``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from badge_bridge.cameras import Emitted
from badge_bridge.controllers import contract as c
from badge_bridge.doors import FORCED, DoorMonitor
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.ingest.wiring import Wiring
from badge_bridge.records import alarm_cleared, alarm_raised


class DoorEvents:
    def __init__(self, wiring: Wiring, doors: DoorMonitor, on_door: Callable[[str], None], instance: str) -> None:
        self.wiring = wiring
        self.doors = doors
        self.on_door = on_door
        self.instance = instance
        """The bridge's own name: the source of the alarms its timers raise."""

    def contact(self, controller: str, eid: str, msg: c.DoorContact) -> Emitted:
        door = self.wiring.door_of(controller, msg.door)
        if msg.state == "opened":
            raised = self.doors.opened(door, msg.ts)
            kind = FORCED if FORCED in raised else EventKind.DOOR_OPENED
            events: Emitted = [(Event(id=eid, kind=kind, source=controller, ts=msg.ts, door=door), None)]
            events += [alarm_raised(a, door=door, source=controller, cause=eid, ts=msg.ts) for a in raised]
        else:
            cleared = self.doors.closed(door, msg.ts)
            events = [(Event(id=eid, kind=EventKind.DOOR_CLOSED, source=controller, ts=msg.ts, door=door), None)]
            events += [alarm_cleared(a, door=door, source=controller, cause=eid, ts=msg.ts) for a in cleared]
        self.on_door(door)
        return events

    def exit_request(self, controller: str, eid: str, msg: c.RequestToExit) -> Emitted:
        door = self.wiring.door_of(controller, msg.door)
        self.doors.authorize(door, msg.ts)
        return [(Event(id=eid, kind=EventKind.DOOR_EXIT_REQUEST, source=controller, ts=msg.ts, door=door), None)]

    @staticmethod
    def tamper(controller: str, eid: str, msg: c.Tamper) -> Emitted:
        source = msg.reader or controller
        detail = {"reader": msg.reader} if msg.reader else {}
        if msg.state == "active":
            return [(Event(id=eid, kind=EventKind.READER_TAMPER, source=controller, ts=msg.ts, detail=detail), None),
                    alarm_raised(EventKind.READER_TAMPER, door=None, source=source, cause=eid, ts=msg.ts)]
        return [(Event(id=eid, kind=EventKind.READER_TAMPER_CLEARED, source=controller, ts=msg.ts,
                       detail=detail), None),
                alarm_cleared(EventKind.READER_TAMPER, door=None, source=source, cause=eid, ts=msg.ts)]

    def relock(self, now: datetime) -> Emitted:
        """End the timed unlocks that are over: one event each, dated when the unlock ended (an unlock that
        ended while the bridge was down is relocked at start and dated the same)."""
        events: Emitted = []
        for door, until in self.doors.relock(now):
            self.on_door(door)
            events.append((Event(id=f"{EventKind.DOOR_RELOCKED}:{door}:{until.isoformat()}", kind=EventKind.DOOR_RELOCKED,
                                 source=self.instance, ts=until, door=door,
                                 detail={"unlocked_until": until.isoformat(), "relocked_at": now.isoformat()}), None))
        return events

    def held_open(self, now: datetime) -> Emitted:
        """Doors open past their limit since the last look: an event and an alarm each."""
        events: Emitted = []
        for door, kind in self.doors.tick(now):
            event = Event(id=f"{kind}:{door}:{now.isoformat()}", kind=kind, source=self.instance, ts=now, door=door,
                          detail={"limit_s": self.doors.doors[door].held_open_limit_s})
            events += [(event, None), alarm_raised(kind, door=door, source=self.instance, cause=event.id, ts=now)]
            self.on_door(door)
        return events

    def restore_alarms(self, alarms: list[tuple[str, str]]) -> None:
        """Door alarms still open in the log at start, as (door, kind): their doors were last seen open."""
        for door, kind in alarms:
            if door in self.doors.doors:
                self.doors.doors[door].alarms.add(kind)
                self.doors.doors[door].contact = "open"

    def state(self, door: str, now: datetime) -> c.DoorState:
        """A door's state as the bridge publishes it."""
        status = self.doors.doors[door]
        return c.DoorState(door=door, ts=now, contact=status.contact, lock=status.lock,  # type: ignore[arg-type]
                           alarms=sorted(status.alarms), online=status.online)
