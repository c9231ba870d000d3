"""Face verification latency per door event, on one core.

Prints one JSON object. Each of N door events hands faces_in_frames 4 frames (640x480, from the synthetic
door clip of tests/test_faces.py: MJPEG-compressed, face ~140 px wide) and verifies the result against a
gallery of 10,000 enrolled people (random unit encodings plus the real ones). Latency p50/p99/max is split
into detection (HOG), encoding (dlib's ResNet) and comparison (verify). Scenarios: the holder in front of
the camera, an impostor (someone else's badge), two people at once, an empty doorway; each with all 4
frames examined and with faces.decided as `stop_when` (with the gallery: stop once the holder is verified;
without, as in a camera worker: stop after two frames of one face), and a frame of several faces stops both.
Separately: one Gallery.nearest over 10,000.
The goal is p99 <= 300 ms per door event.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from badge_bridge import face_match  # noqa: E402
from camera import faces  # noqa: E402
from tests.test_faces import BIDEN_BOX, DATA, OBAMA2_BOX, write_door_clip  # noqa: E402

EVENTS = 60
FRAMES_PER_EVENT = 4
GALLERY_SIZE = 10_000
NEAREST_CALLS = 1_000
GOAL_P99_MS = 300.0


class Split:
    """Wall time spent inside face_recognition's detector and encoder, accumulated by wrapping them."""

    def __init__(self) -> None:
        self.detect = self.encode = 0.0
        fr = faces._fr()
        for name, attr in (("face_locations", "detect"), ("face_encodings", "encode")):
            setattr(fr, name, self._timed(getattr(fr, name), attr))

    def _timed(self, fn: Callable, attr: str) -> Callable:
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self, attr, getattr(self, attr) + time.perf_counter() - started)
        return wrapper

    def reset(self) -> None:
        self.detect = self.encode = 0.0


def gallery() -> face_match.Gallery:
    rng = np.random.default_rng(3)
    random = rng.normal(size=(GALLERY_SIZE, 128))
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    g = face_match.Gallery()
    for i, row in enumerate(random):
        g.add(1000 + i, row)
    g.add(1, faces.encode_photo((DATA / "obama.jpg").read_bytes()))
    g.add(2, faces.encode_photo((DATA / "biden.jpg").read_bytes()))
    return g


def stats(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {"p50": round(statistics.median(ordered), 1),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
            "max": round(ordered[-1], 1)}


def run(clip: list[tuple[float, np.ndarray]], g: face_match.Gallery, holder: int, split: Split,
        stop: Callable[[], Callable[[list[face_match.SeenFace]], bool] | None]) -> dict[str, object]:
    """EVENTS door events on 4 frames each, spread over the clip and shifted per event; ``stop`` makes each
    event's stop_when (a fresh one: faces.decided counts frames)."""
    total, detect, encode, compare, examined, outcomes = [], [], [], [], [], {}
    step = len(clip) // FRAMES_PER_EVENT
    for k in range(EVENTS):
        frames = [clip[(k + j * step) % len(clip)] for j in range(FRAMES_PER_EVENT)]
        frames.sort(key=lambda f: f[0])
        split.reset()
        started = time.perf_counter()
        seen = faces.faces_in_frames(frames, max_frames=FRAMES_PER_EVENT, stop_when=stop())
        found = time.perf_counter()
        verdict = face_match.verify(seen, g, holder)
        done = time.perf_counter()
        total.append((done - started) * 1000)
        detect.append(split.detect * 1000)
        encode.append(split.encode * 1000)
        compare.append((done - found) * 1000)
        examined.append(len(seen))
        outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
    return {"total_ms": stats(total), "detection_ms": stats(detect), "encoding_ms": stats(encode),
            "comparison_ms": stats(compare), "frames_examined_mean": round(statistics.mean(examined), 2),
            "outcomes": outcomes, "meets_goal": stats(total)["p99"] <= GOAL_P99_MS}


def main() -> None:
    cv2.setNumThreads(1)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    split = Split()
    g = gallery()
    with tempfile.TemporaryDirectory() as tmp:
        present = write_door_clip(Path(tmp) / "face.avi", [("obama2.jpg", OBAMA2_BOX)], seconds=4)
        empty = write_door_clip(Path(tmp) / "empty.avi", [], seconds=4)
        both = write_door_clip(Path(tmp) / "both.avi", [("obama2.jpg", OBAMA2_BOX), ("biden.jpg", BIDEN_BOX)],
                               seconds=4)
    faces.faces_in_frames(present[:1])  # warm-up: first-call allocations in dlib

    scenarios = {}
    for name, clip, holder in (("holder", present, 1), ("impostor", present, 2), ("two_people", both, 1),
                               ("no_face", empty, 1)):
        scenarios[f"{name}_all_frames"] = run(clip, g, holder, split, lambda: None)
        scenarios[f"{name}_stop_when_decided_with_gallery"] = run(clip, g, holder, split,
                                                                  lambda h=holder: faces.decided(g, h))
    for name, holder in (("holder", 1), ("impostor", 2)):
        scenarios[f"{name}_stop_when_decided_without_gallery"] = run(present, g, holder, split, faces.decided)

    probe = g._matrix[42] + 0.01
    times = []
    for _ in range(NEAREST_CALLS):
        started = time.perf_counter()
        g.nearest(probe)
        times.append(time.perf_counter() - started)
    print(json.dumps({
        "bench": "faces", "threads": 1, "frame": "640x480", "face_px": 140, "events": EVENTS,
        "frames_per_event": FRAMES_PER_EVENT, "gallery": len(g), "tolerance": face_match.DEFAULT_TOLERANCE,
        "scenarios": scenarios,
        "gallery_nearest_ms_median": round(statistics.median(times) * 1000, 3),
        "goal_p99_ms": GOAL_P99_MS,
    }))


if __name__ == "__main__":
    main()
