"""The correlator: each rule at its window boundaries, clock skew, arrival order, blind doors, several
cameras on a door, and memory over many episodes. Times are a fixed base plus seconds."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from badge_bridge.correlate import (
    ALARMS,
    BLIND,
    FORCED_CONFIRMED,
    FORCED_UNCONFIRMED,
    KINDS,
    TAILGATING,
    UNAUTHORIZED,
    UNUSED,
    Correlator,
    DoorWindows,
    Finding,
)

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
W = DoorWindows()  # grant window 8, approach 1, passage 4, skew 0.5, settle 0.3


def t(s: float) -> datetime:
    return BASE + timedelta(seconds=s)


def corr(**cameras: list[str]) -> Correlator:
    return Correlator({"d1": W, "d2": W}, cameras or None)


def grant(c: Correlator, at: float, eid: str = "g1", door: str = "d1", kind: str = "access.granted") -> None:
    c.door_event(door, kind, t(at), eid)


def start(c: Correlator, at: float, eid: str = "m1", cam: str = "c1", objects: int = 1, door: str = "d1") -> None:
    c.motion(door, cam, "start", t(at), eid, objects, objects)


def update(c: Correlator, at: float, eid: str, cam: str = "c1", objects: int = 2) -> None:
    c.motion("d1", cam, "update", t(at), eid, objects, objects)


def end(c: Correlator, at: float, eid: str = "m1e", cam: str = "c1", peak: int = 1) -> None:
    c.motion("d1", cam, "end", t(at), eid, 0, peak)


def run(c: Correlator, until: float, since: float = -20.0, step: float = 0.05) -> list[Finding]:
    """Advance in small steps, as the bridge does."""
    found: list[Finding] = []
    k = 0
    while (now := since + k * step) <= until + 1e-9:
        found += c.advance(t(now))
        k += 1
    return found


def kinds(found: list[Finding]) -> list[str]:
    return [f.kind for f in found]


# --- rule 1: unauthorized entry ----------------------------------------------------------------------------

def test_motion_without_authorization_alarms_after_approach_skew_and_settle_not_before() -> None:
    c = corr()
    start(c, 10)
    assert c.advance(t(11.8) - US) == []
    [f] = c.advance(t(11.8))
    assert (f.kind, f.door, f.ts, f.camera, f.causes) == (UNAUTHORIZED, "d1", t(10), "c1", ("m1",))
    assert f.kind in ALARMS
    assert c.advance(t(60)) == []  # no end needed, and once


@pytest.mark.parametrize("grant_at, alarm", [
    (11.5, False),           # exactly s + approach + skew: counts
    (11.500001, True),      # just after: too late to belong
    (10 - 8.5, False),       # exactly s - grant_window - skew
    (10 - 8.500001, True),  # just before: the grant's window closed
])
def test_authorization_window_boundaries(grant_at: float, alarm: bool) -> None:
    c = corr()
    start(c, 10)
    grant(c, grant_at)
    assert (UNAUTHORIZED in kinds(run(c, 30))) is alarm


def test_grant_arriving_after_the_motion_but_before_the_decision_counts() -> None:
    c = corr()
    start(c, 10)
    assert c.advance(t(11.79)) == []
    grant(c, 11.5)
    end(c, 14)
    assert kinds(run(c, 30, since=11.8)) == []


def test_grant_arriving_after_the_decision_cannot_be_waited_for() -> None:
    c = corr()
    start(c, 10)
    assert kinds(c.advance(t(11.8))) == [UNAUTHORIZED]
    grant(c, 11.4)  # late beyond settle: the alarm stands
    assert UNAUTHORIZED not in kinds(run(c, 30, since=11.8))


def test_exit_request_authorizes_motion_and_is_not_recorded_unused() -> None:
    c = corr()
    grant(c, 10, "x1", kind="door.exit_request")
    start(c, 9.2)
    end(c, 13)
    grant(c, 50, "x2", kind="door.exit_request")
    assert run(c, 80) == []


def test_other_door_kinds_do_not_authorize_and_unknown_doors_are_ignored() -> None:
    c = corr()
    for i, kind in enumerate(("access.denied", "door.opened", "door.closed", "door.held_open")):
        grant(c, 10, f"e{i}", kind=kind)
    grant(c, 10, "g-other", door="nowhere")
    start(c, 10, door="nowhere")
    start(c, 10)
    assert kinds(run(c, 30)) == [UNAUTHORIZED]


def test_one_alarm_per_episode_whatever_its_updates() -> None:
    c = corr()
    start(c, 10)
    run(c, 12)
    update(c, 10, "u1", objects=3)
    end(c, 40, peak=3)
    assert run(c, 60, since=12) == []


# --- rule 2: unused grant ----------------------------------------------------------------------------------

def test_grant_with_nobody_passing_is_recorded_at_the_window_end() -> None:
    c = corr()
    grant(c, 10)
    assert c.advance(t(10 + 8 + 1.0 + 0.3) - US) == []  # grant window + 2 skew (see correlate) + settle
    [f] = c.advance(t(19.3))
    assert (f.kind, f.ts, f.camera, f.causes) == (UNUSED, t(10), None, ("g1",))
    assert f.kind not in ALARMS


@pytest.mark.parametrize("motion, unused", [
    ((18.5, 19.0), False),             # starts exactly at g + grant_window + skew
    ((18.500001, 19.0), True),        # just after
    ((5.0, 8.5), False),               # ends exactly at g - approach - skew
    ((5.0, 8.499999), True),          # just before
])
def test_unused_window_boundaries(motion: tuple[float, float], unused: bool) -> None:
    c = corr()
    grant(c, 10)
    start(c, motion[0])
    end(c, motion[1])
    assert (UNUSED in kinds(run(c, 40))) is unused


def test_motion_seen_late_by_a_camera_behind_still_arrives_in_time_for_the_unused_decision() -> None:
    """A start stamped g + 8.5 by a camera 0.5 s behind happened at g + 9; delivered by g + 9.3 it counts."""
    c = corr()
    grant(c, 10)
    run(c, 19.25)
    start(c, 18.5)
    assert UNUSED not in kinds(run(c, 40, since=19.3))


# --- rule 3: tailgating ------------------------------------------------------------------------------------

def test_more_objects_than_grants_at_start_is_tailgating_once_late_grants_had_their_chance() -> None:
    c = corr()
    grant(c, 10.5)
    start(c, 10, objects=2)
    assert c.advance(t(11.8) - US) == []
    [f] = c.advance(t(11.8))
    assert (f.kind, f.ts, f.camera, f.causes) == (TAILGATING, t(10), "c1", ("g1", "m1"))
    assert f.detail["peak_objects"] == 2 and f.detail["grants"] == 1
    end(c, 20, peak=2)
    assert run(c, 60, since=11.8) == []  # once


def test_two_people_two_grants_is_not_tailgating_even_if_the_second_grant_arrives_late() -> None:
    c = corr()
    start(c, 10, objects=2)
    grant(c, 10.3)
    run(c, 11.7)
    grant(c, 11.5, "g2")  # the second person badges just inside approach + skew
    end(c, 16, peak=2)
    assert run(c, 60, since=11.75) == []


def test_an_update_waits_for_the_newcomer_to_badge() -> None:
    """An update carries the episode's start time; its own time is when it arrived (the next advance)."""
    c = corr()
    grant(c, 10.5)
    start(c, 10)
    run(c, 13)
    update(c, 10, "u1")  # a second person walks up at about 13
    assert c.advance(t(13.05)) == []
    grant(c, 13.9, "g2")  # and badges
    end(c, 17, peak=2)
    assert run(c, 60, since=13.1) == []


def test_an_update_showing_an_unbadged_second_person_alarms_without_waiting_for_the_end() -> None:
    c = corr()
    grant(c, 10.5)
    start(c, 10)
    run(c, 13)
    update(c, 10, "u1", objects=2)
    assert c.advance(t(13.05)) == []  # seen at 13.05
    assert c.advance(t(14.85) - US) == []  # 13.05 + approach + skew + settle
    [f] = c.advance(t(14.85))
    assert (f.kind, f.causes, f.detail["reason"]) == (TAILGATING, ("g1", "m1", "u1"), "more people than authorizations")


def test_an_episode_longer_than_its_passages_is_tailgating_while_still_going() -> None:
    c = corr()
    grant(c, 10.5)
    start(c, 10)
    assert c.advance(t(16.3) - US) == []  # 10 + 1 passage + approach + skew, + skew + settle
    [f] = c.advance(t(16.3))
    assert (f.kind, f.causes, f.detail["limit_s"]) == (TAILGATING, ("g1", "m1"), 5.5)
    end(c, 30)
    assert run(c, 60, since=16.3) == []


@pytest.mark.parametrize("ends_at, alarm", [(15.5, False), (15.500001, True)])
def test_duration_limit_boundary(ends_at: float, alarm: bool) -> None:
    c = corr()
    grant(c, 10.5)
    start(c, 10)
    end(c, ends_at)
    assert (TAILGATING in kinds(run(c, 40))) is alarm


def test_a_grant_at_the_edge_of_the_approach_allowance_also_counts_for_the_duration() -> None:
    """Covered against the unauthorized-entry alarm, so the duration check must count it too."""
    c = corr()
    start(c, 10)
    grant(c, 11.5)
    end(c, 30)
    assert kinds(run(c, 60)) == [TAILGATING]


def test_a_further_grant_during_the_episode_extends_its_limit() -> None:
    c = corr()
    grant(c, 10.5)
    start(c, 10)
    grant(c, 15.4, "g2")  # before the first limit (15.5)
    end(c, 19.4)          # within 2 passages
    assert run(c, 40) == []
    c2 = corr()
    grant(c2, 10.5)
    start(c2, 10)
    grant(c2, 15.6, "g2")  # after the limit: the episode already overstayed
    assert kinds(run(c2, 40)) == [TAILGATING]


def test_count_and_duration_together_make_one_tailgating() -> None:
    c = corr()
    grant(c, 10.5)
    start(c, 10, objects=3)
    end(c, 30, peak=3)
    assert kinds(run(c, 60)) == [TAILGATING]


def test_unauthorized_episode_is_not_also_tailgating() -> None:
    c = corr()
    start(c, 10, objects=2)
    grant(c, 13)  # a late badge does not make a loiterer a tailgater
    end(c, 25, peak=2)
    assert kinds(run(c, 60)) == [UNAUTHORIZED]


# --- rule 4: forced door -----------------------------------------------------------------------------------

def test_forced_door_seen_by_the_camera_is_confirmed_at_once_and_not_also_unauthorized() -> None:
    c = corr()
    start(c, 10)
    grant(c, 11, "f1", kind="door.forced")
    assert c.advance(t(10.8) - US) == []
    [f] = c.advance(t(10.8))  # the start has had skew + settle; the forcing is known
    assert (f.kind, f.ts, f.camera, f.causes) == (FORCED_CONFIRMED, t(11), "c1", ("f1", "m1"))
    assert run(c, 60, since=10.8) == []


def test_forced_door_with_no_motion_is_unconfirmed_at_the_window_end() -> None:
    c = corr()
    grant(c, 10, "f1", kind="door.forced")
    start(c, 18.500001)  # just outside: and itself unauthorized
    end(c, 19)
    found = run(c, 40)
    assert sorted(kinds(found)) == sorted([FORCED_UNCONFIRMED, UNAUTHORIZED])
    [f] = [f for f in found if f.kind == FORCED_UNCONFIRMED]
    assert (f.ts, f.causes) == (t(10), ("f1",))


def test_forced_door_confirmed_by_motion_at_the_window_edge() -> None:
    c = corr()
    grant(c, 10, "f1", kind="door.forced")
    start(c, 18.5)
    end(c, 19)
    assert kinds(run(c, 40)) == [FORCED_CONFIRMED]


# --- rule 5: arrival order and duplicates ------------------------------------------------------------------

def test_end_before_start_and_update_before_start_give_the_same_episode() -> None:
    c = corr()
    grant(c, 10.5)
    end(c, 14, peak=2)
    update(c, 10, "u1")
    start(c, 10)
    grant(c, 11, "g2")
    assert run(c, 60) == []  # two grants, two objects, 4 s: fine
    c2 = corr()
    grant(c2, 10.5)
    end(c2, 14, peak=2)
    start(c2, 10)
    assert kinds(run(c2, 60)) == [TAILGATING]


def test_episodes_of_one_camera_pair_their_ends_in_any_order() -> None:
    c = corr()
    grant(c, 10.5)
    grant(c, 30.5, "g2")
    end(c, 34, "e2")
    start(c, 30, "s2")
    end(c, 14, "e1")
    start(c, 10, "s1")
    assert run(c, 60) == []  # each episode ends within its passage


def test_duplicates_are_ignored() -> None:
    c = corr()
    for _ in range(3):
        grant(c, 10)
        grant(c, 40, "f1", kind="door.forced")
        start(c, 40)
        end(c, 41)
        start(c, 70, "m2")
    assert sorted(kinds(run(c, 90))) == sorted([UNUSED, FORCED_CONFIRMED, UNAUTHORIZED])


def test_each_finding_is_reported_once_however_often_advance_is_called() -> None:
    c = corr()
    grant(c, 10)
    start(c, 30)
    end(c, 32)
    grant(c, 50, "f1", kind="door.forced")
    found: list[Finding] = []
    for i in range(2000):
        now = t(i * 0.05)
        found += c.advance(now) + c.advance(now) + c.advance(now - timedelta(seconds=1))
    assert sorted(kinds(found)) == sorted([UNUSED, UNAUTHORIZED, FORCED_UNCONFIRMED])


@dataclass(frozen=True)
class Input:
    """One message of a scenario: ``happened`` is true time, ``ts`` what the sender stamped."""

    happened: float
    call: tuple[object, ...]

    def deliver(self, c: Correlator) -> None:
        if self.call[0] == "door":
            c.door_event(*self.call[1:])  # type: ignore[arg-type]
        else:
            c.motion(*self.call[1:])  # type: ignore[arg-type]


@st.composite
def scenarios(draw: st.DrawFn) -> list[Input]:
    """Grants, exit requests and forced doors, and episodes on two cameras whose clocks are off by up to
    0.4 s; times on a 0.1 s grid so that window boundaries are hit exactly."""
    grid = st.integers(0, 600).map(lambda n: n / 10)
    inputs = []
    for i in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["access.granted", "access.granted", "door.exit_request", "door.forced"]))
        at = draw(grid)
        inputs.append(Input(at, ("door", "d1", kind, t(at), f"door{i}")))
    for cam in ("c1", "c2"):
        offset = draw(st.integers(-4, 4)) / 10
        at = draw(grid)
        for i in range(draw(st.integers(0, 4))):
            length = draw(st.integers(1, 120)) / 10
            objects, peak = draw(st.integers(1, 2)), draw(st.integers(1, 3))
            inputs.append(Input(at, ("motion", "d1", cam, "start", t(at + offset), f"{cam}s{i}", objects, objects)))
            inputs.append(Input(at + length, ("motion", "d1", cam, "end", t(at + length + offset), f"{cam}e{i}", 0,
                                              max(peak, objects))))
            at += length + draw(st.integers(1, 100)) / 10
    return inputs


def realtime(inputs: list[Input], delays: list[float]) -> set[Finding]:
    """Each input delivered when it happened plus its delay (less than settle), advancing every 50 ms."""
    c = corr()
    queue = sorted(zip(inputs, delays, strict=True), key=lambda p: p[0].happened + p[1])
    found: list[Finding] = []
    for k in range(-20, 2000):
        now = k * 0.05
        while queue and queue[0][0].happened + queue[0][1] <= now:
            queue.pop(0)[0].deliver(c)
        found += c.advance(t(now))
    assert len(found) == len(set(map(repr, found)))
    return {f for f in map(_hashable, found)}


def _hashable(f: Finding) -> Finding:
    return Finding(f.kind, f.door, f.ts, f.camera, f.causes, repr(sorted(f.detail.items())))  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_findings_do_not_depend_on_arrival_order(inputs: list[Input], rnd: random.Random) -> None:
    """All at once in any order, or each a little late in real time: the same findings as in order."""
    reference = realtime(inputs, [0.0] * len(inputs))
    shuffled = inputs[:]
    rnd.shuffle(shuffled)
    c = corr()
    for i in shuffled:
        i.deliver(c)
    assert set(map(_hashable, run(c, 100, since=-1))) == reference
    assert realtime(inputs, [rnd.uniform(0, 0.29) for _ in inputs]) == reference


# --- clock skew --------------------------------------------------------------------------------------------

def passage(c: Correlator, g: float, offset: float, cam: str = "c1") -> None:
    """Someone walks up a second before badging and is through in three: the camera stamps its own clock."""
    grant(c, g, f"g{g}")
    start(c, g - 1 + offset, f"s{g}", cam)
    end(c, g + 3 + offset, f"e{g}", cam)


@pytest.mark.parametrize("offset", [-0.4, 0.4])
def test_camera_clock_within_skew_gives_no_false_finding(offset: float) -> None:
    c = corr()
    passage(c, 10, offset)
    assert run(c, 60) == []


def test_camera_three_seconds_behind_makes_every_passage_unauthorized() -> None:
    """Beyond skew_s the motion seems to start before the walk-up allowance: a false alarm per passage.
    The cure is NTP on the cameras, or a larger skew_s (which delays every alarm as much)."""
    c = corr()
    passage(c, 10, -3)
    assert kinds(run(c, 60)) == [UNAUTHORIZED]
    c = Correlator({"d1": DoorWindows(skew_s=3)})
    passage(c, 10, -3)
    assert run(c, 60) == []


def test_camera_three_seconds_ahead_is_absorbed_by_the_grant_window() -> None:
    """Motion seems to start after the grant, which the grant window allows: no finding, but the camera
    confirms less (a forced door's motion may fall outside its window)."""
    c = corr()
    passage(c, 10, 3)
    assert run(c, 60) == []


# --- blind doors -------------------------------------------------------------------------------------------

def test_blind_door_concludes_nothing_from_absence_of_motion() -> None:
    """A grant there is recorded as blind (not as unused); a forced door is neither confirmed nor not."""
    c = corr(c1=["d1"])
    c.camera_status("c1", False, t(5))
    grant(c, 10)
    grant(c, 30, "f1", kind="door.forced")
    found = run(c, 60)
    assert [(f.kind, f.causes) for f in found] == [(BLIND, ("g1",))]
    assert "blind" in str(found[0].detail["reason"])


def test_a_grant_seen_passing_at_a_blind_door_is_not_recorded_blind() -> None:
    """Motion from a camera just before it went blind covers the grant: someone was seen passing."""
    c = corr(c1=["d1"])
    grant(c, 10)
    start(c, 10.2)
    c.camera_status("c1", False, t(11))
    assert run(c, 60) == []


def test_window_overlapping_blind_time_is_blind_but_one_after_it_is_unused() -> None:
    c = corr(c1=["d1"])
    c.camera_status("c1", False, t(5))
    c.camera_status("c1", True, t(12))
    grant(c, 10)      # window [8.5, 18.5] touches the blind time
    grant(c, 13, "g2")  # window [11.5, 21.5]: 12 + skew is still blind
    grant(c, 14.1, "g3")  # window [12.6, 22.6]: clear of it
    assert sorted((f.kind, f.causes) for f in run(c, 60)) == [(BLIND, ("g1",)), (BLIND, ("g2",)), (UNUSED, ("g3",))]


def test_one_camera_offline_does_not_blind_a_door_another_camera_covers() -> None:
    c = corr(c1=["d1"], c2=["d1"])
    c.camera_status("c1", False, t(5))
    grant(c, 10)
    assert kinds(run(c, 60)) == [UNUSED]


def test_a_camera_known_only_from_its_motion_also_blinds_its_door() -> None:
    c = corr()
    start(c, 1, "early")
    grant(c, 1.5, "g0")
    end(c, 3, "early-end")
    c.camera_status("c1", False, t(5))
    grant(c, 10)
    assert kinds(run(c, 60)) == [BLIND]


def test_motion_just_after_a_camera_returns_is_not_an_unauthorized_entry() -> None:
    c = corr()
    c.camera_status("c1", False, t(5))
    c.camera_status("c1", True, t(10))
    start(c, 10.2)  # the detector settling, or someone already there
    end(c, 11)
    start(c, 20, "m2")  # a real arrival
    assert [f.ts for f in run(c, 60)] == [t(20)]


def test_a_camera_going_offline_ends_its_episodes() -> None:
    """Its end message will not come; without this the episode would overstay into a tailgating alarm."""
    c = corr()
    grant(c, 10.5)
    start(c, 10)
    c.camera_status("c1", False, t(12))
    assert run(c, 60) == []


# --- several cameras on one door ---------------------------------------------------------------------------

def test_two_cameras_seeing_one_intruder_raise_one_alarm() -> None:
    c = corr()
    start(c, 10.2, "a", cam="c1")
    start(c, 10.0, "b", cam="c2")
    end(c, 14, "a-end", cam="c1")
    end(c, 13, "b-end", cam="c2")
    start(c, 14.8, "c", cam="c2")  # c2 loses and finds the person again within 2 skew
    end(c, 16, "c-end", cam="c2")
    [f] = run(c, 60)
    assert (f.kind, f.camera, f.causes) == (UNAUTHORIZED, "c2", ("b",))


def test_two_cameras_two_separate_intrusions_raise_two_alarms() -> None:
    c = corr()
    start(c, 10, "a", cam="c1")
    end(c, 12, "a-end", cam="c1")
    start(c, 13.1, "b", cam="c2")  # more than 2 skew after
    end(c, 15, "b-end", cam="c2")
    assert [f.camera for f in run(c, 60)] == ["c1", "c2"]


def test_an_authorized_passage_seen_by_two_cameras_makes_nothing() -> None:
    c = corr()
    passage(c, 10, 0.3, "c1")
    start(c, 9.4, "x", cam="c2")
    end(c, 13.5, "x-end", cam="c2")
    assert run(c, 60) == []


def test_two_cameras_both_counting_a_tailgater_raise_one_alarm() -> None:
    c = corr()
    grant(c, 10.5)
    start(c, 10, "a", cam="c1", objects=2)
    start(c, 10.1, "b", cam="c2", objects=2)
    assert kinds(run(c, 60)) == [TAILGATING]


def test_doors_are_independent() -> None:
    c = corr()
    grant(c, 10, door="d2")
    start(c, 9.5)
    assert sorted((f.kind, f.door) for f in run(c, 60)) == [(UNUSED, "d2"), (UNAUTHORIZED, "d1")]


# --- memory and inputs -------------------------------------------------------------------------------------

def test_memory_stays_flat_over_ten_thousand_episodes() -> None:
    c = corr(c1=["d1"], c2=["d1"])
    sizes, counts = [], dict.fromkeys(KINDS, 0)
    for n in range(10_000):
        s = n * 20.0
        if n % 7:
            grant(c, s + 1, f"g{n}")
        start(c, s, f"s{n}", cam="c1" if n % 2 else "c2", objects=1 + (n % 11 == 0))
        if n % 13:
            update(c, s, f"u{n}", cam="c1" if n % 2 else "c2", objects=1)
        end(c, s + 3, f"e{n}", cam="c1" if n % 2 else "c2")
        if n % 17 == 0:
            grant(c, s + 10, f"lonely{n}")
        if n % 101 == 0:
            c.camera_status("c1", n % 202 == 0, t(s + 5))
        for k in range(4):
            for f in c.advance(t(s + 5 * k)):
                counts[f.kind] += 1
        sizes.append(c.held())
    assert counts[UNAUTHORIZED] > 1000 and counts[TAILGATING] > 100 and counts[UNUSED] > 300
    assert max(sizes[-1000:]) <= max(sizes[:1000]) <= 20


def test_inputs_older_than_the_retention_are_dropped() -> None:
    """Their partners may be forgotten already: a finding from half the picture would be false."""
    c = corr()
    run(c, 100)
    grant(c, 50)
    start(c, 60)
    assert run(c, 200, since=100) == []


def test_naive_times_are_refused() -> None:
    c = corr()
    with pytest.raises(ValueError, match="naive"):
        c.advance(datetime(2026, 3, 2, 9, 0))
    with pytest.raises(ValueError, match="motion state"):
        c.motion("d1", "c1", "stop", t(1), "x")  # type: ignore[arg-type]
