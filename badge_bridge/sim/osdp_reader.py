"""Simulated OSDP readers on a simulated RS-485 bus, for tests and demos of the OSDP control-panel driver.

The readers are real libosdp peripheral devices (``osdp.PeripheralDevice``) speaking OSDP with secure
channel over ptys; the control panel opens ``PtyBus.cp_path`` with pyserial exactly as it would open
``/dev/ttyUSB0``, so the driver under test runs unchanged.

Conventions this simulator uses (the control-panel driver must read them the same way):

- **Keypad**: ``keypad("1234")`` sends one KeyPress event whose data is the digits as ASCII followed by the
  OSDP "#" (enter) code ``0x0D``. Per the OSDP spec a keypad sends ``'*'`` as ``0x7F`` and ``'#'`` as
  ``0x0D``; those two characters in the argument are translated, and a trailing ``'#'`` in the argument
  is the terminator (no second one is added).
- **ASCII cards**: libosdp 3.2.9's PD silently drops ``CardFormat.ASCII`` reads (osdp_FMT is deprecated in
  OSDP 2.2.2; it logs "OSDP_CARD_FMT_ASCII is deprecated. Ignoring"), so an ASCII card is sent as a raw read
  of format ``CardFormat.Unspecified`` (0): ``data`` is the text's bytes, ``length`` is in bits
  (``8 * len(data)``). Wiegand reads are ``CardFormat.Wiegand`` (1); the format tells the two apart.
- **Biometrics**: libosdp 3.2.9 has no BIOREAD/BIOMATCH (the Python binding rejects both), so a
  ``kind="biometric"`` reader reports the identity it matched as an ASCII card read (above) of
  ``"bio:" + identity``: ``biometric("ada")`` -> CardRead format Unspecified, length 56, data ``b"bio:ada"``.
  Only biometric readers advertise ``Capability.Biometrics``.
- **Sizes**: card and keypad data are at most 64 bytes (``MAX_DATA``). libosdp's PD accepts longer keypad
  data but the control panel cannot decode the reply and drops the reader for 300 s, so the sim refuses.
- **Inputs** (Status event, type Input, one byte per input, ``1`` = active): input 0 is the door contact
  (1 = open), input 1 is the request-to-exit button (1 = pressed); the rest stay 0.
- **Local status** (Status event, type Local): ``[tamper, power]``, 1 = tamper / power failure.
- **Outputs**: output 0 is the door strike relay, output 1 an auxiliary relay.

libosdp gotchas handled here: Channel methods never raise (an exception wedges the refresh thread); the
command handler always returns ``(0, None)`` (a NAK makes the control panel drop the reader for 300 s); and
nothing that calls ``submit_event`` runs inside the command handler (it holds the lock ``submit_event`` needs).

Not handled, because libosdp 3.2.9's PD cannot: a status *query* for inputs or outputs (``Command.Status``
type Input / Output, i.e. osdp_ISTAT / osdp_OSTAT) is answered with a NAK whatever the handler returns, and
the control panel then drops the reader for 300 s; a Local query (osdp_LSTAT) is answered ``[0, 0]``. A
control panel should rely on the unsolicited Status events these readers send on every change.
"""

from __future__ import annotations

import os
import pty
import random
import select
import shutil
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from osdp import (
    Capability,
    CardFormat,
    Channel,
    Command,
    Event,
    LibFlag,
    LogLevel,
    PDCapabilities,
    PdId,
    PDInfo,
    PeripheralDevice,
    StatusReportType,
)

from badge_bridge.cards import encode_wiegand
from badge_bridge.controllers.osdp_link import FrameSplitter

DOOR_CONTACT = 0
"""Input number of the door contact (1 = open)."""
REX = 1
"""Input number of the request-to-exit button (1 = pressed)."""
STRIKE = 0
"""Output number of the door strike relay."""
BIO_PREFIX = "bio:"
"""A biometric match is reported as an ASCII card read of this prefix + the identity."""
KEYPAD_CODES = {"*": 0x7F, "#": 0x0D}
"""OSDP keypad codes for the two non-digit keys; ``#`` (0x0D) ends an entry."""
N_RELAYS = 2
MAX_DATA = 64
"""Most bytes of card or keypad data one event can carry (libosdp 3.2.9)."""
SOM = b"\x53"
"""OSDP start-of-message byte: every frame begins with it."""
MARK = b"\xff"
"""The mark byte libosdp's control panel sends before each frame's SOM."""
SLOWEST_BAUD = 9600
"""A frame that has not come whole in the time it takes at this speed was noise (FrameSplitter)."""


class PtyBus:
    """An RS-485 multi-drop bus: one control panel and N readers sharing a half-duplex line.

    Each endpoint is a pty pair. A relay thread reads the pty masters and copies what the control panel
    (endpoint 0) sends to every reader (endpoints 1..n) and what any reader sends to the control panel,
    as the shared wire would. Readers do not hear each other, which a real bus would allow but OSDP never
    relies on.

    ``baud`` emulates the wire's speed: every forwarded chunk takes 10 bits per byte (start, 8 data, stop)
    at that rate before it is delivered, and the line carries one transmission at a time (half duplex:
    a chunk waits until the previous one, in either direction, is off the line). ``None`` (the default)
    delivers at once.

    ``noise`` is the probability, per forwarded chunk, of flipping one random bit (``corrupted`` counts
    them) and, independently, of putting 1-8 random bytes on the line before the chunk (``garbage``
    counts those bursts): the CRC, retries and resynchronisation of a real line. Note that libosdp 3.2.9's
    control panel drops a reader for 300 s after a single reply with a bad CRC, so on a noisy bus the driver
    has to reconnect it (``disable_pd`` + ``enable_pd``). ``junk`` is garbage only: the probability, per
    frame (a chunk that starts with the OSDP start-of-message byte 0x53, after any 0xFF marks), of 1-8
    random bytes on the line just before it, every frame itself arriving intact (also counted in
    ``garbage``). ``cut(i)`` / ``restore(i)`` pull and replug reader i's cable.

    The control panel should open ``cp_link``, a symlink that always points at the current control-panel
    pty: ``unplug()`` makes the control panel's USB-RS485 adapter vanish (its pty master is closed, so the
    open port fails with EIO, and the symlink is removed so reopening fails), ``replug()`` brings a fresh
    one back behind the same link. Readers keep their endpoints throughout.

    ``tap``, if set, is called on the relay thread with ``(source endpoint, bytes, time.monotonic())`` for
    every chunk as it is delivered (before noise is added): for measuring frames on the wire.

    The bus keeps every pty slave open for its whole life (the control panel's until ``unplug()``), so an
    endpoint being closed and reopened (a control panel restarting, a reader power-cycled) never makes the
    masters report a hang-up.
    """

    def __init__(
        self,
        n_readers: int,
        noise: float = 0.0,
        seed: int | None = None,
        *,
        baud: int | None = None,
        junk: float = 0.0,
    ) -> None:
        if n_readers < 1:
            raise ValueError("a bus needs at least one reader endpoint")
        if baud is not None and baud <= 0:
            raise ValueError(f"baud {baud}: expected a positive rate or None")
        self.noise = noise
        self.junk = junk
        self.baud = baud
        self.corrupted = 0
        self.garbage = 0
        self.tap: Callable[[int, bytes, float], None] | None = None
        self._rng = random.Random(seed)
        self._masters: list[int | None] = []
        self._slaves: list[int | None] = []
        for _ in range(n_readers + 1):
            master, slave = self._openpty()
            self._masters.append(master)
            self._slaves.append(slave)
        self._cut: set[int] = set()
        self._claimed: set[int] = set()
        self._lock = threading.Lock()
        self._ops: list[tuple[Callable[[], None], threading.Event]] = []
        self._line_free = 0.0
        self._dir = tempfile.mkdtemp(prefix="ptybus-")
        self.cp_link = os.path.join(self._dir, "cp")
        """The path the control panel should open: a symlink to the current control-panel pty (see unplug)."""
        self._point_link()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="osdp-ptybus", daemon=True)
        self._thread.start()

    @staticmethod
    def _openpty() -> tuple[int, int]:
        master, slave = pty.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        # A full pty (nobody reading that end) must drop bytes, not stall the whole bus.
        os.set_blocking(master, False)
        return master, slave

    @property
    def n_readers(self) -> int:
        return len(self._masters) - 1

    @property
    def cp_path(self) -> str:
        """The serial device the control panel's pty currently is (prefer ``cp_link``, which survives replug)."""
        slave = self._slaves[0]
        if slave is None:
            raise RuntimeError("the control panel's adapter is unplugged")
        return os.ttyname(slave)

    @property
    def plugged(self) -> bool:
        """False between ``unplug()`` and ``replug()``."""
        return self._masters[0] is not None

    def reader_fd(self, i: int) -> int:
        """An fd for reader endpoint i (1..n), for an fd-based libosdp Channel. Owned by the bus: don't close it."""
        self._check_reader(i)
        fd = self._slaves[i]
        assert fd is not None
        return fd

    def reader_path(self, i: int) -> str:
        """The serial device of reader endpoint i (1..n), for a reader in another process."""
        return os.ttyname(self.reader_fd(i))

    def claim(self, i: int | None = None) -> int:
        """Reserve reader endpoint i, or the lowest free one, for a SimReader; returns its number."""
        with self._lock:
            free = [n for n in range(1, len(self._masters)) if n not in self._claimed]
            if i is None:
                if not free:
                    raise ValueError(f"all {self.n_readers} reader endpoints are in use")
                i = free[0]
            self._check_reader(i)
            self._claimed.add(i)
            return i

    def cut(self, i: int) -> None:
        """Pull reader i's cable: from now on nothing it sends or should receive gets through."""
        self._check_reader(i)
        with self._lock:
            self._cut.add(i)

    def restore(self, i: int) -> None:
        """Plug reader i's cable back in."""
        self._check_reader(i)
        with self._lock:
            self._cut.discard(i)

    def unplug(self) -> None:
        """The control panel's USB-RS485 adapter vanishes: ``cp_link`` is removed and the control panel's pty
        master closed, so the port the control panel has open fails (EIO) and cannot be reopened until
        ``replug()``. What readers send meanwhile is lost. Idempotent."""
        self._on_relay(self._unplug)

    def replug(self) -> None:
        """The adapter is back: a fresh pty for the control panel behind ``cp_link``; the relay resumes.
        Idempotent (a no-op while plugged)."""
        self._on_relay(self._replug)

    def close(self) -> None:
        """Stop the relay and close every pty. Stop the readers and the control panel first."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(2)
        for fd in (*self._masters, *self._slaves, self._wake_r, self._wake_w):
            if fd is None:
                continue
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PtyBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_reader(self, i: int) -> None:
        if not 1 <= i < len(self._masters):
            raise ValueError(f"reader endpoint {i}: this bus has endpoints 1..{self.n_readers}")

    # ------------------------------------------------------------------ the control panel's adapter

    def _on_relay(self, op: Callable[[], None], timeout: float = 5.0) -> None:
        """Run ``op`` on the relay thread between two selects: fds are only ever closed and opened there, so
        the relay never reads an fd number that was closed (and maybe reused by someone else) under it."""
        if self._closed:
            raise RuntimeError("the bus is closed")
        done = threading.Event()
        with self._lock:
            self._ops.append((op, done))
        os.write(self._wake_w, b"o")
        if not done.wait(timeout):
            raise RuntimeError("the bus relay did not answer")

    def _point_link(self) -> None:
        tmp = self.cp_link + ".new"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(self.cp_path, tmp)
        os.replace(tmp, self.cp_link)

    def _unplug(self) -> None:
        if self._masters[0] is None:
            return
        try:
            os.unlink(self.cp_link)
        except FileNotFoundError:
            pass
        master, slave = self._masters[0], self._slaves[0]
        self._masters[0] = self._slaves[0] = None
        for fd in (master, slave):
            try:
                os.close(fd)  # type: ignore[arg-type]
            except OSError:
                pass

    def _replug(self) -> None:
        if self._masters[0] is not None:
            return
        self._masters[0], self._slaves[0] = self._openpty()
        self._point_link()

    def _run_ops(self) -> None:
        with self._lock:
            ops, self._ops = self._ops, []
        for op, done in ops:
            try:
                op()
            finally:
                done.set()

    # ------------------------------------------------------------------ the relay

    def _run(self) -> None:
        try:
            self._relay()
        finally:
            self._run_ops()  # nobody waits on an op forever

    def _relay(self) -> None:
        while not self._closed:
            masters = list(self._masters)
            try:
                ready, _, _ = select.select([*(m for m in masters if m is not None), self._wake_r], [], [], 0.5)
            except (OSError, ValueError):
                return  # closed underneath us
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    return
                if self._closed:
                    return
                self._run_ops()
                continue  # the fds may have changed: select again
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if not data:
                    continue
                with self._lock:
                    cut = set(self._cut)
                src = masters.index(fd)
                if src == 0:
                    dests = [dst for i, dst in enumerate(masters[1:], start=1) if i not in cut]
                elif src not in cut:
                    dests = [masters[0]]
                else:
                    continue
                self._forward(src, data, [d for d in dests if d is not None])

    def _forward(self, src: int, data: bytes, dests: list[int]) -> None:
        writes = [(fd, *self._noisy(data)) for fd in dests]
        if self.baud:
            # One talker at a time: the chunk goes on the line once the line is free and takes
            # 10 bits per byte (the longest garbage burst any receiver hears counts too).
            longest = max((len(g) for _, g, _ in writes), default=0) + len(data)
            now = time.monotonic()
            end = max(now, self._line_free) + longest * 10 / self.baud
            self._line_free = end
            if end > now:
                time.sleep(end - now)
        for fd, garbage, payload in writes:
            if garbage:
                self._write(fd, garbage)
            self._write(fd, payload)
        tap = self.tap
        if tap is not None:
            try:
                tap(src, data, time.monotonic())
            except Exception:
                pass

    def _noisy(self, data: bytes) -> tuple[bytes, bytes]:
        """(garbage to put on the line first, the chunk as this receiver hears it)."""
        garbage = b""
        if self.noise and self._rng.random() < self.noise:
            self.garbage += 1
            garbage = self._rng.randbytes(self._rng.randint(1, 8))
        if self.noise and self._rng.random() < self.noise:
            self.corrupted += 1
            buf = bytearray(data)
            buf[self._rng.randrange(len(buf))] ^= 1 << self._rng.randrange(8)
            data = bytes(buf)
        if self.junk and data.lstrip(MARK)[:1] == SOM and self._rng.random() < self.junk:
            self.garbage += 1
            garbage += self._rng.randbytes(self._rng.randint(1, 8))
        return garbage, data

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError:
            pass  # that end's buffer is full (nobody listening): the bytes are lost, as on a wire


class _FdChannel(Channel):
    """libosdp Channel over a raw tty fd, non-blocking. Never raises: libosdp cannot handle exceptions here.

    Hands libosdp one frame per read: libosdp 3.2.9's PD loses a frame that arrives in the same read as a
    frame for another reader (it drops the rest of the read when it skips the first), which on a busy
    multi-drop bus is its own poll now and then. A real reader's UART interrupt takes bytes as they come.

    Answers a repeated command itself, as OSDP asks of a reader (a command with the sequence number of the
    one before is the control panel asking again: the reader sends its last reply again). libosdp 3.2.9's PD
    instead checks the repeat's MAC against a chain that has moved on ("Invalid MAC; discarding SC"), answers
    NAK, and the control panel drops it. The control panel asks again when a reply is 200 ms late, which a
    simulated reader on a loaded machine now and then is: in the demo, readers flapped off the bus.
    """

    def __init__(self, fd: int, address: int) -> None:
        super().__init__()
        self.fd = fd
        self.address = address
        os.set_blocking(fd, False)
        self._split = FrameSplitter(SLOWEST_BAUD)
        self._frames: deque[bytes] = deque()
        self._last_command: bytes | None = None
        self._last_reply: bytes | None = None
        self.repeats = 0
        """Repeated commands answered with the last reply."""

    def read(self, max_bytes: int) -> bytes:
        while True:
            if not self._frames:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                self._frames.extend(self._split.feed(data, time.monotonic()))
            if not self._frames:
                return b""
            frame = self._frames.popleft()
            if not self._repeated(frame):
                break
        if len(frame) > max_bytes:
            self._frames.appendleft(frame[max_bytes:])
        return frame[:max_bytes]

    def _repeated(self, frame: bytes) -> bool:
        """A command to this reader that repeats the one before (same bytes, so same sequence number; never
        sequence 0, which starts a session over): answered with the last reply, or, while that one is still
        being made, dropped."""
        body = frame.lstrip(MARK)
        if len(body) < 5 or body[1] != self.address:
            return False
        if body != self._last_command or body[4] & 0x03 == 0:
            self._last_command, self._last_reply = body, None
            return False
        self.repeats += 1
        if self._last_reply is not None:
            self.write(self._last_reply)
        return True

    def write(self, buf: bytes) -> int:
        self._last_reply = buf
        try:
            return os.write(self.fd, buf)
        except OSError:
            return -1

    def flush(self) -> None:
        self._frames.clear()
        try:
            while os.read(self.fd, 4096):
                pass
        except OSError:
            pass


class _DaemonPD(PeripheralDevice):
    """PeripheralDevice whose refresh thread is a daemon, so a test that dies early cannot hang the interpreter.

    Same loop as ``PeripheralDevice.start`` (libosdp 3.2.9), which creates a non-daemon thread, except that
    the pause between refreshes is ``refresh_s`` (libosdp's is 20 ms), and each wake runs libosdp ``BURST``
    times: it takes one frame per run, and on a busy multi-drop bus every reader hears every other reader's
    polls too (a real reader takes each frame as it arrives; one run per wake falls behind and misses polls).
    """

    refresh_s = 0.020
    BURST = 4

    def start(self) -> None:
        self.event = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(
            name=f"osdp-pd-{self.address}", target=self._refresh_forever, args=(self.event, self.lock, self.ctx),
            daemon=True,
        )
        self.thread.start()

    def _refresh_forever(self, event: threading.Event, lock: threading.Lock, ctx: Any) -> None:
        while not event.is_set():
            with lock:
                for _ in range(self.BURST):
                    ctx.refresh()
            time.sleep(self.refresh_s)


ReaderKind = Literal["card", "keypad", "biometric"]


class SimReader:
    """An OSDP reader and the door it is wired to: a card/keypad/biometric head, a strike relay, a door contact
    and a request-to-exit button, with a person who walks through when the strike is released.

    ``bus_or_fd`` is a PtyBus (the reader takes ``endpoint``, or the next free one), a reader fd or a serial
    device path. ``scbk=None`` with ``install_mode=True`` is a factory-fresh reader that accepts a key from
    the control panel (KEYSET); the key it receives is kept in ``self.scbk`` and survives ``restart()``.
    ``refresh_s`` is the pause of the reader's libosdp loop, so how long it takes to answer a poll and to act
    on a command: 5 ms by default, as a real reader answers within a few ms (libosdp's Python loop pauses 20 ms,
    and on a multi-drop bus such a slow reader misses frames: libosdp's control panel then drops it).
    """

    def __init__(
        self,
        address: int,
        bus_or_fd: PtyBus | int | str,
        scbk: bytes | None,
        *,
        kind: ReaderKind = "card",
        install_mode: bool = False,
        enforce_secure: bool = True,
        inputs: int = 4,
        walk_through: bool = True,
        endpoint: int | None = None,
        refresh_s: float = 0.005,
        log_level: LogLevel = LogLevel.Warning,
    ) -> None:
        if kind not in ("card", "keypad", "biometric"):
            raise ValueError(f"reader kind {kind!r}: expected card, keypad or biometric")
        if inputs < 2:
            raise ValueError("a reader needs at least 2 inputs (door contact, request-to-exit)")
        self.address = address
        self.scbk = scbk
        self.kind = kind
        self.install_mode = install_mode
        self.enforce_secure = enforce_secure
        self.walk_through = walk_through
        self.refresh_s = refresh_s
        self.log_level = log_level
        """libosdp's (process-wide) log level while this reader runs."""
        self.endpoint: int | None = None
        self._owned_fd = False
        if isinstance(bus_or_fd, PtyBus):
            self.endpoint = bus_or_fd.claim(endpoint)
            self._fd = bus_or_fd.reader_fd(self.endpoint)
        elif isinstance(bus_or_fd, str):
            self._fd = os.open(bus_or_fd, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(self._fd)
            self._owned_fd = True
        else:
            self._fd = bus_or_fd

        self.commands: list[dict[str, Any]] = []
        """Every command the control panel sent, in order, as libosdp's dicts."""
        self.relay = [False] * N_RELAYS
        """Current state of each output (True = energised)."""
        self.led: dict[str, Any] | None = None
        """The last LED command."""
        self.buzzer: dict[str, Any] | None = None
        """The last buzzer command."""
        self.inputs = [0] * inputs
        """Input levels as last reported: see DOOR_CONTACT, REX."""
        self.tamper_active = False
        self._cond = threading.Condition()
        self._permanent = [False] * N_RELAYS
        self._relay_timers: list[threading.Timer | None] = [None] * N_RELAYS
        self._walk_timers: list[threading.Timer] = []
        self._pd: _DaemonPD | None = None
        self._channel: _FdChannel | None = None
        self._start()

    # ------------------------------------------------------------------ lifecycle

    @property
    def online(self) -> bool:
        return self._pd is not None and bool(self._pd.is_online())

    @property
    def repeats(self) -> int:
        """Commands the control panel sent again (a reply it found late) answered with the last reply."""
        return self._channel.repeats if self._channel is not None else 0

    def stall(self, seconds: float) -> None:
        """The reader's processor busy for ``seconds`` (a loaded machine): it answers nothing meanwhile, and
        then what came in order."""
        pd = self._pd
        if pd is not None:
            with pd.lock:
                threading.Event().wait(seconds)

    @property
    def sc_active(self) -> bool:
        return self._pd is not None and bool(self._pd.is_sc_active())

    def stop(self) -> None:
        """Power the reader off (idempotent). Closes the fd only if the reader opened it from a path."""
        self._teardown()
        if self._owned_fd:
            self._owned_fd = False
            os.close(self._fd)

    def restart(self) -> None:
        """Power-cycle the reader: outputs drop, the session is lost, a fresh libosdp PD starts on the same line."""
        self._teardown()
        self._start()

    def _start(self) -> None:
        channel = self._channel = _FdChannel(self._fd, self.address)
        channel.flush()  # bytes that arrived while powered off are gone
        flags = []
        if self.enforce_secure:
            flags.append(LibFlag.EnforceSecure)
        if self.install_mode:
            flags.append(LibFlag.InstallMode)
        ident = PdId(version=1, model=1, vendor_code=0x0B0B1E, serial_number=0x5100 + self.address, firmware_version=1)
        info = PDInfo(self.address, channel, scbk=self.scbk, flags=flags, id=ident)
        # NB: constructing a PeripheralDevice sets libosdp's process-wide log level.
        self._pd = _DaemonPD(info, self._capabilities(), log_level=self.log_level, command_handler=self._on_command)
        self._pd.refresh_s = self.refresh_s
        self._pd.start()

    def _teardown(self) -> None:
        with self._cond:
            timers = [t for t in (*self._relay_timers, *self._walk_timers) if t is not None]
            self._relay_timers = [None] * N_RELAYS
            self._walk_timers = []
            self.relay = [False] * N_RELAYS
            self._permanent = [False] * N_RELAYS
        for timer in timers:
            timer.cancel()
        pd, self._pd = self._pd, None
        if pd is not None:
            pd.teardown()

    def _capabilities(self) -> PDCapabilities:
        caps = [
            (Capability.OutputControl, 1, N_RELAYS),
            (Capability.ContactStatusMonitoring, 1, len(self.inputs)),
            (Capability.LEDControl, 1, 1),
            (Capability.AudibleControl, 1, 1),
            (Capability.Readers, 1, 1),
        ]
        if self.kind == "biometric":
            caps.append((Capability.Biometrics, 1, 1))
        return PDCapabilities(caps)

    # ------------------------------------------------------------------ what a person does at the door

    def present_card(self, fmt: str, number: str) -> bool:
        """Present a card: ``fmt`` is wiegand26/34/37 with number ``"FC:CARD"``, or ``"ascii"`` with the text."""
        if fmt == "ascii":
            data = number.encode("ascii")
            return self._card_read(CardFormat.Unspecified, data, 8 * len(data))
        data, bits = encode_wiegand(fmt, number)
        return self.present_raw(data, bits)

    def present_raw(self, data: bytes, bits: int) -> bool:
        """Send raw Wiegand bits (MSB first, left-aligned in ``data``): for reads with bad parity or odd lengths."""
        return self._card_read(CardFormat.Wiegand, data, bits)

    def _card_read(self, fmt: int, data: bytes, bits: int) -> bool:
        if len(data) > MAX_DATA:
            raise ValueError(f"card data of {len(data)} bytes: OSDP events carry at most {MAX_DATA}")
        return self._submit(
            {"event": Event.CardRead, "reader_no": 0, "format": fmt, "direction": 0, "length": bits, "data": data}
        )

    def keypad(self, digits: str) -> bool:
        """Type ``digits`` and press '#': ASCII digits, '*' as 0x7F, '#' as 0x0D (see the module docstring)."""
        if not digits.endswith("#"):
            digits += "#"
        data = bytes(KEYPAD_CODES.get(ch, ord(ch)) for ch in digits)
        if len(data) > MAX_DATA:
            raise ValueError(f"{len(data)} key presses: OSDP events carry at most {MAX_DATA}")
        return self._submit({"event": Event.KeyPress, "reader_no": 0, "data": data})

    def biometric(self, identity: str) -> bool:
        """A finger/face matched ``identity``: sent as the ASCII card read ``"bio:" + identity`` (see module doc)."""
        if self.kind != "biometric":
            raise ValueError(f"reader {self.address} is a {self.kind} reader, not biometric")
        return self.present_card("ascii", BIO_PREFIX + identity)

    def open_door(self) -> bool:
        return self._set_input(DOOR_CONTACT, 1)

    def close_door(self) -> bool:
        return self._set_input(DOOR_CONTACT, 0)

    def rex(self) -> bool:
        """Press and release the request-to-exit button (two input reports)."""
        pressed = self._set_input(REX, 1)
        released = self._set_input(REX, 0)
        return pressed and released

    def tamper(self, active: bool) -> bool:
        """Open (True) or close the reader housing: a Local status report ``[tamper, power]``."""
        self.tamper_active = active
        return self._submit(
            {"event": Event.Status, "type": StatusReportType.Local, "report": bytes([int(active), 0])}
        )

    def _set_input(self, number: int, level: int) -> bool:
        with self._cond:
            self.inputs[number] = level
            report = bytes(self.inputs)
        return self._submit({"event": Event.Status, "type": StatusReportType.Input, "report": report})

    def _submit(self, event: dict[str, Any]) -> bool:
        """Queue an event for the control panel's next poll; False if libosdp refused it (queue full)."""
        pd = self._pd
        if pd is None:
            raise RuntimeError(f"reader {self.address} is stopped")
        return bool(pd.submit_event(event))

    # ------------------------------------------------------------------ commands from the control panel

    def wait_for_command(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0, since: int = 0
    ) -> dict[str, Any] | None:
        """The first recorded command (from index ``since``) matching ``predicate``, waiting up to ``timeout`` s."""
        def match() -> dict[str, Any] | None:
            return next((c for c in self.commands[since:] if predicate(c)), None)

        with self._cond:
            self._cond.wait_for(lambda: match() is not None, timeout)
            return match()

    def _on_command(self, cmd: dict[str, Any]) -> tuple[int, None]:
        """libosdp command handler (runs in the PD refresh thread with its lock held). Always ACKs."""
        try:
            pd = self._pd
            if pd is not None:  # the wrapper also queues every command for get_command(); we don't use it
                while not pd.command_queue.empty():
                    pd.command_queue.get_nowait()
            with self._cond:
                self.commands.append(cmd)
                kind = cmd.get("command")
                if kind == Command.Output:
                    self._output(cmd["output_no"], cmd["control_code"], cmd.get("timer_count", 0))
                elif kind == Command.LED:
                    self.led = cmd
                elif kind == Command.Buzzer:
                    self.buzzer = cmd
                elif kind == Command.Keyset:
                    # Provisioned: a real reader stores the key and leaves install mode.
                    self.scbk = cmd["data"]
                    self.install_mode = False
                self._cond.notify_all()
        except Exception:
            pass
        return 0, None

    def _output(self, no: int, code: int, timer_count: int) -> None:
        """OSDP output control codes: 1/2 permanent off/on (cancel a timed state), 3/4 permanent off/on after any
        timed state ends, 5/6 temporary on/off for timer_count x 100 ms then back to the permanent state."""
        if not 0 <= no < N_RELAYS:
            return
        if code in (1, 2, 3, 4):
            self._permanent[no] = code in (2, 4)
            if code in (1, 2) or self._relay_timers[no] is None:
                self._cancel_relay_timer(no)
                self.relay[no] = self._permanent[no]
        elif code in (5, 6):
            self._cancel_relay_timer(no)
            self.relay[no] = code == 5
            seconds = timer_count / 10
            if timer_count:
                timer = threading.Timer(seconds, self._relay_timeout, args=(no,))
                timer.daemon = True
                self._relay_timers[no] = timer
                timer.start()
            if code == 5 and no == STRIKE and self.walk_through and timer_count:
                self._walk(seconds)

    def _cancel_relay_timer(self, no: int) -> None:
        timer, self._relay_timers[no] = self._relay_timers[no], None
        if timer is not None:
            timer.cancel()

    def _relay_timeout(self, no: int) -> None:
        with self._cond:
            self._relay_timers[no] = None
            self.relay[no] = self._permanent[no]
            self._cond.notify_all()

    def _walk(self, seconds: float) -> None:
        """A person pushes the door open a quarter into the unlock time and it closes again by three quarters."""
        self._walk_timers = [t for t in self._walk_timers if t.is_alive()]
        for delay, action in ((seconds * 0.25, self.open_door), (seconds * 0.75, self.close_door)):
            timer = threading.Timer(delay, self._quietly, args=(action,))
            timer.daemon = True
            self._walk_timers.append(timer)
            timer.start()

    @staticmethod
    def _quietly(action: Callable[[], bool]) -> None:
        try:
            action()
        except Exception:
            pass
