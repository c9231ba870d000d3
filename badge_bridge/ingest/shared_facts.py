"""Facts another partition committed (``failover.shared_state`` hands them over): anti-passback positions and
the site lockdown (our own doors' facts are ours: a predecessor's in this partition are loaded at start).

They go into the state without being journaled: they are in the database already, under the partition
that wrote them, and writing them again as ours would hide whose they are. What they change at our doors
is ours, though: a lockdown that now reaches our doors (or is lifted from them) is commanded to our
controllers and audited as ``state.applied``, and the door rows that change with it are written with
that entry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from badge_bridge.cameras import Emitted
from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.doors import DoorMonitor
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.ingest import persist
from badge_bridge.ingest.commands import SendCommand, command_id
from badge_bridge.ingest.wiring import Wiring
from badge_bridge.policy import AccessState


class SharedFacts:
    def __init__(self, config: SiteConfig, wiring: Wiring, state: AccessState, doors: DoorMonitor,
                 send: SendCommand, on_door: Callable[[str], None]) -> None:
        self.instance = config.site.instance
        self.foreign = frozenset(config.foreign_doors)
        self.windows = {d.key: d.two_person_window_s for d in config.doors if d.two_person}
        self.wiring, self.state, self.doors, self.send, self.on_door = wiring, state, doors, send, on_door

    def apply(self, facts: list[tuple[str, str | None]], origin: str, now: datetime) -> Emitted:
        """Put ``facts`` (key, committed JSON or None) into the state; the events our doors' changes cause."""
        journal = set(self.state.journal)
        down_before = self._locked_down()
        # Only the facts that follow a person (positions) and the site lockdown are another partition's to
        # give: our doors' facts are ours alone (a row of them from elsewhere is a DBA's or a forger's).
        unreadable = [key for key, value in facts if persist.door_of(key) is None
                      and not persist.replace(key, value, self.state, self.doors, self.windows, now)]
        self.state.journal.intersection_update(journal)  # theirs, not ours to write again
        if self.state.lockdown_all:
            # Our doors locked down one by one as well, as a site lockdown given here does: lifting one area
            # elsewhere ends the site-wide fact, and must leave our doors locked down.
            self.state.lockdown_doors |= set(self.wiring.doors)
        down = self._locked_down()
        locked, lifted = sorted(down - down_before), sorted(down_before - down)
        if not locked and not lifted and not unreadable:
            return []
        event = Event(id=Event.new_id(EventKind.STATE_APPLIED), kind=EventKind.STATE_APPLIED, source=self.instance,
                      ts=now, received_ts=now,
                      detail={"from": origin, "keys": sorted(key for key, _ in facts)[:50], "facts": len(facts),
                              "locked_down": locked, "lifted": lifted, "unreadable": sorted(unreadable)[:50]})
        for doors, active in ((locked, True), (lifted, False)):
            for door in doors:
                self.doors.set_lock(door, "lockdown" if active else "locked")
                self.on_door(door)
            for controller, mine in self.wiring.by_controller(set(doors)).items():
                self.send(controller, c.Lockdown(type="lockdown", id=command_id("state", f"{event.id}:{controller}:{active}"),
                                                 ts=now, active=active, doors=mine))
        return [(event, None)]

    def _locked_down(self) -> set[str]:
        return {door for door in self.wiring.doors if self.state.locked_down(door)}
