"""The simulated controller against a real Mosquitto, with a plain paho client standing in for the bridge."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from badge_bridge.config import ControllerConfig
from badge_bridge.controllers import command_mac, contract
from badge_bridge.keys import card_digest
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import (
    PIN_UNVERIFIABLE_OFFLINE,
    DemoPerson,
    Reader,
    SimController,
    controllers_from_site,
    run_demo_traffic,
)
from badge_bridge.topics import Topics
from tests.conftest import example_site, require_mosquitto, secured_broker
from tests.waiting import wait_until

PREFIX = "test/v1"
SYNC_KEY = b"k" * 32
CONTROLLERS = ("ctl-1", "ctl-2", "ctl-3", "ctl-x", "ctl-y", "ctl-demo")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """The broker generated for a site of this module's controllers under PREFIX: the fake bridge logs in on
    the bridge's account, each simulated controller on its own."""
    require_mosquitto()
    config = example_site(tmp_path)
    config = config.model_copy(update={
        "mqtt": config.mqtt.model_copy(update={"topic_prefix": PREFIX}), "cameras": [],
        "controllers": [ControllerConfig(key=key, kind="mqtt") for key in CONTROLLERS]})
    b = secured_broker(tmp_path, config)
    b.start()
    yield b
    b.stop()


def controller(broker: Broker, key: str, **kw: Any) -> SimController:
    """A simulated controller ``key`` under PREFIX on its own account."""
    username, password = broker.login(key)
    return SimController(key, "127.0.0.1", broker.port, PREFIX, username=username, password=password, **kw)


class FakeBridge:
    """Subscribes like the bridge does (persistent session, QoS 1) and records everything it receives."""

    def __init__(self, broker: Broker, client_id: str = "fake-bridge") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(*broker.login("bridge-1"))
        self.client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        # clean_start False from the first connect: Mosquitto 2.0 restores a session after a restart only
        # if it was created that way (one made with clean start and an expiry survives reconnects only).
        self.client.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        topics = Topics(PREFIX)
        client.subscribe([(topics.controller_events(), 1), (topics.controller_status(), 1)])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def payloads(self, topic_end: str = "/events") -> list[bytes]:
        with self.lock:
            return [m.payload for m in self.messages if m.topic.endswith(topic_end)]

    def events(self) -> list[contract.ControllerEvent]:
        return [contract.controller_event.validate_json(p) for p in self.payloads()]

    def wait(self, condition: Callable[[FakeBridge], bool], timeout: float = 10.0) -> None:
        wait_until(lambda: condition(self), timeout, "messages at the bridge",
                   detail=lambda: f"received: {self.payloads('')}")

    def wait_event(self, predicate: Callable[[contract.ControllerEvent], bool], timeout: float = 10.0
                   ) -> contract.ControllerEvent:
        return wait_until(lambda: next((e for e in self.events() if predicate(e)), None), timeout,
                          "a matching event at the bridge", detail=lambda: f"received: {self.payloads('')}")

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(f"{PREFIX}/{topic}", payload, qos=1, retain=retain).wait_for_publish(5)

    def command(self, controller: str, cmd: contract.Grant | contract.Deny | contract.Unlock | contract.Lock |
                contract.Lockdown) -> None:
        """As the bridge sends it: with its MAC (every sim here has SYNC_KEY as its sync key)."""
        self.publish(f"controllers/{controller}/commands", command_mac.sealed(cmd, SYNC_KEY))

    def sync(self, controller: str, sync: contract.CredentialSync) -> None:
        """Retained and sealed, as the bridge publishes a controller's offline list."""
        self.publish(f"controllers/{controller}/sync", command_mac.sealed(sync, SYNC_KEY), retain=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def bridge(broker: Broker) -> Iterator[FakeBridge]:
    b = FakeBridge(broker)
    yield b
    b.close()


@pytest.fixture
def sim(broker: Broker) -> Iterator[SimController]:
    s = controller(broker, "ctl-1", sync_key=SYNC_KEY, walk_fraction=0.2,
                      walk_delay_s=0.05)
    s.wait_connected()
    yield s
    if not s._closed:
        s.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _id(prefix: str = "b") -> str:
    return f"{prefix}{time.monotonic_ns()}"


# --- events --------------------------------------------------------------------------------------


def test_events_arrive_valid_per_contract(bridge: FakeBridge, sim: SimController) -> None:
    before = _now()
    ids = [
        sim.present("main-in", "main-entrance", "wiegand26", "12:1001"),
        sim.present("hall-a-in", "hall-a", "wiegand26", "12:1002", pin="4711"),
        sim.present("cage-7-in", "cage-7", "wiegand26", "12:1002", biometric={"match": True, "ref": "grace"}),
        sim.open_door("main-entrance"),
        sim.close_door("main-entrance"),
        sim.rex("noc"),
        sim.tamper(True, reader="main-in"),
        sim.tamper(False),
        sim.heartbeat(),
    ]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith(f"{sim.nonce}.") for i in ids)
    bridge.wait(lambda b: len(b.payloads()) == len(ids))
    events = bridge.events()  # validate_json raises on anything off-contract
    assert [e.id for e in events] == ids
    assert [e.type for e in events] == ["credential"] * 3 + ["door", "door", "rex", "tamper", "tamper",
                                                             "heartbeat"]
    for e in events:
        assert e.ts.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= e.ts <= _now()
    first = events[0]
    assert isinstance(first, contract.CredentialPresented)
    assert first.card == contract.Card(format="wiegand26", number="12:1001")
    assert first.offline is None  # online: the bridge decides
    assert events[1].pin == "4711"  # type: ignore[union-attr]
    assert events[2].biometric == contract.Biometric(match=True, ref="grace")  # type: ignore[union-attr]
    # Wire form: no nulls, times in UTC ISO 8601.
    raw = json.loads(bridge.payloads()[7])
    assert raw == {"v": 1, "id": ids[7], "ts": raw["ts"], "type": "tamper", "state": "cleared"}
    assert raw["ts"].endswith("Z")


def test_publish_raw_sends_anything(bridge: FakeBridge, sim: SimController) -> None:
    sim.publish_raw(b"{not json")
    bridge.wait(lambda b: b.payloads() == [b"{not json"])


def test_ids_differ_between_runs(broker: Broker) -> None:
    a = controller(broker, "ctl-x")
    b = controller(broker, "ctl-y")
    try:
        assert a.next_id() != b.next_id()
        assert a.nonce != b.nonce
    finally:
        a.close()
        b.close()


# --- commands ------------------------------------------------------------------------------------


def test_grant_walks_through(bridge: FakeBridge, sim: SimController) -> None:
    request = sim.present("main-in", "main-entrance", "wiegand26", "12:1001")
    grant = contract.Grant(type="grant", id=_id(), ts=_now(), door="main-entrance", reader="main-in", request=request,
                           open_time_s=1.0)
    bridge.command("ctl-1", grant)
    assert sim.wait_for_command(lambda c: c.type == "grant").model_copy(update={"mac": None}) == grant
    opened = bridge.wait_event(lambda e: e.type == "door" and e.state == "opened")  # type: ignore[union-attr]
    closed = bridge.wait_event(lambda e: e.type == "door" and e.state == "closed")  # type: ignore[union-attr]
    assert opened.door == closed.door == "main-entrance"  # type: ignore[union-attr]
    assert opened.ts < closed.ts
    assert sim.contact["main-entrance"] == "closed"

    # A command sent again (same id, valid MAC) is not acted on twice: a replay is refused and reported.
    bridge.command("ctl-1", grant)
    bridge.command("ctl-1", contract.Lock(type="lock", id=_id(), ts=_now(), door="main-entrance"))
    sim.wait_for_command(lambda c: c.type == "lock")  # in order: the replayed grant was handled before it
    assert [c.type for c in sim.commands] == ["grant", "lock"]
    assert [why for _, why in sim.refused] == [f"replayed id {grant.id}"]
    bridge.wait_event(lambda e: e.type == "tamper")
    assert [e.type for e in bridge.events()].count("door") == 2

    # The same request decided again after a failover: same id, a new message: acted on once, not a replay.
    bridge.command("ctl-1", grant.model_copy(update={"ts": _now()}))
    bridge.command("ctl-1", contract.Lock(type="lock", id=_id(), ts=_now(), door="main-entrance"))
    wait_until(lambda: [c.type for c in sim.commands] == ["grant", "lock", "lock"], what="the second lock")
    assert [why for _, why in sim.refused] == [f"replayed id {grant.id}"]


def test_stale_grant_is_ignored(bridge: FakeBridge, sim: SimController) -> None:
    sim.walk_delay_s = 60.0  # a walk started for the grant would still be a pending timer when the test looks
    old = contract.Grant(type="grant", id=_id(), ts=_now() - timedelta(minutes=5), door="main-entrance", request="x.1",
                         open_time_s=1.0)
    bridge.command("ctl-1", old)
    sim.wait_for_command(lambda c: c.id == old.id)  # a command is recorded once it has been acted on
    assert not sim._timers
    assert bridge.payloads() == []


def test_no_walk_through_when_disabled(bridge: FakeBridge, broker: Broker) -> None:
    sim = controller(broker, "ctl-2", sync_key=SYNC_KEY, walk_through=False, walk_delay_s=60.0)
    sim.wait_connected()
    try:
        bridge.command("ctl-2", contract.Grant(type="grant", id=_id(), ts=_now(), door="d", request="x.1", open_time_s=1))
        sim.wait_for_command()  # acted on: a walk would now be a pending timer (see test_stale_grant_is_ignored)
        assert not sim._timers
        assert bridge.payloads() == []
    finally:
        sim.close()


def test_unlock_lock_lockdown_update_lock_state(bridge: FakeBridge, sim: SimController) -> None:
    bridge.command("ctl-1", contract.Unlock(type="unlock", id=_id(), ts=_now(), door="a", by="guard", reason="delivery"))
    bridge.command("ctl-1", contract.Unlock(type="unlock", id=_id(), ts=_now(), door="b", duration_s=0.3))
    sim.wait_for(lambda: len(sim.commands) == 2)
    assert sim.lock_state == {"a": "unlocked", "b": "unlocked"}
    sim.wait_for(lambda: sim.lock_state["b"] == "locked", timeout=5)  # a timed release locks again
    bridge.command("ctl-1", contract.Lock(type="lock", id=_id(), ts=_now(), door="a"))
    sim.wait_for(lambda: sim.lock_state["a"] == "locked")
    bridge.command("ctl-1", contract.Lockdown(type="lockdown", id=_id(), ts=_now(), active=True, doors=["a", "b"]))
    sim.wait_for(lambda: sim.lock_state == {"a": "lockdown", "b": "lockdown"})
    bridge.command("ctl-1", contract.Lock(type="lock", id=_id(), ts=_now(), door="a"))  # does not lift a lockdown
    bridge.command("ctl-1", contract.Lockdown(type="lockdown", id=_id(), ts=_now(), active=False, doors=["a", "b"]))
    sim.wait_for(lambda: sim.lock_state == {"a": "locked", "b": "locked"})


def test_bad_commands_are_rejected_not_fatal(bridge: FakeBridge, sim: SimController) -> None:
    bridge.publish("controllers/ctl-1/commands", b"{nope")
    bridge.publish("controllers/ctl-1/commands", json.dumps({"v": 1, "id": "z1", "ts": "2026-01-01T00:00:00",
                                                             "type": "lock", "door": "a"}))  # naive time
    sim.wait_for(lambda: len(sim.rejected) == 2)
    assert sim.commands == []
    bridge.publish("controllers/ctl-1/commands", contract.Lock(type="lock", id=_id(), ts=_now(), door="a")
                   .model_dump_json())  # valid, but no MAC: refused, reported, not acted on
    sim.wait_for(lambda: [why for _, why in sim.refused] == ["no MAC"])
    bridge.wait_event(lambda e: e.type == "tamper")
    assert sim.commands == [] and sim.lock_state == {}
    bridge.command("ctl-1", contract.Lock(type="lock", id=_id(), ts=_now(), door="a"))
    sim.wait_for_command()


# --- status and last will -------------------------------------------------------------------------


def _status(broker: Broker, key: str) -> Callable[[], list[tuple[dict, bool]]]:
    """A late subscriber to a controller's status: the retained message it gets, and what follows."""
    got: list[tuple[dict, bool]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(*broker.login("watcher"))
    client.on_message = lambda c, u, m: got.append((json.loads(m.payload), m.retain))
    client.connect("127.0.0.1", broker.port)
    client.subscribe(f"{PREFIX}/controllers/{key}/status", 1)
    client.loop_start()
    return lambda: list(got)


def test_retained_status_and_last_will(broker: Broker, sim: SimController) -> None:
    sim.wait_published()
    seen = _status(broker, "ctl-1")
    wait_until(lambda: len(seen()) == 1, 10, "the retained status")
    status, retained = seen()[0]
    assert retained
    assert contract.ControllerStatus.model_validate_json(json.dumps(status)).online is True
    assert status["ts"]

    sim.crash()  # the socket drops without DISCONNECT: the broker publishes the will
    wait_until(lambda: len(seen()) == 2, 10, "the last will")
    assert seen()[1] == ({"v": 1, "online": False}, False)
    later = _status(broker, "ctl-1")
    wait_until(lambda: len(later()) == 1, 10, "the retained last will")
    assert later()[0] == ({"v": 1, "online": False}, True)


def test_orderly_close_publishes_offline(broker: Broker, sim: SimController) -> None:
    sim.close()
    seen = _status(broker, "ctl-1")
    wait_until(lambda: len(seen()) == 1, 10, "the retained offline status")
    status, retained = seen()[0]
    assert retained and status["online"] is False and status["ts"]


# --- offline decisions ----------------------------------------------------------------------------


def _sync() -> contract.CredentialSync:
    now = _now()
    always = ["always"]

    def entry(number: str, **kw: object) -> contract.SyncEntry:
        return contract.SyncEntry(card=card_digest(SYNC_KEY, "wiegand26", number), **kw)  # type: ignore[arg-type]

    return contract.CredentialSync(type="sync",
        id="s1", ts=now, version="v-abc", key_id="sync-1",
        doors={
            "main-entrance": contract.SyncDoor(factors=["card"], open_time_s=1.0),
            "hall-a": contract.SyncDoor(factors=["card", "pin"]),
            "cage-7": contract.SyncDoor(factors=["card", "biometric"]),
            "vault": contract.SyncDoor(factors=["card"], two_person=True, two_person_window_s=30),
            "office": contract.SyncDoor(factors=["card"]),
        },
        schedules={
            "always": contract.SyncSchedule(tz="UTC", intervals=[(d, 0, 1440) for d in range(7)]),
            "never": contract.SyncSchedule(tz="Europe/Berlin", intervals=[]),
            "today": contract.SyncSchedule(tz="UTC", intervals=[(d, 0, 1440) for d in range(7)],
                                           holidays=[now.date()]),
        },
        entries=[
            entry("12:1001", doors={"main-entrance": always, "hall-a": always, "cage-7": always,
                                    "vault": always, "office": ["never"]}, biometric_ref="ada"),
            entry("12:1002", doors={"vault": always, "main-entrance": ["today"]}),
            entry("12:1003", doors={"main-entrance": always}, valid_until=now - timedelta(days=1)),
            entry("12:1004", doors={"main-entrance": always}, valid_from=now + timedelta(days=1)),
        ],
    )


def test_offline_decisions_from_sync(bridge: FakeBridge, sim: SimController) -> None:
    sync = _sync()
    assert sim.present("main-in", "main-entrance", "wiegand26", "12:1001")  # online first
    bridge.sync("ctl-1", sync)
    assert sim.wait_for_sync().model_copy(update={"mac": None}) == sync
    assert not sim.offline
    # The bridge's retained status says it is gone (its last will): the controller decides alone.
    bridge.publish("bridge/status/bridge-1/b1", contract.BridgeStatus(online=False, instance="b1").model_dump_json(
        exclude_none=True), retain=True)
    sim.wait_for(lambda: sim.offline)

    def present(door: str, number: str, **kw: object) -> contract.OfflineDecision:
        eid = sim.present(f"{door}-in", door, "wiegand26", number, **kw)  # type: ignore[arg-type]
        event = bridge.wait_event(lambda e: e.id == eid)
        assert isinstance(event, contract.CredentialPresented) and event.offline is not None
        assert event.offline.sync_version == "v-abc"
        return event.offline

    granted = present("main-entrance", "12:1001")
    assert (granted.granted, granted.reason) == (True, "granted")
    # A local grant lets the person walk through.
    bridge.wait_event(lambda e: e.type == "door" and e.state == "closed")  # type: ignore[union-attr]
    assert [e.type for e in bridge.events()][-3:] == ["credential", "door", "door"]

    cases = [
        (("main-entrance", "99:9999"), {}, "unknown_credential"),
        (("main-entrance", "12:1003"), {}, "expired"),
        (("main-entrance", "12:1004"), {}, "not_yet_valid"),
        (("main-entrance", "12:1002"), {}, "holiday"),
        (("office", "12:1001"), {}, "outside_schedule"),
        (("hall-a", "12:1002"), {}, "no_access_level"),
        (("hall-a", "12:1001"), {"pin": "4711"}, PIN_UNVERIFIABLE_OFFLINE),
        (("cage-7", "12:1001"), {}, "biometric_required"),
        (("cage-7", "12:1001"), {"biometric": {"match": True, "ref": "bob"}}, "biometric_mismatch"),
        (("cage-7", "12:1001"), {"biometric": {"match": False, "ref": "ada"}}, "biometric_mismatch"),
        (("nowhere", "12:1001"), {}, "unknown_door"),
        (("vault", "12:1001"), {}, "two_person_waiting"),
        (("vault", "12:1001"), {}, "two_person_same_person"),
    ]
    for (door, number), kw, reason in cases:
        decision = present(door, number, **kw)
        assert (decision.granted, decision.reason) == (False, reason), (door, number, kw)
    assert present("vault", "12:1002").reason == "granted_two_person"
    ok = present("cage-7", "12:1001", biometric={"match": True, "ref": "ada", "score": 0.9})
    assert (ok.granted, ok.reason) == (True, "granted")

    # A lockdown received earlier holds offline too.
    bridge.command("ctl-1", contract.Lockdown(type="lockdown", id=_id(), ts=_now(), active=True, doors=["main-entrance"]))
    sim.wait_for_command(lambda c: c.type == "lockdown")
    assert present("main-entrance", "12:1001").reason == "lockdown"

    # The bridge is back: decisions are its own again.
    bridge.publish("bridge/status/bridge-1/b1", contract.BridgeStatus(online=True, instance="b1").model_dump_json(
        exclude_none=True), retain=True)
    sim.wait_for(lambda: not sim.offline)
    eid = sim.present("main-in", "main-entrance", "wiegand26", "12:1001")
    assert bridge.wait_event(lambda e: e.id == eid).offline is None  # type: ignore[union-attr]


def test_offline_keeps_device_time_and_schedule(broker: Broker, bridge: FakeBridge) -> None:
    # Saturday 2026-03-07 10:00 UTC: "business" hours are Monday to Friday.
    saturday = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
    sim = controller(broker, "ctl-3", sync_key=SYNC_KEY, clock=lambda: saturday)
    sim.wait_connected()
    try:
        sync = contract.CredentialSync(type="sync",
            id="s2", ts=_now(), version="v2", key_id="k", doors={"d": contract.SyncDoor(factors=["card"])},
            schedules={"business": contract.SyncSchedule(tz="Europe/Berlin",
                                                         intervals=[(d, 420, 1140) for d in range(5)])},
            entries=[contract.SyncEntry(card=card_digest(SYNC_KEY, "wiegand34", "77"), doors={"d": ["business"]})])
        bridge.sync("ctl-3", sync)
        sim.wait_for_sync()
        sim.go_offline()
        eid = sim.present("r", "d", "wiegand34", "77")
        event = bridge.wait_event(lambda e: e.id == eid)
        assert event.ts == saturday
        assert event.offline == contract.OfflineDecision(  # type: ignore[union-attr]
            granted=False, reason="outside_schedule", sync_version="v2")
        sim.go_online()
        eid = sim.present("r", "d", "wiegand34", "77")
        assert bridge.wait_event(lambda e: e.id == eid).offline is None  # type: ignore[union-attr]
    finally:
        sim.close()


def test_offline_without_sync_denies(bridge: FakeBridge, sim: SimController) -> None:
    sim.go_offline()
    eid = sim.present("main-in", "main-entrance", "wiegand26", "12:1001")
    event = bridge.wait_event(lambda e: e.id == eid)
    assert event.offline == contract.OfflineDecision(granted=False, reason="no_sync")  # type: ignore[union-attr]


# --- delivery across a broker restart ---------------------------------------------------------------


def _restarts_persistently(broker: Broker) -> None:
    broker.stop()
    assert (broker.dir / "mosquitto.db").exists(), "Mosquitto wrote no persistence file"
    broker.start()


def test_events_survive_broker_restart(broker: Broker, bridge: FakeBridge, sim: SimController
                                       ) -> None:
    ids = [sim.heartbeat() for _ in range(20)]
    broker.stop()  # some of these may be in flight, unacknowledged
    assert (broker.dir / "mosquitto.db").exists(), "Mosquitto wrote no persistence file"
    sim.wait_for(lambda: not sim.connected)
    ids += [sim.open_door(f"d{i}") for i in range(20)]  # published while the broker is down
    broker.start()
    sim.wait_connected(timeout=15)
    ids += [sim.close_door(f"d{i}") for i in range(20)]
    sim.wait_published(timeout=15)
    bridge.wait(lambda b: {e.id for e in b.events()} >= set(ids), timeout=20)
    assert {e.id for e in bridge.events()} == set(ids)


def test_events_survive_restart_mid_stream(broker: Broker, bridge: FakeBridge, sim: SimController
                                           ) -> None:
    stop = threading.Event()
    ids: list[str] = []

    def publish() -> None:
        while not stop.is_set():
            ids.append(sim.heartbeat())
            time.sleep(0.01)

    t = threading.Thread(target=publish)
    t.start()
    wait_until(lambda: len(ids) >= 20, 10, "a stream under way")
    _restarts_persistently(broker)
    sim.wait_connected(timeout=15)
    after_restart = len(ids)
    wait_until(lambda: len(ids) >= after_restart + 20, 10, "the stream going on after the restart")
    stop.set()
    t.join()
    sim.wait_published(timeout=15)
    bridge.wait(lambda b: {e.id for e in b.events()} >= set(ids), timeout=20)


# --- the demo ----------------------------------------------------------------------------------------


def test_demo_traffic(broker: Broker, bridge: FakeBridge) -> None:
    sim = controller(broker, "ctl-demo", readers=[
        Reader("main-in", "main-entrance"), Reader("hall-a-in", "hall-a", "keypad"),
        Reader("cage-7-in", "cage-7", "biometric")])
    sim.wait_connected()
    stop = threading.Event()
    people = [("Ada", ["staff"], "12:1001", "4711"), ("Alan", ["staff"], "12:1003", None),  # demo.DEMO_PEOPLE rows
              DemoPerson("Eve", "4242", fmt="wiegand34", biometric_ref="eve")]
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        run_demo_traffic([sim], people, stop, interval=(0.005, 0.01))))
    t.start()
    try:
        bridge.wait(lambda b: len(b.payloads()) >= 30)
    finally:
        stop.set()
        t.join()
        sim.close()
    events = bridge.events()
    assert result[0] >= 30
    assert {e.type for e in events} <= {"credential", "rex"}
    assert any(getattr(e, "pin", None) for e in events)
    assert any(getattr(e, "biometric", None) for e in events)


def test_controllers_from_site(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    """Each on its own account (from the keys folder) on the broker generated for the site."""
    require_mosquitto()
    site = example_site(tmp_path)
    broker = secured_broker(tmp_path, site)
    broker.start()
    sims = controllers_from_site(site, keys, host="127.0.0.1", port=broker.port)
    try:
        assert set(sims) == {"ctl-lobby", "ctl-hall-a"}  # the esp-rfid one speaks its own protocol
        assert sims["ctl-hall-a"].readers["hall-a-in"] == Reader("hall-a-in", "hall-a", "keypad")
        assert sims["ctl-lobby"].sync_key == keys.sync_key("ctl-lobby")
        for s in sims.values():
            s.wait_connected()
    finally:
        for s in sims.values():
            s.close()
        broker.stop()


def test_a_stale_unlock_is_ignored_but_a_stale_lockdown_applies(bridge: FakeBridge, sim: SimController) -> None:
    """A valid MAC on a command captured earlier: an unlock opens nothing once old, a lockdown still locks."""
    old = _now() - timedelta(minutes=5)
    bridge.command("ctl-1", contract.Unlock(type="unlock", id=_id(), ts=old, door="a"))
    bridge.command("ctl-1", contract.Lockdown(type="lockdown", id=_id(), ts=old, active=True, doors=["b"]))
    sim.wait_for_command(lambda c: c.type == "lockdown")
    assert sim.lock_state == {"b": "lockdown"} and [c.type for c in sim.commands] == ["unlock", "lockdown"]
