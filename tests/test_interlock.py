"""Mantraps in the bridge: the processor on a real database (both), the example site's mantrap at hall A
(outer door "hall-a-mantrap", inner door "hall-a"). A badge at one door while the other is busy waits for it
to close (or is denied ``interlock_busy`` at ``wait_s``); console unlocks need an emergency override; with
single occupancy the inner door waits for the mantrap camera's people count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge.config import SiteConfig, load_config
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore
from badge_bridge.models import DeadLetter
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.snapshot import load_snapshot
from badge_bridge.sync import build_sync
from camera.worker import CameraWorker
from tests.conftest import write_site
from tests.console_commands import command
from tests.test_ingest import Rig
from tests.test_mqtt_bridge import Site, entries, kinds
from tests.video_composites import FPS, Composite, passage
from tests.waiting import wait_until

OUTER, INNER = "hall-a-mantrap", "hall-a"
ADA, GRACE = "12:1001", "12:1002"  # Ada has PIN 4711 (hall A asks card and PIN); both may pass the mantrap
MANTRAP_CAMERA = """
[[cameras]]
key = "cam-mantrap"
name = "Inside the hall A mantrap"
url = "file:tests/data/video/door-entries-part1.mp4"
doors = ["hall-a"]

[[interlocks]]"""


@pytest.fixture
def rig(engine: Engine, site: SiteConfig, keys: KeyStore) -> Iterator[Rig]:
    r = Rig(engine, site, keys)
    yield r
    r.writer.stop()


@pytest.fixture
def occupancy_rig(engine: Engine, db_url: str, tmp_path: Path, keys: KeyStore,
                  request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The example site with a camera inside the mantrap and single occupancy on (and the test's own
    replacements, as its indirect parameter)."""
    path = write_site(tmp_path, db_url, ("\n[[interlocks]]", MANTRAP_CAMERA),
                      ("single_occupancy = false", 'single_occupancy = true\ncamera = "cam-mantrap"'),
                      *getattr(request, "param", ()))
    r = Rig(engine, load_config(path), keys)
    yield r
    r.writer.stop()


def outer(rig: Rig, number: str = GRACE) -> object:
    return rig.card(number, reader="hall-a-mantrap-in", ctl="ctl-hall-a")


def inner(rig: Rig, number: str = ADA, pin: str | None = "4711", reader: str = "hall-a-in") -> object:
    return rig.card(number, reader=reader, ctl="ctl-hall-a", pin=pin)


def door(rig: Rig, key: str, state: str) -> None:
    rig.feed("ctl-hall-a", rig.msg("door", door=key, state=state))


def access(rig: Rig) -> list[tuple[str, str, dict[str, object]]]:
    """(kind, door, detail) of every access decision logged."""
    return [(e.kind, e.door or "", json.loads(e.detail)) for e in rig.entries() if e.kind.startswith("access.")]


def commands(rig: Rig, door: str) -> list[object]:
    return [cmd for _, cmd in rig.sent if getattr(cmd, "door", None) == door]


def letters(rig: Rig) -> list[DeadLetter]:
    assert rig.writer.flush()
    with Session(rig.engine) as session:
        return list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


# --- waiting for the other door ----------------------------------------------------------------------


def test_a_badge_at_the_inner_door_waits_until_the_outer_door_closes_then_opens(rig: Rig) -> None:
    outer(rig)
    [grant] = commands(rig, OUTER)
    assert isinstance(grant, c.Grant)
    inner(rig)  # the outer door is released and not yet used: the inner door waits
    assert commands(rig, INNER) == [] and [k for k, _, _ in access(rig)] == ["access.granted"]
    door(rig, OUTER, "opened")
    assert commands(rig, INNER) == []  # open: still waiting
    rig.clock.now += timedelta(seconds=2)
    door(rig, OUTER, "closed")  # closed and locked: the held badge goes on at once
    [grant] = commands(rig, INNER)
    assert isinstance(grant, c.Grant)
    kind, where, detail = access(rig)[-1]
    assert (kind, where, detail["reason"], detail["actuated"]) == ("access.granted", INNER, "granted", True)
    assert detail["interlock_waited_s"] == 2.0
    # its own door is released now: the outer door waits in turn
    outer(rig)
    assert len(commands(rig, OUTER)) == 1


def test_a_held_badge_is_denied_interlock_busy_at_wait_s(rig: Rig) -> None:
    door(rig, OUTER, "opened")  # forced, or propped: busy either way
    inner(rig)
    rig.tick(rig.clock.now + timedelta(seconds=4.9))
    assert commands(rig, INNER) == []
    rig.tick(rig.clock.now + timedelta(seconds=0.2))
    [deny] = commands(rig, INNER)
    assert isinstance(deny, c.Deny) and deny.reason == "interlock_busy"
    kind, _, detail = access(rig)[-1]
    assert (kind, detail["reason"], detail["interlock_waited_s"]) == ("access.denied", "interlock_busy", 5.1)
    assert len(rig.acks) == 2


def test_a_released_door_expiring_unused_lets_the_held_badge_through_on_the_tick(rig: Rig) -> None:
    outer(rig)  # granted, nobody opens it: busy until its open time and grace are over (4 + 1 s)
    inner(rig)
    rig.tick(rig.clock.now + timedelta(seconds=4.5))
    assert commands(rig, INNER) == []
    rig.tick(rig.clock.now + timedelta(seconds=0.6))
    [grant] = commands(rig, INNER)
    assert isinstance(grant, c.Grant)


def test_a_stale_or_offline_badge_at_a_busy_mantrap_is_denied_at_once(rig: Rig) -> None:
    door(rig, OUTER, "opened")
    rig.card(ADA, reader="hall-a-in", ctl="ctl-hall-a", pin="4711", ts=rig.clock.now - timedelta(seconds=30))
    kind, _, detail = access(rig)[-1]
    assert (kind, detail["reason"], detail["actuated"]) == ("access.denied", "interlock_busy", False)
    assert "interlock_waited_s" not in detail and rig.p._access.interlock_waiting == {}


def test_the_outer_door_forced_while_the_inner_door_is_released_is_an_alarm_and_holds_later_badges(rig: Rig) -> None:
    inner(rig)  # granted: the inner door is released
    door(rig, OUTER, "opened")  # nobody released the outer door
    assert "door.forced" in rig.kinds() and any(a.kind == "door.forced" for a in rig.alarms())
    outer(rig)  # its own door open does not hold it, the inner door's release does (until it is over)
    assert len(commands(rig, OUTER)) == 0
    inner(rig, reader="hall-a-out")  # Ada back out: the forced outer door holds the inner one
    rig.tick(rig.clock.now + timedelta(seconds=5.1))
    assert [type(x) for x in commands(rig, OUTER)] == [c.Grant]  # the inner release ran out unused
    [_, deny] = commands(rig, INNER)
    assert isinstance(deny, c.Deny) and deny.reason == "interlock_busy"


def test_an_exit_button_at_the_inner_door_makes_it_busy_for_the_outer_door(rig: Rig) -> None:
    rig.feed("ctl-hall-a", rig.msg("rex", door=INNER))
    outer(rig)
    assert commands(rig, OUTER) == []
    door(rig, INNER, "opened")
    door(rig, INNER, "closed")
    [grant] = commands(rig, OUTER)
    assert isinstance(grant, c.Grant)


def test_two_badges_waiting_at_both_doors_go_one_at_a_time(rig: Rig) -> None:
    door(rig, OUTER, "opened")
    inner(rig)
    door(rig, OUTER, "closed")  # the inner badge goes on
    outer(rig)  # waits behind the inner door's release
    assert [type(x) for x in commands(rig, INNER)] == [c.Grant] and commands(rig, OUTER) == []
    door(rig, INNER, "opened")
    door(rig, INNER, "closed")
    assert [type(x) for x in commands(rig, OUTER)] == [c.Grant]


# --- console unlocks -----------------------------------------------------------------------------------


def test_an_unlock_of_the_inner_door_is_refused_while_the_outer_door_is_open(rig: Rig) -> None:
    door(rig, OUTER, "opened")
    rig.console("unlock", door=INNER)
    assert commands(rig, INNER) == []
    [letter] = letters(rig)
    assert letter.reason.startswith("interlock_busy: door 'hall-a' is in a mantrap whose door(s) hall-a-mantrap")
    assert "console.unlock" not in rig.kinds()


def test_an_area_unlock_naming_both_mantrap_doors_needs_an_override(rig: Rig) -> None:
    """The review's attack: an area unlock names both doors of the mantrap, which would hold it open end to end;
    the console only sends one door, the bridge refuses it whatever sent it."""
    rig.console("unlock", door=None, area="hall-a-mantrap", reason="quiet mantrap, no override")
    assert commands(rig, OUTER) == [] and commands(rig, INNER) == []
    [letter] = letters(rig)
    assert letter.reason.startswith("interlock_busy: the unlock would hold doors hall-a, hall-a-mantrap of one mantrap")
    rig.console("unlock", door=None, area="hall-a-mantrap", override=True, reason="fire drill, both doors open")
    assert [type(x) for x in commands(rig, OUTER) + commands(rig, INNER)] == [c.Unlock, c.Unlock]


def test_a_grant_stamped_seconds_ago_still_holds_the_other_door(rig: Rig) -> None:
    """The review's attack: a live badge whose controller clock runs 6 s behind; its release starts when the
    grant leaves, so the inner door must still wait, not be granted beside it."""
    rig.card(GRACE, reader="hall-a-mantrap-in", ctl="ctl-hall-a", ts=rig.clock() - timedelta(seconds=6))
    assert [type(x) for x in commands(rig, OUTER)] == [c.Grant]
    inner(rig)
    assert commands(rig, INNER) == []  # held for the outer door, not granted beside it


def test_an_emergency_override_unlocks_and_is_audited_with_its_reason_and_the_busy_doors(rig: Rig) -> None:
    door(rig, OUTER, "opened")
    rig.console("unlock", door=INNER, override=True, reason="smoke in the mantrap, evacuating")
    [unlock] = commands(rig, INNER)
    assert isinstance(unlock, c.Unlock)
    [entry] = [e for e in rig.entries() if e.kind == "console.unlock"]
    detail = json.loads(entry.detail)
    assert detail["override"] is True and detail["interlock_busy"] == [OUTER]
    assert detail["reason"] == "smoke in the mantrap, evacuating" and json.loads(entry.subject) == {"user": "sam"}


def test_an_unlock_of_a_quiet_mantrap_needs_no_override_and_then_holds_the_other_door(rig: Rig) -> None:
    rig.console("unlock", door=INNER, duration_s=10)
    assert isinstance(commands(rig, INNER)[0], c.Unlock)
    outer(rig)
    assert commands(rig, OUTER) == []  # the inner door is held unlocked: the outer badge waits
    rig.console("lock", door=INNER)  # locked again: the waiting badge goes on at once
    assert [type(x) for x in commands(rig, OUTER)] == [c.Grant]


def test_a_forged_override_is_refused_as_forged(rig: Rig) -> None:
    door(rig, OUTER, "opened")
    signed = command(rig.keys, rig.sam, id="k-forge", ts=rig.clock(), door=INNER)  # signed without override
    forged = signed.model_copy(update={"override": True})  # the flag added on the wire
    rig.p.console_command(forged, forged.model_dump_json().encode(), "console/commands", None)
    unsigned = forged.model_copy(update={"id": "k-unsigned", "signature": None})
    rig.p.console_command(unsigned, unsigned.model_dump_json().encode(), "console/commands", None)
    assert commands(rig, INNER) == []
    assert [letter.reason.split(":")[0] for letter in letters(rig)] == ["forged_command", "forged_command"]


def test_a_replayed_override_is_refused(rig: Rig) -> None:
    door(rig, OUTER, "opened")
    cmd = rig.console("unlock", door=INNER, override=True, reason="evacuation drill")
    rig.console("lock", door=INNER)
    rig.p.console_command(cmd, cmd.model_dump_json().encode(), "console/commands", None)  # the same again
    assert [type(x) for x in commands(rig, INNER)] == [c.Unlock, c.Lock]
    assert letters(rig)[-1].reason.startswith("forged_command: replayed")


def test_an_override_needs_a_reason_beyond_a_word(rig: Rig) -> None:
    with pytest.raises(ValueError):  # the contract: a reason is never empty
        command(rig.keys, rig.sam, door=INNER, override=True, reason="")
    door(rig, OUTER, "opened")
    rig.console("unlock", door=INNER, override=True, reason="  ")
    assert commands(rig, INNER) == []
    assert letters(rig)[-1].reason.startswith("invalid_message: an emergency override needs its reason")


# --- single occupancy -----------------------------------------------------------------------------------


def counted(rig: Rig, people: int, camera: str = "cam-mantrap", frames: int = 10) -> None:
    [request] = [r for r in rig.camera_requests if isinstance(r, c.PeopleRequest)][-1:]
    rig.n += 1
    answer = c.PeopleCounted(v=1, id=f"p{rig.n}", ts=rig.clock(), type="people", event=request.event,
                             frames=frames, people=people)
    rig.p.camera_event(camera, answer, answer.model_dump_json().encode(), f"cameras/{camera}/events", None)


def test_one_person_counted_in_the_mantrap_opens_the_inner_door(occupancy_rig: Rig) -> None:
    rig = occupancy_rig
    inner(rig)
    [request] = [r for r in rig.camera_requests if isinstance(r, c.PeopleRequest)]
    assert (request.door, request.event) == (INNER, "ctl-hall-a:m1") and commands(rig, INNER) == []
    outer(rig)  # the inner door is held for its count: busy, so the outer door waits
    counted(rig, 1)
    assert [type(x) for x in commands(rig, INNER)] == [c.Grant] and commands(rig, OUTER) == []
    kind, _, detail = access(rig)[0]
    assert kind == "access.granted" and detail["occupancy"] == {"camera": "cam-mantrap", "expected": 1, "counted": 1}


@pytest.mark.parametrize("occupancy_rig", [[('factors = ["card", "pin"]', 'factors = ["card"]\ntwo_person = true')]],
                         indirect=True, ids=["two-person"])
def test_a_two_person_grant_at_the_inner_door_expects_two_people(occupancy_rig: Rig) -> None:
    rig = occupancy_rig
    inner(rig, GRACE, pin=None)  # the first of two: waits at the door, no count yet
    assert [r for r in rig.camera_requests if isinstance(r, c.PeopleRequest)] == []
    inner(rig, ADA, pin=None)
    counted(rig, 1)  # one of the two is missing (or hides behind the other): no
    inner(rig, ADA, pin=None)  # Grace still waits at the door: Ada again, both inside this time
    counted(rig, 2)
    reasons = [(d["reason"], d.get("occupancy")) for _, _, d in access(rig)]
    assert reasons == [("two_person_waiting", None),
                       ("mantrap_occupancy", {"camera": "cam-mantrap", "expected": 2, "counted": 1}),
                       ("granted_two_person", {"camera": "cam-mantrap", "expected": 2, "counted": 2})]


def test_two_people_in_the_mantrap_deny_and_alarm(occupancy_rig: Rig) -> None:
    rig = occupancy_rig
    inner(rig)
    counted(rig, 2)
    [deny] = commands(rig, INNER)
    assert isinstance(deny, c.Deny) and deny.reason == "mantrap_occupancy"
    [alarm] = [a for a in rig.alarms() if a.kind == "mantrap.occupancy"]
    assert alarm.door == INNER
    # the alarm asks the mantrap camera for its snapshot and clip, like any camera alarm
    assert any(isinstance(r, c.EvidenceRequest) and r.clip for r in rig.camera_requests)


def test_nobody_counted_no_answer_or_a_blind_camera_deny(occupancy_rig: Rig) -> None:
    rig = occupancy_rig
    inner(rig)
    counted(rig, 0, frames=0)  # no frames: says nothing, and nothing is not one person
    rig.tick(rig.clock.now + timedelta(seconds=10))  # the first hold's door released (4 + 1 s) is over
    inner(rig)
    rig.tick(rig.clock.now + timedelta(seconds=4.1))  # no answer within occupancy_timeout_s
    rig.p.camera_status("cam-mantrap", c.CameraStatus(v=1, online=False), b"{}", "cameras/cam-mantrap/status", None)
    inner(rig)
    reasons = [(d["reason"], d["occupancy"].get("why", "")) for _, _, d in access(rig)]  # type: ignore[union-attr]
    assert [r for r, _ in reasons] == ["mantrap_occupancy"] * 3
    assert [w.split(" ")[0] for _, w in reasons] == ["no", "no", "the"]
    assert not [a for a in rig.alarms() if a.kind == "mantrap.occupancy"]  # no count is no alarm: no evidence


def test_a_count_from_another_camera_or_a_tampered_one_is_refused(occupancy_rig: Rig) -> None:
    rig = occupancy_rig
    inner(rig)
    counted(rig, 1, camera="cam-lobby")
    rig.p.camera_status("cam-mantrap", c.CameraStatus(v=1, online=True, state="online", tamper="covered"), b"{}",
                        "cameras/cam-mantrap/status", None)
    counted(rig, 1)
    assert commands(rig, INNER) == []
    assert [letter.reason.split(":")[0] for letter in letters(rig)] == ["not_this_camera", "camera_tampered"]


# --- over a real broker: the bridge and a simulated hall A controller ---------------------------------


@pytest.fixture
def live(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore) -> Iterator[Site]:
    s = Site(tmp_path, db_url, broker, keys)
    s.start_bridge()
    yield s
    s.close()


def grants(sim: SimController, door: str) -> list[c.Command]:
    return [cmd for cmd in sim.commands if isinstance(cmd, c.Grant) and cmd.door == door]


def test_a_simulated_person_walks_through_the_mantrap(live: Site) -> None:
    hall = live.sim("ctl-hall-a")
    hall.present("hall-a-mantrap-in", None, "wiegand26", ADA)
    hall.wait_for(lambda: hall.contact.get(OUTER) == "closed")  # granted, walked in, the door shut behind
    hall.present("hall-a-in", None, "wiegand26", ADA, pin="4711")
    hall.wait_for(lambda: hall.contact.get(INNER) == "closed")
    wait_until(lambda: kinds(live.engine).count("door.closed") == 2, what="both doors closed in the log")
    log = kinds(live.engine)
    assert log.count("access.granted") == 2 and "door.forced" not in log and "access.denied" not in log


def test_over_the_broker_the_inner_door_waits_for_the_outer_to_close(live: Site) -> None:
    hall = live.sim("ctl-hall-a", walk_through=False)
    hall.present("hall-a-mantrap-in", None, "wiegand26", GRACE)
    hall.wait_for_command(lambda cmd: isinstance(cmd, c.Grant))
    hall.open_door(OUTER)
    hall.present("hall-a-in", None, "wiegand26", ADA, pin="4711")
    assert live.bridge is not None and live.bridge.processor is not None
    held = live.bridge.processor._access.interlock_waiting
    wait_until(lambda: held, what="the inner badge held")
    assert grants(hall, INNER) == []
    hall.close_door(OUTER)
    hall.wait_for_command(lambda cmd: isinstance(cmd, c.Grant) and cmd.door == INNER)
    wait_until(lambda: kinds(live.engine).count("access.granted") == 2, what="the held grant in the log")
    [detail] = [json.loads(e.detail) for e in entries(live.engine) if e.kind == "access.granted" and e.door == INNER]
    assert detail["interlock_waited_s"] > 0 and detail["actuated"] is True


# --- the camera worker's side: counting the people inside ------------------------------------------


def _answer(site: SiteConfig, keys: KeyStore, frames: list[np.ndarray]) -> c.PeopleCounted:
    """What the camera worker publishes for a people request over ``frames`` (played at FPS from t = 0)."""
    camera = site.cameras[0]
    worker = CameraWorker(site, camera, keys.evidence_key())
    published: list[str] = []
    worker._publish = lambda _topic, payload, retain=False: published.append(payload)  # type: ignore[method-assign]
    for i, frame in enumerate(frames[:80]):  # the ring keeps the camera's last buffer_s only
        worker.ring.append(frame, 1000 + i / FPS)
    at = datetime.fromtimestamp(1000 + 55 / FPS, UTC)
    worker._people(c.PeopleRequest(v=1, id="pr-1", ts=at, type="people_request", event="ctl-hall-a:m1", door=INNER,
                                   at=at, before_s=1.0, after_s=0.5))
    [answer] = published
    return c.PeopleCounted.model_validate_json(answer)


def test_the_worker_counts_one_person_as_one_and_two_side_by_side_as_two(site: SiteConfig, keys: KeyStore) -> None:
    one = _answer(site, keys, passage(0))
    assert (one.event, one.people, one.error) == ("ctl-hall-a:m1", 1, None) and one.frames > 0
    assert _answer(site, keys, Composite(target=0, source=1, dx=-260, dt=0).frames()).people == 2
    empty = _answer(site, keys, [])
    assert (empty.frames, empty.people) == (0, 0) and empty.error  # no frames: the bridge denies, never grants


def test_mantrap_doors_stay_off_the_controllers_offline_lists(rig: Rig, site: SiteConfig) -> None:
    """The review's finding: a controller deciding alone cannot see the mantrap's other door (which may hang on
    another controller), so a mantrap door is decided online only; the hall's other doors stay on the list."""
    with Session(rig.engine) as session:
        snapshot = load_snapshot(session)
    synced = build_sync(site, snapshot, "ctl-hall-a", b"k" * 32, "k1")
    doors = {door for entry in synced.entries for door in entry.doors}
    assert "cage-7" in doors and not doors & {OUTER, INNER}
    assert set(synced.doors) >= {OUTER, INNER, "cage-7"}
