"""Stock esp-rfid devices against a real Mosquitto run with the configuration `badge-bridge mqtt broker-config`
generates, and the bridge: events kept while the bridge is away, each account confined to its topics, tamper
and Home Assistant mode end to end, and the contract refused on an esp-rfid controller's topics (issue 12)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.config import ControllerConfig
from badge_bridge.controllers.esp_rfid import esp_users
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, DeadLetter
from badge_bridge.sim.broker import Broker
from badge_bridge.topics import EspChannel
from badge_bridge.topics import esp_rfid as esp_topics
from tests.conftest import example_site, let_the_bridge_read, require_mosquitto, secured_broker
from tests.console_commands import command, operator
from tests.mqtt_clients import Client
from tests.test_mqtt_bridge import Site, entries, kinds
from tests.waiting import wait_until

PREFIX = "badge-bridge/v1"
IP = "10.20.0.31"  # esp-noc's address in site.example.toml
CARD = "04a1b2c3"


@pytest.fixture
def site_broker(tmp_path: Path) -> Iterator[Broker]:
    """The broker generated for the example site with a second esp-rfid device, esp-lab, that the bridge's
    site file does not have (so it is only an account on the broker)."""
    require_mosquitto()
    config = example_site(tmp_path)
    lab = ControllerConfig(key="esp-lab", kind="esp-rfid", device="10.20.0.32")
    broker = secured_broker(tmp_path, config.model_copy(update={"controllers": [*config.controllers, lab]}))
    broker.start()
    yield broker
    broker.stop()


def seed_noc_operator(site: Site) -> None:
    """Someone whose esp-rfid card opens the NOC at any hour."""
    with Session(site.engine) as session, session.begin():
        person, _ = people.add_person(session, "test", "Nora", levels=["noc-24x7"])
        people.add_credential(session, "test", person.id, "ascii", CARD.upper(), pepper=site.keys.pin_pepper())


@pytest.fixture
def secured(tmp_path: Path, sqlite_url: str, site_broker: Broker, keys: KeyStore) -> Iterator[Site]:
    """The site with the bridge logging in as bridge-1, its password given in the site file (which overrides
    the keys folder's)."""
    s = Site(tmp_path, sqlite_url, site_broker, keys,
             ('topic_prefix = "badge-bridge/v1"', 'topic_prefix = "badge-bridge/v1"\nusername = "bridge-1"\n'
                                                  f'password = "{site_broker.passwords["bridge-1"]}"'))
    seed_noc_operator(s)
    yield s
    s.close()


@pytest.fixture
def open_site(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore) -> Iterator[Site]:
    s = Site(tmp_path, db_url, broker, keys)
    seed_noc_operator(s)
    yield s
    s.close()


class EspDevice(Client):
    """A stock esp-rfid on the wire: MQTT 3.1.1 (AsyncMqttClient), every publication at QoS 0, its commands
    subscribed at QoS 2 (mqtt.esp onMqttConnect)."""

    def __init__(self, broker: Broker, user: str = "esp-noc", topic: str = "esp-noc", *,
                 home_assistant: bool = False) -> None:
        self.topics = esp_topics(topic)
        # mqtt.esp setupMqtt: in Home Assistant mode the last will is "offline", retained, QoS 2, on <topic>/avty
        super().__init__(broker, user, protocol=mqtt.MQTTv311,
                         will=(self.topics.availability, "offline") if home_assistant else None)
        self.subscribe(self.topics.commands, qos=2)

    def send(self, message: dict[str, Any], channel: EspChannel = "send") -> None:
        topic = next(t for t, c in self.topics.inbound().items() if c == channel)
        self.publish(topic, json.dumps(message, separators=(",", ":")), qos=0)

    def commands(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.payloads(self.topics.commands)]

    def power_cut(self) -> None:
        """The connection drops without a DISCONNECT: the broker publishes the last will."""
        self.client.loop_stop()
        self.client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]


def access(uid: str = CARD, result: str = "Always", **extra: Any) -> dict[str, Any]:
    return {"uid": uid, "username": "Nora", "access": result, "time": int(time.time()), "doorName": "noc",
            "type": "access", "isKnown": "true", "hostname": "esp-noc", **extra}


def log_event(src: str, desc: str, level: str = "INFO", after_s: int = 0) -> dict[str, Any]:
    """log.esp writeEvent; the same event in the same second is the same message (esp-rfid sends no id)."""
    return {"type": level, "src": src, "desc": desc, "data": "", "time": int(time.time()) + after_s,
            "cmd": "event", "hostname": "esp-noc"}


def dead_letters(site: Site) -> list[DeadLetter]:
    with Session(site.engine) as session:
        return list(session.scalars(select(DeadLetter)))


def alarms(site: Site, kind: str) -> list[Alarm]:
    with Session(site.engine) as session:
        return list(session.scalars(select(Alarm).where(Alarm.kind == kind)))


# --- the broker ------------------------------------------------------------------------


def test_events_an_esp_rfid_sends_while_the_bridge_is_away_arrive_when_it_returns(secured: Site) -> None:
    watcher = Client(secured.broker, "watcher")
    watcher.subscribe("esp-noc/send")
    device = EspDevice(secured.broker)
    secured.start_bridge()
    wait_until(lambda: any(m["cmd"] == "adduser" for m in device.commands()), what="user sync")
    secured.stop_bridge()
    for message in (access(), log_event("door", "Door Open", after_s=1), log_event("door", "Door Closed", after_s=2)):
        device.send(message)  # QoS 0, as the firmware publishes
    wait_until(lambda: len(watcher.payloads("esp-noc/send")) == 3, what="the broker to have them")
    secured.broker.restart()  # the queue is in the persistence file, too
    secured.start_bridge()
    wait_until(lambda: {"access.granted", "door.opened", "door.closed"} <= set(kinds(secured.engine)),
               what="the events sent while the bridge was away")
    granted = next(e for e in entries(secured.engine) if e.kind == "access.granted")
    assert granted.door == "noc" and json.loads(granted.detail)["offline"] is True
    device.close()
    watcher.close()


def test_esp_rfid_events_wait_in_the_broker_until_the_bridge_acknowledges_them(site_broker: Broker) -> None:
    """upgrade_outgoing_qos: the bridge's session gets QoS 0 publications at its subscription's QoS 1, so an
    event it received but never acknowledged (it died before the commit) comes again."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600

    def bridge_session() -> Client:
        return Client(site_broker, "bridge-1", client_id="badge-bridge-probe", clean_start=False,
                      properties=props)

    bridge = bridge_session()
    bridge.client.manual_ack_set(True)
    bridge.subscribe("esp-noc/send")
    device = EspDevice(site_broker)
    device.send(access())
    wait_until(lambda: bridge.received, what="delivery")
    assert bridge.received[0][2] == 1  # QoS 1: the broker keeps it until the PUBACK
    bridge.client.disconnect()  # no PUBACK sent
    bridge.client.loop_stop()
    again = bridge_session()
    wait_until(lambda: again.received, what="redelivery")
    assert json.loads(again.received[0][1]) == json.loads(bridge.received[0][1])
    again.close()
    device.close()


# --- the ACL -----------------------------------------------------------------------------------------


def test_the_documented_acl_lets_each_account_do_its_job(secured: Site) -> None:
    watcher = Client(secured.broker, "watcher")
    watcher.subscribe(f"{PREFIX}/bridge/status/+/+")
    device = EspDevice(secured.broker)
    secured.start_bridge()
    # the bridge commands the device: its user list ...
    wait_until(lambda: [m["cmd"] for m in device.commands()][:2] == ["deletusers", "adduser"], what="user sync")
    # ... reads it ...
    device.send(access())
    wait_until(lambda: "access.granted" in kinds(secured.engine), what="the device's report")
    # ... a console's unlock reaches it ...
    console = Client(secured.broker, "console")
    unlock = command(secured.keys, operator(secured.engine), door="noc", duration_s=5)
    console.publish(f"{PREFIX}/console/commands", unlock.model_dump_json())
    wait_until(lambda: {"cmd": "opendoor", "doorip": IP} in device.commands(), what="opendoor")
    # ... and a contract controller on its own account still works
    lobby = secured.sim("ctl-lobby")
    lobby.present("main-in", None, "wiegand26", "12:1001")
    lobby.wait_for_command(lambda cmd: cmd.type == "grant")
    # No refused publish threw the bridge off: its status never said offline, so no controller fell back.
    statuses = [json.loads(p)["online"] for p in watcher.payloads(f"{PREFIX}/bridge/status/bridge-1/b1")]
    assert statuses and all(statuses), statuses
    assert secured.bridge is not None and secured.bridge.mqtt is not None and secured.bridge.mqtt.connected.is_set()
    assert device.disconnects == 0 and "input.rejected" not in kinds(secured.engine)
    for client in (watcher, device, console):
        client.close()


def test_a_device_account_is_confined_to_its_own_topics(secured: Site) -> None:
    watcher = Client(secured.broker, "watcher")
    watcher.subscribe("#")
    noc, lab = EspDevice(secured.broker), EspDevice(secured.broker, "esp-lab", "esp-lab")
    lab.subscribe("esp-noc/cmd")  # it may ask; it never gets esp-noc's commands
    secured.start_bridge()
    wait_until(lambda: any(m["cmd"] == "adduser" for m in noc.commands()), what="user sync")
    forged_unlock = {"v": 1, "id": "c-evil", "ts": datetime.now(UTC).isoformat(), "type": "unlock",
                     "user": "guard1", "reason": "x", "door": "noc"}
    attempts = [
        (lab, "esp-noc/send", access(uid="deadbeef")),  # another device's topic
        (lab, "esp-noc/cmd", {"cmd": "opendoor", "doorip": IP}),  # another device's commands
        (noc, f"{PREFIX}/console/commands", forged_unlock),
        (noc, f"{PREFIX}/controllers/ctl-lobby/events", {"v": 1, "id": "e1", "ts": datetime.now(UTC).isoformat(),
                                                          "type": "rex", "door": "main-entrance"}),
        (noc, f"{PREFIX}/bridge/status/bridge-1/b1", {"v": 1, "online": False, "instance": "b1"}),
        (noc, "esp-lab/cmd", {"cmd": "opendoor", "doorip": "10.20.0.32"}),
        (lab, "homeassistant/lock/esp-noc/lock0/config", {"name": "not yours"}),
    ]
    for device, topic, message in attempts:
        device.publish(topic, json.dumps(message), qos=1)  # acknowledged once the broker has dealt with it
    # Home Assistant mode's own topics are the device's to write
    noc.publish("homeassistant/lock/esp-noc/lock0/config", json.dumps({"name": "esp-noc Lock0"}), qos=0, retain=True)
    noc.publish("esp-noc/io/door", "OFF", qos=0)
    noc.send(access())  # after the refused ones, on the same broker: it arrives, so they would have
    wait_until(lambda: "access.granted" in kinds(secured.engine), what="the device's own report")
    wait_until(lambda: any(t == "esp-noc/send" for t, _, _ in watcher.received), what="the watcher")
    seen = {(t, p) for t, p, _ in watcher.received}
    assert {"homeassistant/lock/esp-noc/lock0/config", "esp-noc/io/door"} <= {t for t, _ in seen}
    assert not seen & {(topic, json.dumps(message).encode()) for _, topic, message in attempts}
    assert {"cmd": "opendoor", "doorip": IP} not in noc.commands()
    assert lab.payloads("esp-noc/cmd") == [] and noc.payloads("esp-lab/cmd") == []
    assert kinds(secured.engine).count("access.granted") == 1 and "door.exit_request" not in kinds(secured.engine)
    assert noc.disconnects == lab.disconnects == 0  # a refused publish does not throw a device off either
    for client in (watcher, noc, lab):
        client.close()


# --- the bridge with stock esp-rfid messages ---------------------------------------------------------


def test_a_contract_message_on_an_esp_rfid_controllers_topic_is_refused(open_site: Site) -> None:
    # The generated ACL keeps these topics from the bridge (esp-noc is no contract controller); behind a broker
    # that lets them through, the bridge's own check still refuses them.
    let_the_bridge_read(open_site.broker, f"{PREFIX}/controllers/+/events", f"{PREFIX}/controllers/+/status")
    device = EspDevice(open_site.broker)
    open_site.start_bridge()
    intruder = Client(open_site.broker, "anyone")
    forged = {"v": 1, "id": "forged-1", "ts": datetime.now(UTC).isoformat(), "type": "credential",
              "reader": "noc-in", "card": {"format": "ascii", "number": CARD}}
    intruder.publish(f"{PREFIX}/controllers/esp-noc/events", json.dumps(forged))
    intruder.publish(f"{PREFIX}/controllers/esp-noc/status", json.dumps({"v": 1, "online": False}))
    wait_until(lambda: len(dead_letters(open_site)) == 2, what="two dead letters")
    assert all(d.reason.startswith("unknown_topic: esp-noc is an esp-rfid device") and "esp-noc/send" in d.reason
               for d in dead_letters(open_site))
    device.send(access())  # the device's own report on its own topic is still read
    wait_until(lambda: "access.granted" in kinds(open_site.engine), what="the device's report")
    assert not any(m["cmd"] == "opendoor" for m in device.commands())
    assert "controller.offline" not in kinds(open_site.engine)
    intruder.close()
    device.close()


def test_poison_on_an_esp_rfid_topic_is_dead_lettered_and_the_bridge_keeps_serving(open_site: Site) -> None:
    # Before: the lone surrogate put unencodable text into the dead letter's reason and stalled the audit
    # writer; the deep nesting and the long number raised out of the parser and left the message unacked.
    device = EspDevice(open_site.broker)
    open_site.start_bridge()
    poison = [b'{"\\ud800":1}', b"[" * 5000, b'{"type":"heartbeat","time":1,"uptime":' + b"9" * 5000 + b"}"]
    for payload in poison:
        device.publish("esp-noc/send", payload, qos=1)
    wait_until(lambda: len(dead_letters(open_site)) == 3, what="three dead letters")
    assert all(d.reason.startswith("invalid_message: payload ") for d in dead_letters(open_site))
    device.send(access())
    wait_until(lambda: "access.granted" in kinds(open_site.engine), what="the next good report")
    device.close()


def test_esp_rfid_tamper_raises_an_alarm_and_the_door_closing_clears_it(open_site: Site) -> None:
    device = EspDevice(open_site.broker)
    open_site.start_bridge()
    device.send(log_event("tamper", "Door was tampered!", "WARN"))
    wait_until(lambda: alarms(open_site, "reader.tamper"), what="tamper alarm")
    [alarm] = alarms(open_site, "reader.tamper")
    assert (alarm.source, alarm.cleared_at) == ("noc-in", None)
    device.send(log_event("door", "Door Closed", after_s=1))
    wait_until(lambda: alarms(open_site, "reader.tamper")[0].cleared_at is not None, what="tamper cleared")
    assert kinds(open_site.engine).count("reader.tamper_cleared") == 1
    device.send(log_event("door", "Door Open", after_s=2))
    device.send(log_event("door", "Door Closed", after_s=3))  # no tamper up: nothing more to clear
    wait_until(lambda: kinds(open_site.engine).count("door.closed") == 2, what="second closing")
    assert kinds(open_site.engine).count("reader.tamper_cleared") == 1
    device.close()


def test_a_device_in_home_assistant_mode_is_understood(open_site: Site) -> None:
    open_site.start_bridge()
    device = EspDevice(open_site.broker, home_assistant=True)
    device.publish("esp-noc/avty", "online", qos=0, retain=True)  # mqtt.esp mqttPublishAvty
    tag = {k: v for k, v in access(cmd="log").items() if k not in ("type", "isKnown", "hostname")}
    device.send(tag, "tag")
    wait_until(lambda: "access.granted" in kinds(open_site.engine), what="the /tag report")
    device.power_cut()  # the broker publishes the last will, "offline" on esp-noc/avty
    wait_until(lambda: alarms(open_site, "controller.offline"), what="offline from the last will")
    assert alarms(open_site, "controller.offline")[0].source == "esp-noc"
    back = EspDevice(open_site.broker, home_assistant=True)
    back.publish("esp-noc/avty", "online", qos=0, retain=True)
    wait_until(lambda: alarms(open_site, "controller.offline")[0].cleared_at is not None, what="back online")
    assert not dead_letters(open_site)
    back.close()


def test_a_credential_the_device_cannot_hold_never_stops_the_bridge(open_site: Site) -> None:
    """An ascii card esp-rfid cannot store ("PROBE-1": a hyphen) once made the bridge hang half-started."""
    with Session(open_site.engine) as session, session.begin():
        person, _ = people.add_person(session, "test", "Pat", levels=["noc-24x7"])
        people.add_credential(session, "test", person.id, "ascii", "PROBE-1", pepper=open_site.keys.pin_pepper())
    bridge = open_site.start_bridge()
    assert bridge.processor is not None
    users = esp_users(open_site.config, bridge.processor.snapshot, "esp-noc")
    assert [u.uid for u in users] == [CARD.lower()]
