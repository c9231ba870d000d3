"""How soon camera capture reports a dead source, and how soon it honours stop.

tests/test_capture.py checks that these things happen; the figures are measured here, where a loaded machine
running the suite in parallel cannot turn them into failures. Each is timed ``RUNS`` times on real sources,
with tests/test_capture.py's own runner (``Capture.frames()`` on a thread, as the camera worker drives it,
statuses polled every 20 ms):

- error_after_s: from starting ``Capture.frames()`` to its "error" status, for a server that accepts the
  connection and never answers (HTTP and RTSP, ``open_timeout_s`` = 1) and for a port that refuses.
  Goal: within 6 s (the open timeout and 5 s to spare).
- stop_after_s: from setting stop to ``frames()`` returning, during a 60 s back-off, during an RTSP open
  blocked on a silent server (``open_timeout_s`` = 30), and while pacing a file in real time. Goal: 1.5 s.

Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from badge_bridge.sim.broker import free_port
from tests.test_capture import VIDEO, Runner, SilentServer

RUNS = 5
GOALS = {"error_after_s": 6.0, "stop_after_s": 1.5}


def error_after(url: str) -> float:
    started = time.perf_counter()
    runner = Runner(url, open_timeout_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.2)
    try:
        runner.wait_state("error", timeout=60)
        return time.perf_counter() - started
    finally:
        runner.close(within=60)
        runner.capture.close()


def stopped_after(runner: Runner) -> float:
    """Seconds from setting stop to frames() returning; then the abandoned reader is waited for (a process
    exiting while OpenCV still works on another thread dies in std::terminate)."""
    started = time.perf_counter()
    runner.close(within=60)
    elapsed = time.perf_counter() - started
    runner.capture.close()
    return elapsed


def stop_during_back_off() -> float:
    runner = Runner(f"http://127.0.0.1:{free_port()}/x", backoff_initial_s=60.0, backoff_max_s=60.0)
    runner.wait_state("error", timeout=60)
    return stopped_after(runner)


def stop_during_blocking_open() -> float:
    silent = SilentServer()
    runner = Runner(f"rtsp://127.0.0.1:{silent.port}/stream", open_timeout_s=30.0)
    runner.wait_for(lambda: silent.accepted)  # FFmpeg is now blocked waiting for an answer
    started = time.perf_counter()
    runner.close(within=60)
    elapsed = time.perf_counter() - started
    silent.close()  # the abandoned open fails at once (and releases OpenCV's process-wide lock on opening)
    runner.capture.close()
    return elapsed


def stop_while_pacing() -> float:
    runner = Runner(f"file:{VIDEO}", pace=True, loop=True)
    runner.wait_for(lambda: runner.frames >= 2)
    return stopped_after(runner)


def figures(measure: Callable[[], float]) -> dict[str, float]:
    samples = [measure() for _ in range(RUNS)]
    return {"median": round(statistics.median(samples), 3), "max": round(max(samples), 3), "runs": len(samples)}


def main() -> None:
    silent = SilentServer()
    try:
        errors = {
            "silent_http": figures(lambda: error_after(f"http://127.0.0.1:{silent.port}/stream")),
            "silent_rtsp": figures(lambda: error_after(f"rtsp://127.0.0.1:{silent.port}/stream")),
            "refused": figures(lambda: error_after(f"http://127.0.0.1:{free_port()}/video.mjpg")),
        }
        stops = {
            "back_off": figures(stop_during_back_off),
            "blocking_open": figures(stop_during_blocking_open),
            "pacing": figures(stop_while_pacing),
        }
    finally:
        silent.close()
    meets = {"error_after_s": all(f["max"] <= GOALS["error_after_s"] for f in errors.values()),
             "stop_after_s": all(f["max"] <= GOALS["stop_after_s"] for f in stops.values())}
    print(json.dumps({"bench": "capture", "error_after_s": errors, "stop_after_s": stops, "goals": GOALS,
                      "meets_goals": meets}))


if __name__ == "__main__":
    main()
