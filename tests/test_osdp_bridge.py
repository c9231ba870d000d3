"""The bridge as the OSDP control panel of a bus of simulated readers (libosdp PDs on a pty bus): card and
PIN to relay, denials on the LED, biometric identities, door contact alarms, secure channel enforced, a
reader killed and restarted, and noise on the line."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from osdp import Command, CommandLEDColor
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.bridge import Bridge
from badge_bridge.config import SiteConfig, load_config
from badge_bridge.controllers.osdp import OsdpBus
from badge_bridge.db import make_engine
from badge_bridge.demo import MANTRAP_READERS
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.osdp_reader import STRIKE, PtyBus, SimReader
from badge_bridge.site_sync import sync_site
from tests.conftest import write_site
from tests.waiting import wait_until

READERS = {"hall-a-in": (1, "keypad"), "hall-a-out": (2, "keypad"), "cage-7-in": (3, "biometric")}
OFF_THE_BUS = tuple((f'key = "{key}"\ncontroller = "ctl-hall-a"', f'key = "{key}"\ncontroller = "ctl-lobby"')
                    for key in MANTRAP_READERS)
"""The mantrap's outer door readers move to the lobby's IP controller, as in the demo (demo.on_osdp_bus)."""


def osdp_site(tmp_path: Path, db_url: str, broker: Broker, port: str) -> Path:
    """The example site with the hall A controller turned into an OSDP bus on ``port``."""
    wiring = [('name = "Hall A controller"\nkind = "mqtt"', f'name = "Hall A bus"\nkind = "osdp"\nport = "{port}"')]
    for key, (address, _kind) in READERS.items():
        wiring.append((f'key = "{key}"\n', f'key = "{key}"\nosdp_address = {address}\n'))
    wiring.append(('key = "hall-a-out"\n', 'key = "hall-a-out"\nkind = "keypad"\n'))  # hall A asks a PIN both ways
    return write_site(tmp_path, db_url, *wiring, *OFF_THE_BUS, broker_port=broker.port)


class Rig:
    def __init__(self, tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore, noise: float = 0.0,
                 firmware: str | None = None) -> None:
        self.bus = PtyBus(len(READERS) + 1, noise=noise, seed=7)
        site = osdp_site(tmp_path, db_url, broker, self.bus.cp_path)
        if firmware is not None:
            (site.parent / "firmware.toml").write_text(firmware)
        self.start(load_config(site), db_url, keys, READERS)
        wait_until(lambda: all(s.sc_active for s in self.sims.values()), what="secure channel with every reader")

    def start(self, config: SiteConfig, db_url: str, keys: KeyStore, readers: dict[str, tuple[int, str]],
              fresh: Collection[str] = ()) -> None:
        """Seed Ada (card 12:1001, PIN, biometric reference) and Bob (staff, card 12:1002), give every reader a
        key and a simulated PD, start the bridge. The ``fresh`` readers are factory-new PDs in install mode
        (no key yet)."""
        self.config, self.engine, self.keys = config, make_engine(db_url), keys
        with Session(self.engine) as session, session.begin():
            sync_site(session, self.config)
            ada, _ = people.add_person(session, "test", "Ada", levels=["staff", "hall-a-engineers"])
            people.add_credential(session, "test", ada.id, "wiegand26", "12:1001", pepper=keys.pin_pepper(),
                                  pin="4711", biometric_ref="ada")
            bob, _ = people.add_person(session, "test", "Bob", levels=["staff"])
            people.add_credential(session, "test", bob.id, "wiegand26", "12:1002", pepper=keys.pin_pepper())
            self.ada, self.bob = ada.id, bob.id
        self.sims: dict[str, SimReader] = {}
        for key, (address, kind) in readers.items():
            scbk = keys.new_osdp_key(key, replace=True)
            self.sims[key] = (SimReader(address, self.bus, None, kind=kind, install_mode=True, enforce_secure=False)
                              if key in fresh else SimReader(address, self.bus, scbk, kind=kind))
        self.bridge = Bridge(self.config, self.engine, keys)
        self.bridge.start()

    def osdp(self, key: str) -> OsdpBus:
        """The bridge's driver of the bus ``key``."""
        bus = self.bridge.drivers[key]
        assert isinstance(bus, OsdpBus)
        return bus

    def entries(self, *kinds: str) -> list[AuditEntry]:
        assert self.bridge.writer.flush()
        with Session(self.engine) as session:
            query = select(AuditEntry).where(AuditEntry.chain_id == "bridge-1").order_by(AuditEntry.seq)
            return [e for e in session.scalars(query) if not kinds or e.kind in kinds]

    def alarms(self) -> list[Alarm]:
        assert self.bridge.writer.flush()
        with Session(self.engine) as session:
            return list(session.scalars(select(Alarm).order_by(Alarm.id)))

    def close(self) -> None:
        self.bridge.stop()
        for sim in self.sims.values():
            sim.stop()
        self.bus.close()
        self.engine.dispose()


@pytest.fixture
def rig(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore) -> Iterator[Rig]:
    r = Rig(tmp_path, sqlite_url, broker, keys)
    yield r
    r.close()


def strike(cmd: dict[str, object]) -> bool:
    return cmd["command"] == 1 and cmd["output_no"] == STRIKE and cmd["control_code"] == 5


def led(color: int) -> object:
    return lambda cmd: cmd["command"] == 2 and cmd["on_color"] == color


def test_card_and_pin_drive_the_strike_and_wrong_pin_shows_red(rig: Rig) -> None:
    reader = rig.sims["hall-a-in"]
    reader.present_card("wiegand26", "12:1001")
    reader.keypad("4711")
    grant = reader.wait_for_command(strike, timeout=10)
    assert grant is not None and grant["timer_count"] == 40  # the door's 4 s open time
    assert reader.wait_for_command(led(2)) is not None  # green
    wait_until(lambda: rig.entries("access.granted"), what="the grant in the log")
    since = len(reader.commands)
    reader.present_card("wiegand26", "12:1001")
    reader.keypad("0000")
    assert reader.wait_for_command(led(1), since=since, timeout=10) is not None  # red
    assert not any(strike(cmd) for cmd in reader.commands[since:])  # a grant's strike would have come before its LED
    wait_until(lambda: rig.entries("access.denied"), what="the denial in the log")
    granted, denied = rig.entries("access.granted", "access.denied")
    assert json.loads(granted.detail)["factors"] == ["card", "pin"]
    assert json.loads(denied.detail)["reason"] == "pin_wrong"
    assert "4711" not in " ".join(e.subject + e.detail for e in rig.entries())


def test_biometric_identity_is_the_second_factor(rig: Rig) -> None:
    """Cage 7 is card + biometric and two-person: Ada alone waits (amber), her identity is checked."""
    reader = rig.sims["cage-7-in"]
    reader.present_card("wiegand26", "12:1001")
    reader.biometric("ada")
    wait_until(lambda: rig.entries("access.denied"), what="a decision")
    (first,) = rig.entries("access.denied")
    assert json.loads(first.detail)["reason"] == "two_person_waiting"
    assert json.loads(first.detail)["factors"] == ["biometric", "card"]
    reader.present_card("wiegand26", "12:1001")
    reader.biometric("mallory")
    wait_until(lambda: len(rig.entries("access.denied")) == 2, what="the second decision")
    assert json.loads(rig.entries("access.denied")[1].detail)["reason"] == "biometric_mismatch"


def test_forced_door_from_the_reader_inputs_and_a_walk_through_after_a_grant(rig: Rig) -> None:
    reader = rig.sims["hall-a-out"]
    reader.open_door()
    wait_until(lambda: rig.entries("door.forced"), what="forced")
    reader.close_door()
    wait_until(lambda: rig.entries("door.closed"), what="closed")
    (alarm,) = [a for a in rig.alarms() if a.kind == "door.forced"]
    assert alarm.door == "hall-a"
    wait_until(lambda: rig.alarms()[-1].cleared_at is not None, what="cleared")
    reader.rex()
    wait_until(lambda: rig.entries("door.exit_request"), what="exit request")


FIRMWARE = """
[[controllers]]
key = "ctl-hall-a"
profile = "osdp"
open_time_s = 4
held_open_limit_s = 20
led.granted = { color = "cyan", on_ms = 500, off_ms = 500 }
led.denied = { color = "magenta", on_ms = 200, off_ms = 200, repeat = 4 }
buzzer.granted = { repeat = 0 }
buzzer.denied = { on_ms = 500, off_ms = 100, repeat = 2 }
"""


def test_led_and_buzzer_patterns_come_from_the_firmware_file(tmp_path: Path, sqlite_url: str, broker: Broker,
                                                             keys: KeyStore) -> None:
    rig = Rig(tmp_path, sqlite_url, broker, keys, firmware=FIRMWARE)
    try:
        reader = rig.sims["hall-a-in"]
        reader.present_card("wiegand26", "12:1001")
        reader.keypad("4711")
        assert reader.wait_for_command(strike, timeout=10) is not None
        granted = reader.wait_for_command(led(CommandLEDColor.Cyan))
        assert granted is not None and (granted["on_count"], granted["off_count"], granted["timer_count"]) == (5, 5, 40)
        since = len(reader.commands)
        reader.present_card("wiegand26", "12:1001")
        reader.keypad("0000")
        denied = reader.wait_for_command(led(CommandLEDColor.Magenta), since=since, timeout=10)
        assert denied is not None and (denied["on_count"], denied["off_count"], denied["timer_count"]) == (2, 2, 16)
        buzz = reader.wait_for_command(lambda cmd: cmd["command"] == Command.Buzzer, since=since)
        assert buzz is not None and (buzz["on_count"], buzz["off_count"], buzz["rep_count"]) == (5, 1, 2)
        assert not any(cmd["command"] == Command.Buzzer for cmd in reader.commands[:since])  # a silent grant
    finally:
        rig.close()


def test_a_reader_killed_and_restarted_goes_offline_then_online(rig: Rig) -> None:
    reader = rig.sims["hall-a-out"]
    reader.stop()
    wait_until(lambda: rig.entries("reader.offline"), what="offline", timeout=30)
    assert any(a.kind == "reader.offline" and a.source == "hall-a-out" for a in rig.alarms())
    reader.restart()
    wait_until(lambda: any(e.kind == "reader.online" and json.loads(e.detail)["reader"] == "hall-a-out"
                           for e in rig.entries("reader.online")[1:] or rig.entries("reader.online")),
               what="back online", timeout=30)
    wait_until(lambda: reader.sc_active, what="secure channel again", timeout=30)
    alarm = next(a for a in rig.alarms() if a.kind == "reader.offline")
    wait_until(lambda: next(a for a in rig.alarms() if a.id == alarm.id).cleared_at is not None, what="cleared")


def test_a_reader_with_the_wrong_key_is_refused_and_alarmed(tmp_path: Path, sqlite_url: str, broker: Broker,
                                                           keys: KeyStore) -> None:
    rig = Rig(tmp_path, sqlite_url, broker, keys)
    try:
        impostor = rig.sims["hall-a-out"]
        impostor.stop()
        rig.sims["hall-a-out"] = SimReader(2, rig.bus, b"\x01" * 16, endpoint=impostor.endpoint)
        wait_until(lambda: any(a.kind == "reader.secure_channel_failed" for a in rig.alarms())
                   or any(a.kind == "reader.offline" and a.source == "hall-a-out" for a in rig.alarms()),
                   what="refusal", timeout=30)
        bus = rig.osdp("ctl-hall-a")
        impostor_state = bus.readers[2]

        def refused_again(what: str) -> None:
            failures = impostor_state.handshake_failures
            wait_until(lambda: impostor_state.handshake_failures > failures, 30, what)

        refused_again("the bus to try the impostor again")
        assert not bus.panels[2].is_online(2) and not bus.panels[2].is_sc_active(2)
        rig.sims["hall-a-out"].present_card("wiegand26", "12:1001")
        refused_again("the bus to refuse the impostor again, its card waiting")
        assert not [e for e in rig.entries("access.granted", "access.denied")
                    if json.loads(e.detail)["reader"] == "hall-a-out"]
    finally:
        rig.close()


def test_noise_on_the_line_is_survived(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore) -> None:
    """Corrupted frames are refused by their CRC, never turned into events; libosdp drops a reader on a bad
    frame and the driver brings it back, so card + PIN keeps getting through."""
    rig = Rig(tmp_path, sqlite_url, broker, keys, noise=0.01)
    try:
        bus = rig.osdp("ctl-hall-a")
        granted = 0

        def badged_through_a_recovery() -> bool:
            """Noise is random per chunk: badge once more until four grants got through and at least one
            reader was dropped and brought back."""
            nonlocal granted
            if granted >= 4 and bus.stats.recoveries:
                return True
            reader = rig.sims["hall-a-out" if granted % 2 else "hall-a-in"]  # in and out: hall A is anti-passback
            since = len(reader.commands)
            reader.present_card("wiegand26", "12:1001")
            reader.keypad("4711")
            granted += reader.wait_for_command(strike, since=since, timeout=3) is not None
            return False

        wait_until(badged_through_a_recovery, 150, "four grants through the noise and a reader brought back",
                   detail=lambda: f"{granted} grants, {bus.stats.recoveries} recoveries")
        assert rig.bus.corrupted > 0
        assert not rig.entries("input.rejected")  # corrupted frames never became events
        assert {json.loads(e.detail)["reason"] for e in rig.entries("access.granted")} == {"granted"}
    finally:
        rig.close()
