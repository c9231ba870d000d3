"""The OSDP bus's own defences, each a finding of issue 12: readers without a usable key do not stop the bridge,
install mode is single-use, bounded in time and alarmed, the serial port is the bridge's alone, and libosdp
is run many times per poll (and keeps no copy of what it reports)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import serial

from badge_bridge.controllers import contract
from badge_bridge.keys import KeyStore
from badge_bridge.sim import osdp_intruder as wire
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.sim.osdp_reader import PtyBus, SimReader
from tests.test_osdp_attack import GateRig
from tests.waiting import wait_until


def why(rig: GateRig, kind: str, reader: str) -> list[str]:
    return [json.loads(e.detail).get("why", "") for e in rig.entries(kind) if json.loads(e.detail)["reader"] == reader]


def test_readers_without_a_usable_key_are_left_out_and_the_rest_works(tmp_path: Path, sqlite_url: str,
                                                                      broker: Broker, keys: KeyStore) -> None:
    """gate-2 has no key, gate-3 a damaged key file, gate-4 is in install mode with no key to hand over: libosdp
    would refuse the whole bus (and the bridge exit); they are left out, each with a standing alarm that says
    what to do, and gate-1 and the MQTT doors work."""
    (keys.dir / "osdp").mkdir(mode=0o700, exist_ok=True)
    (keys.dir / "osdp" / "gate-3.scbk").write_text("not a key\n")
    rig = GateRig(tmp_path, sqlite_url, broker, keys, n=4, simulated=[1], readers={4: "install_mode = true"})
    lobby = SimController("ctl-lobby", "127.0.0.1", broker.port, sync_key=keys.sync_key("ctl-lobby"), username="ctl-lobby",
                          password=broker.passwords["ctl-lobby"],
                          readers={"main-in": "main-entrance"}, walk_delay_s=0.05, walk_fraction=0.05)
    try:
        assert rig.badge("gate-1")
        lobby.wait_connected()
        request = lobby.present("main-in", None, "wiegand26", "12:1002")
        assert lobby.wait_for_command(lambda c: isinstance(c, contract.Grant) and c.request == request)
        wait_until(lambda: {"gate-2", "gate-3", "gate-4"} <= {a.source for a in rig.alarms()
                                                               if a.kind == "reader.secure_channel_failed"},
                   what="an alarm for each reader left out")
        assert "badge-bridge osdp keygen gate-2" in why(rig, "reader.secure_channel_failed", "gate-2")[0]
        assert "keygen gate-3 --replace" in why(rig, "reader.secure_channel_failed", "gate-3")[0]
        assert "install mode needs the key" in why(rig, "reader.secure_channel_failed", "gate-4")[0]
        assert not {a.source for a in rig.alarms() if a.cleared_at is None} & {"gate-1"}
    finally:
        lobby.close()
        rig.close()


def test_install_mode_hands_the_key_over_once_under_an_alarm(tmp_path: Path, sqlite_url: str, broker: Broker,
                                                              keys: KeyStore) -> None:
    """A factory-new reader takes its key over the default key while a reader.plaintext alarm stands; once it
    has it, install mode is over for it: a factory-new reader put in its place is refused, not given the key."""
    rig = GateRig(tmp_path, sqlite_url, broker, keys, fresh=[1], readers={1: "install_mode = true"})
    try:
        assert rig.sims["gate-1"].scbk == keys.osdp_key("gate-1")
        wait_until(lambda: [a.cleared_at for a in rig.alarms() if a.kind == "reader.plaintext"] not in ([], [None]),
                   what="the install-mode alarm raised, then cleared")
        assert rig.badge("gate-1")
        swapped = rig.sims["gate-1"]
        swapped.stop()
        rig.sims["gate-1"] = SimReader(1, rig.bus, None, install_mode=True, enforce_secure=False,
                                       endpoint=swapped.endpoint)
        wait_until(lambda: any(a.kind == "reader.secure_channel_failed" for a in rig.alarms()),
                   what="the new reader refused", timeout=30)
        assert rig.sims["gate-1"].scbk is None
        assert len([a for a in rig.alarms() if a.kind == "reader.plaintext"]) == 1
    finally:
        rig.close()


def test_install_mode_ends_with_its_window(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore) -> None:
    """A reader that cannot take its key (it has another, and talks plaintext) is online in plaintext during the
    window, under an alarm, and what it reports is not acted on; at the end of the window it is enforced."""
    keys.new_osdp_key("gate-1", replace=True)
    rig = GateRig(tmp_path, sqlite_url, broker, keys, simulated=[], lines="install_window_s = 3",
                  readers={1: "install_mode = true"}, wait=False)
    try:
        rig.sims["gate-1"] = reader = SimReader(1, rig.bus, b"\x01" * 16, enforce_secure=False)
        wait_until(lambda: any(a.kind == "reader.plaintext" for a in rig.alarms()), what="the plaintext alarm")
        panel = rig.gate.panels[1]
        wait_until(lambda: panel.is_online(1), what="the reader online in plaintext")
        reader.present_card("wiegand26", "12:1001")
        wait_until(lambda: rig.rejected()["reader_not_secure"], what="its card read refused")
        wait_until(lambda: [a.cleared_at is not None for a in rig.alarms() if a.kind == "reader.plaintext"] == [True],
                   what="the plaintext alarm cleared at the end of the window")
        wait_until(lambda: not panel.is_online(1), what="the reader refused under enforcement")
        assert [a.source for a in rig.alarms() if a.kind == "reader.secure_channel_failed"] == ["gate-1"]
        assert "install mode ended" in str(rig.gate.readers[1].refused.detail)  # the incident's latest cause
        assert not rig.grants(rig.ada)
    finally:
        rig.close()


def test_the_serial_port_is_the_bridges_alone(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A second process on the bus's port would answer for readers and garble every frame: whoever has the port
    keeps it, and the bridge says so when it is the one kept out."""
    caplog.set_level(logging.ERROR)
    pty = PtyBus(2)
    holder = serial.Serial(pty.cp_link, exclusive=True)
    rig = GateRig(tmp_path, sqlite_url, broker, keys, pty=pty, wait=False)
    try:
        wait_until(lambda: any("held by another process" in r.getMessage() for r in caplog.records),
                   what="the bridge saying the port is held")
        assert not rig.gate.port.healthy
        holder.close()
        rig.wait_secure()
        assert rig.badge("gate-1")
        with pytest.raises(serial.SerialException, match="exclusively lock"):
            serial.Serial(pty.cp_link, exclusive=True)
    finally:
        holder.close()
        rig.close()


def test_libosdp_runs_many_times_per_poll_and_keeps_no_copy_of_events(tmp_path: Path, sqlite_url: str,
                                                                      broker: Broker, keys: KeyStore) -> None:
    """libosdp acts on a reply only when it is run: its binding's 20 ms loop put 3 runs in a 50 ms poll period
    and added up to 20 ms to every exchange. Counted, not timed: runs per poll seen on the wire."""
    rig = GateRig(tmp_path, sqlite_url, broker, keys)
    frames, polls = wire.Frames(), [0]

    def tap(src: int, data: bytes, _t: float) -> None:
        if src == 0:
            polls[0] += sum(f.code == wire.POLL for f in frames.feed(data))

    try:
        arbiter = rig.gate.arbiter
        rig.bus.tap, runs = tap, arbiter.runs
        wait_until(lambda: polls[0] >= 40, what="40 polls")
        assert (arbiter.runs - runs) / polls[0] >= 10
        for _ in range(3):
            assert rig.badge("gate-1")
        assert all(q.empty() for panel in rig.gate.panels.values() for q in panel.event_queue)
    finally:
        rig.close()
