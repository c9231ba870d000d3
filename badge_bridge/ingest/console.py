"""An operator's unlock, lock, lockdown or its lifting, from the security desk: door state and the access
state change, the controllers get their commands, and the command is audited with the user.

Kept apart from the device paths because its input is a person's intent, not a device's report: it names
doors and areas rather than readers, and it overrides what ``decide()`` would say (a lockdown).

In a site of several partitions every partition's bridge receives every command: each acts on the doors it
serves and says nothing about the others' doors (``config.foreign_doors``: theirs, not unknown), and audits
it in its own chain as ``console:<id>@<partition>`` (an event id is unique across all chains). A site
lockdown also sets the shared ``lockdown`` fact, which a partition that was down reads at its start.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from badge_bridge.cameras import Emitted
from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.doors import DoorMonitor
from badge_bridge.events import Event
from badge_bridge.ingest.admission import Rejected
from badge_bridge.ingest.commands import SendCommand, command_id
from badge_bridge.ingest.wiring import Wiring
from badge_bridge.policy import AccessState

LOCKS = {"unlock": "unlocked", "lock": "locked", "lockdown": "lockdown", "lift_lockdown": "locked"}
"""The lock state each command leaves its doors in."""


class ConsoleCommands:
    def __init__(self, config: SiteConfig, wiring: Wiring, doors: DoorMonitor, state: AccessState, send: SendCommand,
                 on_door: Callable[[str], None]) -> None:
        self.foreign = frozenset(config.foreign_doors)
        self.areas = frozenset(a.key for a in config.areas)
        self.suffix = f"@{config.site.instance}" if config.partitioned else ""
        self.wiring = wiring
        self.doors = doors
        self.state = state
        self.send = send
        self.on_door = on_door

    def command(self, cmd: c.ConsoleCommand, now: datetime) -> Emitted:
        """Carry out ``cmd``; nothing when it names doors of other partitions only; ``Rejected`` (before anything
        changed) when it names no door of the site it can act on."""
        doors = self._doors(cmd)
        if doors is None:
            return []
        busy = self._interlock(cmd, doors, now)
        until = now + timedelta(seconds=cmd.duration_s) if cmd.type == "unlock" and cmd.duration_s else None
        for door in doors:
            self.doors.set_lock(door, LOCKS[cmd.type], until)
            self.on_door(door)
        if cmd.type == "lockdown":
            if cmd.door is None and cmd.area is None:
                self.state.lockdown_all = True
            self.state.lockdown_doors |= doors
        elif cmd.type == "lift_lockdown":
            self.state.lockdown_all = False
            self.state.lockdown_doors -= doors
        self._send(cmd, doors, now)
        detail: dict[str, object] = {"reason": cmd.reason, "doors": sorted(doors), "area": cmd.area,
                                     "duration_s": cmd.duration_s}
        if cmd.override:
            detail.update(override=True, interlock_busy=sorted(busy))
        event = Event(id=f"console:{cmd.id}{self.suffix}", kind=f"console.{cmd.type}", source="console",
                      ts=cmd.ts, door=cmd.door, subject={"user": cmd.user}, detail=detail)
        return [(event, None)]

    def _interlock(self, cmd: c.ConsoleCommand, doors: set[str], now: datetime) -> frozenset[str]:
        """The busy doors of the unlocked door's mantrap: an unlock while one is busy would leave two doors
        of it open at once, so it needs an emergency override, with a reason beyond a word (audited)."""
        if cmd.override and cmd.type != "unlock":
            raise Rejected("invalid_message", f"override is for an unlock, not a {cmd.type}")
        if cmd.type != "unlock":
            return frozenset()
        groups = [self.wiring.interlocks[door] for door in doors if door in self.wiring.interlocks]
        together = sorted(d for group in {g.key: g for g in groups}.values() if len(doors & set(group.doors)) > 1
                          for d in group.doors if d in doors)
        if together and not cmd.override:  # an area unlock naming both doors of a mantrap opens it end to end
            raise Rejected("interlock_busy", f"the unlock would hold doors {', '.join(together)} of one mantrap "
                                             "unlocked together: unlock one door, or send an emergency override "
                                             "with its reason")
        busy = self.doors.busy(now, {d for group in groups for d in group.doors if d not in doors}) | frozenset(together)
        if busy and not cmd.override:
            raise Rejected("interlock_busy", f"door {cmd.door!r} is in a mantrap whose door(s) {', '.join(sorted(busy))} "
                                             "are open, unlocked or released: close and lock them first, or send an "
                                             "emergency override with its reason")
        if cmd.override and len(cmd.reason.strip()) < 3:
            raise Rejected("invalid_message", "an emergency override needs its reason (3 characters or more)")
        return busy

    def _doors(self, cmd: c.ConsoleCommand) -> set[str] | None:
        """The doors of ours ``cmd`` names; None: only doors another partition serves."""
        if cmd.door is not None:
            if cmd.door in self.foreign:
                return None
            if cmd.door not in self.wiring.doors:
                raise Rejected("unknown_door", f"door {cmd.door!r} is not in the site file")
            return {cmd.door}
        if cmd.area is not None:
            if cmd.area not in self.wiring.area_doors:
                if self.foreign and cmd.area in self.areas:
                    return None  # its doors are all another partition's
                raise Rejected("unknown_area", f"area {cmd.area!r} has no doors in the site file")
            return set(self.wiring.area_doors[cmd.area])
        if cmd.type in ("unlock", "lock"):
            raise Rejected("invalid_message", f"{cmd.type} needs a door")
        return set(self.wiring.doors)

    def _send(self, cmd: c.ConsoleCommand, doors: set[str], now: datetime) -> None:
        for controller, mine in self.wiring.by_controller(doors).items():
            base = command_id(cmd.id, controller)
            if cmd.type in ("lockdown", "lift_lockdown"):
                self.send(controller, c.Lockdown(type="lockdown", id=base, ts=now, active=cmd.type == "lockdown",
                                                 doors=mine))
                continue
            for door in mine:
                one = command_id(cmd.id, f"{controller}:{door}")  # one id per door: a controller acts on an id once
                command = (c.Unlock(type="unlock", id=one, ts=now, door=door, duration_s=cmd.duration_s, by=cmd.user,
                                    reason=cmd.reason) if cmd.type == "unlock"
                           else c.Lock(type="lock", id=one, ts=now, door=door))
                self.send(controller, command)
