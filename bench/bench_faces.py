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

Liveness (a face-required door): each window of tests/pad_attacks.py, live (the real face clips cut into
2 s windows) and attack (photos held up as a print or a screen, fixed seeds), goes the camera worker's way:
faces_in_frames with faces.decided, then liveness.assess on the window tracking the boxes found. Latency of
the whole answer (goal p99 <= 400 ms) and of liveness alone; APCER (attacks accepted as live, goal <= 5%)
and BPCER (live windows rejected, spoof or unknown, goal <= 10%).
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
from camera import faces, liveness  # noqa: E402
from tests import pad_attacks  # noqa: E402
from tests.test_faces import BIDEN_BOX, DATA, OBAMA2_BOX, write_door_clip  # noqa: E402

EVENTS = 60
FRAMES_PER_EVENT = 4
GALLERY_SIZE = 10_000
NEAREST_CALLS = 1_000
GOAL_P99_MS = 300.0
LIVENESS_GOAL_P99_MS = 400.0
ATTACK_SEEDS = range(100)
APCER_GOAL, BPCER_GOAL = 0.05, 0.10


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


def with_liveness() -> dict[str, object]:
    """The worker's answer at a face-required door, timed per window, and the error rates."""
    total: list[float] = []
    alone: list[float] = []
    verdicts: dict[str, dict[str, int]] = {"live": {}, "attack": {}}
    windows = [("live", w) for _, w in pad_attacks.live_windows()]
    windows += [("attack", pad_attacks.attack(seed)[0]) for seed in ATTACK_SEEDS]
    for kind, window in windows:
        started = time.perf_counter()
        seen = faces.faces_in_frames(window, stop_when=faces.decided())
        found = time.perf_counter()
        result = liveness.assess(window, [(f.t, f.box) for frame_faces in seen for f in frame_faces])
        done = time.perf_counter()
        total.append((done - started) * 1000)
        alone.append((done - found) * 1000)
        verdicts[kind][result.verdict] = verdicts[kind].get(result.verdict, 0) + 1
    attacks, lives = sum(verdicts["attack"].values()), sum(verdicts["live"].values())
    apcer = verdicts["attack"].get("live", 0) / attacks
    bpcer = (lives - verdicts["live"].get("live", 0)) / lives
    return {"windows": {"live": lives, "attack": attacks}, "verdicts": verdicts,
            "apcer": round(apcer, 4), "bpcer": round(bpcer, 4), "total_ms": stats(total), "liveness_ms": stats(alone),
            "meets_goal": stats(total)["p99"] <= LIVENESS_GOAL_P99_MS and apcer <= APCER_GOAL and bpcer <= BPCER_GOAL}


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
        "liveness": with_liveness(), "liveness_goal_p99_ms": LIVENESS_GOAL_P99_MS,
        "apcer_goal": APCER_GOAL, "bpcer_goal": BPCER_GOAL,
    }))


if __name__ == "__main__":
    main()
