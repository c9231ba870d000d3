"""What survives a restart (badge_bridge/ingest/persist.py), tried as the operator who restarts the bridge
and as the attacker who times a restart.

The restart matrix: each state is set through the real paths (console commands over MQTT, cards at
simulated controllers) on a real bridge process, the process is stopped (SIGTERM) or killed (SIGKILL), a
new one starts on the same database, and the door must behave as before. Then unit tests of the
persistence module itself: round trip, the journal, expiry, and rows a DBA edited into garbage.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from badge_bridge.config import SiteConfig, load_config
from badge_bridge.controllers import contract as c
from badge_bridge.db import make_engine
from badge_bridge.doors import FORCED, HELD_OPEN, DoorMonitor
from badge_bridge.ingest import persist
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry, SiteState
from badge_bridge.policy import AccessState, Credential, Decision, Door, Reason, Request
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.topics import Topics
from tests.bridge_proc import BridgeProcess
from tests.conftest import write_site
from tests.console_commands import command, operator
from tests.test_ingest import Rig as IngestRig
from tests.test_mqtt_bridge import listen, seed
from tests.waiting import wait_until

ADA, GRACE, ALAN = "12:1001", "12:1002", "12:1003"
"""Ada (person 1, PIN 4711) and Grace (2) may enter hall A and cage 7; Alan (3) only the lobby."""
SITE_CHANGES = (
    ("held_open_limit_s = 30", "held_open_limit_s = 1"),  # the main entrance: held open after 1 s
    ('factors = ["card", "biometric"]', 'factors = ["card"]'),  # cage 7: two people with cards
    ('name = "Lobby"', 'name = "Lobby"\nanti_passback = "soft"'),  # the lobby flags re-entry (hall A denies it)
    ("max_future_s = 30", "max_future_s = 60"),  # a controller's clock may run ahead past a two-person window
)
STOPS = ["sigterm", "sigkill"]
UNLOCK_S = 40
"""A timed unlock that outlasts a restart on a busy machine."""
SHORT_S = 8
"""One that ends while the bridge is down."""
TWO_PERSON_S = 30


class Rig:
    """A seeded site on the test's database and broker, a bridge process, two simulated controllers and a
    console's MQTT client."""

    def __init__(self, tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore,
                 bridge_process: Callable[[Path], BridgeProcess]) -> None:
        self.site_file = write_site(tmp_path, db_url, *SITE_CHANGES, broker_port=broker.port)
        self.config = load_config(self.site_file)
        self.topics = Topics(self.config.mqtt.topic_prefix)
        self.engine = make_engine(db_url)
        self.broker = broker
        seed(self.engine, self.site_file, keys)
        self.bridge = bridge_process(self.site_file)
        self.bridge.start()
        self.skew = timedelta(0)
        """How far ahead of real time the hall A controller's clock runs."""
        self.lobby = self._sim("ctl-lobby", keys)
        self.hall = self._sim("ctl-hall-a", keys, clock=lambda: datetime.now(UTC) + self.skew)
        self.keys = keys
        self.session = operator(self.engine, "supervisor", "supervisor")
        """The console session the operator's commands name (tests/console_commands.py)."""
        self.console = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.console.username_pw_set(*broker.login("console"))
        self.console.connect("127.0.0.1", broker.port)
        self.console.loop_start()
        self.listeners: list[mqtt.Client] = []

    def _sim(self, key: str, keys: KeyStore, **kw: object) -> SimController:
        readers = {r.key: r.door for r in self.config.readers if r.controller == key}
        username, password = self.broker.login(key)
        sim = SimController(key, "127.0.0.1", self.broker.port, sync_key=keys.sync_key(key), readers=readers,
                            walk_through=False, username=username, password=password, **kw)  # type: ignore[arg-type]
        sim.go_online()  # always asks the bridge: a card while it restarts waits for it in the broker
        sim.wait_connected()
        return sim

    def close(self) -> None:
        for client in self.listeners:
            client.loop_stop()
        for sim in (self.lobby, self.hall):
            sim.close()
        self.console.loop_stop()
        self.console.disconnect()
        self.engine.dispose()

    # --- acting --------------------------------------------------------------------------------------

    def stop(self, stop: str) -> None:
        """SIGTERM (a graceful stop: the bridge flushes its log) or SIGKILL."""
        if stop == "sigkill":
            self.bridge.kill()
        else:
            assert self.bridge.signal(signal.SIGTERM) == 0

    def start(self) -> datetime:
        """A new bridge process on the same database; returns when it began starting."""
        began = datetime.now(UTC)
        self.bridge.start()
        assert "state restored from the database" in self.bridge.output()
        return began

    def restart(self, stop: str) -> datetime:
        self.stop(stop)
        return self.start()

    def card(self, sim: SimController, reader: str, number: str, pin: str | None = None) -> c.Grant | c.Deny:
        """A card at a reader, and the bridge's answer to it."""
        request = sim.present(reader, None, "wiegand26", number, pin=pin)
        answer = sim.wait_for_command(lambda cmd: isinstance(cmd, (c.Grant, c.Deny)) and cmd.request == request, 30)
        assert isinstance(answer, (c.Grant, c.Deny))
        return answer

    def committed(self, event_id: str) -> AuditEntry:
        def find() -> AuditEntry | None:
            with Session(self.engine) as session:
                return session.scalar(select(AuditEntry).where(AuditEntry.chain_id == "bridge-1",
                                                               AuditEntry.event_id == event_id))
        return wait_until(find, 30, f"{event_id} in the audit log")

    def entries(self, kind: str, door: str | None = None) -> list[AuditEntry]:
        with Session(self.engine) as session:
            query = select(AuditEntry).where(AuditEntry.chain_id == "bridge-1", AuditEntry.kind == kind)
            if door is not None:
                query = query.where(AuditEntry.door == door)
            return list(session.scalars(query.order_by(AuditEntry.seq)))

    def state_row(self, key: str) -> dict[str, str]:
        """A fact as the bridge wrote it (committed with the audit entry that changed it)."""
        with Session(self.engine) as session:
            value = session.scalar(select(SiteState.value).where(SiteState.key == key))
        assert value is not None, key
        return json.loads(value)

    def alarms(self, door: str) -> dict[str, Alarm]:
        with Session(self.engine) as session:
            return {a.kind: a for a in session.scalars(select(Alarm).where(Alarm.door == door))}

    def door_states(self, door: str) -> list[dict[str, object]]:
        """Start collecting the door states the bridge publishes from now on (the retained one first)."""
        client, states = listen(self.broker, self.topics.door_state(door))
        self.listeners.append(client)
        return states


def console(rig: Rig, type_: str, **fields: object) -> str:
    """An operator's command as the console sends it (signed, naming the operator's session), acknowledged by
    the broker; returns its audit event id. The one place these tests send console commands."""
    cmd = command(rig.keys, rig.session, type=type_, user="supervisor", reason="restart test",
                  **{"door": None, **fields})
    rig.console.publish(rig.topics.console_commands(), cmd.model_dump_json(), qos=1).wait_for_publish(10)
    return f"console:{cmd.id}"


def when(entry: AuditEntry) -> datetime:
    return datetime.fromtimestamp(entry.ts_us / 1e6, UTC)


def restored_commands(sim: SimController) -> list[c.Command]:
    return [cmd for cmd in sim.commands if cmd.id.startswith("restore-")]


def detail(entry: AuditEntry) -> dict[str, object]:
    return json.loads(entry.detail)


def published_after(states: list[dict[str, object]], at: datetime) -> Callable[[], dict[str, object] | None]:
    return lambda: next((s for s in reversed(states) if datetime.fromisoformat(str(s["ts"])) >= at), None)


@pytest.fixture
def rig(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore,
        bridge_process: Callable[[Path], BridgeProcess]) -> Iterator[Rig]:
    r = Rig(tmp_path, db_url, broker, keys, bridge_process)
    yield r
    r.close()


# --- the restart matrix -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop", STOPS)
def test_site_lockdown_survives_and_is_lifted_after(rig: Rig, stop: str) -> None:
    rig.committed(console(rig, "lockdown"))
    assert rig.card(rig.lobby, "main-in", ALAN).reason == "lockdown"
    began = rig.restart(stop)
    doors = rig.door_states("main-entrance")
    assert (deny := rig.card(rig.lobby, "main-in", ALAN)).type == "deny" and deny.reason == "lockdown"
    (again,) = wait_until(lambda: restored_commands(rig.lobby), 30, "the lockdown commanded again")
    assert isinstance(again, c.Lockdown) and again.active and again.doors == ["main-entrance"]
    assert wait_until(published_after(doors, began), 30, "the door state published")["lock"] == "lockdown"
    rig.committed(console(rig, "lift_lockdown"))
    assert rig.card(rig.lobby, "main-in", ALAN).type == "grant"


@pytest.mark.parametrize("stop", STOPS)
def test_area_lockdown_survives(rig: Rig, stop: str) -> None:
    rig.committed(console(rig, "lockdown", area="hall-a"))
    rig.restart(stop)
    assert rig.card(rig.hall, "hall-a-in", ADA, pin="4711").reason == "lockdown"
    assert rig.card(rig.lobby, "main-in", ALAN).type == "grant"  # the lobby is not in the area
    again = wait_until(lambda: restored_commands(rig.hall), 30, "the area's lockdown commanded again")
    assert isinstance(again[0], c.Lockdown) and again[0].active and again[0].doors == ["cage-7", "hall-a"]
    assert not restored_commands(rig.lobby)
    rig.committed(console(rig, "lift_lockdown", area="hall-a"))
    assert rig.card(rig.hall, "hall-a-in", ADA, pin="4711").type == "grant"


@pytest.mark.parametrize("stop", STOPS)
def test_timed_unlock_holds_until_its_end_and_one_that_ended_is_relocked_at_start(rig: Rig, stop: str) -> None:
    rig.committed(console(rig, "unlock", door="main-entrance", duration_s=UNLOCK_S))
    rig.committed(console(rig, "unlock", door="hall-a", duration_s=SHORT_S))
    rig.stop(stop)
    assert not rig.entries("door.relocked"), f"stopped more than {SHORT_S} s after the unlock: too slow to test"
    ends = datetime.fromisoformat(rig.state_row("door/hall-a")["until"])
    wait_until(lambda: datetime.now(UTC) > ends, SHORT_S + 5, "the short unlock to end while the bridge is down")
    began = rig.start()
    # The unlock that ended meanwhile: relocked at start, audited as the timer would have, never re-sent.
    relocked = wait_until(lambda: rig.entries("door.relocked", "hall-a"), 30, "hall A relocked")
    assert len(relocked) == 1 and when(relocked[0]) == ends
    assert datetime.fromisoformat(str(detail(relocked[0])["relocked_at"])) >= began
    # The one still in force: the controller is told again for what is left, the door opens without a grant.
    again = wait_until(lambda: restored_commands(rig.lobby), 30, "the unlock commanded again")
    assert isinstance(again[0], c.Unlock) and again[0].door == "main-entrance"
    assert again[0].duration_s is not None and 0 < again[0].duration_s < UNLOCK_S
    assert not restored_commands(rig.hall)
    rig.lobby.open_door("main-entrance")
    opened = wait_until(lambda: rig.entries("door.opened", "main-entrance"), 30, "the opening")
    rig.lobby.close_door("main-entrance")
    wait_until(lambda: rig.entries("door.closed", "main-entrance"), 30, "the door closed")
    assert not rig.entries("door.forced") and len(opened) == 1
    # Its end: relocked by the new process's timer and audited; an opening now is forced.
    end = wait_until(lambda: rig.entries("door.relocked", "main-entrance"), UNLOCK_S + 30, "the timed relock")
    assert len(end) == 1
    rig.lobby.open_door("main-entrance")
    wait_until(lambda: rig.entries("door.forced", "main-entrance"), 30, "a forced opening after the relock")
    rig.lobby.close_door("main-entrance")


@pytest.mark.parametrize("stop", STOPS)
def test_anti_passback_positions_survive(rig: Rig, stop: str) -> None:
    ada_in = rig.card(rig.hall, "hall-a-in", ADA, pin="4711")  # into hall A (hard)
    alan_in = rig.card(rig.lobby, "main-in", ALAN)  # into the lobby (soft)
    assert ada_in.type == "grant" and alan_in.type == "grant"
    rig.committed(f"ctl-lobby:{alan_in.request}")
    rig.committed(f"ctl-hall-a:{ada_in.request}")
    rig.restart(stop)
    assert (deny := rig.card(rig.hall, "hall-a-in", ADA, pin="4711")).type == "deny"
    assert deny.reason == "anti_passback"
    flagged = rig.card(rig.lobby, "main-in", ALAN)
    assert flagged.type == "grant"
    assert detail(rig.committed(f"ctl-lobby:{flagged.request}"))["reason"] == "granted_passback_violation"
    # Out and in again is the way back in.
    assert rig.card(rig.hall, "hall-a-out", ADA, pin="4711").type == "grant"
    assert rig.card(rig.hall, "hall-a-in", ADA, pin="4711").type == "grant"


@pytest.mark.parametrize("stop", STOPS)
def test_two_person_wait_survives_within_its_window_only(rig: Rig, stop: str) -> None:
    first = rig.card(rig.hall, "cage-7-in", ADA)
    assert first.type == "deny" and first.reason == "two_person_waiting"
    rig.committed(f"ctl-hall-a:{first.request}")
    rig.restart(stop)
    # Within the window: Grace completes the pair Ada started before the restart.
    pair = rig.card(rig.hall, "cage-7-in", GRACE)
    assert pair.type == "grant", f"{pair} (restart slower than the {TWO_PERSON_S} s window?)"
    assert detail(rig.committed(f"ctl-hall-a:{pair.request}"))["companion"] == 1
    # A new wait, restarted across, and a second person past its window (the controller's clock says when).
    again = rig.card(rig.hall, "cage-7-in", ADA)
    assert again.reason == "two_person_waiting"
    waits_since = when(rig.committed(f"ctl-hall-a:{again.request}"))
    rig.restart(stop)
    rig.skew = max(timedelta(0), waits_since + timedelta(seconds=TWO_PERSON_S + 1) - datetime.now(UTC))
    late = rig.card(rig.hall, "cage-7-in", GRACE)
    assert late.type == "deny" and late.reason == "two_person_waiting"  # Grace now waits for someone else


@pytest.mark.parametrize("stop", STOPS)
def test_open_door_alarms_stay_open_and_acknowledged_and_clear_when_the_door_closes(rig: Rig, stop: str) -> None:
    rig.lobby.open_door("main-entrance")  # no grant: forced, and after a second held open
    alarms = wait_until(lambda: (a := rig.alarms("main-entrance")) and len(a) == 2 and a, 30, "forced and held open")
    assert set(alarms) == {FORCED, HELD_OPEN}
    with Session(rig.engine) as session, session.begin():  # the guard acknowledges it (web/alarms.py)
        session.execute(update(Alarm).where(Alarm.id == alarms[HELD_OPEN].id).values(
            state="acknowledged", acknowledged_by="guard", acknowledged_at=datetime.now(UTC)))
    began = rig.restart(stop)
    doors = rig.door_states("main-entrance")
    # The new process's timers have run past a relock: a held-open check after the restart has happened.
    rig.committed(console(rig, "unlock", door="hall-a", duration_s=0.1))
    wait_until(lambda: rig.entries("door.relocked", "hall-a"), 30, "a timer after the restart")
    assert len(rig.entries("alarm.raised", "main-entrance")) == 2  # not raised again
    after = rig.alarms("main-entrance")
    assert after[HELD_OPEN].state == "acknowledged" and after[FORCED].state == "open"
    assert all(a.cleared_at is None for a in after.values())
    state = wait_until(published_after(doors, began), 30, "the door state published")
    assert state["contact"] == "open" and state["alarms"] == [FORCED, HELD_OPEN]
    rig.lobby.close_door("main-entrance")
    def all_cleared() -> dict[str, Alarm] | None:
        alarms = rig.alarms("main-entrance")
        return alarms if all(a.cleared_at for a in alarms.values()) else None

    cleared = wait_until(all_cleared, 30, "both alarms cleared by the door closing")
    assert cleared[HELD_OPEN].state == "acknowledged" and cleared[FORCED].state == "open"


# --- the attacker times the restart -----------------------------------------------------------------


def test_a_lockdown_killed_before_its_commit_still_holds_after_the_restart(rig: Rig) -> None:
    """The kill lands right after the broker took the command, before or after its commit: either way
    the command is delivered again (its acknowledgement waits for the commit) and the site is locked."""
    console(rig, "lockdown")
    rig.restart("sigkill")
    assert rig.card(rig.lobby, "main-in", ALAN).reason == "lockdown"
    wait_until(lambda: rig.entries("access.denied"), 30, "the denial committed")
    assert len(rig.entries("console.lockdown")) == 1


def test_a_grant_killed_before_its_commit_still_counts_for_anti_passback(rig: Rig) -> None:
    """The controller has the grant, the bridge dies at once: re-entry after the restart is still denied
    (the presentation is delivered again, decided on the restored state, and its position written)."""
    assert rig.card(rig.hall, "hall-a-in", ADA, pin="4711").type == "grant"
    rig.restart("sigkill")
    assert rig.card(rig.hall, "hall-a-in", ADA, pin="4711").reason == "anti_passback"
    wait_until(lambda: rig.entries("access.denied"), 30, "the denial committed")
    assert len(rig.entries("access.granted", "hall-a")) == 1


# --- the persistence module -------------------------------------------------------------------------


T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
HALL = Door("hall-a", area_out="lobby", area_in="hall-a")
CAGE = Door("cage-7", area_out="hall-a", area_in="cage-7", two_person=True)


def monitor(config: SiteConfig) -> DoorMonitor:
    return DoorMonitor({d.key: (d.open_time_s, d.held_open_limit_s) for d in config.doors})


def windows(config: SiteConfig) -> dict[str, float]:
    return {d.key: d.two_person_window_s for d in config.doors if d.two_person}


def save(engine: Engine, rows: list[persist.Row], event_id: str = "e1") -> None:
    with engine.begin() as conn:
        persist.effect("bridge-1", rows, event_id, T0)(conn)


def load(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        return persist.load(session)


def test_round_trip_of_every_fact(engine: Engine, site: SiteConfig) -> None:
    state, doors = AccessState(), monitor(site)
    state.lockdown_all = True
    state.lockdown_doors |= {"noc"}
    state.record(Credential(1, 1), Request(HALL, T0), Decision(True, Reason.GRANTED))
    state.record(Credential(2, 2), Request(CAGE, T0), Decision(False, Reason.TWO_PERSON_WAITING))
    doors.set_lock("main-entrance", "unlocked", T0 + timedelta(minutes=5))
    doors.opened("hall-a", T0)
    save(engine, persist.take(state, doors))
    assert not state.journal and not doors.changed
    rows = load(engine)
    assert sorted(k for k, _ in rows) == ["door/hall-a", "door/main-entrance", "lockdown", "lockdown/door/noc",
                                    "position/1", "two-person/cage-7"]
    assert all(json.loads(v) is not None for _, v in rows)
    state2, doors2 = AccessState(), monitor(site)
    found = persist.restore(rows, state2, doors2, windows(site), T0 + timedelta(seconds=5))
    # the site lockdown also locks each door down on its own (lifting one area later leaves the others)
    every = {d.key for d in site.doors}
    assert state2.lockdown_doors == every and state2.journal == {("lockdown_door", d) for d in every - {"noc"}}
    state2.lockdown_doors -= every - {"noc"}
    state2.journal.clear()
    assert state2 == state
    assert doors2.doors["main-entrance"].lock == "lockdown"  # the site lockdown wins over the unlock
    assert doors2.doors["hall-a"].contact == "open" and doors2.doors["hall-a"].opened_at == T0
    assert found.lockdown_all and found.positions == 1 and found.waits == ["cage-7"] and not found.unreadable
    # Facts back at their defaults remove their rows; a second write of the same key replaces it.
    state.lockdown_all = False
    state.lockdown_doors -= {"noc"}
    state.location[1] = "lobby"
    state.waiting.pop("cage-7")
    doors.closed("hall-a", T0)
    doors.set_lock("main-entrance", "locked")
    save(engine, persist.take(state, doors), "e2")
    assert load(engine) == [("position/1", '"lobby"')]
    with Session(engine) as session:
        assert session.execute(select(SiteState.event_id, SiteState.updated_at)).one() == ("e2", T0)


def test_the_journal_names_only_what_a_message_changed(site: SiteConfig) -> None:
    state, doors = AccessState(location={n: "lobby" for n in range(10_000)}), monitor(site)
    assert persist.take(state, doors) == []
    state.record(Credential(7, 7), Request(HALL, T0), Decision(True, Reason.GRANTED))
    assert persist.take(state, doors) == [("position/7", '"hall-a"')]
    doors.authorize("hall-a", T0)  # a grant's moment is not kept
    state.record(Credential(8, 8), Request(HALL, T0), Decision(False, Reason.NO_ACCESS_LEVEL))
    assert persist.take(state, doors) == []


def test_expired_facts_are_dropped(site: SiteConfig) -> None:
    rows = [("two-person/cage-7", json.dumps({"person": 1, "since": T0.isoformat()})),
            ("door/hall-a", json.dumps({"lock": "unlocked", "until": (T0 + timedelta(seconds=10)).isoformat()}))]
    state, doors = AccessState(), monitor(site)
    found = persist.restore(rows, state, doors, windows(site), T0 + timedelta(seconds=31))
    assert state.waiting == {} and found.dropped == ["two-person/cage-7"]
    assert persist.take(state, doors) == [("two-person/cage-7", None)]  # its row goes with the next write
    assert doors.relock(T0 + timedelta(seconds=31)) == [("hall-a", T0 + timedelta(seconds=10))]
    within = persist.restore(rows[:1], AccessState(), monitor(site), windows(site), T0 + timedelta(seconds=29))
    assert within.waits == ["cage-7"]


GARBAGE = ["", "{", "null", "false", '"yes"', "1e999", '{"lock": "unlocked", "until": "tomorrow"}',
           '{"lock": "open"}', '{"person": "1", "since": "2026-12-03T10:00:00"}', "\x00", "[]"]


@pytest.mark.parametrize("value", GARBAGE)
def test_a_row_edited_into_garbage_is_logged_and_read_safe(site: SiteConfig, value: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    rows = [("lockdown", value), ("lockdown/door/noc", value), ("door/main-entrance", value),
            ("position/1", value), ("two-person/cage-7", value), ("door/no-such-door", '{"lock": "unlocked"}'),
            ("position/x", '"lobby"'), ("something/else", "true")]
    state, doors = AccessState(), monitor(site)
    with caplog.at_level(logging.ERROR, logger="badge_bridge.ingest.persist"):
        found = persist.restore(rows, state, doors, windows(site), T0)
    unreadable = {"lockdown", "lockdown/door/noc", "door/main-entrance", "two-person/cage-7", "door/no-such-door",
                  "position/x", "something/else"}
    if value != '"yes"':  # a string is a well-formed area name: the position is kept
        unreadable.add("position/1")
    assert set(found.unreadable) == unreadable
    assert all(key in caplog.text for key in unreadable)
    # Safe: locked down (site and door), the door locked, no two-person wait, no unlock.
    assert state.lockdown_all and "noc" in state.lockdown_doors
    assert {s.lock for s in doors.doors.values()} == {"lockdown"} and not found.unlocked
    assert state.waiting == {}


def test_a_corrupt_door_row_alone_reads_as_locked(site: SiteConfig) -> None:
    state, doors = AccessState(), monitor(site)
    found = persist.restore([("door/main-entrance", '{"lock": "unlocked", "until": 5}')], state, doors,
                            windows(site), T0)
    assert doors.doors["main-entrance"].lock == "locked" and found.unreadable == ["door/main-entrance"]
    assert persist.commands(doors, {"ctl-lobby": ["main-entrance"]}, T0) == []


# --- the processor: which audit entry each row commits with, and the start --------------------------


@pytest.fixture
def ingest(engine: Engine, site: SiteConfig, keys: KeyStore) -> Iterator[IngestRig]:
    r = IngestRig(engine, site, keys)
    yield r
    r.writer.stop()


def state_rows(engine: Engine) -> dict[str, str]:
    """key -> the audit entry it was written with."""
    with Session(engine) as session:
        return {key: event_id for key, event_id in session.execute(select(SiteState.key, SiteState.event_id))}


def test_each_fact_commits_with_the_audit_entry_that_changed_it(ingest: IngestRig, engine: Engine) -> None:
    now = ingest.clock()
    lockdown = ingest.console("lockdown", door=None, area="hall-a")
    ingest.card("12:1001", reader="hall-a-in", ctl="ctl-hall-a", pin="4711")  # denied: no position
    alan = ingest.card("12:1003")
    unlock = ingest.console("unlock", door="noc", duration_s=10)
    assert ingest.writer.flush()
    assert state_rows(engine) == {"lockdown/door/cage-7": f"console:{lockdown.id}",
                                  "lockdown/door/hall-a": f"console:{lockdown.id}",
                                  "position/3": f"ctl-lobby:{alan.id}", "door/noc": f"console:{unlock.id}"}  # type: ignore[attr-defined]
    ingest.tick(now + timedelta(seconds=11))  # the unlock ends: the relock's entry removes the door's row
    assert ingest.writer.flush()
    assert "door/noc" not in state_rows(engine)
    relock = next(e for e in ingest.entries() if e.kind == "door.relocked")
    assert when(relock) == now + timedelta(seconds=10) and relock.door == "noc"


def test_the_start_relocks_an_unlock_that_ended_while_down_and_audits_it(ingest: IngestRig, engine: Engine) -> None:
    ended, running = ingest.clock() - timedelta(minutes=3), ingest.clock() + timedelta(minutes=2)
    rows = [("door/noc", json.dumps({"lock": "unlocked", "until": ended.isoformat()})),
            ("door/main-entrance", json.dumps({"lock": "unlocked", "until": running.isoformat()})),
            ("lockdown/door/hall-a", "true"),
            ("two-person/cage-7", json.dumps({"person": 1, "since": (ingest.clock() - timedelta(hours=1)).isoformat()}))]
    found = ingest.p.restore_state(rows)
    assert found.dropped == ["two-person/cage-7"] and found.lockdown_doors == ["hall-a"]
    assert ingest.p.door_state("noc").lock == "locked" and ingest.p.door_state("main-entrance").lock == "unlocked"
    (relock,) = [e for e in ingest.entries() if e.kind == "door.relocked"]
    assert relock.door == "noc" and when(relock) == ended
    ingest.p.command_restored()
    sent = {(ctl, type(cmd).__name__, getattr(cmd, "door", None), getattr(cmd, "duration_s", None))
            for ctl, cmd in ingest.sent}
    assert sent == {("ctl-hall-a", "Lockdown", None, None), ("ctl-lobby", "Unlock", "main-entrance", 120.0)}
    assert ingest.card("12:1001", reader="hall-a-in", ctl="ctl-hall-a", pin="4711")  # the first card after the start
    assert isinstance(ingest.sent[-1][1], c.Deny) and ingest.sent[-1][1].reason == "lockdown"


def test_the_same_position_again_is_not_written_again(site: SiteConfig) -> None:
    state, doors = AccessState(), monitor(site)
    state.record(Credential(7, 7), Request(HALL, T0), Decision(True, Reason.GRANTED))
    assert persist.take(state, doors) == [("position/7", '"hall-a"')]
    state.record(Credential(7, 7), Request(HALL, T0), Decision(True, Reason.GRANTED_PASSBACK_VIOLATION))
    assert persist.take(state, doors) == []
