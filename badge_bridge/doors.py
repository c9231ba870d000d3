"""What each door is doing, and the door alarms that follow from it: forced open and held open.

Pure logic over a stream of door facts, with time passed in: a door that opens without a grant, an exit
request or a remote unlock in force is forced; a door open past its limit is held open; both clear when
the door closes. The bridge feeds it and turns the returned alarm changes into audited events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from badge_bridge.event_kinds import EventKind

FORCED = EventKind.DOOR_FORCED
HELD_OPEN = EventKind.DOOR_HELD_OPEN
GRACE = timedelta(seconds=1)
"""Slack for the time between a grant and the door contact, both in the controller's clock."""


@dataclass
class DoorStatus:
    key: str
    open_time_s: float
    held_open_limit_s: float
    contact: str = "unknown"
    """open, closed or unknown (no report since start)."""
    lock: str = "locked"
    """locked, unlocked (held unlocked by an operator) or lockdown."""
    authorized_until: datetime | None = None
    unlocked_until: datetime | None = None
    opened_at: datetime | None = None
    alarms: set[str] = field(default_factory=set)
    online: bool = True


class DoorMonitor:
    """One status per door; every method returns the alarm kinds it raised or cleared."""

    def __init__(self, doors: dict[str, tuple[float, float]]) -> None:
        """``doors``: door key -> (open time, held-open limit) in seconds."""
        self.doors = {key: DoorStatus(key, o, h) for key, (o, h) in doors.items()}
        self.changed: set[str] = set()
        """Doors whose lock, timed unlock or contact changed since the bridge last took this journal, to
        be written with the audit entry of the change (``ingest.persist``); a grant's moment is not kept."""

    def authorize(self, door: str, at: datetime, seconds: float | None = None) -> None:
        """A grant or an exit request at ``at``: the door may open until its open time has passed."""
        status = self.doors[door]
        until = at + timedelta(seconds=seconds if seconds is not None else status.open_time_s) + GRACE
        if status.authorized_until is None or until > status.authorized_until:
            status.authorized_until = until

    def busy(self, now: datetime, among: Iterable[str] | None = None) -> frozenset[str]:
        """Doors (of ``among``, default all) open, held unlocked or released for opening (a grant or an exit
        request not yet used): an interlock (a mantrap) lets none of its other doors open while one of its
        doors is busy. A door whose contact was never reported counts as closed, as it does everywhere else."""
        statuses = self.doors.values() if among is None else (self.doors[d] for d in among if d in self.doors)
        return frozenset(s.key for s in statuses
                         if s.contact == "open" or s.lock == "unlocked"
                         or (s.authorized_until is not None and now <= s.authorized_until))  # as opened() reads it

    def set_lock(self, door: str, lock: str, until: datetime | None = None) -> None:
        """``until``: a timed unlock, which ``relock`` ends."""
        status = self.doors[door]
        status.lock, status.unlocked_until = lock, until if lock == "unlocked" else None
        self.changed.add(door)

    def relock(self, now: datetime) -> list[tuple[str, datetime]]:
        """Doors whose timed unlock has just ended, with the time it ended."""
        ended = [(s.key, s.unlocked_until) for s in self.doors.values()
                 if s.unlocked_until is not None and now >= s.unlocked_until]
        for key, _ in ended:
            self.set_lock(key, "locked")
        return ended

    def opened(self, door: str, at: datetime) -> list[str]:
        status = self.doors[door]
        if status.contact == "open":
            return []  # a repeated report, not a second opening
        status.contact, status.opened_at = "open", at
        self.changed.add(door)
        authorized = status.lock == "unlocked" or (status.authorized_until is not None and at <= status.authorized_until)
        status.authorized_until = None  # one grant, one opening
        if authorized:
            return []
        status.alarms.add(FORCED)
        return [FORCED]

    def closed(self, door: str, at: datetime) -> list[str]:
        status = self.doors[door]
        status.contact, status.opened_at = "closed", None
        self.changed.add(door)
        cleared = sorted(status.alarms & {FORCED, HELD_OPEN})
        status.alarms -= {FORCED, HELD_OPEN}
        return cleared

    def tick(self, now: datetime) -> list[tuple[str, str]]:
        """Doors that have just been open too long: (door, alarm kind). Held unlocked doors are exempt."""
        raised: list[tuple[str, str]] = []
        for status in self.doors.values():
            if (status.contact == "open" and status.opened_at is not None and status.lock != "unlocked"
                    and HELD_OPEN not in status.alarms
                    and now - status.opened_at > timedelta(seconds=status.held_open_limit_s)):
                status.alarms.add(HELD_OPEN)
                raised.append((status.key, HELD_OPEN))
        return raised
