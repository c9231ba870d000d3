"""The access decision: a pure function of a credential, a door, the time and the site's state.

``decide()`` does no I/O and reads no clock: the caller passes the time, the verified factors and the state
(who is in which area, who is waiting at a two-person door, which doors are locked down), so every outcome
can be tested exhaustively and a decision takes microseconds. ``AccessState.record()`` applies a decision
to the state afterwards; the two are separate so that a decision can be computed, audited and only then
acted on.

Checks run in a fixed order and the first failing one names the reason: a desk operator reading
"outside_schedule" must be able to trust that the card itself was valid.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, MutableSet
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo


class Factor(enum.StrEnum):
    CARD = "card"
    PIN = "pin"
    BIOMETRIC = "biometric"
    FACE = "face"
    """The camera at the door saw the badge holder's face (camera/faces.py), checked by the bridge."""


class AntiPassback(enum.StrEnum):
    NONE = "none"
    SOFT = "soft"
    """Violations are granted but flagged, for the desk to follow up."""
    HARD = "hard"
    """Violations are denied."""


class Reason(enum.StrEnum):
    GRANTED = "granted"
    GRANTED_PASSBACK_VIOLATION = "granted_passback_violation"
    GRANTED_TWO_PERSON = "granted_two_person"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    CREDENTIAL_SUSPENDED = "credential_suspended"
    CREDENTIAL_LOST = "credential_lost"
    CREDENTIAL_REVOKED = "credential_revoked"
    PERSON_INACTIVE = "person_inactive"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    LOCKDOWN = "lockdown"
    NO_ACCESS_LEVEL = "no_access_level"
    OUTSIDE_SCHEDULE = "outside_schedule"
    HOLIDAY = "holiday"
    PIN_REQUIRED = "pin_required"
    PIN_WRONG = "pin_wrong"
    BIOMETRIC_REQUIRED = "biometric_required"
    BIOMETRIC_MISMATCH = "biometric_mismatch"
    FACE_REQUIRED = "face_required"
    FACE_MISMATCH = "face_mismatch"
    FACE_TIMEOUT = "face_timeout"
    """No verdict from the door's camera in time (set by the bridge, which waits for it; never by decide)."""
    FACE_CAMERA_BLIND = "face_camera_blind"
    """Every camera of the door is offline or tampered: no face verdict could be trusted (set by the bridge)."""
    FACE_SPOOF = "face_spoof"
    """The camera saw a photo or a screen, not a live face (set by the bridge, never by decide)."""
    FACE_LIVENESS_UNVERIFIED = "face_liveness_unverified"
    """The holder's face was seen but its liveness could not be judged (set by the bridge, never by decide)."""
    ANTI_PASSBACK = "anti_passback"
    TWO_PERSON_WAITING = "two_person_waiting"
    TWO_PERSON_SAME_PERSON = "two_person_same_person"
    PERSON_NOT_APPROVED = "person_not_approved"
    """A customer's new person, not yet approved by site staff: their credentials do not work."""
    OUTSIDE_WINDOW = "outside_window"
    """The door is opened to the holder only by a time-boxed level (an approved access request) that is not
    in force now: not begun, or ended."""
    INTERLOCK_BUSY = "interlock_busy"
    """Another door of the door's interlock group (a mantrap) is open, unlocked or released."""
    MANTRAP_OCCUPANCY = "mantrap_occupancy"
    """The mantrap's camera did not count exactly the people badged through (set by the bridge, never by decide)."""
    ESCORT_WAITING = "escort_waiting"
    """A visitor badged; the door waits for an escort to badge within the escort window."""
    GRANTED_ESCORTED = "granted_escorted"
    """A visitor granted because an escort allowed to take them badged at this door within the window."""
    GRANTED_ESCORTING = "granted_escorting"
    """An escort granted who takes in the visitor waiting at the door."""


_STATUS_REASON = {
    "suspended": Reason.CREDENTIAL_SUSPENDED,
    "lost": Reason.CREDENTIAL_LOST,
    "revoked": Reason.CREDENTIAL_REVOKED,
}
_MISSING = {Factor.PIN: Reason.PIN_REQUIRED, Factor.BIOMETRIC: Reason.BIOMETRIC_REQUIRED,
            Factor.FACE: Reason.FACE_REQUIRED}
_FAILED = {Factor.PIN: Reason.PIN_WRONG, Factor.BIOMETRIC: Reason.BIOMETRIC_MISMATCH,
           Factor.FACE: Reason.FACE_MISMATCH}


@dataclass(frozen=True, slots=True)
class Schedule:
    key: str
    tz: ZoneInfo
    intervals: tuple[tuple[int, int, int], ...]
    """(weekday 0=Monday, start minute, end minute), end exclusive, in the schedule's own time zone."""
    holidays: frozenset[date] = frozenset()
    window: tuple[datetime, datetime] | None = None
    """For a time-boxed level (an approved access request): [start, end) outside which it never opens."""

    def is_holiday(self, now: datetime) -> bool:
        return now.astimezone(self.tz).date() in self.holidays

    def in_window(self, now: datetime) -> bool:
        return self.window is None or self.window[0] <= now < self.window[1]

    def is_open(self, now: datetime) -> bool:
        if not self.in_window(now):
            return False
        local = now.astimezone(self.tz)
        if local.date() in self.holidays:
            return False
        weekday, minute = local.weekday(), local.hour * 60 + local.minute
        return any(d == weekday and start <= minute < end for d, start, end in self.intervals)


@dataclass(frozen=True, slots=True)
class Door:
    key: str
    area_in: str | None = None
    area_out: str | None = None
    factors: frozenset[Factor] = frozenset({Factor.CARD})
    anti_passback: AntiPassback = AntiPassback.NONE
    """The mode of the area an "in" read leads into (``area_in``)."""
    two_person: bool = False
    two_person_window_s: float = 30.0
    anti_passback_out: AntiPassback = AntiPassback.NONE
    """The mode of the area an "out" read leads into (``area_out``)."""
    interlock: frozenset[str] = frozenset()
    """The other doors of its interlock group (a mantrap): none of them may be open or unlocked when it opens."""
    escort_window_s: float = 30.0
    """How long before or after a visitor's badge an escort's badge at this door counts."""

    def destination(self, direction: str) -> str | None:
        return self.area_out if direction == "out" else self.area_in

    def passback_mode(self, direction: str) -> AntiPassback:
        return self.anti_passback_out if direction == "out" else self.anti_passback


@dataclass(frozen=True, slots=True)
class Credential:
    """What the policy needs to know of a credential and its holder."""

    id: int
    person_id: int
    status: str = "active"
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    person_active: bool = True
    lockdown_exempt: bool = False
    doors: dict[str, tuple[Schedule, ...]] = field(default_factory=dict)
    """Door key -> the schedules under which the holder's access levels open it."""
    person_approved: bool = True
    """False for a customer's person awaiting approval by site staff."""
    tenant: str | None = None
    """The customer (tenant key) the holder belongs to; None for site staff."""
    visitor: bool = False
    """A visitor's temporary badge: it opens a door only with an escort (``Door.escort_window_s``)."""
    may_escort: bool = False
    """The holder may escort visitors: site staff any visitor, a customer's person their own customer's."""

    def escorts(self, visitor: Credential) -> bool:
        """Whether this holder may take ``visitor`` through a door."""
        return (self.may_escort and not self.visitor and self.person_id != visitor.person_id
                and self.tenant in (None, visitor.tenant))

    def standing_doors(self) -> dict[str, tuple[Schedule, ...]]:
        """The doors and schedules a controller may be given to decide offline: without the time-boxed ones
        (an approved access request), since an offline list carries schedule keys but not windows, and a
        controller cut off from the bridge would open them after the window's end."""
        out = {door: tuple(s for s in scheds if s.window is None) for door, scheds in self.doors.items()}
        return {door: scheds for door, scheds in out.items() if scheds}


@dataclass(frozen=True, slots=True)
class Request:
    """One presentation at a reader. ``factors`` are those the caller verified (a PIN that matched its hash,
    a biometric match for this credential); ``failed`` are those presented that did not verify."""

    door: Door
    now: datetime
    direction: str = "in"
    factors: frozenset[Factor] = frozenset({Factor.CARD})
    failed: frozenset[Factor] = frozenset()
    busy: frozenset[str] = frozenset()
    """Doors open, unlocked or released for opening now (the caller reads them off its door monitor)."""


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: Reason
    companion: int | None = None
    """For a two-person grant: the person who presented first and waited; for an escorted grant, the escort;
    for an escort's grant, the visitor waiting at the door."""

    @property
    def flagged(self) -> bool:
        """A grant the desk should look at."""
        return self.reason is Reason.GRANTED_PASSBACK_VIOLATION


Change = tuple[str, object]
"""One journal entry: ("location", person), ("waiting", door), ("lockdown_all", None) or ("lockdown_door", door)."""


K = TypeVar("K")
V = TypeVar("V")


class _JournaledDict(MutableMapping[K, V]):
    """A mapping that notes each key it sets or removes in its owner's journal, so what a message changed is
    known without comparing all of the state after every message (the credential path is timed in ms).
    Every way of changing it (``update``, ``pop``, ``clear`` ...) goes through the two methods that journal."""

    def __init__(self, journal: set[Change], fact: str, items: Mapping[K, V] | None = None) -> None:
        self._items: dict[K, V] = dict(items or {})
        self._journal, self._fact = journal, fact

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        """The C dict's get: decisions read positions on every card."""
        return self._items.get(key, default)

    def __setitem__(self, key: K, value: V) -> None:
        if key in self._items and self._items[key] == value:
            return  # the same fact again (a badge-in to the area one is in): nothing to write
        self._items[key] = value
        self._journal.add((self._fact, key))

    def __delitem__(self, key: K) -> None:
        del self._items[key]
        self._journal.add((self._fact, key))

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(self._items)


class _JournaledSet(MutableSet[str]):
    """The doors locked down one by one, journaled like ``_JournaledDict`` (``|=`` and ``-=`` included)."""

    def __init__(self, journal: set[Change], items: Iterable[str] = ()) -> None:
        self._items: set[str] = set(items)
        self._journal = journal

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: str) -> None:
        if value not in self._items:
            self._items.add(value)
            self._journal.add(("lockdown_door", value))

    def discard(self, value: str) -> None:
        if value in self._items:
            self._items.discard(value)
            self._journal.add(("lockdown_door", value))

    def __repr__(self) -> str:
        return repr(self._items)


class AccessState:
    """The mutable facts decisions depend on. Owned by one thread (the bridge's decision loop).

    Every change is noted in ``journal`` (see ``Change``); the bridge takes the journal after each message
    and writes those facts to the database with the message's audit entry (``ingest.persist``)."""

    def __init__(self, location: dict[int, str] | None = None,
                 waiting: dict[str, tuple[int, datetime]] | None = None, lockdown_all: bool = False,
                 lockdown_doors: Iterable[str] = ()) -> None:
        self.journal: set[Change] = set()
        self.location: MutableMapping[int, str] = _JournaledDict(self.journal, "location", location)
        """Person -> the area they last entered."""
        self.waiting: MutableMapping[str, tuple[int, datetime]] = _JournaledDict(self.journal, "waiting", waiting)
        """Two-person door -> (first person, when they presented)."""
        self._lockdown_all = lockdown_all
        self._lockdown_doors = _JournaledSet(self.journal, lockdown_doors)
        self.journal.clear()
        self.escorts: dict[tuple[str, str], tuple[Credential, datetime]] = {}
        """(door, direction) -> the last escort granted there going that way, and when: an escort leaving takes
        nobody in. Not journaled nor kept across a restart: a pairing lasts seconds, and one forgotten only makes
        the escort badge again (fail secure)."""
        self.visitors_waiting: dict[tuple[str, str], tuple[Credential, datetime]] = {}
        """(door, direction) -> the visitor who badged there and waits for an escort (not kept, like ``escorts``)."""

    @property
    def lockdown_all(self) -> bool:
        return self._lockdown_all

    @lockdown_all.setter
    def lockdown_all(self, value: bool) -> None:
        if value != self._lockdown_all:
            self._lockdown_all = value
            self.journal.add(("lockdown_all", None))

    @property
    def lockdown_doors(self) -> MutableSet[str]:
        return self._lockdown_doors

    @lockdown_doors.setter
    def lockdown_doors(self, value: Iterable[str]) -> None:
        """``state.lockdown_doors |= doors`` changes the set in place and assigns it back: nothing to do."""
        if value is not self._lockdown_doors:
            raise TypeError("change lockdown_doors in place (|=, -=, add, discard), so each change is journaled")

    def facts(self) -> tuple[dict[int, str], dict[str, tuple[int, datetime]], bool, set[str]]:
        return dict(self.location), dict(self.waiting), self._lockdown_all, set(self._lockdown_doors)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AccessState) and self.facts() == other.facts()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        location, waiting, lockdown_all, lockdown_doors = self.facts()
        return (f"AccessState(location={location!r}, waiting={waiting!r}, lockdown_all={lockdown_all!r}, "
                f"lockdown_doors={lockdown_doors!r})")

    def locked_down(self, door: str) -> bool:
        return self._lockdown_all or door in self._lockdown_doors

    def record(self, credential: Credential | None, request: Request, decision: Decision) -> None:
        """Apply a decision: a grant moves the person into the destination area; a two-person first
        presentation starts the wait; a two-person grant ends it."""
        door = request.door.key
        way = (door, request.direction)
        if credential is None:
            return
        if decision.reason is Reason.TWO_PERSON_WAITING:
            self.waiting[door] = (credential.person_id, request.now)
        elif decision.reason is Reason.ESCORT_WAITING:
            self.visitors_waiting[way] = (credential, request.now)
        elif decision.granted:
            self.waiting.pop(door, None)
            if decision.reason is Reason.GRANTED_ESCORTING:
                self.visitors_waiting.pop(way, None)
            if credential.may_escort and not credential.visitor:
                self.escorts[way] = (credential, request.now)
            destination = request.door.destination(request.direction)
            if destination is not None:
                self.location[credential.person_id] = destination
                if decision.companion is not None:
                    self.location[decision.companion] = destination


def _deny(reason: Reason) -> Decision:
    return Decision(False, reason)


def _within(door: Door, then: datetime, now: datetime) -> bool:
    return abs((now - then).total_seconds()) <= door.escort_window_s


def decide(credential: Credential | None, request: Request, state: AccessState) -> Decision:
    """Grant or deny, with the reason. Pure: reads ``state``, never changes it."""
    if credential is None:
        return _deny(Reason.UNKNOWN_CREDENTIAL)
    if credential.status != "active":
        return _deny(_STATUS_REASON.get(credential.status, Reason.CREDENTIAL_REVOKED))
    if not credential.person_approved:
        return _deny(Reason.PERSON_NOT_APPROVED)
    if not credential.person_active:
        return _deny(Reason.PERSON_INACTIVE)
    now, door = request.now, request.door
    if credential.valid_from is not None and now < credential.valid_from:
        return _deny(Reason.NOT_YET_VALID)
    if credential.valid_until is not None and now >= credential.valid_until:
        return _deny(Reason.EXPIRED)
    if state.locked_down(door.key) and not credential.lockdown_exempt:
        return _deny(Reason.LOCKDOWN)
    schedules = credential.doors.get(door.key)
    if not schedules:
        return _deny(Reason.NO_ACCESS_LEVEL)
    if not any(s.is_open(now) for s in schedules):
        if not any(s.in_window(now) for s in schedules):
            return _deny(Reason.OUTSIDE_WINDOW)
        holiday = any(s.is_holiday(now) for s in schedules)
        return _deny(Reason.HOLIDAY if holiday else Reason.OUTSIDE_SCHEDULE)
    for factor in (Factor.PIN, Factor.BIOMETRIC, Factor.FACE):
        if factor in door.factors and factor not in request.factors:
            return _deny(_FAILED[factor] if factor in request.failed else _MISSING[factor])
    granted = Reason.GRANTED
    destination = door.destination(request.direction)
    if destination is not None and state.location.get(credential.person_id) == destination:
        mode = door.passback_mode(request.direction)
        if mode is AntiPassback.HARD:
            return _deny(Reason.ANTI_PASSBACK)
        if mode is AntiPassback.SOFT:
            granted = Reason.GRANTED_PASSBACK_VIOLATION
    if door.interlock & request.busy:
        return _deny(Reason.INTERLOCK_BUSY)
    if credential.visitor:
        seen = state.escorts.get((door.key, request.direction))
        if seen is not None and _within(door, seen[1], now) and seen[0].escorts(credential):
            return Decision(True, Reason.GRANTED_ESCORTED if granted is Reason.GRANTED else granted,
                            companion=seen[0].person_id)
        return _deny(Reason.ESCORT_WAITING)
    if door.two_person:
        first = state.waiting.get(door.key)
        if first is None or (now - first[1]).total_seconds() > door.two_person_window_s:
            return _deny(Reason.TWO_PERSON_WAITING)
        if first[0] == credential.person_id:
            return _deny(Reason.TWO_PERSON_SAME_PERSON)
        return Decision(True, Reason.GRANTED_TWO_PERSON, companion=first[0])
    waiting = state.visitors_waiting.get((door.key, request.direction))
    if waiting is not None and _within(door, waiting[1], now) and credential.escorts(waiting[0]):
        return Decision(True, Reason.GRANTED_ESCORTING if granted is Reason.GRANTED else granted,
                        companion=waiting[0].person_id)
    return Decision(True, granted)
