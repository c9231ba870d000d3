"""libosdp's plumbing for the OSDP driver: the serial channel and a control panel run fast enough for the wire.

libosdp's control panel acts only when it is run (``refresh``): it sends the next command, reads a reply, and
polls each idle reader every ``IDLE_POLL_S``. Its Python binding runs it every 20 ms, which adds up to 20 ms to
every exchange (a card read, then the strike command, each wait for the next run): 3 to 17 times the time the
bytes take on the wire. ``BusPanel`` runs it every ``REFRESH_S`` and at once when a command is submitted.
"""

from __future__ import annotations

import threading

import serial
from osdp import Channel, ControlPanel

REFRESH_S = 0.002
"""How often the control panel runs: the most it adds to each exchange. Each run is a few microseconds."""
IDLE_POLL_S = 0.050
"""libosdp polls each idle reader this often (OSDP_PD_POLL_TIMEOUT_MS, fixed when libosdp is built): a card
read waits up to this long, plus the bus's turn over the other readers, for the poll it answers."""


class SerialChannel(Channel):  # type: ignore[misc]
    """libosdp's channel on a pyserial port, opened exclusively (a second process on the same bus would answer
    for readers and garble every frame). Never raises: libosdp's thread wedges on a Python exception. A failed
    port is closed and reported by ``healthy`` and ``error``; the bus reopens it."""

    def __init__(self, port: str, baud: int) -> None:
        super().__init__()
        self.port, self.baud = port, baud
        self.ser: serial.Serial | None = None
        self.error: str | None = None
        self.held = False
        """The port is open in another process (the last open failed on its exclusive lock)."""
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


class BusPanel(ControlPanel):  # type: ignore[misc]
    """libosdp's ControlPanel run every REFRESH_S (not 20 ms) on a daemon thread, woken when a command is
    submitted. Events go to the handler only: the binding would also keep each in a per-reader queue that
    nobody reads, which grows for as long as the bus runs."""

    runs = 0
    """How many times the control panel has been run (so many per idle poll, ``IDLE_POLL_S / REFRESH_S``)."""

    def start(self) -> None:
        if self.thread:
            raise RuntimeError("the control panel is already running")
        self.event, self.lock, self._wake = threading.Event(), threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="osdp-cp", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ctx, lock, stop, wake = self.ctx, self.lock, self.event, self._wake
        while not stop.is_set():
            with lock:
                ctx.refresh()
            self.runs += 1
            wake.wait(REFRESH_S)
            wake.clear()

    def submit_command(self, address: int, cmd: dict[str, object]) -> bool:
        submitted = bool(super().submit_command(address, cmd))
        self._wake.set()
        return submitted

    def _internal_event_handler(self, pd: int, event: dict[str, object]) -> int:
        handler = self.user_event_handler
        return handler(pd, event) if handler is not None else 0
