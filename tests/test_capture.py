"""Capture against real sources: the test video, corrupt files, dead and silent ports, a real MJPEG server.

No mocks and no timing assertions: "eventually" waits on the condition, "stop is honoured" is a thread that
ends well before the wait it interrupts would have, and pacing is checked as a lower bound only (a real-time
player cannot be faster than the clock). How fast errors are reported and stop is honoured is measured by
bench/bench_capture.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest

from camera.capture import Capture, Status, mask_url, parse_source
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
_LOCAL_VIDEO = ROOT / "tests/data/video/door-entries-part1.mp4"
VIDEO = _LOCAL_VIDEO if _LOCAL_VIDEO.exists() else Path("/work/shared/testdata/video/door-entries-part1.mp4")
MJPEG_SERVER = ROOT / "tests/mjpeg_server.py"


def _video_props() -> tuple[int, float, int, int]:
    cap = cv2.VideoCapture(str(VIDEO), cv2.CAP_FFMPEG)
    props = (
        int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
        cap.get(cv2.CAP_PROP_FPS),
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    cap.release()
    return props


FRAME_COUNT, FPS, WIDTH, HEIGHT = _video_props()


class Runner:
    """Drives Capture.frames() on a thread, as the worker does, and records what it saw."""

    def __init__(self, url: str, **kwargs: object) -> None:
        self.stop = threading.Event()
        self.statuses: list[Status] = []
        self.frames = 0
        self.shapes: set[tuple[int, ...]] = set()
        self.times: list[float] = []
        self.capture = Capture(url, on_status=self.statuses.append, stop=self.stop, **kwargs)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for frame, t in self.capture.frames():
            self.frames += 1
            self.shapes.add(frame.shape)
            self.times.append(t)

    @property
    def states(self) -> list[str]:
        return [s.state for s in self.statuses]

    def wait_for(self, predicate: Callable[[], object], timeout: float = 15.0, what: str = "the capture") -> None:
        wait_until(predicate, timeout, what, detail=lambda: f"statuses so far: {self.statuses}")

    def wait_state(self, state: str, after: int = 0, timeout: float = 15.0) -> Status:
        """The first status `state` reported at index >= `after`."""
        self.wait_for(lambda: state in self.states[after:], timeout, f"status {state!r}")
        return self.statuses[self.states.index(state, after)]

    def close(self, within: float = 10.0) -> None:
        """Set stop; frames() must notice within ``within`` seconds."""
        self.stop.set()
        self.thread.join(timeout=within)
        assert not self.thread.is_alive(), f"frames() did not honour stop within {within:g} s"


@pytest.fixture
def runners() -> Iterator[list[Runner]]:
    made: list[Runner] = []
    yield made
    for runner in made:
        runner.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MjpegServer:
    """tests/mjpeg_server.py as a real subprocess, killable and restartable on the same port."""

    def __init__(self, *extra: str) -> None:
        self.extra = extra
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(MJPEG_SERVER), "--port", str(self.port), "--video", str(VIDEO), "--fps", "10"]
            + list(self.extra),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.port = int(line.split()[-1])

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"


@pytest.fixture
def mjpeg() -> Iterator[Callable[..., MjpegServer]]:
    servers: list[MjpegServer] = []

    def make(*extra: str) -> MjpegServer:
        server = MjpegServer(*extra)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


class SilentServer:
    """Accepts TCP connections and never says a word: a hung camera or a black-holed NVR."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# --- files ---------------------------------------------------------------------------------------


def test_file_plays_every_frame_and_ends(runners: list[Runner]) -> None:
    runner = Runner(f"file:{VIDEO}", pace=False)
    runners.append(runner)
    runner.thread.join(timeout=60)
    assert not runner.thread.is_alive()
    assert runner.states == ["connecting", "online", "ended"]
    online = runner.statuses[1]
    assert (online.fps, online.width, online.height) == (FPS, WIDTH, HEIGHT)
    assert runner.frames == FRAME_COUNT
    assert runner.shapes == {(HEIGHT, WIDTH, 3)}
    assert runner.times == sorted(runner.times)
    assert f"after {FRAME_COUNT} frames" in runner.statuses[-1].reason
    assert runner.capture.fps == FPS


def test_relative_file_resolves_against_base_dir(runners: list[Runner]) -> None:
    runner = Runner(f"file:{VIDEO.name}", base_dir=VIDEO.parent, pace=False)
    runners.append(runner)
    runner.wait_state("ended", timeout=60)
    assert runner.frames == FRAME_COUNT


def test_loop_restarts_at_the_end_without_status_noise(runners: list[Runner]) -> None:
    runner = Runner(f"file:{VIDEO}", pace=False, loop=True)
    runners.append(runner)
    runner.wait_for(lambda: runner.frames > 2 * FRAME_COUNT + 10, timeout=120)
    runner.close()
    assert runner.states == ["connecting", "online"]


def test_pace_plays_in_real_time(runners: list[Runner]) -> None:
    runner = Runner(f"file:{VIDEO}", pace=True)
    runners.append(runner)
    started = time.monotonic()
    runner.wait_for(lambda: runner.frames >= 20)
    elapsed = time.monotonic() - started
    # 20 frames of a 10 fps file are 1.9 s of video: a real-time player cannot beat that.
    assert elapsed >= 0.75 * 19 / FPS
    assert runner.times[19] - runner.times[0] >= 0.75 * 19 / FPS


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_corrupt_file_is_an_error_and_retried_until_it_is_fixed(
    runners: list[Runner], tmp_path: Path, kind: str
) -> None:
    bad = tmp_path / "cam.mp4"
    if kind == "random":
        bad.write_bytes(os.urandom(500_000))
    elif kind == "truncated":
        bad.write_bytes(VIDEO.read_bytes()[: 1_000_000])
    else:
        bad.write_bytes(b"")
    runner = Runner(f"file:{bad}", pace=False, backoff_initial_s=0.05, backoff_max_s=0.2)
    runners.append(runner)
    error = runner.wait_state("error")
    assert error.reason == f"file is not a readable video: {bad}"
    # Still retrying: once someone puts a good file in place, the camera comes online by itself.
    shutil.copyfile(VIDEO, bad)
    runner.wait_state("online")
    runner.wait_for(lambda: runner.frames > 0)
    assert runner.states[:3] == ["connecting", "error", "online"]


def test_missing_file_says_so(runners: list[Runner], tmp_path: Path) -> None:
    runner = Runner(f"file:{tmp_path / 'nope.mp4'}", backoff_initial_s=0.05)
    runners.append(runner)
    assert runner.wait_state("error").reason == f"file not found: {tmp_path / 'nope.mp4'}"


# --- network sources that do not work --------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_silent_server_is_an_error_within_the_open_timeout_and_retried(
    runners: list[Runner], silent: SilentServer, scheme: str
) -> None:
    url = f"{scheme}://127.0.0.1:{silent.port}/stream"
    runner = Runner(url, open_timeout_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.2)
    runners.append(runner)
    error = runner.wait_state("error")
    assert error.reason == f"cannot open {url}: no answer within 1.0 s"
    runner.wait_for(lambda: len(silent.accepted) >= 3)  # it keeps trying, and did not crash
    assert runner.thread.is_alive()
    assert runner.states == ["connecting", "error"]  # the same failure again is not news


def test_refused_port_is_an_error_and_retried_until_the_camera_appears(
    runners: list[Runner], mjpeg: Callable[..., MjpegServer]
) -> None:
    port = _free_port()
    runner = Runner(f"http://127.0.0.1:{port}/video.mjpg", open_timeout_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.5)
    runners.append(runner)
    error = runner.wait_state("error")
    assert error.reason == f"cannot open http://127.0.0.1:{port}/video.mjpg: connection refused on port {port}"
    server = MjpegServer()
    server.port = port
    server.start()
    try:
        runner.wait_state("online")
        runner.wait_for(lambda: runner.frames >= 3)
    finally:
        server.kill()


def test_credentials_never_appear_in_reasons(runners: list[Runner]) -> None:
    port = _free_port()
    runner = Runner(f"rtsp://admin:s3cret@127.0.0.1:{port}/live?password=hunter2&channel=1", open_timeout_s=1.0)
    runners.append(runner)
    runner.wait_state("error", timeout=6.0)
    for status in runner.statuses:
        assert "s3cret" not in status.reason and "admin" not in status.reason and "hunter2" not in status.reason
    assert f"rtsp://***@127.0.0.1:{port}/live?password=***&channel=1" in runner.statuses[-1].reason


# --- stop ----------------------------------------------------------------------------------------------


def test_stop_is_honoured_during_back_off(runners: list[Runner]) -> None:
    runner = Runner(f"http://127.0.0.1:{_free_port()}/x", backoff_initial_s=60.0, backoff_max_s=60.0)
    runner.wait_state("error")
    runner.close(within=15.0)  # a quarter of the back-off: stop does not wait it out


def test_stop_is_honoured_during_a_blocking_open(silent: SilentServer) -> None:
    runner = Runner(f"rtsp://127.0.0.1:{silent.port}/stream", open_timeout_s=30.0)
    runner.wait_for(lambda: len(silent.accepted) >= 1)  # FFmpeg is now blocked waiting for an answer
    runner.close(within=10.0)  # a third of the open timeout: stop interrupts the open
    assert runner.states == ["connecting"]


def test_stop_is_honoured_while_pacing(runners: list[Runner]) -> None:
    runner = Runner(f"file:{VIDEO}", pace=True, loop=True)
    runner.wait_for(lambda: runner.frames >= 2)
    runner.close()  # the file loops: without stop, frames() would go on for ever


# --- a real MJPEG camera that dies and comes back ----------------------------------------------------


def test_mjpeg_stream_dies_and_comes_back(runners: list[Runner], mjpeg: Callable[..., MjpegServer]) -> None:
    server = mjpeg()
    runner = Runner(server.url, read_timeout_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5)
    runners.append(runner)
    online = runner.wait_state("online")
    assert (online.width, online.height) == (WIDTH, HEIGHT)
    # FFmpeg declares 25 fps for MJPEG over HTTP; once 30 frames arrived the status carries the measured rate.
    runner.wait_for(lambda: runner.frames >= 35)
    fps = runner.capture.fps
    assert fps is not None and 5.0 < fps < 20.0  # the server sends 10 fps
    assert runner.states[:3] == ["connecting", "online", "online"]
    corrected = runner.statuses[2].fps
    assert corrected is not None and 5.0 < corrected < 20.0

    server.kill()
    reconnecting = runner.wait_state("reconnecting", after=3)
    assert reconnecting.reason == f"lost the stream from {server.url}: connection closed or data corrupt"
    runner.wait_state("error", after=3)  # the port now refuses
    before = runner.frames

    server.start()  # same port
    runner.wait_state("online", after=4)
    runner.wait_for(lambda: runner.frames >= before + 10)
    assert runner.states[:4] == ["connecting", "online", "online", "reconnecting"]
    assert runner.states[-1] == "online"
    assert runner.shapes == {(HEIGHT, WIDTH, 3)}


def test_stalled_stream_is_detected_and_reopened(runners: list[Runner], mjpeg: Callable[..., MjpegServer]) -> None:
    server = mjpeg("--stall-after", "5")
    runner = Runner(server.url, read_timeout_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.5)
    runners.append(runner)
    runner.wait_state("online")
    reconnecting = runner.wait_state("reconnecting")
    assert reconnecting.reason == f"stream stopped delivering frames for 1.0 s: {server.url}"
    runner.wait_state("online", after=3)  # a fresh connection gets frames again
    runner.wait_for(lambda: runner.frames >= 10)


# --- parsing -------------------------------------------------------------------------------------------


def test_parse_source_accepts_the_documented_forms(tmp_path: Path) -> None:
    assert parse_source("file:cams/door.mp4", tmp_path).target == str(tmp_path / "cams/door.mp4")
    assert parse_source("file:/srv/door.mp4", tmp_path).target == "/srv/door.mp4"
    assert parse_source("device:0").target == 0
    assert parse_source("/dev/video2").target == "/dev/video2"
    for url in ("rtsp://10.0.0.5/stream", "rtsps://cam/s", "http://cam/video.mjpg", "https://cam/live.m3u8"):
        source = parse_source(url)
        assert (source.kind, source.target, source.display) == ("stream", url, url)
    masked = parse_source("rtsp://admin:pa:ss@10.0.0.5:554/Streaming/Channels/101")
    assert masked.display == "rtsp://***@10.0.0.5:554/Streaming/Channels/101"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "not supported"),
        ("door.mp4", "not supported"),
        ("/tmp/door.mp4", "not supported"),
        ("ftp://cam/x", "not supported"),
        ("file:", "names no file"),
        ("device:front", "device:N"),
        ("/dev/videoX", "/dev/videoN"),
        ("http://", "names no host"),
        ("rtsp://user:pw@", "names no host"),
    ],
)
def test_parse_source_rejects_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_source(url)
    assert "pw@" not in str(info.value)


def test_parse_source_masks_credentials_in_errors() -> None:
    with pytest.raises(ValueError) as info:
        parse_source("ftp://admin:s3cret@cam/x")
    assert "s3cret" not in str(info.value) and "admin" not in str(info.value)


def test_mask_url() -> None:
    assert mask_url("http://cam/snap.cgi?user=admin&pwd=x&chn=1") == "http://cam/snap.cgi?user=***&pwd=***&chn=1"
    assert mask_url("rtsp://u:p@[fe80::1]:554/s") == "rtsp://***@[fe80::1]:554/s"
    assert mask_url("rtsp://cam/s") == "rtsp://cam/s"
