"""Mantraps, as pure logic: decide() with the busy set the door monitor computes, and console unlocks through
the bridge's own console concern. The property: two doors of an interlock are never released together (open
under a grant or an unlock, unlocked, or released by a grant not yet used), whatever order badges, openings,
closings, exit buttons, forced doors, unlocks and the clock come in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from badge_bridge.config import load_config
from badge_bridge.controllers import contract as c
from badge_bridge.doors import DoorMonitor
from badge_bridge.ingest.admission import Rejected
from badge_bridge.ingest.console import ConsoleCommands
from badge_bridge.ingest.wiring import Wiring
from badge_bridge.policy import AccessState, Credential, Door, Reason, Request, Schedule, decide
from tests.conftest import EXAMPLE_SITE

SITE = load_config(EXAMPLE_SITE)
OUTER, INNER = "hall-a-mantrap", "hall-a"
GROUP = (OUTER, INNER)
ALWAYS = Schedule("always", UTC, tuple((d, 0, 1440) for d in range(7)))
DOORS = {OUTER: Door(OUTER, area_out="lobby", area_in="hall-a-mantrap", interlock=frozenset({INNER})),
         INNER: Door(INNER, area_out="hall-a-mantrap", area_in="hall-a", interlock=frozenset({OUTER}))}
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def credential(person: int) -> Credential:
    return Credential(id=person, person_id=person, doors={OUTER: (ALWAYS,), INNER: (ALWAYS,)})


def test_a_door_is_refused_while_another_of_its_mantrap_is_open_unlocked_or_released() -> None:
    for busy in ({INNER}, {INNER, "noc"}):
        decision = decide(credential(1), Request(DOORS[OUTER], T0, busy=frozenset(busy)), AccessState())
        assert decision.reason is Reason.INTERLOCK_BUSY and not decision.granted
    # a busy door outside the mantrap, or the door itself (a second badge at it), does not hold it
    for busy in ({"noc"}, {OUTER}, set()):
        assert decide(credential(1), Request(DOORS[OUTER], T0, busy=frozenset(busy)), AccessState()).granted


def test_the_busy_set_is_open_unlocked_or_released_doors() -> None:
    doors = DoorMonitor({OUTER: (4, 20), INNER: (4, 20), "noc": (5, 30)})
    assert doors.busy(T0) == frozenset()  # never reported: counted closed, as everywhere else
    doors.authorize(OUTER, T0)  # a grant: busy until its open time (and the grace) is over, or it is used
    assert doors.busy(T0 + timedelta(seconds=4.9)) == {OUTER}
    assert doors.busy(T0 + timedelta(seconds=5.1)) == frozenset()
    doors.opened(OUTER, T0 + timedelta(seconds=1))
    assert doors.busy(T0 + timedelta(seconds=60)) == {OUTER}  # open, however long
    doors.closed(OUTER, T0 + timedelta(seconds=61))
    doors.set_lock("noc", "unlocked")
    assert doors.busy(T0 + timedelta(seconds=62)) == {"noc"}
    doors.set_lock("noc", "lockdown")
    assert doors.busy(T0 + timedelta(seconds=62)) == frozenset()


def unlock(door: str, now: datetime, override: bool = False, reason: str = "delivery of racks") -> c.ConsoleCommand:
    return c.ConsoleCommand(v=1, id=f"c-{now.timestamp()}-{door}", ts=now, type="unlock", user="sup", reason=reason,
                            door=door, override=True if override else None)


def console(doors: DoorMonitor) -> ConsoleCommands:
    return ConsoleCommands(SITE, Wiring(SITE), doors, AccessState(), lambda *_: None, lambda _d: None)


def test_a_console_unlock_is_refused_while_the_other_door_is_busy_unless_overridden() -> None:
    doors = DoorMonitor({d.key: (d.open_time_s, d.held_open_limit_s) for d in SITE.doors})
    desk = console(doors)
    doors.opened(OUTER, T0)  # forced, or held: open either way
    with pytest.raises(Rejected) as refused:
        desk.command(unlock(INNER, T0), T0)
    assert refused.value.code == "interlock_busy" and OUTER in str(refused.value)
    assert doors.doors[INNER].lock == "locked"  # refused before anything changed
    with pytest.raises(Rejected, match="needs its reason"):  # an override says why, beyond a word
        desk.command(unlock(INNER, T0, override=True, reason=" x "), T0)
    [(event, _)] = desk.command(unlock(INNER, T0, override=True, reason="fire in the mantrap"), T0)
    assert event.detail["override"] is True and event.detail["interlock_busy"] == [OUTER]
    assert event.detail["reason"] == "fire in the mantrap" and doors.doors[INNER].lock == "unlocked"
    # a door outside any mantrap unlocks as before, and says nothing of overrides
    [(event, _)] = desk.command(unlock("noc", T0), T0)
    assert "override" not in event.detail


def test_an_override_is_for_unlocks_only() -> None:
    desk = console(DoorMonitor({d.key: (d.open_time_s, d.held_open_limit_s) for d in SITE.doors}))
    lock = unlock(INNER, T0).model_copy(update={"type": "lock", "override": True})
    with pytest.raises(Rejected, match="override is for an unlock"):
        desk.command(lock, T0)


@dataclass
class Mantrap:
    """The bridge's side of one mantrap, with what the test knows about why each door is open."""

    doors: DoorMonitor = field(default_factory=lambda: DoorMonitor({OUTER: (4, 20), INNER: (4, 20)}))
    state: AccessState = field(default_factory=AccessState)
    now: datetime = T0
    granted_until: dict[str, datetime] = field(default_factory=dict)
    """Doors released by a grant (not an exit button), until when."""
    legit_open: set[str] = field(default_factory=set)
    """Doors open under a grant or an unlock (not forced, not by the exit button)."""

    def released(self) -> set[str]:
        return {d for d in GROUP if d in self.legit_open or self.doors.doors[d].lock == "unlocked" or self._granted(d)}

    def check(self) -> None:
        assert len(self.released()) <= 1, f"released together: {self.released()}"

    def _granted(self, door: str) -> bool:
        return door in self.granted_until and self.now <= self.granted_until[door]

    def badge(self, door: str, person: int, direction: str) -> None:
        busy = self.doors.busy(self.now)
        request = Request(DOORS[door], self.now, direction=direction, busy=busy)
        decision = decide(credential(person), request, self.state)
        if decision.granted:
            assert not (busy & set(GROUP)) - {door}, f"{door} granted while {busy} busy"
            self.state.record(credential(person), request, decision)
            self.doors.authorize(door, self.now)
            self.granted_until[door] = self.doors.doors[door].authorized_until or self.now
        else:
            assert decision.reason is Reason.INTERLOCK_BUSY and busy & DOORS[door].interlock

    def open(self, door: str) -> None:
        """Pushed open: under a grant or an unlock it is legitimate; otherwise forced, or the exit button."""
        status = self.doors.doors[door]
        if status.contact != "open" and (status.lock == "unlocked" or self._granted(door)):
            self.legit_open.add(door)
        self.granted_until.pop(door, None)  # one grant, one opening
        self.doors.opened(door, self.now)

    def close(self, door: str) -> None:
        self.legit_open.discard(door)
        self.doors.closed(door, self.now)

    def rex(self, door: str) -> None:
        """The exit button: the controller releases the door itself, whatever the bridge would say."""
        self.doors.authorize(door, self.now)

    def console(self, door: str, action: str) -> None:
        busy = self.doors.busy(self.now)
        cmd = unlock(door, self.now).model_copy(update={"type": action})
        try:
            console(self.doors).command(cmd, self.now)
        except Rejected as exc:
            assert exc.code == "interlock_busy" and action == "unlock" and busy & (set(GROUP) - {door})


ACTIONS = st.one_of(
    st.tuples(st.just("badge"), st.sampled_from(GROUP), st.integers(1, 3), st.sampled_from(["in", "out"])),
    st.tuples(st.sampled_from(["open", "close", "rex"]), st.sampled_from(GROUP)),
    st.tuples(st.just("console"), st.sampled_from(GROUP), st.sampled_from(["unlock", "lock"])),
    st.tuples(st.just("wait"), st.floats(0, 8)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(ACTIONS, max_size=40))
def test_two_interlocked_doors_are_never_released_together(actions: list[tuple[object, ...]]) -> None:
    m = Mantrap()
    for action in actions:
        what, *args = action
        if what == "wait":
            m.now += timedelta(seconds=float(args[0]))  # type: ignore[arg-type]
        elif what == "badge":
            m.badge(*args)  # type: ignore[arg-type]
        elif what == "console":
            m.console(*args)  # type: ignore[arg-type]
        else:
            getattr(m, str(what))(*args)
        m.check()


def test_the_property_can_fail() -> None:
    """Without the busy set (a caller that forgets it), the same model finds two doors released together."""
    m = Mantrap()
    m.doors.busy = lambda now: frozenset()  # type: ignore[method-assign]
    m.badge(OUTER, 1, "in")
    m.badge(INNER, 2, "in")
    with pytest.raises(AssertionError, match="released together"):
        m.check()
