"""An attacker on the RS-485 bus, for the OSDP driver's attacker tests and the fuzz harness.

``Intruder`` takes a reader endpoint of a ``PtyBus`` (a device spliced onto the wire): it hears every command
the control panel sends and may answer any of them, before the genuine reader does, with frames of its choice:
plaintext, a valid CRC and the command's sequence number, so libosdp takes them as the reader's reply. Without
the reader's key it cannot make a frame that passes the secure channel's MAC; what it can do is answer while
no secure session is up (a reconnect, a handshake, a cut cable) or knock a session down (a plaintext NAK).

``Frames`` splits a byte stream into OSDP frames (also used by ``bench/bench_osdp.py`` to time the wire).
"""

from __future__ import annotations

import binascii
import os
import select
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from badge_bridge.controllers.osdp_link import REPLY_BIT, FrameSplitter
from badge_bridge.sim.osdp_reader import MARK, SOM, PtyBus

CRC_INIT = 0x1D0F
"""OSDP's CRC-16 is CRC-CCITT (polynomial 0x1021, MSB first) from 0x1D0F: ``binascii.crc_hqx``."""
CTRL_SQN, CTRL_CRC, CTRL_SCB = 0x03, 0x04, 0x08

# Command and reply codes (OSDP 2.2, table 2 and 3) this module needs.
POLL, ID, CAP, LSTAT, OUT, CHLNG, SCRYPT = 0x60, 0x61, 0x62, 0x64, 0x68, 0x76, 0x77
ACK, NAK, LSTATR, ISTATR, RAW, KEYPAD = 0x40, 0x41, 0x48, 0x49, 0x50, 0x53
HANDSHAKE = frozenset({ID, CAP, CHLNG, SCRYPT})
"""The commands of a (re)connection: the control panel sends them before a secure session is up."""


@dataclass(frozen=True)
class Frame:
    """One OSDP frame as seen on the wire."""

    address: int
    reply: bool
    """Sent by a reader (else by the control panel)."""
    seq: int
    secure: bool
    """Carries a security block (part of a handshake, or inside a secure session)."""
    code: int
    size: int
    """Bytes on the wire, with the mark byte before it, if any."""


class Frames:
    """Splits a byte stream into OSDP frames (``FrameSplitter``) and reads their headers."""

    def __init__(self) -> None:
        self._split = FrameSplitter()

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        for raw in self._split.feed(data):
            frame = raw[1:] if raw[0] == MARK[0] else raw
            ctrl = frame[4]
            secure = bool(ctrl & CTRL_SCB)
            code = frame[5 + frame[5]] if secure else frame[5]  # the code follows any security block
            frames.append(Frame(frame[1] & 0x7F, bool(frame[1] & REPLY_BIT), ctrl & CTRL_SQN, secure, code,
                                len(raw)))
        return frames


def reply_frame(address: int, seq: int, code: int, data: bytes = b"") -> bytes:
    """A plaintext reply from reader ``address`` with a valid CRC, preceded by the mark byte as a reader's."""
    length = 6 + len(data) + 2
    body = bytes([SOM[0], address | REPLY_BIT, length & 0xFF, length >> 8, (seq & CTRL_SQN) | CTRL_CRC, code]) + data
    return MARK + body + binascii.crc_hqx(body, CRC_INIT).to_bytes(2, "little")


def card_read(data: bytes, bits: int) -> tuple[int, bytes]:
    """osdp_RAW: reader 0, format 1 (Wiegand), the bit count, the bits."""
    return RAW, bytes([0, 1]) + bits.to_bytes(2, "little") + data


def key_presses(keys: bytes) -> tuple[int, bytes]:
    """osdp_KEYPAD: reader 0, the count, the keys."""
    return KEYPAD, bytes([0, len(keys)]) + keys


def inputs(levels: bytes) -> tuple[int, bytes]:
    """osdp_ISTATR: one byte per input (1 = active)."""
    return ISTATR, levels


def nak(reason: int = 1) -> tuple[int, bytes]:
    """osdp_NAK (1: bad check character; any reason makes libosdp drop the reader)."""
    return NAK, bytes([reason])


Answer = Callable[[Frame], tuple[int, bytes] | None]
"""What the intruder says to a command it heard (reply code, data), or None to stay silent."""


class Intruder:
    """A device spliced onto the bus at one of its reader endpoints, answering the control panel's commands.

    ``answer`` decides, per command heard, what to reply; it can be changed at any time. ``sent`` counts the
    frames put on the wire by reply code; ``heard`` counts the commands by code.
    """

    def __init__(self, bus: PtyBus, answer: Answer | None = None, *, endpoint: int | None = None) -> None:
        self.answer: Answer | None = answer
        self.endpoint = bus.claim(endpoint)
        self.sent: Counter[int] = Counter()
        self.heard: Counter[int] = Counter()
        self._fd = bus.reader_fd(self.endpoint)
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osdp-intruder", daemon=True)
        self._thread.start()

    def count(self, *codes: int) -> int:
        with self._lock:
            return sum(self.sent[c] for c in codes)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        frames = Frames()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], 0.1)
                data = os.read(self._fd, 4096) if ready else b""
            except OSError:
                data = b""
            for frame in frames.feed(data):
                if frame.reply:
                    continue
                answer = self.answer
                said = answer(frame) if answer is not None else None
                with self._lock:
                    self.heard[frame.code] += 1
                    if said is not None:
                        self.sent[said[0]] += 1
                if said is not None:
                    try:
                        os.write(self._fd, reply_frame(frame.address, frame.seq, *said))
                    except OSError:
                        pass  # the line is full: lost, as on a wire
