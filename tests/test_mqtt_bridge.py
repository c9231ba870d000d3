"""The bridge against a real Mosquitto with simulated controllers: round trips, alarms, offline operation,
credential sync, bad input, metrics, and losing nothing through a SIGKILL or a broker restart."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.bridge import Bridge
from badge_bridge.config import load_config
from badge_bridge.controllers import contract as c
from badge_bridge.db import make_engine
from badge_bridge.events import Event
from badge_bridge.instance_status import InstanceStatus
from badge_bridge.keys import KeyStore, card_digest
from badge_bridge.models import Alarm, AuditEntry, DeadLetter
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.site_sync import sync_site
from tests.bridge_proc import BridgeProcess
from tests.conftest import let_the_bridge_read, write_site
from tests.console_commands import command, operator
from tests.waiting import wait_until

PEOPLE = [("Ada", ["staff", "hall-a-engineers"], "12:1001", "4711"),
          ("Grace", ["staff", "hall-a-engineers"], "12:1002", None),
          ("Alan", ["staff"], "12:1003", None)]
QUICK_DOORS = ('held_open_limit_s = 30', 'held_open_limit_s = 1')
NOW = datetime.now(UTC).isoformat().encode()
"""A time inside the offline window, for messages that must be refused for another reason."""


def seed(engine: Engine, site_file: Path, keys: KeyStore) -> None:
    with Session(engine) as session, session.begin():
        sync_site(session, load_config(site_file))
        for name, levels, card, pin in PEOPLE:
            person, _ = people.add_person(session, "test", name, levels=levels)
            people.add_credential(session, "test", person.id, "wiegand26", card, pepper=keys.pin_pepper(), pin=pin)


def listen(broker: Broker, topic: str, parse=json.loads, account: str = "watcher") -> tuple[mqtt.Client, list]:
    """A plain MQTT client on ``account`` (default: the test-only watcher) collecting what arrives on
    ``topic``, parsed; returns once the broker has confirmed the subscription, so nothing published after that
    is missed."""
    received: list = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(*broker.login(account))
    client.on_message = lambda _c, _u, m: received.append(parse(m.payload))
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    wait_until(subscribed.is_set, 10, f"the broker to confirm the subscription to {topic}")
    return client, received


def entries(engine: Engine, chain: str = "bridge-1") -> list[AuditEntry]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.chain_id == chain).order_by(AuditEntry.seq)))


def kinds(engine: Engine, *exclude: str) -> list[str]:
    return [e.kind for e in entries(engine) if e.kind not in ("bridge.started", "bridge.stopped",
                                                                "controller.online", "alarm.cleared", *exclude)]


class Site:
    """A seeded site with an in-process bridge and simulated controllers on the test's own broker."""

    def __init__(self, tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore, *replacements: tuple[str, str]):
        self.site_file = write_site(tmp_path, db_url, QUICK_DOORS, *replacements, broker_port=broker.port)
        self.config = load_config(self.site_file)
        self.engine = make_engine(db_url)
        self.keys = keys
        self.broker = broker
        seed(self.engine, self.site_file, keys)
        self.bridge: Bridge | None = None
        self.status: InstanceStatus | None = None
        """The bridge process's own status connection, as `badge-bridge run` keeps it (failover/runner.py)."""
        self.sims: list[SimController] = []

    def start_bridge(self) -> Bridge:
        self.bridge = Bridge(self.config, self.engine, self.keys)
        self.bridge.start()
        self.status = InstanceStatus(self.config, self.config.site.instance, "b1")
        self.status.start("active")
        return self.bridge

    def stop_bridge(self) -> None:
        assert self.bridge is not None and self.status is not None
        self.bridge.stop()
        self.status.stop()  # retained offline: the controllers decide alone
        self.bridge = self.status = None

    def sim(self, key: str, account: str | None = None, **kw: object) -> SimController:
        """A simulated controller ``key`` on its own account, or on ``account`` (``anyone``: the test-only
        account that may publish anywhere, for poison the ACL would otherwise stop before the bridge)."""
        readers = {r.key: r.door for r in self.config.readers if r.controller == key}
        if "username" not in kw:
            kw["username"], kw["password"] = self.broker.login(account or key)
        sim = SimController(key, "127.0.0.1", self.broker.port, sync_key=self.keys.sync_key(key), readers=readers,
                            walk_delay_s=0.05, walk_fraction=0.05, **kw)  # type: ignore[arg-type]
        sim.wait_connected()
        self.sims.append(sim)
        return sim

    def close(self) -> None:
        for sim in self.sims:
            sim.close()
        if self.bridge is not None:
            self.stop_bridge()
        self.engine.dispose()


@pytest.fixture
def site(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore) -> Iterator[Site]:
    s = Site(tmp_path, db_url, broker, keys)
    yield s
    s.close()


def test_round_trip_grant_deny_and_walk_through(site: Site) -> None:
    console, feed = listen(site.broker, "badge-bridge/v1/bridge/events", c.PublishedEvents.model_validate_json)
    site.start_bridge()
    lobby = site.sim("ctl-lobby")
    lobby.present("main-in", None, "wiegand26", "12:1001")
    grant = lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Grant))
    assert grant.door == "main-entrance" and grant.open_time_s == 5
    lobby.present("main-in", None, "wiegand26", "12:4242")
    deny = lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Deny))
    assert deny.reason == "unknown_credential"
    wait_until(lambda: kinds(site.engine).count("door.closed") == 1, what="walk-through")
    logged = kinds(site.engine)
    assert sorted(logged) == ["access.denied", "access.granted", "door.closed", "door.opened"]
    assert logged.index("access.granted") < logged.index("door.opened") < logged.index("door.closed")
    with Session(site.engine) as session:
        assert session.scalar(select(func.count()).select_from(Alarm)) == 0
    # consoles saw every committed event live, in log order, as the log has it
    # bridge.started is committed as the bridge starts, before or after MQTT is up: it may or may not be live
    logged_ids = [e.event_id for e in entries(site.engine) if e.kind != "bridge.started"]

    def live_events() -> list[c.PublishedEvent]:
        return [e for batch in list(feed) for e in batch.events if e.kind != "bridge.started"]

    wait_until(lambda: len(live_events()) == len(logged_ids), what="live feed",
               detail=lambda: [e.kind for e in live_events()])
    console.loop_stop()
    live = live_events()
    assert [e.id for e in live] == logged_ids
    granted = next(e for e in live if e.kind == "access.granted")
    assert granted.subject == {"person": 1, "credential": 1} and granted.detail["reader"] == "main-in"


def test_forced_and_held_open_alarms_and_retained_door_state(site: Site) -> None:
    site.start_bridge()
    lobby = site.sim("ctl-lobby")
    watcher, states = listen(site.broker, "badge-bridge/v1/bridge/doors/main-entrance")
    lobby.open_door("main-entrance")  # nobody presented anything: forced
    wait_until(lambda: any(s["alarms"] == ["door.forced", "door.held_open"] for s in states), what="held open")
    lobby.close_door("main-entrance")
    wait_until(lambda: states[-1]["contact"] == "closed" and states[-1]["alarms"] == [], what="cleared")
    watcher.loop_stop()
    assert kinds(site.engine) == ["door.forced", "alarm.raised", "door.held_open", "alarm.raised", "door.closed"]
    with Session(site.engine) as session:
        alarms = session.scalars(select(Alarm).order_by(Alarm.id)).all()
    assert [(a.kind, a.state, a.cleared_at is not None) for a in alarms] == [
        ("door.forced", "open", True), ("door.held_open", "open", True)]


def test_a_burst_of_door_changes_leaves_the_latest_state_retained(site: Site) -> None:
    """Door states are published once per tick with the state as it then is: after a burst of passages the
    retained state a console gets on connecting is the last one, never a stale one published late."""
    site.start_bridge()
    lobby = site.sim("ctl-lobby")
    watcher, states = listen(site.broker, "badge-bridge/v1/bridge/doors/main-entrance")
    for _ in range(30):
        lobby.rex("main-entrance")
        lobby.open_door("main-entrance")
        lobby.close_door("main-entrance")
    lobby.wait_published()
    wait_until(lambda: kinds(site.engine).count("door.closed") == 30, what="the passages committed")
    wait_until(lambda: states and states[-1]["contact"] == "closed", what="the closed door published")
    watcher.loop_stop()
    late, retained = listen(site.broker, "badge-bridge/v1/bridge/doors/main-entrance", account="watcher")
    wait_until(lambda: retained, what="the retained door state")
    late.loop_stop()
    assert retained[0]["contact"] == "closed" and retained[0]["alarms"] == []
    assert "door.forced" not in kinds(site.engine)


def test_controller_decides_offline_and_the_bridge_ingests_it_later(site: Site) -> None:
    site.start_bridge()
    lobby = site.sim("ctl-lobby")
    sync = lobby.wait_for_sync()
    assert card_digest(site.keys.sync_key("ctl-lobby"), "wiegand26", "12:1003") in {e.card for e in sync.entries}
    site.stop_bridge()  # its instance's status says offline: the controller decides alone
    wait_until(lambda: lobby.offline, what="controller to notice the bridge is away")
    presented_at = datetime.now(UTC)
    lobby.present("main-in", None, "wiegand26", "12:1003")
    lobby.present("main-in", None, "wiegand26", "12:4242")
    lobby.wait_published()
    wait_until(lambda: datetime.now(UTC) > presented_at + timedelta(seconds=1),
               what="a second to pass, so the bridge ingests the decisions well after they were made")
    site.start_bridge()
    wait_until(lambda: kinds(site.engine).count("access.denied") == 1, what="offline events")
    access = [e for e in entries(site.engine) if e.kind.startswith("access.")]
    assert [e.kind for e in access] == ["access.granted", "access.denied"]
    for entry in access:
        detail = json.loads(entry.detail)
        assert detail["offline"] is True and detail["sync_version"] == sync.version
        assert abs(entry.ts_us / 1e6 - presented_at.timestamp()) < 2  # the controller's time, not the ingest time
        assert entry.received_us - entry.ts_us > 500_000


def test_revoking_a_card_resyncs_the_controllers(site: Site) -> None:
    site.start_bridge()
    lobby = site.sim("ctl-lobby")
    first = lobby.wait_for_sync()
    digest = card_digest(site.keys.sync_key("ctl-lobby"), "wiegand26", "12:1003")
    assert digest in {e.card for e in first.entries}
    with Session(site.engine) as session, session.begin():
        _, event = people.set_credential_status(session, "test", 3, "revoked", "left the company")
    writer = AuditWriter(site.engine, "bridge-1.cli", site.keys.signer())
    writer.start()
    writer.submit(event)
    writer.stop()
    second = lobby.wait_for_sync(lambda s: s.version != first.version)
    assert digest not in {e.card for e in second.entries} and len(second.entries) == len(first.entries) - 1
    lobby.present("main-in", None, "wiegand26", "12:1003")
    assert lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Deny)).reason == "credential_revoked"


@pytest.mark.parametrize("payload, code, topic", [
    (b"{not json", "malformed_json", None),
    (b'{"v":1,"id":"x1","ts":"2026-01-01T00:00:00Z","type":"door","door":"main-entrance","state":7}',
     "invalid_message", None),
    (b'{"v":1,"id":"x2","ts":"2026-01-01T00:00:00","type":"rex","door":"main-entrance"}', "invalid_message", None),
    (b'{"v":1,"id":"x3","ts":"2026-01-01T00:00:00Z","type":"rex","door":"main-entrance","extra":1}',
     "invalid_message", None),
    (b"[" * 20_000, "oversized", None),
    (b'{"v":1,"id":"x4","ts":"%s","type":"rex","door":"vault"}' % NOW, "unknown_door", None),
    (b'{"v":1,"id":"x5","ts":"%s","type":"rex","door":"main-entrance"}' % NOW, "unknown_controller",
     "badge-bridge/v1/controllers/ctl-ghost/events"),
    (b'{"v":1,"id":"x6","ts":"2099-01-01T00:00:00Z","type":"rex","door":"main-entrance"}', "future_time", None),
], ids=["malformed", "wrong-type", "naive-time", "extra-field", "oversized", "unknown-door", "unknown-controller",
        "future-time"])  # not the payloads: one holds the time of collection, which xdist's workers must agree on
def test_bad_input_is_dead_lettered_counted_and_the_bridge_keeps_serving(
    site: Site, payload: bytes, code: str, topic: str | None
) -> None:
    if code == "unknown_controller":
        # The generated ACL keeps another controller's topic from the bridge; behind a broker that lets it
        # through (a hand-written pattern, say), the bridge's own check still stops it.
        let_the_bridge_read(site.broker, "badge-bridge/v1/controllers/+/events")
    bridge = site.start_bridge()
    lobby = site.sim("ctl-lobby", "anyone")
    lobby.publish_raw(payload, topic=topic)
    wait_until(lambda: kinds(site.engine) == ["input.rejected"], what="dead letter")
    with Session(site.engine) as session:
        (letter,) = session.scalars(select(DeadLetter))
    assert letter.reason.startswith(code) and letter.payload == payload[:4096]
    assert letter.payload_size == len(payload) and letter.payload_sha256 == hashlib.sha256(payload).hexdigest()
    lobby.present("main-in", None, "wiegand26", "12:1001")
    lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Grant))
    port = bridge.metrics_server.server_address[1]  # type: ignore[union-attr]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'badge_bridge_dead_letters_total{{code="{code}"}} 1.0' in metrics
    assert 'badge_bridge_decisions_total{reason="granted",result="granted"} 1.0' in metrics


def test_replayed_message_id_is_dead_lettered_and_opens_nothing(site: Site) -> None:
    site.start_bridge()
    lobby = site.sim("ctl-lobby", walk_through=False)
    lobby.present("main-in", None, "wiegand26", "12:1001")
    lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Grant))
    replay = lobby.sent[-1].model_dump_json()
    lobby.publish_raw(replay)
    wait_until(lambda: "input.rejected" in kinds(site.engine), what="replay refused")
    # The bridge handles the lobby's messages and sends it commands in order: a grant for the replay would
    # arrive before the denial of the next card.
    lobby.present("main-in", None, "wiegand26", "12:4242")
    lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Deny))
    assert sum(isinstance(cmd, c.Grant) for cmd in lobby.commands) == 1


def test_health_and_metrics_endpoints(site: Site) -> None:
    bridge = site.start_bridge()
    port = bridge.metrics_server.server_address[1]  # type: ignore[union-attr]
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
    assert health["status"] == "ok" and health["mqtt"] == "connected" and health["database"] == "ok"
    site.sim("ctl-lobby")
    site.sim("ctl-hall-a")
    wait_until(lambda: b"badge_bridge_controllers_online 2.0" in urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=5).read(), what="controllers online")
    site.broker.stop()
    wait_until(lambda: not bridge.mqtt.connected.is_set(), what="disconnect")  # type: ignore[union-attr]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    assert err.value.code == 503 and json.loads(err.value.read())["mqtt"] == "disconnected"
    site.broker.start()


def _commits_scraped(port: int, writer: AuditWriter) -> tuple[float, int]:
    """``badge_bridge_audit_commit_seconds_count`` from one scrape of /metrics, with the writer's batch count at
    that moment (scraped again if the bridge committed something meanwhile)."""
    while True:
        batches = writer.stats.batches
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if writer.stats.batches == batches:
            (line,) = [x for x in text.splitlines() if x.startswith("badge_bridge_audit_commit_seconds_count ")]
            return float(line.split()[1]), batches


def test_commit_time_histogram_counts_every_batch(site: Site) -> None:
    """Between two scrapes the commit-time count grows by the batches committed, past the last 1000 (a Summary
    over recent batches stopped there, so rate() was wrong)."""
    bridge = site.start_bridge()
    port = bridge.metrics_server.server_address[1]  # type: ignore[union-attr]
    assert bridge.writer.flush()
    first, first_batches = _commits_scraped(port, bridge.writer)
    for i in range(1001):
        bridge.writer.submit(Event(id=f"batch:{i}", kind="access.granted", source="test", ts=datetime.now(UTC)))
        assert bridge.writer.flush()  # one event, one batch
    second, second_batches = _commits_scraped(port, bridge.writer)
    assert second - first == second_batches - first_batches >= 1001


# --- nothing lost, nothing doubled --------------------------------------------------------------------

STREAM = 5_000
READERS = {"ctl-lobby": ["main-in", "main-out"], "ctl-hall-a": ["hall-a-out", "cage-7-in"]}


def publish_stream(sims: list[SimController], n: int, rate_per_s: float) -> list[str]:
    """``n`` card presentations spread over the controllers, paced; returns their event ids."""
    ids = []
    started = time.monotonic()
    for i in range(n):
        sim = sims[i % len(sims)]
        reader = READERS[sim.key][i // len(sims) % len(READERS[sim.key])]
        card = PEOPLE[i % len(PEOPLE)][2] if i % 4 else f"77:{i % 60000}"
        ids.append(f"{sim.key}:{sim.present(reader, None, 'wiegand26', card)}")
        delay = started + (i + 1) / rate_per_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for sim in sims:
        sim.wait_published(timeout=120)
    return ids


def stream_ids_in_log(engine: Engine) -> list[str]:
    """The decisions on the stream's presentations (not what the bridge concludes from them: a grant the
    lobby camera saw nobody use is an ``access.unused`` of its own)."""
    with engine.connect() as conn:
        return list(conn.scalars(select(AuditEntry.event_id)
                                 .where(AuditEntry.kind.in_(("access.granted", "access.denied")))))


def assert_exactly_once(engine: Engine, db_url: str, keys: KeyStore, ids: list[str]) -> None:
    wait_until(lambda: len(stream_ids_in_log(engine)) >= len(ids), timeout=120, what="every event in the log")
    logged = stream_ids_in_log(engine)
    assert sorted(logged) == sorted(ids)  # every one, once
    report = verify(engine, db_url, keys.trusted_public_keys())
    assert report.ok, report.findings[:5]


@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
    tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore, bridge_process: Callable[[Path], BridgeProcess]
) -> None:
    site_file = write_site(tmp_path, db_url, broker_port=broker.port)
    engine = make_engine(db_url)
    seed(engine, site_file, keys)
    bridge = bridge_process(site_file)
    bridge.start()
    config = load_config(site_file)
    sims = [SimController(k, "127.0.0.1", broker.port, readers={r.key: r.door for r in config.readers
                                                                  if r.controller == k}, walk_through=False, sync_key=keys.sync_key(k),
                          username=k, password=broker.passwords[k])
            for k in READERS]
    for sim in sims:
        sim.wait_connected()
    result: list[str] = []
    publisher = threading.Thread(target=lambda: result.extend(publish_stream(sims, STREAM, 1000)))
    publisher.start()
    wait_until(lambda: len(stream_ids_in_log(engine)) >= 1000, timeout=60, what="a first part of the stream")
    bridge.kill()
    killed_at = len(stream_ids_in_log(engine))
    sent_at_kill = sum(len(sim.sent) for sim in sims)
    wait_until(lambda: sum(len(sim.sent) for sim in sims) >= sent_at_kill + 500 or not publisher.is_alive(),
               what="presentations published while the bridge is down")
    bridge.start()
    publisher.join()
    assert killed_at < STREAM, "the kill came too late to test anything"
    assert_exactly_once(engine, db_url, keys, result)
    assert bridge.signal() == 0
    for sim in sims:
        sim.close()
    engine.dispose()


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing(site: Site, db_url: str) -> None:
    site.start_bridge()
    sims = [site.sim(k, walk_through=False) for k in READERS]
    result: list[str] = []
    publisher = threading.Thread(target=lambda: result.extend(publish_stream(sims, 2_000, 500)))
    publisher.start()
    wait_until(lambda: len(stream_ids_in_log(site.engine)) >= 300, timeout=60, what="a first part of the stream")
    site.broker.restart(down_s=1.0)
    publisher.join()
    assert_exactly_once(site.engine, db_url, site.keys, result)


def _started_bridge(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore,
                    bridge_process: Callable[[Path], BridgeProcess]) -> BridgeProcess:
    """`badge-bridge run` on a seeded site, started."""
    site_file = write_site(tmp_path, db_url, broker_port=broker.port)
    engine = make_engine(db_url)
    seed(engine, site_file, keys)
    engine.dispose()
    bridge = bridge_process(site_file)
    bridge.start()
    return bridge


def test_run_logs_json_lines(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore,
                             bridge_process: Callable[[Path], BridgeProcess]) -> None:
    bridge = _started_bridge(tmp_path, db_url, broker, keys, bridge_process)
    assert bridge.signal() == 0
    lines = [json.loads(line) for line in bridge.output().splitlines() if line.startswith("{")]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert any("started for site" in line["msg"] for line in lines)
    assert any(line["msg"].startswith("MQTT connected") for line in lines)


def test_stock_esp_rfid_device_is_understood_synced_and_driven(site: Site) -> None:
    """esp-noc speaks esp-rfid's own JSON on its own topics (see badge_bridge/controllers/esp_rfid.py)."""
    with Session(site.engine) as session, session.begin():
        people.add_credential(session, "test", 1, "ascii", "04A1B2C3", pepper=site.keys.pin_pepper())
    esp, device = listen(site.broker, "esp-noc/cmd", account="esp-noc")
    site.start_bridge()
    wait_until(lambda: any(m.get("cmd") == "adduser" for m in device), what="user sync")
    assert device[0] == {"cmd": "deletusers", "doorip": "10.20.0.31"}
    assert [m["uid"] for m in device if m.get("cmd") == "adduser"] == ["04a1b2c3"]
    now = int(time.time())
    for message in ({"uid": "04a1b2c3", "pincode": "", "username": "credential 4", "access": "Always", "time": now,
                     "doorName": "noc", "type": "access", "isKnown": "true", "hostname": "esp-noc"},
                    {"type": "INFO", "src": "door", "desc": "Door Open", "data": "", "time": now + 1,
                     "cmd": "event", "hostname": "esp-noc"}):
        esp.publish("esp-noc/send", json.dumps(message), qos=1).wait_for_publish(5)
    wait_until(lambda: "door.opened" in kinds(site.engine), what="esp-rfid events")
    access = next(e for e in entries(site.engine) if e.kind == "access.granted")
    assert access.door == "noc" and json.loads(access.detail)["reason"] == "esp-rfid:Always"
    assert json.loads(access.detail)["offline"] is True
    assert "door.forced" not in kinds(site.engine)  # the device's own grant authorized the opening
    assert site.bridge is not None and site.bridge.processor is not None
    unlock = command(site.keys, operator(site.engine), door="noc", duration_s=5)
    site.bridge.processor.console_command(unlock, unlock.model_dump_json().encode(), "console/commands", None)
    wait_until(lambda: {"cmd": "opendoor", "doorip": "10.20.0.31"} in device, what="opendoor")
    esp.loop_stop()
