"""An attacker on the RS-485 bus: a device on one of the pty bus's reader endpoints (``PtyBus``) that hears
the control panel's frames and answers them before the genuine reader does, and fills the line with garbage.

What it sends (``Attacker.sent`` counts each kind):

* replies to the frame just heard, with the right address and sequence number and a valid CRC, in
  plaintext: the cloned victim card as ``osdp_RAW`` and its PIN as ``osdp_KEYPAD`` (issue 12: a plaintext
  card read was accepted during a reconnect), a ``NAK``, any other reply code with random data;
* genuine replies heard on the line, with bits flipped, cut short, or with their CRC fixed again;
* noise: random bursts, runs of the start-of-message byte, headers that promise 65535 bytes.

The line is paced by the control panel's receive queue (``FIONREAD`` on its tty): libosdp reads it at about
the speed of a 115200-baud wire, and what it has not read yet would otherwise be dropped by the pty.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import random
import select
import termios
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from badge_bridge.cards import encode_wiegand
from badge_bridge.sim.osdp_reader import MARK, SOM, PtyBus, SimReader

REPLY_CODES = [0x40, 0x41, 0x45, 0x46, 0x48, 0x49, 0x4A, 0x4B, 0x50, 0x51, 0x53, 0x54, 0x57, 0x58, 0x76, 0x78,
               0x79, 0x7A, 0x80, 0x90, 0xB1]
"""OSDP reply codes (ACK, NAK, PDID, PDCAP, LSTATR, ISTATR, OSTATR, RSTATR, RAW, FMT, KEYPAD, COM, BIOREADR,
BIOMATCHR, CCRYPT, RMAC_I, BUSY, FTSTAT, PIVDATAR, MFGREP, XRD)."""
RAW, KEYPAD, NAK = 0x50, 0x53, 0x41
log = logging.getLogger(__name__)
QUEUE_MAX = 2048
"""Bytes waiting in the control panel's tty before the attacker waits for it to read."""


def crc16(data: bytes) -> int:
    """OSDP's CRC-16 (CCITT polynomial 0x1021, initial value 0x1D0F)."""
    crc = 0x1D0F
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def frame(address: int, sqn: int, code: int, data: bytes = b"", *, scb: bytes = b"") -> bytes:
    """A reply from the reader at ``address``, plaintext unless ``scb`` (a security block) is given."""
    ctrl = (sqn & 3) | 0x04 | (0x08 if scb else 0)
    length = 5 + len(scb) + 1 + len(data) + 2
    body = SOM + bytes([address | 0x80, length & 0xFF, length >> 8, ctrl]) + scb + bytes([code]) + data
    crc = crc16(body)
    return body + bytes([crc & 0xFF, crc >> 8])


@dataclass
class Heard:
    """A frame the control panel sent: to which reader, with which sequence number."""

    address: int
    sqn: int


@dataclass
class Attacker:
    bus: PtyBus
    endpoint: int
    victim_card: str
    """wiegand26 ``FC:CARD``, cloned."""
    victim_pin: str
    seed: int
    budget: int
    """Bytes to put on the line."""
    deadline: float
    """time.monotonic() at which to stop, whatever the count."""
    reply_rate: float = 0.5
    sent: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    heard: int = 0
    failed: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.fd = self.bus.reader_fd(self.endpoint)
        os.set_blocking(self.fd, False)
        self.cp = os.open(self.bus.cp_path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        self.genuine: deque[bytes] = deque(maxlen=256)
        self.bus.tap = self._tap
        self.keypad_next: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bus-attacker", daemon=True)

    def _tap(self, src: int, data: bytes, _t: float) -> None:
        if src not in (0, self.endpoint):
            self.genuine.append(data)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.bus.tap = None
        os.close(self.cp)

    @property
    def done(self) -> bool:
        return (self.bytes >= self.budget or time.monotonic() >= self.deadline or self.stop.is_set()
                or self.failed)

    # --- the loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._attack()
        except Exception:
            log.exception("the bus attacker failed")
            self.failed = True

    def _attack(self) -> None:
        buffer = b""
        while not self.done:
            ready, _, _ = select.select([self.fd], [], [], 0.01)
            if ready:
                try:
                    buffer += os.read(self.fd, 4096)
                except BlockingIOError:
                    pass
                heard, buffer = _frames(buffer)
                for h in heard:
                    self.heard += 1
                    if self.rng.random() < self.reply_rate:
                        self._put(*self._reply(h))
            elif self._queued() < QUEUE_MAX // 2:
                self._put(*self._noise())

    def _queued(self) -> int:
        count = array.array("i", [0])
        fcntl.ioctl(self.cp, termios.FIONREAD, count)
        return count[0]

    def _put(self, kind: str, data: bytes) -> None:
        while self._queued() > QUEUE_MAX and not self.done:
            time.sleep(0.002)
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            return
        self.bytes += written
        self.sent[kind] += 1

    # --- what to send --------------------------------------------------------------------------------

    def _reply(self, h: Heard) -> tuple[str, bytes]:
        if h.address in self.keypad_next:
            self.keypad_next.discard(h.address)
            return "keypad_victim", frame(h.address, h.sqn, KEYPAD, bytes([0, len(self.victim_pin) + 1])
                                          + self.victim_pin.encode() + b"\x0d")
        r = self.rng.random()
        if r < 0.15:
            data, bits = encode_wiegand("wiegand26", self.victim_card)
            self.keypad_next.add(h.address)
            return "raw_victim", frame(h.address, h.sqn, RAW, bytes([0, 1, bits & 0xFF, bits >> 8]) + data)
        if r < 0.25:
            return "nak", frame(h.address, h.sqn, NAK, bytes([self.rng.randrange(10)]))
        if r < 0.55:
            scb = bytes([2, self.rng.randrange(0x11, 0x19)]) if self.rng.random() < 0.3 else b""
            return "random_reply", frame(h.address, self.rng.choice([h.sqn, self.rng.randrange(4)]),
                                         self.rng.choice(REPLY_CODES), self.rng.randbytes(self.rng.randrange(64)),
                                         scb=scb)
        if r < 0.85 and self.genuine:
            return "mutated_genuine", self._mutated(self.rng.choice(self.genuine))
        return "garbage_reply", self.rng.randbytes(self.rng.randint(1, 64))

    def _mutated(self, data: bytes) -> bytes:
        buf = bytearray(data)
        choice = self.rng.randrange(4)
        if choice == 0:
            for _ in range(self.rng.randint(1, 4)):
                buf[self.rng.randrange(len(buf))] ^= 1 << self.rng.randrange(8)
        elif choice == 1:
            del buf[self.rng.randrange(1, len(buf)):]
        elif choice == 2 and len(buf) > 8:  # changed, then the CRC made valid again: only the MAC can tell
            buf[self.rng.randrange(5, len(buf) - 2)] = self.rng.randrange(256)
            crc = crc16(bytes(buf[:-2]))
            buf[-2:] = bytes([crc & 0xFF, crc >> 8])
        else:
            return bytes(buf) * 2
        return bytes(buf)

    def _noise(self) -> tuple[str, bytes]:
        r = self.rng.random()
        if r < 0.6:
            return "burst", self.rng.randbytes(self.rng.randint(256, 1024))
        if r < 0.8:
            return "som_run", (SOM + self.rng.randbytes(self.rng.randint(0, 4))) * self.rng.randint(16, 128)
        if r < 0.9:
            return "huge_len", MARK + SOM + bytes([self.rng.randrange(256), 0xFF, 0xFF]) + self.rng.randbytes(256)
        genuine = self.rng.choice(self.genuine) if self.genuine else b""
        return "replayed_genuine", genuine * self.rng.randint(1, 8)


def _frames(buffer: bytes) -> tuple[list[Heard], bytes]:
    """Complete frames at the start of ``buffer`` (what the control panel sends), and what is left over."""
    heard = []
    while True:
        start = buffer.find(SOM)
        if start < 0:
            return heard, b""
        buffer = buffer[start:]
        if len(buffer) < 5:
            return heard, buffer
        length = buffer[2] | buffer[3] << 8
        if not 8 <= length <= 1440:
            buffer = buffer[1:]
            continue
        if len(buffer) < length:
            return heard, buffer
        heard.append(Heard(buffer[1] & 0x7F, buffer[4] & 3))
        buffer = buffer[length:]


@dataclass
class Probe:
    """The genuine readers, with the probe card and PIN: in at one reader, out at the other (anti-passback
    is hard in hall A), each waiting for the strike."""

    readers: dict[str, SimReader]
    card: str
    pin: str
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)

    def once(self, timeout: float = 10.0) -> bool:
        good = True
        for key in ("hall-a-in", "hall-a-out"):
            reader = self.readers[key]
            since = len(reader.commands)
            started = time.monotonic()
            reader.present_card("ascii", self.card)
            reader.keypad(self.pin)
            if reader.wait_for_command(_strike, timeout=timeout, since=since) is None:
                self.failed += 1
                good = False
            else:
                self.ok += 1
                self.latencies.append(time.monotonic() - started)
        return good


def _strike(cmd: dict[str, object]) -> bool:
    return cmd.get("command") == 1 and cmd.get("output_no") == 0 and cmd.get("control_code") == 5
