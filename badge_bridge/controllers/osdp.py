"""The OSDP driver: RS-485 buses of OSDP readers, with libosdp control panels on pyserial (see docs/osdp.md).

Each ``kind = "osdp"`` controller of the site file is a bus (``port``, ``baud``); its readers are the
peripheral devices (``osdp_address``). What a reader reports becomes a contract message for the processor,
exactly as an MQTT controller's would: a card (raw Wiegand bits, parity checked by the processor, or ASCII),
a PIN from the keypad, a biometric identity, the door contact and exit button on the reader's inputs,
tamper. Grants, denies, unlocks and lockdowns come back as output, LED and buzzer commands.

Anyone can put frames on an RS-485 bus, and libosdp hands over what a reader "said" while no secure session
is up (a reconnection, a handshake) and even lets one plaintext NAK end a session. So a reader's report counts
only while libosdp has it online with its secure channel up on its own key; anything else is dead-lettered and
raises ``reader.secure_channel_failed``. A reader without a usable key is left out (libosdp refuses a control
panel for it) with a standing alarm. Alarms are debounced per incident (``Incident``).

libosdp calls back from inside its refresh (on the bus arbiter's thread, osdp_link) and deadlocks if called
from there, and a Python exception in a channel method wedges it; so callbacks only queue, and one dispatcher
thread per bus talks to the processor, reopens a vanished port, and brings back a reader that dropped off by
disabling and re-enabling it (at once the first time, then every ``retry_s``) instead of waiting out libosdp's
five-minute back-off.

The bus is the site file's controller, and a bus has no status message or last will of its own: it is online
while its port is open and at least one of its readers answers, offline (``controller.offline``) once neither
has been so for ``OFFLINE_AFTER_S`` (the adapter pulled, the cable cut, every reader dead). Without this the
bridge never heard the controller and reported it offline 30 s after starting, its doors with it. Commands are submitted from whichever thread decided them (never the arbiter's), and
the arbiter sends them at the next free moment on the line.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from osdp import (
    Capability,
    CardFormat,
    Command,
    CommandLEDColor,
    CompletionStatus,
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
from badge_bridge.controllers.driver import Context, DeviceError, Driver
from badge_bridge.controllers.feedback import BuzzerPattern, BuzzerPatterns, LedPattern, LedPatterns
from badge_bridge.controllers.osdp_link import REFRESH_S, BusArbiter, ReaderPanel, SerialChannel, SerialPort
from badge_bridge.keys import KeyMaterialError, KeyStore

log = logging.getLogger(__name__)

PIN_WAIT_S = 10.0
"""How long a card at a keypad or biometric reader waits for its PIN or finger."""
RETRY_S = 1.0
"""How soon a reader that could not be brought back is asked again (libosdp drops a reader on one bad frame)."""
HANDSHAKE_TURNS, HANDSHAKE_FRAME_BYTES = 6, 80
"""A reconnection is a few exchanges (ID, CAP, CHLNG, SCRYPT, ...) of up to ~40-byte frames each way, and
libosdp's control panel serves the readers of a bus in turn: on a slow bus with many readers it takes seconds,
and asking again before it is done aborts it, so the retry waits at least that long (``OsdpBus.retry_s``)."""
OFFLINE_AFTER_S = 3.0
"""A reader is reported offline once it has been off this long: a dropped frame brings it back well before."""
WELL_AFTER_S = 10.0
"""A reported trouble is over once the reader has been well this long; trouble again before is the same
incident (one alarm for a reader that flaps, or that someone keeps knocking off the bus)."""
TICK_S = 0.05
"""The dispatcher's pace when nothing arrives: pending PINs, incidents, retries, the port."""
REOPEN_S = 1.0
"""How often a vanished port is tried again."""
RESTARTING = "bridge.restarting"
"""Marker queued before the bus's own disable of a reader: the dispatcher takes the next secure-channel
ended notification of that reader for the disable's doing, not for a refused handshake."""
BIO_PREFIX = "bio:"
"""libosdp 3.2 has no BIOREAD/BIOMATCH: a biometric reader reports the identity it matched as an ASCII
read "bio:<identity>" (docs/osdp.md)."""
KEY_ENTER, KEY_CLEAR = 0x0D, 0x7F
"""OSDP keypad codes for '#' (end of PIN) and '*' (clear)."""


@dataclass
class Pending:
    """A card at a keypad or biometric reader, waiting for the PIN or the finger that goes with it."""

    card: c.Card
    at: datetime
    deadline: float
    digits: str = ""


@dataclass
class Incident:
    """One kind of trouble of one reader, debounced: reported once it has lasted ``after_s``, over once the
    reader has been well for ``well_s``; trouble again before then is the same incident."""

    after_s: float
    well_s: float = WELL_AFTER_S
    since: float | None = None
    """When the trouble began (None: well, or not known yet)."""
    well_since: float | None = None
    reported: bool | None = None
    """What the processor was last told: True trouble, False well, None nothing yet."""
    detail: dict[str, object] = field(default_factory=dict)

    def trouble(self, now: float, why: str | None = None) -> None:
        if self.since is None:
            self.since = now
        self.well_since = None
        if why is not None:
            self.detail = {"why": why}

    def well(self, now: float) -> None:
        if self.well_since is None:
            self.since, self.well_since = None, now

    def due(self, now: float) -> bool | None:
        """What to report now: True the trouble, False its end (or, the first time, that all is well), None
        nothing new."""
        if self.since is not None and self.reported is not True and now - self.since >= self.after_s:
            self.reported = True
            return True
        if self.well_since is not None and (self.reported is None or
                                            (self.reported and now - self.well_since >= self.well_s)):
            self.reported = False
            return False
        return None


@dataclass
class ReaderState:
    config: ReaderConfig
    required: bool
    """Its reports count only with the secure channel up (the bus requires it, or the reader has a key)."""
    enrolled: bool
    """In the control panel (a reader without a usable key is left out)."""
    install_until: float | None = None
    """Install mode: it may take its key over the default key until then (monotonic)."""
    offline: Incident = field(default_factory=lambda: Incident(OFFLINE_AFTER_S))
    refused: Incident = field(default_factory=lambda: Incident(0.0))
    """``secure_channel_failed``: a refused handshake, the default key, a report while not secure, no key."""
    plaintext: Incident = field(default_factory=lambda: Incident(1.0, 0.0))
    """Running without a secure channel on its own key: install mode, or ``require_secure = false`` (not the
    moment between a session's end and libosdp taking the reader offline)."""
    inputs: bytes = b""
    tamper: bool = False
    pending: Pending | None = None
    online: bool = False
    secure: bool = False
    """Secure channel up with the reader's own key (not the default SCBK-D)."""
    retry_at: float | None = None
    reenable: bool = False
    """Disabled by the bus to be tried again: enabled once libosdp has it disabled."""
    handshake_failures: int = 0
    restarting: bool = False

    @property
    def trusted(self) -> bool:
        return self.online and (self.secure or not self.required)

    def incidents(self) -> dict[str, Incident]:
        return {"offline": self.offline, "secure_channel_failed": self.refused, "plaintext": self.plaintext}


@dataclass
class BusStats:
    events: int = 0
    commands: int = 0
    reopened: int = 0
    recoveries: int = 0
    untrusted: int = 0
    """Reports dead-lettered because the reader was not online with its secure channel up."""


class OsdpBus(Driver):
    """One RS-485 bus: its readers, a libosdp control panel for each run by the bus's arbiter (osdp_link), and
    a dispatcher thread."""

    kind = "osdp"

    def __init__(self, ctx: Context, controller: ControllerConfig) -> None:
        super().__init__(ctx, controller)
        config, keys = ctx.config, ctx.keys
        self.processor = ctx.processor
        self.led, self.buzzer = ctx.feedback.get(controller.key, (LedPatterns(), BuzzerPatterns()))
        """What the readers show and sound for a decision, and their idle LED: firmware.toml's (docs/firmware.md)."""
        self.open_time = {d.key: d.open_time_s for d in config.doors}
        self.port = SerialPort(controller.port or "", controller.baud)
        self.arbiter = BusArbiter(controller.key, self.port)
        self.panels = self.arbiter.panels
        """One libosdp control panel per reader in service, by address (osdp_link)."""
        self._port_error: str | None = None
        self._reopen_at = 0.0
        self.readers: dict[int, ReaderState] = {}
        for reader in config.readers:
            if reader.controller == controller.key and reader.osdp_address is not None:
                self._enroll(reader, keys)
        self.by_key = {state.config.key: address for address, state in self.readers.items()}
        self.retry_s = max(RETRY_S, HANDSHAKE_TURNS * len(self.panels) * (REFRESH_S + HANDSHAKE_FRAME_BYTES * 10
                                                                         / controller.baud))
        """How long a reader that could not be brought back is left to reconnect before it is asked again."""
        self.inbox: queue.Queue[tuple[int, dict[str, object]] | None] = queue.Queue()
        self.link = Incident(OFFLINE_AFTER_S, 0.0)
        """The bus as the controller: trouble while the port is gone or no reader answers (``_watch_link``);
        online again as soon as one answers."""
        self.stats = BusStats()
        self.nonce = secrets.token_hex(4)
        self._seq = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def heard_on(cls, controller: ControllerConfig) -> str:
        return f"an OSDP bus: the bridge hears its readers only on {controller.port}"

    def _enroll(self, reader: ReaderConfig, keys: KeyStore) -> None:
        """The reader's control panel, or, if it has no usable key (libosdp refuses a reader without one when
        the secure channel is enforced), a standing alarm instead."""
        ctl, key, address = self.controller, reader.key, reader.osdp_address
        assert address is not None
        problem: str | None
        try:
            scbk = keys.osdp_key(key)
        except KeyMaterialError as exc:
            scbk, problem = None, f"its key is unusable ({exc}): run `badge-bridge osdp keygen {key} --replace`"
        else:
            problem = None
            if scbk is None and reader.install_mode:
                problem = f"install mode needs the key to hand over: run `badge-bridge osdp keygen {key}`"
            elif scbk is None and ctl.require_secure:
                problem = f"it has no secure-channel key: run `badge-bridge osdp keygen {key}`"
        state = self.readers[address] = ReaderState(reader, required=ctl.require_secure or scbk is not None,
                                                    enrolled=problem is None)
        if problem is not None:
            self._leave_out(state, problem)
            return
        flags = [LibFlag.EnableNotification]
        if reader.install_mode:
            state.install_until = time.monotonic() + ctl.install_window_s
            until = (datetime.now(UTC) + timedelta(seconds=ctl.install_window_s)).isoformat(timespec="seconds")
            state.plaintext = Incident(0.0, 0.0)  # raised at once: the window itself is the exposure
            state.plaintext.trouble(time.monotonic(), f"install mode until {until}: the reader may take its key "
                                                      "over the default key, and so may anyone on the bus")
            log.warning("OSDP reader %s is in install mode until %s: keep the bus isolated, then remove "
                        "install_mode", key, until)
        elif ctl.require_secure:
            flags.append(LibFlag.EnforceSecure)
        info = PDInfo(address, self.arbiter.channel(address), scbk=scbk, name=key, flags=flags)
        try:
            panel = ReaderPanel(info, self.arbiter.lock, lambda _pd, event: self._on_event(address, event))
        except Exception as exc:
            self._leave_out(state, f"libosdp refused it ({exc})")
            return
        self.arbiter.add(address, panel)

    def _leave_out(self, state: ReaderState, why: str) -> None:
        state.enrolled, state.install_until = False, None
        log.error("OSDP reader %s is out of service: %s", state.config.key, why)
        now = time.monotonic()
        state.refused.trouble(now, f"not polled: {why}")
        state.offline.trouble(now - OFFLINE_AFTER_S)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.arbiter.start()
        thread = threading.Thread(target=self._dispatch_forever, name=f"osdp-{self.controller.key}", daemon=True)
        thread.start()
        self._threads.append(thread)
        log.info("OSDP bus %s on %s at %d baud: readers %s", self.controller.key, self.controller.port,
                 self.controller.baud, ", ".join(f"{s.config.key}@{a}" for a, s in self.readers.items()
                                                 if s.enrolled))

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(None)
        for thread in self._threads:
            thread.join(5)
        self.arbiter.stop()
        self.port.close()

    # --- the arbiter's thread, inside libosdp: queue only --------------------------------------------

    def _on_event(self, address: int, event: dict[str, object]) -> int:
        self.inbox.put((address, event))
        return 0

    # --- the dispatcher: events to the processor, the bus's upkeep ----------------------------------

    def _dispatch_forever(self) -> None:
        while not self._stop.is_set():
            item: tuple[int, dict[str, object]] | tuple[()] | None
            try:
                item = self.inbox.get(timeout=TICK_S)
            except queue.Empty:
                item = ()  # nothing came: the upkeep only
            if item is None:
                return
            try:
                if item:
                    self._handle(*item)
                self._tick(time.monotonic())
            except Exception:  # a bug must not stop the bus
                log.exception("OSDP bus %s: handling %r failed", self.controller.key, item)

    def _tick(self, now: float) -> None:
        self._expire_pending()
        self._watch_port(now)
        self._watch_link(now)
        for address, state in self.readers.items():
            if state.install_until is not None and now >= state.install_until:
                self._end_install_mode(address, state, now)
            if state.reenable:
                self._reenable(address, state)
            elif state.enrolled and not state.online and state.retry_at is not None and now >= state.retry_at \
                    and self.port.healthy:
                self._restart(address, now)
            for condition, incident in state.incidents().items():
                change = incident.due(now)
                if change is not None:
                    self.processor.reader_condition(self.controller.key, state.config.key, condition, change,
                                                    incident.detail if change else None)

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
            self._notification(address, state, event)
        elif kind not in (Event.CardRead, Event.KeyPress, Event.Status):
            return
        elif not state.trusted:
            self._untrusted(state, event)
        elif kind == Event.CardRead:
            self._card(state, event)
        elif kind == Event.KeyPress:
            self._keys(state, _bytes(event, "data"))
        else:
            self._status(state, event)

    def _notification(self, address: int, state: ReaderState, event: dict[str, object]) -> None:
        now = time.monotonic()
        if event.get("type") == EventNotification.PeripheralDeviceStatus:
            was, state.online = state.online, event.get("arg0") == 1
            if state.online:
                state.handshake_failures, state.restarting, state.retry_at = 0, False, None
                state.offline.well(now)
            else:
                state.offline.trouble(now)
                if was:
                    log.info("OSDP reader %s dropped off the bus: asking it back", state.config.key)
                    state.retry_at = now  # dropped while online (one bad frame will do): ask again at once
                elif state.retry_at is None:
                    state.retry_at = now + self.retry_s
        elif event.get("type") == EventNotification.SecureChannelStatus:
            active, default_key = event.get("arg0") == 1, event.get("arg1") == 1
            state.secure = active and not default_key
            if active and default_key and state.install_until is None:
                state.refused.trouble(now, "the reader is on the default key (SCBK-D)")
            elif state.secure:
                state.refused.well(now)
                if state.install_until is not None:
                    log.info("OSDP reader %s has its key: install mode is over for it", state.config.key)
                    self._end_install_mode(address, state, now)
            elif state.restarting:
                state.restarting = False  # the bus's own disable ended it: no failure
            elif not state.online:
                # A handshake that failed before the reader came online: once may be line noise, twice in a
                # row is a wrong key (or none), or someone else answering. A session lost while online is the
                # offline incident's business.
                state.handshake_failures += 1
                if state.handshake_failures >= 2:
                    state.refused.trouble(now, "secure channel refused twice: wrong key, no key on the reader, "
                                               "or another device answering for it")
        self._check_plaintext(state, now)

    def _check_plaintext(self, state: ReaderState, now: float) -> None:
        if state.install_until is not None:
            return  # install mode is plaintext for its whole window (set when it began)
        if state.online and not state.secure:
            state.plaintext.trouble(now, "online without a secure channel on its own key")
        else:
            state.plaintext.well(now)

    def _end_install_mode(self, address: int, state: ReaderState, now: float) -> None:
        """Enforce the secure channel from now on; a reader that has not taken its key by the end of the
        window is restarted under enforcement (and so refused)."""
        state.install_until = None
        if state.required and self.controller.require_secure:
            self.panels[address].set_flag(address, LibFlag.EnforceSecure)
        if not state.secure:
            log.error("OSDP reader %s: install mode is over and it never took its key", state.config.key)
            state.refused.trouble(now, "install mode ended before the reader took its key")
            self._restart(address, now)
        self._check_plaintext(state, now)

    def _untrusted(self, state: ReaderState, event: dict[str, object]) -> None:
        """A report from a reader that is not online with its secure channel up: it may not be the reader at
        all (libosdp hands over what was said during a reconnection), so it is never acted on."""
        self.stats.untrusted += 1
        reader, kind = state.config.key, event.get("event")
        what = {Event.CardRead: "card read", Event.KeyPress: "key presses"}.get(kind,
                                                                                "status report")
        why = "offline" if not state.online else "without its secure channel"
        summary: dict[str, object] = {"reader": reader, "report": what, "reader_state": why,
                                      "at": datetime.now(UTC).isoformat()}  # each one its own dead letter
        if kind == Event.CardRead:
            summary.update(bits=event.get("length"), data=_bytes(event, "data").hex())
        elif kind == Event.KeyPress:
            summary["keys"] = len(_bytes(event, "data"))  # never the digits
        else:
            summary.update(type=event.get("type"), data=_bytes(event, "report").hex())
        self.processor.reject(self.controller.key, "reader_not_secure",
                              f"reader {reader}: {what} while the reader is {why}: not acted on (another device "
                              "on the bus, or a reader that lost its session)",
                              json.dumps(summary).encode(), where=f"osdp:{self.controller.key}:{reader}", ack=None)
        state.refused.trouble(time.monotonic(), f"a {what} came while the reader was {why}: someone else may "
                                                "be on the bus")

    def _card(self, state: ReaderState, event: dict[str, object]) -> None:
        data, bits = _bytes(event, "data"), int(event.get("length", 0))  # type: ignore[call-overload]
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
        report = _bytes(event, "report")
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
        """Submit the OSDP commands for a bridge command; the arbiter sends them at the next free moment."""
        if isinstance(command, c.Lockdown):
            targets = [a for a, s in self.readers.items() if s.config.door in command.doors]
        else:
            reader = getattr(command, "reader", None)
            targets = ([self.by_key[reader]] if reader in self.by_key else
                       [a for a, s in self.readers.items() if s.config.door == command.door])
        for address in targets:
            state, panel = self.readers[address], self.panels.get(address)
            for osdp_command in self._translate(state.config, command):
                if panel is None or not panel.submit_command(address, osdp_command):
                    log.warning("OSDP reader %s is offline: %s not sent", state.config.key,
                                osdp_command.get("command"))
                self.stats.commands += 1
            if panel is not None:
                self.arbiter.submitted(address)

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

    # --- upkeep: a vanished port, a reader that dropped off ------------------------------------------

    def _watch_port(self, now: float) -> None:
        if self.port.error != self._port_error:
            self._port_error = self.port.error
            if self._port_error is not None:
                log.log(logging.ERROR if self.port.held else logging.WARNING, "OSDP bus %s: port %s failed: %s",
                        self.controller.key, self.controller.port, self._port_error)
        if self.port.healthy or now < self._reopen_at:
            return
        self._reopen_at = now + REOPEN_S
        with self.arbiter.lock:
            opened = self.port.open()
        if opened:
            self._port_error = None
            self.stats.reopened += 1
            log.warning("OSDP bus %s: port %s is back", self.controller.key, self.controller.port)
            for state in self.readers.values():
                state.retry_at = now

    def _watch_link(self, now: float) -> None:
        """Report the bus (the controller) online once a reader answers on a healthy port, offline once none
        has for ``OFFLINE_AFTER_S``. Before the first reader answers nothing is said: the bridge's own start
        check reports a controller never heard from (``Liveness.silent``)."""
        if self.port.healthy and any(state.online for state in self.readers.values()):
            self.link.well(now)
        elif self.link.reported is not None:
            self.link.trouble(now, f"port {self.controller.port}: {self.port.error}" if not self.port.healthy
                              else "no reader on the bus answers")
        change = self.link.due(now)
        if change is None:
            return
        status = c.ControllerStatus(online=not change, ts=datetime.now(UTC))
        where = f"osdp:{self.controller.key}"
        if change:
            log.warning("OSDP bus %s is offline: %s", self.controller.key, self.link.detail.get("why"))
        self.processor.controller_status(self.controller.key, status, status.model_dump_json().encode(), where, None)

    def _restart(self, address: int, now: float) -> None:
        """Ask libosdp to try the reader again now rather than after its own five-minute back-off: disable it
        here, enable it on a later tick once libosdp has done so (it does when the reader's turn on the bus
        comes, which the dispatcher does not wait for)."""
        state = self.readers[address]
        state.retry_at, state.reenable = now + self.retry_s, True
        self.inbox.put((address, {"event": RESTARTING}))  # before anything the disable makes libosdp notify
        self.panels[address].disable_pd(address)
        self.stats.recoveries += 1

    def _reenable(self, address: int, state: ReaderState) -> None:
        panel = self.panels[address]
        if not panel.is_pd_enabled(address):
            panel.enable_pd(address)
            state.reenable = False


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


# --- the firmware tool's sessions (firmware_config/devices.py) ------------------------------------------


class BusSetup:
    """A short session on a bus for reading and configuring its readers, at the addresses and the speed the
    site file gives them: one plain libosdp control panel on the whole port (no arbiter: a few commands need
    neither its speed nor its filtering), with each command's completion awaited. The bridge must not be
    driving the same port meanwhile: a serial port has one owner."""

    def __init__(self, config: SiteConfig, controller: ControllerConfig, keys: KeyStore, *,
                 enforce_secure: bool = True) -> None:
        self.controller = controller
        self.addresses = {r.key: r.osdp_address for r in config.readers
                          if r.controller == controller.key and r.osdp_address is not None}
        self.channel = SerialChannel(controller.port or "", controller.baud)
        if not self.channel.healthy:
            raise DeviceError(f"OSDP bus {controller.key}: cannot open {controller.port}: {self.channel.error}")
        flags = [LibFlag.EnforceSecure] if enforce_secure else []
        infos = [PDInfo(address, self.channel, scbk=keys.osdp_key(key), name=key, flags=flags)
                 for key, address in self.addresses.items()]
        self.done: queue.Queue[tuple[int, dict[str, object], int]] = queue.Queue()
        self.cp = ControlPanel(infos, log_level=LogLevel.Error,
                               command_completion_handler=lambda a, cmd, status: self.done.put((a, cmd, status)))
        self.cp.start()

    def close(self) -> None:
        self.cp.teardown()  # stops its thread too
        self.channel.close()

    def identify(self, timeout: float = 8.0) -> dict[str, dict[str, object]]:
        """Each reader by key, as it describes itself: ``online``, and if it is, ``secure`` (its secure channel
        is up), its ID (``vendor_code``, ``model``, ``serial_number``, ``firmware_version``) and
        ``capabilities`` (compliance level and count of LED, buzzer, output and reader control). All readers
        share the ``timeout`` to come online."""
        deadline = time.monotonic() + timeout
        out: dict[str, dict[str, object]] = {}
        for key, address in self.addresses.items():
            while not self.cp.is_online(address) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.cp.is_online(address):
                out[key] = {"online": False}
                continue
            ident = self.cp.get_pd_id(address)
            caps = {name: list(self.cp.check_capability(address, getattr(Capability, name)))
                    for name in ("LEDControl", "AudibleControl", "OutputControl", "Readers")}
            out[key] = {"online": True, "secure": self.cp.is_sc_active(address),
                        "vendor_code": f"{ident.vendor_code:06x}", "model": ident.model,
                        "serial_number": ident.serial_number, "firmware_version": ident.firmware_version,
                        "capabilities": caps}
        return out

    def push(self, commands: Mapping[str, Sequence[dict[str, object]]], timeout: float = 8.0) -> None:
        """Send each reader (by key) its commands in order, and wait until libosdp reports every one done
        (completion status Ok) within ``timeout``."""
        sent = 0
        for key, mine in commands.items():
            address = self.addresses[key]
            if not self.cp.is_online(address):
                raise DeviceError(f"OSDP reader {key} is not answering at address {address}")
            for command in mine:
                if not self.cp.submit_command(address, command):
                    raise DeviceError(f"OSDP reader {key}: libosdp refused to queue {command['command']}")
                sent += 1
        deadline = time.monotonic() + timeout
        for _ in range(sent):
            try:
                _address, command, status = self.done.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DeviceError(f"OSDP bus {self.controller.key}: not every command completed within "
                                  f"{timeout:g} s") from None
            if status != CompletionStatus.Ok:
                raise DeviceError(f"OSDP bus {self.controller.key}: command {command.get('command')} failed "
                                  f"(status {status})")


def comset_command(address: int, baud: int) -> dict[str, object]:
    """OSDP COMSET: the reader answers at ``address`` and ``baud`` from its next frame on."""
    return {"command": Command.Comset, "address": address, "baud_rate": baud}


def _bytes(event: dict[str, object], field: str) -> bytes:
    """A byte field of a libosdp event (bytes, or a list of ints); absent: empty."""
    value = event.get(field, b"")
    return bytes(value) if isinstance(value, bytes | bytearray | list) else b""
