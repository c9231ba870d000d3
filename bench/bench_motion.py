"""Motion detector cost per core and its agreement with the door-entries clip's still stretches.

Prints one JSON object. For each test video at native size, and for 1280x720 and 1920x1080 upscales of the
door clip (door cameras are often HD): decode fps (decode only, timed apart), detector fps on one core
(`process()` only, on pre-decoded frames, cv2.setNumThreads(1)), frames and resolution. On the door clip
also: frames flagged in the still stretches, and person-present frames missed. The budget is 15 fps for
each of 8 cameras on 2 cores, i.e. 60 detector fps per core on top of decoding.

Lighting and presence (tests/scenes.py generators, fixed seeds): per clip and lamp change, how many of
BENCH_MOMENTS switch moments (default 20) give a false episode; person frames missed on the door clip,
bright and dimmed (x0.3 with noise); standing frames missed (someone still at the table).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from camera.motion import MotionDetector, MotionSettings  # noqa: E402
from tests import scenes  # noqa: E402

VIDEO = ROOT / "tests" / "data" / "video"
STILL = ((31, 60), (113, 179), (206, 227), (307, 363), (382, 430), (454, 502))
WARM_UP = 30
GOAL_FPS_PER_CORE = 15 * 8 / 2


def decode(path: Path) -> tuple[list[np.ndarray], float, float]:
    """Frames, the clip's fps and decode-only frames per second."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames, started = [], time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    decode_fps = len(frames) / (time.perf_counter() - started)
    cap.release()
    return frames, fps, decode_fps


def upscale(path: Path, size: tuple[int, int], out: Path) -> Path:
    """The clip resized to `size` and re-encoded (MPEG-4 Part 2, like the source), so HD decode is timed too."""
    frames, fps, _ = decode(path)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    for frame in frames:
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR))
    writer.release()
    return out


def detect(frames: list[np.ndarray], fps: float) -> tuple[list[bool], list[int], float]:
    """Per frame whether the whole-frame zone is in motion, the frame each episode starts at (its first
    moving frame), and process() calls per second."""
    h, w = frames[0].shape[:2]
    det = MotionDetector(w, h, fps)
    active, starts, spent = [], [], 0.0
    for i, frame in enumerate(frames):
        started = time.perf_counter()
        changes = det.process(frame, i / fps)
        spent += time.perf_counter() - started
        active.append(det.active()["frame"])
        starts += [round(c.t * fps) for c in changes if c.state == "start"]
    return active, starts, len(frames) / spent


def agreement(active: list[bool], starts: list[int], fps: float) -> dict[str, object]:
    """Still-stretch frames flagged (all, and past the end_after_s margin at each stretch start), episodes
    that start inside a still stretch, and person-present frames (outside still stretches and warm-up) missed."""
    still = {i for a, b in STILL for i in range(a, b + 1)}
    margin = round(MotionSettings().end_after_s * fps) + 1
    flagged = [i for i in sorted(still) if i >= WARM_UP and active[i]]
    past_margin = [i for a, b in STILL for i in range(max(a + margin, WARM_UP), b + 1) if active[i]]
    present = [i for i in range(WARM_UP, len(active)) if i not in still]
    missed = sum(not active[i] for i in present)
    return {"still_frames": len([i for i in still if i >= WARM_UP]), "still_flagged": len(flagged),
            "still_flagged_past_end_margin": len(past_margin), "still_flagged_frames": flagged,
            "episode_starts_in_still": [i for i in starts if i in still],
            # the stretch ends are a MOG2 estimate: its last half second is where people start moving again
            "episode_starts_in_still_before_its_last_half_second": sum(
                a <= i < b + 1 - round(fps / 2) for i in starts for a, b in STILL),
            "person_present_frames": len(present), "person_present_missed": missed,
            "person_present_missed_share": round(missed / len(present), 3)}


LIGHTING = {"x1.6": scenes.gain(1.6), "x2.0": scenes.gain(2.0), "x1.3": scenes.gain(1.3), "x0.6": scenes.gain(0.6),
            "ramp x2 over 5 s": scenes.ramp(2.0, 5.0), "ramp x0.5 over 5 s": scenes.ramp(0.5, 5.0)}


def lighting(moments: int) -> dict[str, object]:
    """Per clip and lamp change: switch moments with a false episode, and false episodes in all."""
    out: dict[str, object] = {"moments": moments}
    for name in (scenes.DOOR, scenes.VTEST):
        ks = scenes.switch_moments(len(scenes.decode(name)), moments)
        row = {}
        for label, light in LIGHTING.items():
            found = [scenes.false_episodes(name, light, k) for k in ks]
            row[label] = {"moments_with_false_episodes": sum(f > 0 for f in found), "false_episodes": sum(found)}
        out[name] = row
    frame = scenes.decode(scenes.DOOR)[scenes.switch_moments(len(scenes.decode(scenes.DOOR)), moments)[0]]
    out["door_clipped_share"] = {"x1.6": round(scenes.clipped_share(frame, 1.6), 3),
                                 "x2.0": round(scenes.clipped_share(frame, 2.0), 3)}
    return out


def presence() -> dict[str, object]:
    """Door clip: person frames missed bright and dimmed, standing frames missed."""
    bright = scenes.active_frames(scenes.decode(scenes.DOOR))
    night = scenes.active_frames(scenes.dim(scenes.decode(scenes.DOOR)))
    people, standing = scenes.person_frames(), scenes.standing_frames()
    return {"person_frames": len(people), "person_missed_bright": sum(not bright[i] for i in people),
            "person_missed_dim_x0.3_noise2": sum(not night[i] for i in people),
            "standing_frames": len(standing), "standing_missed": sum(not bright[i] for i in standing),
            "empty_frames_active_bright": sum(bright[i] for a, b in scenes.EMPTY for i in range(a + 16, b - 4)),
            "empty_frames_active_dim": sum(night[i] for a, b in scenes.EMPTY for i in range(a + 16, b - 4))}


def main() -> None:
    cv2.setNumThreads(1)
    door = VIDEO / "door-entries-part1.mp4"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = [door, VIDEO / "vtest.avi"] + [upscale(door, (w, h), Path(tmp) / f"door-{h}p.mp4")
                                               for w, h in ((1280, 720), (1920, 1080))]
        for path in clips:
            frames, fps, decode_fps = decode(path)
            active, starts, detect_fps = detect(frames, fps)
            h, w = frames[0].shape[:2]
            row: dict[str, object] = {
                "video": path.name if path.parent == VIDEO else f"{door.name} upscaled, re-encoded mp4v",
                "resolution": f"{w}x{h}", "frames": len(frames), "fps": fps, "decode_fps": round(decode_fps, 1),
                "detector_fps_per_core": round(detect_fps, 1), "detector_ms_per_frame": round(1000 / detect_fps, 2),
                "motion_share": round(sum(active[WARM_UP:]) / len(active[WARM_UP:]), 3),
            }
            if path.name.startswith("door"):
                row.update(agreement(active, starts, fps))
            results.append(row)
    slowest = min(float(r["detector_fps_per_core"]) for r in results)  # type: ignore[arg-type]
    print(json.dumps({"bench": "motion", "threads": 1, "settings": asdict(MotionSettings()), "videos": results,
                      "lighting": lighting(int(os.environ.get("BENCH_MOMENTS", "20"))), "presence": presence(),
                      "goal_detector_fps_per_core": GOAL_FPS_PER_CORE, "meets_goal": slowest >= GOAL_FPS_PER_CORE}))


if __name__ == "__main__":
    main()
