"""Frames from one camera: a video file, an RTSP/HTTP stream or a local device, read with OpenCV.

A camera worker lives for months while cameras reboot, cables get pulled and NVRs restart, so
`Capture.frames()` never gives up on a live source: it reports each status change (connecting, online,
reconnecting, error), retries with exponential back-off, and yields frames again when the camera returns.

OpenCV calls block (opening a dead RTSP URL, reading a stalled stream), so each connection is owned by
one reader thread; the generator only waits on it in short slices and therefore honours `stop` within
~0.1 s whatever the camera does. The FFmpeg open/read timeouts bound how long an abandoned reader
thread lingers before it releases its capture.
"""

from __future__ import annotations

import logging
import math
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np

from badge_bridge.backoff import Backoff

log = logging.getLogger(__name__)

CameraState = Literal["connecting", "online", "reconnecting", "error", "ended"]

_STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
_SECRET_QUERY_WORDS = ("pass", "pwd", "token", "key", "secret", "auth", "user", "sig")
_POLL_S = 0.05  # how often waits look at the stop event
_FALLBACK_FPS = 25.0  # pace for a file that declares no usable frame rate
_FPS_WINDOW = 30  # frames over which a live stream's rate is measured


@dataclass(frozen=True)
class Status:
    """One camera status as the operator sees it; `reason` never contains credentials."""

    state: CameraState
    reason: str
    fps: float | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Source:
    """A parsed camera address: what to hand OpenCV, and how to name it in logs (credentials masked)."""

    kind: Literal["file", "stream", "device"]
    target: str | int  # path or URL for OpenCV, or a device index
    display: str


def mask_url(url: str) -> str:
    """`url` with user:password@ and secret-looking query values replaced by ***, for logs and reasons."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if any(w in k.lower() for w in _SECRET_QUERY_WORDS) else v) for k, v in pairs],
            safe="*",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse_source(url: str, base_dir: Path = Path(".")) -> Source:
    """Parse a camera address from the site configuration; reject anything else with a clear reason.

    Accepted: ``file:PATH`` (relative to `base_dir`), ``rtsp://``, ``rtsps://``, ``http://``, ``https://``
    (MJPEG, HLS, ... through FFmpeg), ``device:N`` and ``/dev/videoN``.
    """
    if url.startswith("file:"):
        path_text = url[len("file:") :]
        if not path_text:
            raise ValueError("camera source 'file:' names no file")
        path = Path(path_text)
        path = path if path.is_absolute() else base_dir / path
        return Source("file", str(path), str(path))
    if url.startswith("device:"):
        index_text = url[len("device:") :]
        if not index_text.isdigit():
            raise ValueError(f"camera source {url!r}: a device is 'device:N' with N a number, e.g. device:0")
        return Source("device", int(index_text), url)
    if url.startswith("/dev/video"):
        if not url[len("/dev/video") :].isdigit():
            raise ValueError(f"camera source {url!r}: expected /dev/videoN")
        return Source("device", url, url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _STREAM_SCHEMES:
        shown = mask_url(url)
        try:
            host = urlsplit(url).hostname
        except ValueError as exc:
            raise ValueError(f"camera source {shown}: {exc}") from None
        if not host:
            raise ValueError(f"camera source {shown}: the URL names no host")
        return Source("stream", url, shown)
    shown = mask_url(url) if "://" in url else url
    raise ValueError(
        f"camera source {shown!r} is not supported: use file:PATH, rtsp://, rtsps://, http(s)://, "
        "device:N or /dev/videoN"
    )


def _stall_reason(read_timeout_s: float, display: str) -> str:
    """One wording for a stalled stream, whether FFmpeg's read timeout or our own watch noticed first."""
    return f"stream stopped delivering frames for {read_timeout_s:.1f} s: {display}"


def _plausible_fps(value: float) -> float | None:
    """Containers report 0, NaN or 1000 when they do not know; only a believable rate is a rate."""
    return value if math.isfinite(value) and 0.0 < value <= 240.0 else None


class _Reader(threading.Thread):
    """Owns one OpenCV capture for one connection: opens it, reads frames into `frames`, releases it.

    Only this thread touches the capture (OpenCV captures are not safe to release from another thread
    while a read blocks). The consumer sets `quit` to abandon it; it then exits after its current call.
    """

    END = object()

    def __init__(self, source: Source, params: list[int], pace: bool) -> None:
        super().__init__(name=f"capture {source.display}", daemon=True)
        self.source = source
        self.params = params
        self.pace = pace
        self.live = source.kind != "file"
        self.quit = threading.Event()
        self.opened = threading.Event()  # set once open_error or the open_* fields are final
        self.open_error: str | None = None
        self.open_fps: float | None = None
        self.width = 0
        self.height = 0
        self.frame_count = 0
        self.end_reason = ""
        # Live: keep only the newest frames (a slow consumer must not fall behind reality).
        # File: block instead, so no frame of the recording is skipped.
        self.frames: queue.Queue[object] = queue.Queue(maxsize=2 if self.live else 4)

    def run(self) -> None:
        started = time.monotonic()
        cap = self._open()
        try:
            if not cap.isOpened():
                self.open_error = self._open_failure(time.monotonic() - started)
                return
            ok, frame = cap.read()
            if not ok:
                self.open_error = self._no_first_frame()
                return
            self.open_fps = _plausible_fps(cap.get(cv2.CAP_PROP_FPS))
            self.height, self.width = frame.shape[:2]
            self._put((frame, time.time()))
            self.frame_count = 1
            self.opened.set()
            self._stream(cap)
        finally:
            cap.release()
            self.opened.set()
            self._put(self.END)

    def _open(self) -> cv2.VideoCapture:
        if self.source.kind == "device":
            return cv2.VideoCapture(self.source.target)
        return cv2.VideoCapture(self.source.target, cv2.CAP_FFMPEG, self.params)

    def _stream(self, cap: cv2.VideoCapture) -> None:
        period = 1.0 / (self.open_fps or _FALLBACK_FPS)
        due = time.monotonic()
        while not self.quit.is_set():
            asked = time.monotonic()
            ok, frame = cap.read()
            if not ok:
                if not self.live:
                    self.end_reason = f"end of file after {self.frame_count} frames: {self.source.display}"
                elif time.monotonic() - asked >= 0.9 * self.read_timeout_s:
                    self.end_reason = _stall_reason(self.read_timeout_s, self.source.display)
                else:
                    self.end_reason = f"lost the stream from {self.source.display}: connection closed or data corrupt"
                return
            if self.pace and not self.live:
                due += period
                lag = due - time.monotonic()
                if lag > 0:
                    if self.quit.wait(lag):
                        return
                elif lag < -period:
                    due = time.monotonic()  # the consumer was slow: resume real time, do not burst
            self.frame_count += 1
            if not self._put((frame, time.time())):
                return

    def _put(self, item: object) -> bool:
        """Hand over one item; on a full live queue drop the oldest frame. False once told to quit."""
        while not self.quit.is_set():
            try:
                self.frames.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                if self.live and item is not self.END:
                    try:
                        self.frames.get_nowait()
                    except queue.Empty:
                        pass
        return False

    def _open_failure(self, elapsed_s: float) -> str:
        src = self.source
        if src.kind == "file":
            path = Path(str(src.target))
            if not path.exists():
                return f"file not found: {src.display}"
            if not path.is_file():
                return f"not a regular file: {src.display}"
            return f"file is not a readable video: {src.display}"
        if src.kind == "device":
            return f"cannot open device {src.display}: missing, busy or not a camera"
        timeout_s = self.params[1] / 1000.0
        if elapsed_s >= 0.9 * timeout_s:
            return f"cannot open {src.display}: no answer within {timeout_s:.1f} s"
        return f"cannot open {src.display}: {self._diagnose(timeout_s)}"

    def _diagnose(self, timeout_s: float) -> str:
        """Why a stream failed fast: FFmpeg only says 'no', a TCP probe tells the operator what to fix."""
        parts = urlsplit(str(self.source.target))
        default_port = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}[parts.scheme.lower()]
        try:
            port = parts.port or default_port
        except ValueError:
            return "invalid port in the URL"
        try:
            with socket.create_connection((parts.hostname, port), timeout=min(timeout_s, 2.0)):
                return "the server answered but sent no readable video (wrong path, credentials or format?)"
        except ConnectionRefusedError:
            return f"connection refused on port {port}"
        except socket.gaierror:
            return "unknown host"
        except TimeoutError:
            return f"no answer on port {port}"
        except OSError as exc:
            return exc.strerror or type(exc).__name__

    def _no_first_frame(self) -> str:
        if self.source.kind == "file":
            return f"file is not a readable video: {self.source.display} (no frame could be decoded)"
        return f"{self.source.display} opened but sent no frame within {self.read_timeout_s:.1f} s"

    @property
    def read_timeout_s(self) -> float:
        return self.params[3] / 1000.0


class Capture:
    """Frames from one camera, for one worker process; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        base_dir: Path = Path("."),
        loop: bool = False,
        pace: bool = True,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 2.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        on_status: Callable[[Status], None] = lambda s: None,
        stop: threading.Event | None = None,
    ) -> None:
        self.source = parse_source(url, base_dir)
        self._loop = loop
        self._pace = pace
        self._read_timeout_s = read_timeout_s
        self._open_timeout_s = open_timeout_s
        self._last_reader: _Reader | None = None
        self._params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            max(1, round(open_timeout_s * 1000)),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            max(1, round(read_timeout_s * 1000)),
        ]
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._on_status = on_status
        self._stop = stop or threading.Event()
        self._last_status: Status | None = None
        self._nominal_fps: float | None = None
        self._arrivals: deque[float] = deque(maxlen=_FPS_WINDOW)

    @property
    def fps(self) -> float | None:
        """Frames per second: a file's declared rate; for a live source, the rate measured over the last
        frames (MJPEG over HTTP, for one, always claims 25), or the declared one until enough arrived."""
        if self.source.kind != "file" and len(self._arrivals) >= 10:
            span = self._arrivals[-1] - self._arrivals[0]
            if span > 0:
                return (len(self._arrivals) - 1) / span
        return self._nominal_fps

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """Yield (BGR frame, capture time as time.time()) until stop is set (or a file ends, loop=False)."""
        backoff = Backoff(self._backoff_initial_s, self._backoff_max_s)
        reader: _Reader | None = None
        self._report(Status("connecting", f"opening {self.source.display}"))
        try:
            while not self._stop.is_set():
                reader = _Reader(self.source, self._params, self._pace)
                reader.start()
                if not self._wait(reader.opened):
                    return
                if reader.open_error is not None:
                    self._report(Status("error", reader.open_error))
                    if not self._sleep(backoff.next()):
                        return
                    continue
                online_since = time.monotonic()
                self._nominal_fps = reader.open_fps
                self._arrivals.clear()
                self._report(
                    Status(
                        "online", f"receiving from {self.source.display}", reader.open_fps, reader.width, reader.height
                    )
                )
                reason = yield from self._drain(reader)
                reader.quit.set()
                if reason is None:
                    return
                if self.source.kind == "file":
                    if self._loop:
                        continue
                    self._report(Status("ended", reason))
                    return
                self._report(Status("reconnecting", reason))
                if time.monotonic() - online_since >= self._backoff_max_s:
                    backoff.reset()  # it was stable: a fresh drop gets a fresh back-off
                if not self._sleep(backoff.next()):
                    return
        finally:
            if reader is not None:
                reader.quit.set()
                self._last_reader = reader

    def close(self) -> None:
        """Wait for the last reader to release its capture (up to an open and a read timeout): a process that
        exits while OpenCV still reads on another thread dies in std::terminate instead of exiting cleanly."""
        reader = self._last_reader
        if reader is not None and reader.is_alive():
            reader.join(self._read_timeout_s + self._open_timeout_s)

    def _drain(self, reader: _Reader) -> Generator[tuple[np.ndarray, float], None, str | None]:
        """Yield the reader's frames; return why they stopped, or None when stop was set."""
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                item = reader.frames.get(timeout=_POLL_S)
            except queue.Empty:
                if reader.live and time.monotonic() - last > self._read_timeout_s:
                    return _stall_reason(self._read_timeout_s, self.source.display)
                continue
            if item is _Reader.END:
                return reader.end_reason or f"lost the stream from {self.source.display}"
            frame, t = cast(tuple[np.ndarray, float], item)
            self._arrivals.append(t)
            if reader.live and len(self._arrivals) == _FPS_WINDOW:
                self._report_measured_fps()
            yield frame, t
            last = time.monotonic()  # time the consumer spent on the frame is not the camera's silence
        return None

    def _report_measured_fps(self) -> None:
        """Correct the online status once the real rate is known: live sources often declare a wrong one
        (FFmpeg's MJPEG-over-HTTP always says 25), and the worker encodes clips at the reported rate."""
        measured, online = self.fps, self._last_status
        if measured is None or online is None or online.state != "online":
            return
        if online.fps is None or abs(online.fps - measured) > 0.2 * measured:
            self._report(replace(online, fps=round(measured, 1)))

    def _report(self, status: Status) -> None:
        """Tell the worker about a change; a retry that fails the same way again is no news."""
        if status == self._last_status:
            return
        self._last_status = status
        log.info("camera %s: %s (%s)", self.source.display, status.state, status.reason)
        self._on_status(status)

    def _wait(self, event: threading.Event) -> bool:
        """Wait for `event` in short slices; False if stop was set first."""
        while not event.wait(_POLL_S):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Back-off wait that stop interrupts at once; False if stop was set."""
        return not self._stop.wait(seconds)
