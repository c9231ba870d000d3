"""The access decision: every reason code, the order of checks, and properties over random inputs."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.config import SiteConfig
from badge_bridge.keys import check_pin
from badge_bridge.policy import (
    AccessState,
    AntiPassback,
    Credential,
    Decision,
    Door,
    Factor,
    Reason,
    Request,
    Schedule,
    decide,
)
from badge_bridge.site_sync import sync_site
from badge_bridge.snapshot import load_snapshot

BERLIN = ZoneInfo("Europe/Berlin")
ALWAYS = Schedule("always", BERLIN, tuple((d, 0, 1440) for d in range(7)))
BUSINESS = Schedule("business", BERLIN, tuple((d, 7 * 60, 19 * 60) for d in range(5)), frozenset({date(2026, 12, 24)}))
# Thursday 2026-12-10, 10:00 in Berlin (09:00 UTC).
THU_10 = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
CARD = frozenset({Factor.CARD})
CARD_PIN = frozenset({Factor.CARD, Factor.PIN})
CARD_BIO = frozenset({Factor.CARD, Factor.BIOMETRIC})

MAIN = Door("main", area_out="outside", area_in="lobby")
HALL = Door("hall", area_out="lobby", area_in="hall", factors=CARD_PIN, anti_passback=AntiPassback.HARD)
CAGE = Door("cage", area_out="hall", area_in="cage", factors=CARD_BIO, anti_passback=AntiPassback.SOFT,
            two_person=True, two_person_window_s=30)
NOC = Door("noc", area_out="lobby", area_in="noc")
VAULT = Door("vault", area_out="lobby", area_in="vault", factors=frozenset({Factor.CARD, Factor.FACE}))
CARD_FACE = frozenset({Factor.CARD, Factor.FACE})


def cred(person: int = 1, **kw: object) -> Credential:
    fields: dict[str, object] = dict(id=person * 10, person_id=person,
                                     doors={"main": (ALWAYS,), "hall": (ALWAYS,), "cage": (ALWAYS,), "noc": (BUSINESS,),
                                            "vault": (ALWAYS,)})
    fields.update(kw)
    return Credential(**fields)  # type: ignore[arg-type]


def at(door: Door, now: datetime = THU_10, factors: frozenset[Factor] = CARD, **kw: object) -> Request:
    return Request(door=door, now=now, factors=factors, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "credential, request_, state, reason",
    [
        (None, at(MAIN), AccessState(), Reason.UNKNOWN_CREDENTIAL),
        (cred(status="revoked"), at(MAIN), AccessState(), Reason.CREDENTIAL_REVOKED),
        (cred(status="suspended"), at(MAIN), AccessState(), Reason.CREDENTIAL_SUSPENDED),
        (cred(status="lost"), at(MAIN), AccessState(), Reason.CREDENTIAL_LOST),
        (cred(person_active=False), at(MAIN), AccessState(), Reason.PERSON_INACTIVE),
        (cred(valid_from=THU_10 + timedelta(seconds=1)), at(MAIN), AccessState(), Reason.NOT_YET_VALID),
        (cred(valid_until=THU_10), at(MAIN), AccessState(), Reason.EXPIRED),
        (cred(valid_until=THU_10 + timedelta(seconds=1)), at(MAIN), AccessState(), Reason.GRANTED),
        (cred(), at(MAIN), AccessState(lockdown_all=True), Reason.LOCKDOWN),
        (cred(), at(MAIN), AccessState(lockdown_doors={"main"}), Reason.LOCKDOWN),
        (cred(), at(NOC), AccessState(lockdown_doors={"main"}), Reason.GRANTED),
        (cred(lockdown_exempt=True), at(MAIN), AccessState(lockdown_all=True), Reason.GRANTED),
        (cred(doors={"noc": (BUSINESS,)}), at(MAIN), AccessState(), Reason.NO_ACCESS_LEVEL),
        (cred(), at(NOC, THU_10 + timedelta(hours=9)), AccessState(), Reason.OUTSIDE_SCHEDULE),  # 19:00 Berlin
        (cred(), at(NOC, THU_10 + timedelta(hours=8, minutes=59)), AccessState(), Reason.GRANTED),  # 18:59
        (cred(), at(NOC, datetime(2026, 12, 12, 9, tzinfo=UTC)), AccessState(), Reason.OUTSIDE_SCHEDULE),  # Sat
        (cred(), at(NOC, datetime(2026, 12, 24, 9, tzinfo=UTC)), AccessState(), Reason.HOLIDAY),
        (cred(doors={"noc": (BUSINESS, ALWAYS)}), at(NOC, datetime(2026, 12, 24, 9, tzinfo=UTC)), AccessState(),
         Reason.GRANTED),
        (cred(), at(HALL), AccessState(), Reason.PIN_REQUIRED),
        (cred(), at(HALL, failed=frozenset({Factor.PIN})), AccessState(), Reason.PIN_WRONG),
        (cred(), at(HALL, factors=CARD_PIN), AccessState(), Reason.GRANTED),
        (cred(), at(CAGE, factors=CARD_PIN), AccessState(), Reason.BIOMETRIC_REQUIRED),
        (cred(), at(CAGE, failed=frozenset({Factor.BIOMETRIC})), AccessState(), Reason.BIOMETRIC_MISMATCH),
        (cred(), at(VAULT), AccessState(), Reason.FACE_REQUIRED),
        (cred(), at(VAULT, failed=frozenset({Factor.FACE})), AccessState(), Reason.FACE_MISMATCH),
        (cred(), at(VAULT, factors=CARD_FACE), AccessState(), Reason.GRANTED),
        (cred(doors={"main": (ALWAYS,)}), at(VAULT, factors=CARD_FACE), AccessState(), Reason.NO_ACCESS_LEVEL),
        (cred(), at(HALL, factors=CARD_PIN), AccessState(location={1: "hall"}), Reason.ANTI_PASSBACK),
        (cred(), at(HALL, factors=CARD_PIN), AccessState(location={1: "lobby"}), Reason.GRANTED),
        (cred(), at(HALL, factors=CARD_PIN, direction="out"), AccessState(location={1: "hall"}), Reason.GRANTED),
        (cred(), at(CAGE, factors=CARD_BIO), AccessState(), Reason.TWO_PERSON_WAITING),
        (cred(), at(CAGE, factors=CARD_BIO), AccessState(waiting={"cage": (1, THU_10)}), Reason.TWO_PERSON_SAME_PERSON),
        (cred(), at(CAGE, factors=CARD_BIO), AccessState(waiting={"cage": (2, THU_10 - timedelta(seconds=31))}),
         Reason.TWO_PERSON_WAITING),
        (cred(), at(CAGE, factors=CARD_BIO), AccessState(waiting={"cage": (2, THU_10 - timedelta(seconds=30))}),
         Reason.GRANTED_TWO_PERSON),
    ],
)
def test_each_reason(credential: Credential | None, request_: Request, state: AccessState, reason: Reason) -> None:
    decision = decide(credential, request_, state)
    assert decision.reason is reason
    assert decision.granted == reason.value.startswith("granted")


def test_first_failing_check_names_the_reason() -> None:
    """A revoked card at a locked-down door outside its schedule says 'revoked': the card is the problem."""
    everything_wrong = cred(status="revoked", valid_until=THU_10, doors={})
    assert decide(everything_wrong, at(HALL), AccessState(lockdown_all=True)).reason is Reason.CREDENTIAL_REVOKED
    expired_no_level = cred(valid_until=THU_10, doors={})
    assert decide(expired_no_level, at(HALL), AccessState(lockdown_all=True)).reason is Reason.EXPIRED


def test_soft_anti_passback_grants_and_flags() -> None:
    soft = Door("soft", area_out="a", area_in="b", anti_passback=AntiPassback.SOFT)
    holder = cred(doors={"soft": (ALWAYS,)})
    decision = decide(holder, at(soft), AccessState(location={1: "b"}))
    assert decision == Decision(True, Reason.GRANTED_PASSBACK_VIOLATION) and decision.flagged
    assert not decide(holder, at(soft), AccessState(location={1: "a"})).flagged
    assert not decide(cred(), at(MAIN), AccessState(location={1: "lobby"})).flagged  # no anti-passback there


def test_hard_anti_passback_follows_the_person_through_the_building() -> None:
    state, alice = AccessState(), cred(1)
    for door, direction, factors, expected in [
        (HALL, "in", CARD_PIN, Reason.GRANTED),        # lobby -> hall
        (HALL, "in", CARD_PIN, Reason.ANTI_PASSBACK),  # card passed back to someone outside
        (HALL, "out", CARD, Reason.PIN_REQUIRED),      # the door asks for a PIN both ways
        (HALL, "out", CARD_PIN, Reason.GRANTED),       # hall -> lobby
        (HALL, "in", CARD_PIN, Reason.GRANTED),        # back in
    ]:
        request = at(door, direction=direction, factors=factors)
        decision = decide(alice, request, state)
        assert decision.reason is expected, (door.key, direction)
        state.record(alice, request, decision)
    assert state.location == {1: "hall"}


def test_two_person_rule_needs_two_distinct_authorized_people() -> None:
    state = AccessState()
    alice, bob, mallory = cred(1), cred(2), cred(3, doors={})
    first = at(CAGE, factors=CARD_BIO)
    waiting = decide(alice, first, state)
    assert waiting.reason is Reason.TWO_PERSON_WAITING and not waiting.granted
    state.record(alice, first, waiting)
    unauthorized = decide(mallory, at(CAGE, THU_10 + timedelta(seconds=5), CARD_BIO), state)
    assert unauthorized.reason is Reason.NO_ACCESS_LEVEL  # cannot be the second person
    again = decide(alice, at(CAGE, THU_10 + timedelta(seconds=5), CARD_BIO), state)
    assert again.reason is Reason.TWO_PERSON_SAME_PERSON
    second = at(CAGE, THU_10 + timedelta(seconds=10), CARD_BIO)
    both = decide(bob, second, state)
    assert both == Decision(True, Reason.GRANTED_TWO_PERSON, companion=1)
    state.record(bob, second, both)
    assert state.waiting == {} and state.location == {1: "cage", 2: "cage"}


# --- properties -------------------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC))
factor_sets = st.sets(st.sampled_from([Factor.PIN, Factor.BIOMETRIC])).map(lambda s: frozenset(s | {Factor.CARD}))
doors = st.builds(
    Door, key=st.sampled_from(["main", "hall", "cage", "noc"]), area_in=st.sampled_from([None, "lobby", "hall"]),
    area_out=st.sampled_from([None, "outside", "lobby"]), factors=factor_sets,
    anti_passback=st.sampled_from(list(AntiPassback)), anti_passback_out=st.sampled_from(list(AntiPassback)),
    two_person=st.booleans(), two_person_window_s=st.floats(1, 600),
)
credentials = st.builds(
    Credential, id=st.integers(1, 5), person_id=st.integers(1, 5),
    status=st.sampled_from(["active", "active", "active", "suspended", "lost", "revoked"]),
    valid_from=st.none() | moments, valid_until=st.none() | moments, person_active=st.booleans(),
    lockdown_exempt=st.booleans(),
    doors=st.dictionaries(st.sampled_from(["main", "hall", "cage", "noc"]),
                          st.lists(st.sampled_from([ALWAYS, BUSINESS]), min_size=1, max_size=2).map(tuple)),
)
states = st.builds(
    AccessState,
    location=st.dictionaries(st.integers(1, 5), st.sampled_from(["outside", "lobby", "hall"])),
    waiting=st.dictionaries(st.sampled_from(["main", "hall", "cage", "noc"]),
                            st.tuples(st.integers(1, 5), moments)),
    lockdown_all=st.booleans(),
    lockdown_doors=st.sets(st.sampled_from(["main", "hall", "cage", "noc"])),
)
requests = st.builds(Request, door=doors, now=moments, direction=st.sampled_from(["in", "out"]),
                     factors=factor_sets, failed=st.sets(st.sampled_from(list(Factor))).map(frozenset))


@settings(max_examples=500, deadline=None)
@given(credentials, requests, states)
def test_a_grant_means_every_rule_held(credential: Credential, request: Request, state: AccessState) -> None:
    before = copy.deepcopy(state)
    decision = decide(credential, request, state)
    assert state == before, "decide() must not change the state"
    assert decision.granted == decision.reason.value.startswith("granted")
    if not decision.granted:
        return
    now, door = request.now, request.door
    assert credential.status == "active" and credential.person_active
    assert credential.valid_from is None or credential.valid_from <= now
    assert credential.valid_until is None or now < credential.valid_until
    assert credential.lockdown_exempt or not state.locked_down(door.key)
    assert any(s.is_open(now) for s in credential.doors[door.key])
    assert door.factors <= request.factors
    destination = door.destination(request.direction)
    if destination is not None and state.location.get(credential.person_id) == destination:
        assert door.passback_mode(request.direction) is not AntiPassback.HARD
    if door.two_person:
        assert decision.companion is not None and decision.companion != credential.person_id


@settings(max_examples=300, deadline=None)
@given(credentials, requests, states)
def test_presenting_more_factors_never_turns_a_grant_into_a_denial(
    credential: Credential, request: Request, state: AccessState
) -> None:
    if decide(credential, request, state).granted:
        more = Request(request.door, request.now, request.direction, frozenset(Factor), request.failed)
        assert decide(credential, more, state).granted


@settings(max_examples=300, deadline=None)
@given(moments)
def test_schedule_matches_local_wall_clock(now: datetime) -> None:
    local = now.astimezone(BERLIN)
    expected = local.weekday() < 5 and 7 <= local.hour < 19 and local.date() != date(2026, 12, 24)
    assert BUSINESS.is_open(now) == expected


def test_schedule_follows_daylight_saving_time() -> None:
    """07:00 Berlin is 06:00 UTC in winter and 05:00 UTC in summer."""
    assert BUSINESS.is_open(datetime(2026, 1, 14, 6, 0, tzinfo=UTC))
    assert not BUSINESS.is_open(datetime(2026, 1, 14, 5, 59, tzinfo=UTC))
    assert BUSINESS.is_open(datetime(2026, 7, 15, 5, 0, tzinfo=UTC))


# --- the snapshot the bridge decides from -----------------------------------------------------------

def test_snapshot_from_the_database_decides_like_the_site_file_says(
    engine: Engine, site: SiteConfig, keys: object
) -> None:
    pepper = keys.pin_pepper()  # type: ignore[attr-defined]
    with Session(engine) as session, session.begin():
        sync_site(session, site)
        ada, _ = people.add_person(session, "test", "Ada", levels=["staff", "hall-a-engineers"])
        people.add_credential(session, "test", ada.id, "wiegand26", "12:1001", pepper=pepper, pin="4711")
        bob, _ = people.add_person(session, "test", "Bob", levels=["staff"])
        bob_card, _ = people.add_credential(session, "test", bob.id, "wiegand26", "12:1002", pepper=pepper)
        people.set_credential_status(session, "test", bob_card.id, "revoked", "lost in the car park")
    with Session(engine) as session:
        snap = load_snapshot(session)
    ada_rec, bob_rec = snap.credential("wiegand26", "12:1001"), snap.credential("wiegand26", "12:1002")
    assert ada_rec is not None and bob_rec is not None and snap.credential("wiegand26", "12:9999") is None
    assert check_pin(pepper, "4711", ada_rec.pin_hash) and not check_pin(pepper, "4712", ada_rec.pin_hash)
    hall, noc = snap.doors["hall-a"], snap.doors["noc"]
    assert hall.factors == CARD_PIN and hall.anti_passback is AntiPassback.HARD
    assert snap.doors["cage-7"].two_person
    state = AccessState()
    assert decide(ada_rec.view, at(hall, factors=CARD_PIN), state).reason is Reason.GRANTED
    assert decide(ada_rec.view, at(noc), state).reason is Reason.GRANTED  # staff: NOC in business hours
    assert decide(ada_rec.view, at(noc, datetime(2026, 12, 13, 9, tzinfo=UTC)), state).reason is Reason.OUTSIDE_SCHEDULE
    assert decide(bob_rec.view, at(snap.doors["main-entrance"]), state).reason is Reason.CREDENTIAL_REVOKED
