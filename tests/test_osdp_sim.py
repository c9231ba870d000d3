"""The simulated OSDP readers against a plain libosdp ControlPanel on the simulated RS-485 bus.

The control panel opens ``bus.cp_path`` with pyserial, as the real driver opens ``/dev/ttyUSB0``; every test
runs with secure channel enforced on both sides and a random key per reader.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import serial
from osdp import (
    Capability,
    CardFormat,
    Channel,
    Command,
    CommandLEDColor,
    ControlPanel,
    Event,
    EventNotification,
    LibFlag,
    LogLevel,
    PDInfo,
    StatusReportType,
)

from badge_bridge.cards import CardFormatError, decode_wiegand, encode_wiegand
from badge_bridge.sim.osdp_reader import PtyBus, SimReader
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

CP_FLAGS = [LibFlag.EnforceSecure, LibFlag.EnableNotification]


class SerialChannel(Channel):
    """libosdp Channel over pyserial; never raises (an exception wedges the CP refresh thread)."""

    def __init__(self, ser: serial.Serial) -> None:
        super().__init__()
        self.ser = ser

    def read(self, max_bytes: int) -> bytes:
        try:
            n = self.ser.in_waiting
            return self.ser.read(min(n, max_bytes)) if n else b""
        except Exception:
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return self.ser.write(buf)
        except Exception:
            return -1

    def flush(self) -> None:
        try:
            self.ser.reset_input_buffer()
        except Exception:
            pass


class Panel:
    """A libosdp ControlPanel on the bus, recording events as (address, event dict)."""

    def __init__(self, bus: PtyBus, keys: dict[int, bytes | None], flags: list[int] = CP_FLAGS) -> None:
        self.addresses = list(keys)
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.ser = serial.Serial(bus.cp_path, 115200, timeout=0, write_timeout=0)
        channel = SerialChannel(self.ser)  # one channel shared by every PD on the bus
        infos = [PDInfo(addr, channel, scbk=key, flags=list(flags)) for addr, key in keys.items()]
        self.cp = ControlPanel(infos, log_level=LogLevel.Warning, event_handler=self._on_event)
        self.cp.start()

    def _on_event(self, pd_index: int, event: dict[str, Any]) -> int:
        # Runs in the CP refresh thread: never call self.cp here (deadlock).
        with self.lock:
            self.events.append((self.addresses[pd_index], event))
        return 0

    def wait_event(self, pred: Callable[[int, dict[str, Any]], bool], timeout: float = 5.0, since: int = 0) -> dict:
        def match() -> dict | None:
            with self.lock:
                return next((e for a, e in self.events[since:] if pred(a, e)), None)

        return wait_until(match, timeout, "a matching event from the control panel", detail=lambda: self.events)

    def inputs(self, since: int = 0) -> list[bytes]:
        """The input status reports received since event index ``since``, in order."""
        with self.lock:
            return [
                e["report"] for _, e in self.events[since:]
                if e["event"] == Event.Status and e["type"] == StatusReportType.Input
            ]

    def mark(self) -> int:
        with self.lock:
            return len(self.events)

    def close(self) -> None:
        self.cp.teardown()
        self.ser.close()


@pytest.fixture
def rig() -> Iterator[tuple[PtyBus, SimReader, Panel]]:
    """One reader at address 1, its own random key, secure channel up."""
    key = secrets.token_bytes(16)
    bus = PtyBus(1)
    reader = SimReader(1, bus, key)
    panel = Panel(bus, {1: key})
    try:
        wait_until(lambda: panel.cp.is_sc_active(1), 8, "the secure channel")
        yield bus, reader, panel
    finally:
        panel.close()
        reader.stop()
        bus.close()


def is_card(addr: int, e: dict) -> bool:
    return e["event"] == Event.CardRead


def test_secure_channel_and_wiegand_cards(rig: tuple[PtyBus, SimReader, Panel]) -> None:
    _bus, reader, panel = rig
    assert reader.online and reader.sc_active
    assert panel.cp.check_capability(1, Capability.OutputControl) == (1, 2)

    for fmt, number in (("wiegand26", "12:1001"), ("wiegand34", "300:65000"), ("wiegand37", "7:400000")):
        mark = panel.mark()
        assert reader.present_card(fmt, number)
        event = panel.wait_event(is_card, since=mark)
        assert event["format"] == CardFormat.Wiegand
        assert decode_wiegand(event["data"], event["length"]) == (fmt, number)

    # A read with a bad parity bit arrives intact; the decoder is what refuses it.
    data, bits = encode_wiegand("wiegand26", "12:1001")
    bad = bytes([data[0] ^ 0x80]) + data[1:]
    mark = panel.mark()
    assert reader.present_raw(bad, bits)
    event = panel.wait_event(is_card, since=mark)
    assert (event["data"], event["length"]) == (bad, 26)
    with pytest.raises(CardFormatError):
        decode_wiegand(event["data"], event["length"])


def test_ascii_card_is_a_raw_unspecified_read(rig: tuple[PtyBus, SimReader, Panel]) -> None:
    _, reader, panel = rig
    assert reader.present_card("ascii", "ABC123")
    event = panel.wait_event(is_card)
    assert (event["format"], event["length"], event["data"]) == (CardFormat.Unspecified, 48, b"ABC123")
    with pytest.raises(ValueError):
        reader.present_card("ascii", "X" * 65)
    with pytest.raises(ValueError):
        reader.biometric("ada")  # a card reader has no biometric head


def test_keypad(rig: tuple[PtyBus, SimReader, Panel]) -> None:
    _, reader, panel = rig
    assert reader.keypad("1234")
    assert panel.wait_event(lambda a, e: e["event"] == Event.KeyPress)["data"] == b"1234\x0d"
    mark = panel.mark()
    assert reader.keypad("*9#")
    assert panel.wait_event(lambda a, e: e["event"] == Event.KeyPress, since=mark)["data"] == b"\x7f9\x0d"


def is_input(report: bytes) -> Callable[[int, dict], bool]:
    return lambda a, e: e["event"] == Event.Status and e["type"] == StatusReportType.Input and e["report"] == report


def test_door_contact_rex_and_tamper(rig: tuple[PtyBus, SimReader, Panel]) -> None:
    _, reader, panel = rig
    assert reader.open_door()
    panel.wait_event(is_input(b"\x01\x00\x00\x00"))
    mark = panel.mark()
    assert reader.close_door()
    panel.wait_event(is_input(b"\x00\x00\x00\x00"), since=mark)

    mark = panel.mark()
    assert reader.rex()
    wait_until(lambda: len(panel.inputs(mark)) >= 2, 5, "two input reports")
    assert panel.inputs(mark) == [b"\x00\x01\x00\x00", b"\x00\x00\x00\x00"]  # pressed, released

    assert reader.tamper(True)
    event = panel.wait_event(lambda a, e: e["event"] == Event.Status and e["type"] == StatusReportType.Local)
    assert event["report"] == b"\x01\x00"


def output(no: int, code: int, timer_count: int = 0) -> dict:
    return {"command": Command.Output, "output_no": no, "control_code": code, "timer_count": timer_count}


def test_outputs_led_and_buzzer(rig: tuple[PtyBus, SimReader, Panel]) -> None:
    _, reader, panel = rig
    reader.walk_through = False
    # Temporary on for 0.5 s, then back off.
    assert panel.cp.submit_command(1, output(0, 5, 5))
    assert reader.wait_for_command(lambda c: c["command"] == Command.Output)
    assert reader.relay[0]
    wait_until(lambda: not reader.relay[0], 5, "the strike relay off again")

    # Permanent on / off on the auxiliary relay.
    assert panel.cp.submit_command(1, output(1, 2))
    wait_until(lambda: reader.relay[1], 5, "the auxiliary relay on")
    assert panel.cp.submit_command(1, output(1, 1))
    wait_until(lambda: not reader.relay[1], 5, "the auxiliary relay off")

    led = {"command": Command.LED, "reader": 0, "led_number": 0, "temporary": False, "control_code": 1,
           "on_color": CommandLEDColor.Green, "off_color": CommandLEDColor.Black, "on_count": 10, "off_count": 0}
    buzzer = {"command": Command.Buzzer, "reader": 0, "control_code": 2, "on_count": 2, "off_count": 2, "rep_count": 1}
    assert panel.cp.submit_command(1, led) and panel.cp.submit_command(1, buzzer)
    assert reader.wait_for_command(lambda c: c["command"] == Command.Buzzer)
    assert reader.led is not None and reader.led["on_color"] == CommandLEDColor.Green
    assert reader.buzzer is not None and reader.buzzer["rep_count"] == 1
    assert panel.cp.is_online(1)  # every command was ACKed


def test_walk_through_opens_and_closes_the_door(rig: tuple[PtyBus, SimReader, Panel]) -> None:
    _, reader, panel = rig
    mark = panel.mark()
    assert panel.cp.submit_command(1, output(0, 5, 10))  # strike released for 1 s
    wait_until(lambda: len(panel.inputs(mark)) >= 2, 5, "two input reports")
    assert panel.inputs(mark) == [b"\x01\x00\x00\x00", b"\x00\x00\x00\x00"]  # opened, closed
    wait_until(lambda: not reader.relay[0], 5, "the strike relay off again")
    assert reader.inputs[0] == 0


def test_biometric_reader_reports_identity_as_bio_prefixed_read() -> None:
    key = secrets.token_bytes(16)
    with PtyBus(1) as bus:
        reader = SimReader(1, bus, key, kind="biometric")
        panel = Panel(bus, {1: key})
        try:
            wait_until(lambda: panel.cp.is_sc_active(1), 8, "the secure channel")
            assert panel.cp.check_capability(1, Capability.Biometrics) == (1, 1)
            assert reader.biometric("ada")
            event = panel.wait_event(is_card)
            assert (event["format"], event["data"]) == (CardFormat.Unspecified, b"bio:ada")
        finally:
            panel.close()
            reader.stop()


def test_two_readers_on_one_bus_with_different_keys() -> None:
    keys = {1: secrets.token_bytes(16), 2: secrets.token_bytes(16)}
    with PtyBus(2) as bus:
        readers = {addr: SimReader(addr, bus, key) for addr, key in keys.items()}
        assert [r.endpoint for r in readers.values()] == [1, 2]
        panel = Panel(bus, keys)
        try:
            wait_until(lambda: panel.cp.is_sc_active(1) and panel.cp.is_sc_active(2), 10, "both secure channels")
            assert readers[2].keypad("22") and readers[1].keypad("11")
            assert panel.wait_event(lambda a, e: a == 1 and e["event"] == Event.KeyPress)["data"] == b"11\r"
            assert panel.wait_event(lambda a, e: a == 2 and e["event"] == Event.KeyPress)["data"] == b"22\r"
            assert panel.cp.submit_command(2, output(1, 2))
            wait_until(lambda: readers[2].relay[1], 5, "reader 2's auxiliary relay on")
            assert not readers[1].relay[1]
        finally:
            panel.close()
            for r in readers.values():
                r.stop()


def reconnect(panel: Panel, addr: int = 1) -> None:
    """What the driver must do for a PD libosdp gave up on: it would otherwise wait 300 s before retrying."""
    assert panel.cp.disable_pd(addr)
    wait_until(lambda: not panel.cp.is_pd_enabled(addr), 2, "the reader disabled")
    assert panel.cp.enable_pd(addr)


def test_noisy_bus_comes_online_with_reconnects() -> None:
    """libosdp's CP drops a PD for 300 s on a single reply with a bad CRC, so on a noisy line the PD only
    stays usable if the driver reconnects it (disable + enable) whenever it goes offline."""
    key = secrets.token_bytes(16)
    with PtyBus(1, noise=0.05, seed=3) as bus:
        reader = SimReader(1, bus, key)
        panel = Panel(bus, {1: key})
        try:
            reconnect_at = time.monotonic() + 2

            def noise_seen_while_secure() -> bool:
                """The secure channel up while frames were corrupted and garbage was sent; a reader without
                one for 2 s (libosdp dropped it) is reconnected."""
                nonlocal reconnect_at
                if panel.cp.is_sc_active(1):
                    reconnect_at = time.monotonic() + 2
                    return bus.corrupted > 0 and bus.garbage > 0
                if time.monotonic() > reconnect_at:
                    reconnect(panel)
                    reconnect_at = time.monotonic() + 2
                return False

            wait_until(noise_seen_while_secure, 20, "the secure channel up through the noise",
                       detail=lambda: f"online={panel.cp.is_online(1)} corrupted={bus.corrupted} garbage={bus.garbage}")
        finally:
            panel.close()
            reader.stop()


def pd_status(online: int) -> Callable[[int, dict], bool]:
    return lambda a, e: (
        e["event"] == Event.Notification
        and e["type"] == EventNotification.PeripheralDeviceStatus
        and e["arg0"] == online
    )


def test_cut_cable_goes_offline_and_comes_back_after_disable_enable(rig: tuple[PtyBus, SimReader, Panel]) -> None:
    bus, reader, panel = rig
    mark = panel.mark()
    bus.cut(reader.endpoint)  # type: ignore[arg-type]
    panel.wait_event(pd_status(0), timeout=10, since=mark)
    assert not panel.cp.is_online(1)

    bus.restore(reader.endpoint)  # type: ignore[arg-type]
    reconnect(panel)
    wait_until(lambda: panel.cp.is_sc_active(1), 8, "the secure channel")
    mark = panel.mark()
    assert reader.present_card("wiegand26", "12:1001")
    panel.wait_event(is_card, since=mark)


def test_install_mode_reader_takes_the_key_and_keeps_it_across_restart() -> None:
    key = secrets.token_bytes(16)
    with PtyBus(1) as bus:
        reader = SimReader(1, bus, None, install_mode=True, enforce_secure=False)
        # Provisioning: the CP may not enforce secure channel, or it would refuse SCBK-D.
        panel = Panel(bus, {1: key}, flags=[LibFlag.EnableNotification])
        try:
            assert reader.wait_for_command(lambda c: c["command"] == Command.Keyset, 8)
            wait_until(lambda: reader.scbk == key and panel.cp.is_sc_active(1), 8, "the key and the secure channel")
            assert not reader.install_mode

            mark = panel.mark()
            reader.restart()  # power cycle: same (received) key, new session
            # The rebooted reader answers with the wrong sequence number, so the CP drops it.
            panel.wait_event(pd_status(0), since=mark)
            reconnect(panel)
            wait_until(lambda: panel.cp.is_sc_active(1) and reader.sc_active, 8, "the secure channel again")
        finally:
            panel.close()
            reader.stop()
