"""The OSDP driver: one libosdp control panel per RS-485 bus, on pyserial (see docs/osdp.md).

Each ``kind = "osdp"`` controller of the site file is a bus (``port``, ``baud``); its readers are the
peripheral devices (``osdp_address``). What a reader reports becomes a contract message for the processor,
exactly as an MQTT controller's would: a card (raw Wiegand bits, parity checked by the processor, or ASCII),
a PIN from the keypad, a biometric identity, the door contact and exit button on the reader's inputs,
tamper. Grants, denies, unlocks and lockdowns come back as output, LED and buzzer commands.

libosdp calls back on its own refresh thread and deadlocks if called from there, and a Python exception in
a channel method wedges it; so callbacks only queue, one dispatcher thread talks to the processor and to
the control panel, and the serial channel never raises (a vanished port reads as silence, and the watchdog
reopens it). A reader that drops off is brought back by disabling and re-enabling it, instead of waiting
out libosdp's five-minute back-off.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import serial
from osdp import (
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

from badge_bridge.config import ControllerConfig, ReaderConfig, SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.ingest import Processor
from badge_bridge.keys import KeyStore
from firmware_config.profiles import BuzzerPattern, BuzzerPatterns, LedPattern, LedPatterns

log = logging.getLogger(__name__)

PIN_WAIT_S = 10.0
"""How long a card at a keypad or biometric reader waits for its PIN or finger."""
RETRY_S = 1.0
"""How soon a reader that dropped off is asked again (libosdp itself drops a reader on one bad frame)."""
HANDSHAKE_TURNS, HANDSHAKE_FRAME_BYTES, CP_REFRESH_S = 6, 80, 0.02
"""A reconnection is a few exchanges (ID, CAP, CHLNG, SCRYPT, ...) of up to ~40-byte frames each way, and
libosdp's control panel (refreshed every 20 ms) serves the readers of a bus in turn: on a slow bus with many
readers it takes seconds, and asking again before it is done aborts it, so the retry waits at least that long
(``OsdpBus.retry_s``)."""
RESTARTING = "bridge.restarting"
"""Marker the watchdog queues before its own disable of a reader: the dispatcher takes the next secure-channel
ended notification of that reader for the disable's doing, not for a refused handshake."""
BIO_PREFIX = "bio:"
"""libosdp 3.2 has no BIOREAD/BIOMATCH: a biometric reader reports the identity it matched as an ASCII
read "bio:<identity>" (docs/osdp.md)."""
KEY_ENTER, KEY_CLEAR = 0x0D, 0x7F
"""OSDP keypad codes for '#' (end of PIN) and '*' (clear)."""


class SerialChannel(Channel):  # type: ignore[misc]
    """libosdp's channel on a pyserial port. Never raises: libosdp's thread wedges on a Python exception.
    A failed port is closed and reported by ``healthy``; the bus watchdog reopens it."""

    def __init__(self, port: str, baud: int) -> None:
        super().__init__()
        self.port, self.baud = port, baud
        self.ser: serial.Serial | None = None
        self.error: str | None = None
        self.open()

    def open(self) -> bool:
        try:
            self.ser = serial.Serial(self.port, self.baud, timeout=0, write_timeout=0)
            self.error = None
            return True
        except (serial.SerialException, OSError) as exc:
            self.ser, self.error = None, str(exc)
            return False

    @property
    def healthy(self) -> bool:
        return self.ser is not None

    def _fail(self, exc: BaseException) -> None:
        self.error = str(exc)
        try:
            if self.ser is not None:
                self.ser.close()
        except Exception:  # noqa: BLE001 - closing a dead port may fail in any way
            pass
        self.ser = None

    def read(self, max_bytes: int) -> bytes:
        try:
            waiting = self.ser.in_waiting if self.ser is not None else 0
            return self.ser.read(min(waiting, max_bytes)) if waiting else b""  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            self._fail(exc)
            return b""

    def write(self, buf: bytes) -> int:
        if self.ser is None:
            return -1
        try:
            return self.ser.write(buf) or 0
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return -1

    def flush(self) -> None:
        try:
            if self.ser is not None:
                self.ser.reset_input_buffer()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def close(self) -> None:
        if self.ser is not None:
            self.ser.close()
            self.ser = None


@dataclass
class Pending:
    """A card at a keypad or biometric reader, waiting for the PIN or the finger that goes with it."""

    card: c.Card
    at: datetime
    deadline: float
    digits: str = ""


@dataclass
class ReaderState:
    config: ReaderConfig
    inputs: bytes = b""
    tamper: bool = False
    pending: Pending | None = None
    online: bool = False
    offline_since: float | None = None
    handshake_failures: int = 0
    restarting: bool = False


@dataclass
class BusStats:
    events: int = 0
    commands: int = 0
    reopened: int = 0
    recoveries: int = 0
    errors: list[str] = field(default_factory=list)


class OsdpBus:
    """One RS-485 bus: a libosdp control panel, its readers, a dispatcher thread and a watchdog."""

    def __init__(self, config: SiteConfig, controller: ControllerConfig, processor: Processor, keys: KeyStore,
                 led: LedPatterns = LedPatterns(), buzzer: BuzzerPatterns = BuzzerPatterns()) -> None:
        self.controller = controller
        self.processor = processor
        self.led, self.buzzer = led, buzzer
        """What the readers show and sound for a decision, and their idle LED: firmware.toml's (docs/firmware.md)."""
        self.readers = {r.osdp_address: ReaderState(r) for r in config.readers
                        if r.controller == controller.key and r.osdp_address is not None}
        self.by_key = {state.config.key: address for address, state in self.readers.items()}
        self.open_time = {d.key: d.open_time_s for d in config.doors}
        self.channel = SerialChannel(controller.port or "", controller.baud)
        infos = []
        for address, state in self.readers.items():
            flags = [LibFlag.EnableNotification]
            if controller.require_secure and not state.config.install_mode:
                flags.append(LibFlag.EnforceSecure)
            scbk = keys.osdp_key(state.config.key)
            if scbk is None and controller.require_secure and not state.config.install_mode:
                log.error("OSDP reader %s has no secure-channel key: run `badge-bridge osdp keygen %s`",
                          state.config.key, state.config.key)
            infos.append(PDInfo(address, self.channel, scbk=scbk, name=state.config.key, flags=flags))
        self.order = [info.address for info in infos]
        self.retry_s = max(RETRY_S, HANDSHAKE_TURNS * len(infos) * (CP_REFRESH_S + HANDSHAKE_FRAME_BYTES * 10
                                                                   / controller.baud))
        """How long a reader that dropped off is left to reconnect before it is asked again (see RETRY_S)."""
        self.cp = ControlPanel(infos, log_level=LogLevel.Warning, event_handler=self._on_event)
        self.inbox: queue.Queue[tuple[int, dict[str, object]] | None] = queue.Queue()
        self.outbox: queue.Queue[tuple[int, dict[str, object]]] = queue.Queue()
        self.stats = BusStats()
        self.nonce = secrets.token_hex(4)
        self._seq = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.cp.start()
        for name, target in (("dispatch", self._dispatch_forever), ("watchdog", self._watch_forever)):
            thread = threading.Thread(target=target, name=f"osdp-{self.controller.key}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("OSDP bus %s on %s at %d baud: readers %s", self.controller.key, self.controller.port,
                 self.controller.baud, ", ".join(f"{s.config.key}@{a}" for a, s in self.readers.items()))

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(None)
        for thread in self._threads:
            thread.join(5)
        self.cp.teardown()
        self.channel.close()

    # --- libosdp's thread: queue only ----------------------------------------------------------------

    def _on_event(self, pd_index: int, event: dict[str, object]) -> int:
        self.inbox.put((self.order[pd_index], event))
        return 0

    # --- the dispatcher: events to the processor, commands to the readers ----------------------------

    def _dispatch_forever(self) -> None:
        while not self._stop.is_set():
            try:
                item = self.inbox.get(timeout=0.05)
            except queue.Empty:
                item = ()
            if item is None:
                return
            try:
                if item:
                    self._handle(*item)
                self._expire_pending()
                self._send_queued()
            except Exception:  # a bug must not stop the bus
                log.exception("OSDP bus %s: handling %r failed", self.controller.key, item)

    def _send_queued(self) -> None:
        while True:
            try:
                address, command = self.outbox.get_nowait()
            except queue.Empty:
                return
            if not self.cp.submit_command(address, command):
                log.warning("OSDP reader %s is offline: %s not sent", self.readers[address].config.key,
                            command.get("command"))
            self.stats.commands += 1

    def _next_id(self) -> str:
        self._seq += 1
        return f"osdp-{self.nonce}.{self._seq}"

    def _handle(self, address: int, event: dict[str, object]) -> None:
        state = self.readers[address]
        kind = event.get("event")
        if kind == RESTARTING:
            state.restarting = True
            return
        self.stats.events += 1
        if kind == Event.Notification:
            self._notification(state, event)
        elif kind == Event.CardRead:
            self._card(state, event)
        elif kind == Event.KeyPress:
            self._keys(state, bytes(event.get("data", b"")))  # type: ignore[arg-type]
        elif kind == Event.Status:
            self._status(state, event)

    def _notification(self, state: ReaderState, event: dict[str, object]) -> None:
        reader = state.config.key
        if event.get("type") == EventNotification.PeripheralDeviceStatus:
            state.online = event.get("arg0") == 1
            state.offline_since = None if state.online else time.monotonic()
            if state.online:
                state.handshake_failures, state.restarting = 0, False
            self.processor.reader_condition(self.controller.key, reader, "offline", not state.online)
        elif event.get("type") == EventNotification.SecureChannelStatus:
            active, default_key = event.get("arg0") == 1, event.get("arg1") == 1
            if active and default_key and not state.config.install_mode:
                self.processor.reader_condition(self.controller.key, reader, "secure_channel_failed", True,
                                                {"why": "the reader is on the default key (SCBK-D)"})
            elif active:
                self.processor.reader_condition(self.controller.key, reader, "secure_channel_failed", False)
            elif state.restarting:
                state.restarting = False  # the watchdog's own disable ended it: no failure
            elif not state.online:
                # A handshake that failed before the reader came online: once may be line noise, twice in a
                # row is a wrong key (or none). A session lost while online is the offline alarm's business.
                state.handshake_failures += 1
                if state.handshake_failures >= 2:
                    self.processor.reader_condition(
                        self.controller.key, reader, "secure_channel_failed", True,
                        {"why": "secure channel refused twice: wrong key, or no key on the reader"})

    def _card(self, state: ReaderState, event: dict[str, object]) -> None:
        data, bits = bytes(event.get("data", b"")), int(event.get("length", 0))  # type: ignore[call-overload]
        now = datetime.now(UTC)
        try:
            text = _text(event.get("format"), data, bits)
            if text is not None and text.startswith(BIO_PREFIX) and state.config.kind == "biometric":
                self._biometric(state, text.removeprefix(BIO_PREFIX), now)
                return
            card = c.Card(format="ascii", number=text) if text is not None else c.Card(raw_hex=data.hex(), bits=bits)
        except ValueError as exc:
            self.processor.reject(self.controller.key, "bad_card", f"reader {state.config.key}: {exc}",
                                  repr(event).encode(), where=f"osdp:{self.controller.key}:{state.config.key}",
                                  ack=None)
            return
        if state.config.kind in ("keypad", "biometric"):
            state.pending = Pending(card, now, time.monotonic() + PIN_WAIT_S)
            return
        self._present(state, card, now)

    def _keys(self, state: ReaderState, data: bytes) -> None:
        pending = state.pending
        if pending is None:
            return  # digits without a card: nothing to check them against
        for byte in data:
            if byte == KEY_CLEAR:
                pending.digits = ""
            elif byte in (KEY_ENTER, ord("#")):
                state.pending = None
                self._present(state, pending.card, pending.at, pin=pending.digits)
                return
            elif 0x30 <= byte <= 0x39:
                pending.digits = (pending.digits + chr(byte))[-8:]

    def _biometric(self, state: ReaderState, identity: str, now: datetime) -> None:
        pending = state.pending
        state.pending = None
        if pending is None:
            return  # a finger without a card: this site identifies by card first
        self._present(state, pending.card, pending.at, biometric=c.Biometric(match=True, ref=identity[:128]))

    def _expire_pending(self) -> None:
        """A card whose PIN or finger never came is presented without it (and denied for that reason)."""
        for state in self.readers.values():
            if state.pending is not None and time.monotonic() > state.pending.deadline:
                pending, state.pending = state.pending, None
                self._present(state, pending.card, pending.at)

    def _present(self, state: ReaderState, card: c.Card, at: datetime, *, pin: str | None = None,
                 biometric: c.Biometric | None = None) -> None:
        if pin is not None and not 4 <= len(pin) <= 8:
            pin = None  # too short or long to be a PIN: treated as none, so the door asks again
        self._submit(c.CredentialPresented(type="credential", id=self._next_id(), ts=at, reader=state.config.key,
                                           card=card, pin=pin, biometric=biometric))

    def _status(self, state: ReaderState, event: dict[str, object]) -> None:
        report = bytes(event.get("report", b""))  # type: ignore[arg-type]
        if event.get("type") == StatusReportType.Input:
            before, state.inputs = state.inputs, report
            cfg = state.config
            if cfg.contact_input is not None and _bit(report, cfg.contact_input) != _bit(before, cfg.contact_input):
                self._submit(c.DoorContact(type="door", id=self._next_id(), ts=datetime.now(UTC), door=cfg.door,
                                           state="opened" if _bit(report, cfg.contact_input) else "closed"))
            if cfg.rex_input is not None and _bit(report, cfg.rex_input) and not _bit(before, cfg.rex_input):
                self._submit(c.RequestToExit(type="rex", id=self._next_id(), ts=datetime.now(UTC), door=cfg.door))
        elif event.get("type") == StatusReportType.Local and report:
            tamper = bool(report[0])
            if tamper != state.tamper:
                state.tamper = tamper
                self._submit(c.Tamper(type="tamper", id=self._next_id(), ts=datetime.now(UTC),
                                      state="active" if tamper else "cleared", reader=state.config.key))

    def _submit(self, message: c.CredentialPresented | c.DoorContact | c.RequestToExit | c.Tamper) -> None:
        payload = message.model_dump_json(exclude={"pin"}).encode()  # a dead letter never keeps the PIN
        self.processor.controller_event(self.controller.key, message, payload,
                                        f"osdp:{self.controller.key}", None)

    # --- commands from the processor -----------------------------------------------------------------

    def send(self, command: c.Grant | c.Deny | c.Unlock | c.Lock | c.Lockdown) -> None:
        """Queue the OSDP commands for a bridge command (sent by the dispatcher, never on libosdp's thread)."""
        if isinstance(command, c.Lockdown):
            targets = [a for a, s in self.readers.items() if s.config.door in command.doors]
        else:
            reader = getattr(command, "reader", None)
            targets = ([self.by_key[reader]] if reader in self.by_key else
                       [a for a, s in self.readers.items() if s.config.door == command.door])
        for address in targets:
            for osdp_command in self._translate(self.readers[address].config, command):
                self.outbox.put((address, osdp_command))

    def _translate(self, reader: ReaderConfig, command: c.Grant | c.Deny | c.Unlock | c.Lock | c.Lockdown
                   ) -> list[dict[str, object]]:
        if isinstance(command, c.Grant):
            tenths = max(1, round(command.open_time_s * 10))
            return [_output(reader.output, 5, tenths), led_command(self.led.granted, tenths),
                    *_buzz(self.buzzer.granted)]
        if isinstance(command, c.Deny):
            if command.feedback == "beep":  # the first of two people: waiting, not refused
                return [led_command(WAITING, _pattern_tenths(WAITING)), *_buzz(self.buzzer.granted)]
            return [led_command(self.led.denied, _pattern_tenths(self.led.denied)), *_buzz(self.buzzer.denied)]
        if isinstance(command, c.Unlock):
            if command.duration_s:
                tenths = min(65535, round(command.duration_s * 10))
                return [_output(reader.output, 5, tenths), led_command(UNLOCKED, tenths)]
            return [_output(reader.output, 2, 0), led_command(UNLOCKED)]
        if isinstance(command, c.Lock):
            return [_output(reader.output, 1, 0), led_command(self.led.idle)]
        # lockdown: the strike off and a steady red on every reader until lifted
        if command.active:
            return [_output(reader.output, 1, 0), led_command(LOCKDOWN)]
        return [led_command(self.led.idle)]

    # --- the watchdog: a vanished port, a reader that dropped off -------------------------------------

    def _watch_forever(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._watch()
            except Exception:  # noqa: BLE001 - the watchdog must keep watching
                log.exception("OSDP bus %s: watchdog step failed", self.controller.key)

    def _watch(self) -> None:
        if not self.channel.healthy:
            if self.channel.open():
                self.stats.reopened += 1
                log.warning("OSDP bus %s: port %s is back", self.controller.key, self.controller.port)
                for address, state in self.readers.items():
                    state.offline_since = time.monotonic()  # the next try a whole retry_s after this one
                    self._restart(address)
            return
        now = time.monotonic()
        for address, state in self.readers.items():
            if state.offline_since is not None and now - state.offline_since >= self.retry_s:
                state.offline_since = now
                self._restart(address)

    def _restart(self, address: int) -> None:
        """Ask libosdp to try the reader again now rather than after its own five-minute back-off."""
        self.inbox.put((address, {"event": RESTARTING}))  # before anything the disable makes libosdp notify
        self.cp.disable_pd(address)
        deadline = time.monotonic() + 2
        while self.cp.is_pd_enabled(address) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.cp.enable_pd(address)
        self.stats.recoveries += 1


def _text(fmt: object, data: bytes, bits: int) -> str | None:
    """The text of an ASCII read, or None for Wiegand bits. libosdp 3.2 drops reads in OSDP's (deprecated)
    ASCII format, so readers send text as "unspecified" raw data: whole bytes of printable ASCII are text,
    anything else is a bit string for the Wiegand decoder."""
    if fmt == CardFormat.Wiegand or bits != len(data) * 8 or not data:
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and " " not in text else None


def _bit(report: bytes, index: int) -> bool:
    return index < len(report) and bool(report[index])


def _output(number: int, control_code: int, tenths: int) -> dict[str, object]:
    """OSDP OUT: 1 permanent off, 2 permanent on, 5 on for ``tenths`` x 100 ms then back."""
    return {"command": Command.Output, "output_no": number, "control_code": control_code, "timer_count": tenths}


WAITING = LedPattern(color="amber", on_ms=300, off_ms=300, repeat=3)
"""The first of two people at a two-person door: waiting for the second, not refused."""
UNLOCKED, LOCKDOWN = LedPattern(color="green"), LedPattern(color="red")
"""A door unlocked from the console; a lockdown, steady on every reader until lifted."""
_COLORS = {"off": CommandLEDColor.Black, "red": CommandLEDColor.Red, "green": CommandLEDColor.Green,
           "amber": CommandLEDColor.Amber, "blue": CommandLEDColor.Blue, "magenta": CommandLEDColor.Magenta,
           "cyan": CommandLEDColor.Cyan, "white": CommandLEDColor.White}


def led_command(pattern: LedPattern, tenths: int | None = None) -> dict[str, object]:
    """A firmware.toml LED pattern as an OSDP LED command: temporary for ``tenths`` x 100 ms, or, without,
    the reader's permanent (idle) state. OSDP counts on and off times in 100 ms steps, as the pattern does."""
    led: dict[str, object] = {"command": Command.LED, "reader": 0, "led_number": 0,
                              "on_color": _COLORS[pattern.color], "off_color": _COLORS[pattern.off_color],
                              "on_count": pattern.on_ms // 100, "off_count": pattern.off_ms // 100}
    if tenths is None:
        led.update(temporary=False, control_code=1)
    else:
        led.update(temporary=True, control_code=2, timer_count=tenths)
    return led


def _pattern_tenths(pattern: LedPattern) -> int:
    return max(1, (pattern.on_ms + pattern.off_ms) * pattern.repeat // 100)


def _buzz(pattern: BuzzerPattern) -> list[dict[str, object]]:
    """The buzzer command for a pattern; none for a silent one (repeat 0)."""
    if not pattern.repeat:
        return []
    return [{"command": Command.Buzzer, "reader": 0, "control_code": 2, "on_count": pattern.on_ms // 100,
             "off_count": pattern.off_ms // 100, "rep_count": pattern.repeat}]

