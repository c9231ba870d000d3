"""Whether each device is alive: controllers online or offline (status, last will, heartbeats, silence),
bus readers' own troubles, and when the bridge heard whom.

Kept together because they answer one question for the desk (can this door work?) and feed one check: an
"offline" decision from a controller the bridge was hearing online is refused (``presence``). Only changes
are audited: a heartbeat or a repeated status is not.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import update

from badge_bridge.cameras import Emitted
from badge_bridge.clock import Clock
from badge_bridge.controllers import contract as c
from badge_bridge.doors import DoorMonitor
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.ingest.wiring import Wiring
from badge_bridge.models import Controller
from badge_bridge.presence import Presence
from badge_bridge.records import alarm_cleared, alarm_raised

READER_KINDS = {"offline": (EventKind.READER_OFFLINE, EventKind.READER_ONLINE),
                "secure_channel_failed": (EventKind.READER_SECURE_CHANNEL_FAILED, EventKind.READER_SECURE_CHANNEL_OK),
                "plaintext": (EventKind.READER_PLAINTEXT, EventKind.READER_PLAINTEXT_ENDED)}
SILENT_START = timedelta(seconds=30)
"""A controller that has said nothing this long after the bridge started is reported offline."""


class Liveness:
    def __init__(self, wiring: Wiring, doors: DoorMonitor, presence: Presence, on_door: Callable[[str], None],
                 clock: Clock, started: datetime) -> None:
        self.wiring = wiring
        self.doors = doors
        self.presence = presence
        self.on_door = on_door
        self.clock = clock
        self.started = started
        self.online: dict[str, bool] = {}
        self.heard: dict[str, datetime] = {}
        """When each controller last said anything valid (the bridge's clock)."""
        self.conditions: dict[tuple[str, str], bool] = {}
        """(reader, condition) -> active, for bus readers."""

    def heard_from(self, controller: str, now: datetime) -> None:
        self.heard[controller] = now

    def controller_status(self, controller: str, status: c.ControllerStatus, now: datetime) -> Emitted:
        """Retained status and last will, dated no later than now."""
        ts = min(status.ts or now, now)
        self.heard[controller] = now
        return self.status(controller, status.online, ts, f"{controller}:status:{ts.isoformat()}", now)

    def status(self, controller: str, online: bool, ts: datetime, cause: str, now: datetime) -> Emitted:
        """A controller is online or offline as of ``ts``; events and the alarm only if that is a change."""
        def effect(conn: object) -> None:
            conn.execute(update(Controller).where(Controller.key == controller)  # type: ignore[attr-defined]
                         .values(online=online, last_seen=self.clock()))

        (self.presence.online if online else self.presence.offline)(controller, now)
        previous = self.online.get(controller)
        if previous == online:
            return []
        self.online[controller] = online
        for door in self.wiring.doors_of(controller):
            self.doors.doors[door].online = online
            self.on_door(door)
        kind = EventKind.CONTROLLER_ONLINE if online else EventKind.CONTROLLER_OFFLINE
        events: Emitted = [(Event(id=f"{cause}:{kind}"[:128], kind=kind, source=controller, ts=ts), effect)]
        if not online:
            events.append(alarm_raised(EventKind.CONTROLLER_OFFLINE, door=None, source=controller, cause=cause, ts=ts))
        elif previous is False:
            events.append(alarm_cleared(EventKind.CONTROLLER_OFFLINE, door=None, source=controller, cause=cause, ts=ts))
        return events

    def reader_condition(self, controller: str, reader: str, condition: str, active: bool,
                         detail: dict[str, object] | None, now: datetime) -> Emitted:
        """A bus reader's own trouble (OSDP): ``offline`` or ``secure_channel_failed``. Changes only: the
        first report of a healthy reader is recorded as such, a trouble raises an alarm, its end clears it."""
        previous = self.conditions.get((reader, condition))
        if previous == active or (previous is None and not active and condition != "offline"):
            self.conditions[(reader, condition)] = active
            return []
        self.conditions[(reader, condition)] = active
        door = self.wiring.readers[reader].door
        if condition == "offline":
            self.doors.doors[door].online = not active
            self.on_door(door)
        kind = READER_KINDS[condition][0 if active else 1]
        cause = f"{reader}:{condition}:{now.isoformat()}"
        events: Emitted = [(Event(id=cause, kind=kind, source=controller, ts=now, door=door,
                                  detail={"reader": reader, **(detail or {})}), None)]
        if active:
            events.append(alarm_raised(f"reader.{condition}", door=door, source=reader, cause=cause, ts=now,
                                       detail=detail))
        elif previous:
            events.append(alarm_cleared(f"reader.{condition}", door=door, source=reader, cause=cause, ts=now,
                                        by_source=True))
        return events

    def silent(self, now: datetime) -> Emitted:
        """Controllers that never reported since the bridge started, and those with ``silent_after_s`` (no
        last will to say they died) that have gone quiet, are reported offline."""
        events: Emitted = []
        for key, controller in self.wiring.controllers.items():
            if key not in self.online and now - self.started > SILENT_START:
                cause = f"{key}:silent-since-start:{self.started.isoformat()}"
                events += self.status(key, False, now, cause, now)
            elif (controller.silent_after_s is not None and self.online.get(key)
                  and now - self.heard.get(key, self.started) > timedelta(seconds=controller.silent_after_s)):
                events += self.status(key, False, now, f"{key}:silent:{now.isoformat()}", now)
        return events

    def link_lost(self, now: datetime) -> None:
        """The bridge lost its broker: it hears no controller until each reports again."""
        self.presence.link_lost(now)
