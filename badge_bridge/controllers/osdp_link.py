"""libosdp's plumbing for the OSDP driver: the serial port, and one libosdp control panel per reader, run by
the bus's own half-duplex arbiter instead of libosdp's threads and scheduler.

libosdp acts only when it is run (``refresh``): it sends the next command, reads a reply, and polls each idle
reader every ``IDLE_POLL_S``. Its Python binding runs it every 20 ms, adding up to 20 ms to every exchange, and
its multi-reader control panel serves the readers of a bus strictly in turn, one exchange each: a strike
command waits for every other reader's poll (on 8 readers at 9600 baud, a whole 270 ms cycle). So each reader
gets a single-reader control panel (``ReaderPanel``), and ``BusArbiter`` runs them every ``REFRESH_S``: while
a reader's exchange is on the wire only its panel runs; when the line is free, a reader with a command waiting
goes first, then the others in turn. ``SerialPort`` hands each panel only the frames its reader sent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import serial
from osdp import Channel, ControlPanel, LogLevel, PDInfo

REFRESH_S = 0.002
"""How often the control panels run: the most this adds to each exchange. Each run takes microseconds."""
IDLE_POLL_S = 0.050
"""libosdp polls each idle reader this often (OSDP_PD_POLL_TIMEOUT_MS, fixed when libosdp is built): a card
read waits up to this long, plus the turns of the other readers on a busy bus, for the poll it answers."""
REPLY_TIMEOUT_S = 0.200
"""libosdp gives up waiting for a reply after this long (OSDP_RESP_TOUT_MS); the line is free again then."""
SOM, MARK, REPLY_BIT = 0x53, 0xFF, 0x80
MAX_FRAME = 1024
"""Longer than any frame libosdp sends or takes (its buffers are 256 bytes): a longer length is not a frame."""


class FrameSplitter:
    """Cuts a byte stream into OSDP frames (each with the mark byte before it, if any); bytes that cannot start
    a frame are dropped. With a ``baud``, a frame that has not come whole in the time its length takes on the
    wire (plus 50 ms) was never one: its start byte was noise, and the stream is scanned again after it."""

    def __init__(self, baud: int | None = None) -> None:
        self.baud = baud
        self._buf = bytearray()
        self._partial_since: float | None = None

    def feed(self, data: bytes, now: float = 0.0) -> list[bytes]:
        buf, frames = self._buf, []
        buf += data
        while True:
            i = buf.find(SOM)
            if i < 0:
                buf.clear()
                break
            del buf[: i - 1 if i and buf[i - 1] == MARK else i]
            i = int(buf[0] == MARK)
            if len(buf) < i + 4:
                break
            length = buf[i + 2] | buf[i + 3] << 8
            if 8 <= length <= MAX_FRAME and len(buf) >= i + length:
                frames.append(bytes(buf[: i + length]))
                del buf[: i + length]
                self._partial_since = None
                continue
            if 8 <= length <= MAX_FRAME and not self._stale(length, now):
                break
            del buf[: i + 1]
            self._partial_since = None
        return frames

    def _stale(self, length: int, now: float) -> bool:
        if self.baud is None:
            return False
        if self._partial_since is None:
            self._partial_since = now
        return now - self._partial_since > 0.05 + length * 10 / self.baud


class SerialPort:
    """The bus's pyserial port, opened exclusively (a second process on the bus would answer for readers and
    garble every frame). Never raises: libosdp wedges on a Python exception in a channel. A failed port is
    closed and reported by ``healthy`` and ``error``; the bus reopens it. What arrives is split into frames,
    and the replies of the reader whose exchange is on the line are kept for its panel; anything else (noise,
    a reader speaking out of turn, frames for addresses not on the bus, another control panel's commands) is
    dropped and counted in ``stray``: on a half-duplex bus a reader speaks only when asked."""

    def __init__(self, port: str, baud: int) -> None:
        self.port, self.baud = port, baud
        self.ser: serial.Serial | None = None
        self.error: str | None = None
        self.held = False
        """The port is open in another process (the last open failed on its exclusive lock)."""
        self.inbound: dict[int, bytearray] = {}
        self.stray = 0
        self._frames = FrameSplitter(baud)
        self.open()

    def open(self) -> bool:
        try:
            self.ser = serial.Serial(self.port, self.baud, timeout=0, write_timeout=0, exclusive=True)
            self.error, self.held = None, False
            return True
        except (serial.SerialException, OSError) as exc:
            self.ser, self.held = None, "exclusively lock" in str(exc)
            self.error = (f"{self.port} is held by another process (stop it: one control panel per bus)"
                          if self.held else str(exc))
            return False

    @property
    def healthy(self) -> bool:
        return self.ser is not None

    def _fail(self, exc: BaseException) -> None:
        self.error = str(exc)
        try:
            if self.ser is not None:
                self.ser.close()
        except Exception:
            pass
        self.ser = None

    def _read(self, max_bytes: int) -> bytes:
        try:
            waiting = min(self.ser.in_waiting, max_bytes) if self.ser is not None else 0
            return self.ser.read(waiting) if waiting else b""  # type: ignore[union-attr]
        except Exception as exc:
            self._fail(exc)
            return b""

    def pump(self, owner: int | None) -> bool:
        """Read what has arrived and keep the replies from reader ``owner``: True if one came."""
        got = False
        for frame in self._frames.feed(self._read(65536), time.monotonic()):
            head = frame[1] if frame[0] == SOM else frame[2]
            if owner is not None and head == owner | REPLY_BIT:
                self.inbound[owner] += frame
                got = True
            else:
                self.stray += 1
        return got

    def write(self, buf: bytes) -> int:
        if self.ser is None:
            return -1
        try:
            return self.ser.write(buf) or 0
        except Exception as exc:
            self._fail(exc)
            return -1

    def close(self) -> None:
        if self.ser is not None:
            self.ser.close()
            self.ser = None


class SerialChannel(SerialPort, Channel):
    """The whole port as one libosdp channel, for a plain multi-reader ControlPanel: the firmware tool's short
    sessions (firmware_config/devices.py), which need neither the arbiter's speed nor its filtering."""

    def __init__(self, port: str, baud: int) -> None:
        Channel.__init__(self)
        SerialPort.__init__(self, port, baud)

    def read(self, max_bytes: int) -> bytes:
        return self._read(max_bytes)

    def flush(self) -> None:
        try:
            if self.ser is not None:
                self.ser.reset_input_buffer()
        except Exception as exc:
            self._fail(exc)


class ReaderChannel(Channel):
    """libosdp's channel for one reader: it reads only that reader's replies to the exchange on the line, and
    tells the arbiter when its control panel starts one."""

    def __init__(self, port: SerialPort, address: int, on_write: Callable[[int, int], None]) -> None:
        super().__init__()
        self.port, self.address, self._on_write = port, address, on_write
        self._inbound = port.inbound.setdefault(address, bytearray())

    def read(self, max_bytes: int) -> bytes:
        data = bytes(self._inbound[:max_bytes])
        del self._inbound[:max_bytes]
        return data

    def write(self, buf: bytes) -> int:
        self._inbound.clear()  # a new exchange: nothing said before it answers it
        self._on_write(self.address, len(buf))
        return self.port.write(buf)

    def flush(self) -> None:
        self._inbound.clear()


class ReaderPanel(ControlPanel):
    """libosdp's control panel for one reader, run by the bus's arbiter (never by a thread of its own), under
    the arbiter's lock. Events go to the handler only: the binding would also keep each in a queue that
    nobody reads, which grows for as long as the bus runs. libosdp logs its errors only: its warnings are its
    own retries (a reply late, asked again), and what comes of them reaches the bridge's log as a reader
    dropping off the bus and, if it stays off, its alarm (osdp.py)."""

    ctx: Any  # libosdp's C context; None once torn down

    def __init__(self, info: PDInfo, lock: threading.Lock, event_handler: Callable[[int, dict[str, object]], int]
                 ) -> None:
        super().__init__([info], log_level=LogLevel.Error, event_handler=event_handler)
        self.lock = lock

    def _internal_event_handler(self, pd: int, event: dict[str, object]) -> int:
        handler = self.user_event_handler
        return handler(pd, event) if handler is not None else 0

    def start(self) -> None:
        raise RuntimeError("a ReaderPanel is run by its bus's arbiter")

    def teardown(self) -> None:
        self.ctx = None


class BusArbiter:
    """Runs the readers' control panels on one half-duplex line: only one exchange on the wire at a time,
    a reader with a command waiting first, the others in turn (so every reader is still polled)."""

    def __init__(self, name: str, port: SerialPort) -> None:
        self.name, self.port = name, port
        self.lock = threading.Lock()
        """Held while a panel runs; take it to call a panel (``ControlPanel`` methods do)."""
        self.panels: dict[int, ReaderPanel] = {}
        self.runs = 0
        """Ticks of the arbiter (so many per idle poll: ``IDLE_POLL_S / REFRESH_S``)."""
        self._order: deque[int] = deque()
        self._urgent: deque[int] = deque()
        self._owner: int | None = None
        self._owner_until = 0.0
        self._owner_done = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def channel(self, address: int) -> ReaderChannel:
        return ReaderChannel(self.port, address, self._wrote)

    def add(self, address: int, panel: ReaderPanel) -> None:
        self.panels[address] = panel
        self._order.append(address)

    def submitted(self, address: int) -> None:
        """A command was submitted to the reader's panel: its reader goes next, and now."""
        with self.lock:
            if address not in self._urgent:
                self._urgent.append(address)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"osdp-{self.name}-arbiter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        with self.lock:
            for panel in self.panels.values():
                panel.teardown()

    def _wrote(self, address: int, size: int) -> None:
        """Called from a panel's run (lock held): its exchange is on the line until the reply or the timeout."""
        self._owner, self._owner_done = address, False
        self._owner_until = time.monotonic() + REPLY_TIMEOUT_S + 2 * size * 10 / self.port.baud
        if self._urgent and self._urgent[0] == address:
            self._urgent.popleft()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                self.tick()
            self._wake.wait(REFRESH_S)
            self._wake.clear()

    def tick(self) -> None:
        """One run: the reader whose exchange is on the line, or, the line free, the readers in turn until
        one starts an exchange (a reader with a command waiting first)."""
        self.runs += 1
        owner = self._owner
        if self.port.pump(owner):
            self._owner_done = True
        if owner is not None:
            self.panels[owner].ctx.refresh()  # it takes the reply
            if self._owner == owner and not self._owner_done and time.monotonic() < self._owner_until:
                return  # its exchange is still on the line
            self._owner = None
        for address in [*self._urgent, *self._order]:
            for _ in range(2):  # libosdp readies a command in one run and sends it in the next
                self.panels[address].ctx.refresh()
                if self._owner is not None:
                    self._order.remove(self._owner)
                    self._order.append(self._owner)  # its turn is used: to the back of the line
                    return
            if address in self._urgent:
                self._urgent.remove(address)  # nothing to send after all (offline, say): no priority
