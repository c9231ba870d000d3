"""Door-clip variants for the people counter: single passages (optionally perturbed) and composites with two
people in one passage, made from the real footage of tests/data/video/door-entries-part1.mp4.

The clip shows three people, one at a time (SOURCES.md). A composite takes one person's pixels from their
passage (where the frame differs from the empty room before anyone came in), shifts them sideways and pastes
them into another passage's frames, a little later or earlier: two real people side by side at the door.
Perturbations (lighting gain/offset, sensor noise, scale) use fixed seeds, so every run sees the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from tests.video_files import frames_of

CLIP = Path(__file__).parent / "data" / "video" / "door-entries-part1.mp4"
FPS = 10.0
EMPTY = (0, 58)
"""Frames before the first person walks in: the empty room."""
PASSAGES = ((52, 222), (222, 472), (494, 700))
"""Frame ranges each holding one person's passage (walk in, stop at the table, leave), cut in empty or
still stretches (SOURCES.md); each starts with a few frames the motion detector can settle on."""
LEAD = 20
"""Empty-room frames put before each passage clip, so the detector has a background before anyone moves."""


@cache
def door_frames() -> tuple[np.ndarray, ...]:
    """The decoded clip (read once per test process)."""
    frames = frames_of(CLIP)
    if len(frames) < PASSAGES[-1][1]:
        raise RuntimeError(f"{CLIP}: decoded {len(frames)} frames, expected {PASSAGES[-1][1]}")
    return frames


@cache
def empty_room() -> np.ndarray:
    """Median of the empty frames: the room with nobody in it, without the compression noise of one frame."""
    a, b = EMPTY
    return np.median(np.stack(door_frames()[a:b]), axis=0).astype(np.uint8)


def passage(index: int) -> list[np.ndarray]:
    """One person's passage, after LEAD frames of the empty room."""
    a, b = PASSAGES[index]
    return [empty_room()] * LEAD + list(door_frames()[a:b])


def walk_in(frames: list[np.ndarray], n: int = 50, hold: int = 40) -> list[np.ndarray]:
    """The first ``n`` frames (walking in to the table), then ``hold`` frames of the empty room: a passage
    short enough for one badge, which ends (someone standing at the table stays present: no end)."""
    return frames[:n] + [empty_room()] * hold


def person_mask(frame: np.ndarray) -> np.ndarray:
    """Where ``frame`` shows someone: differs from the empty room, cleaned of speckle, holes filled, and
    only large parts kept (the person, not compression flicker)."""
    diff = cv2.absdiff(frame, empty_room()).max(axis=2)
    mask = (diff > 35).astype(np.uint8) * 255
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 0.002 * mask.size]
    return np.isin(labels, keep)


@dataclass(frozen=True)
class Composite:
    """The person of passage ``source`` pasted ``dx`` px sideways into passage ``target``, ``dt`` frames
    later (negative: earlier) than the target's own frames."""

    target: int
    source: int
    dx: int
    dt: int

    def frames(self) -> list[np.ndarray]:
        base = passage(self.target)
        donor = passage(self.source)
        out = []
        for i, frame in enumerate(base):
            j = i - self.dt
            if not 0 <= j < len(donor):
                out.append(frame)
                continue
            mask = person_mask(donor[j])
            shift = np.float32([[1, 0, self.dx], [0, 1, 0]])
            h, w = frame.shape[:2]
            moved = cv2.warpAffine(donor[j], shift, (w, h))
            moved_mask = cv2.warpAffine(mask.view(np.uint8), shift, (w, h)) > 0
            merged = frame.copy()
            merged[moved_mask] = moved[moved_mask]
            out.append(merged)
        return out


COMPOSITES = tuple(Composite(target, source, dx, dt)
                   for target in range(3) for source in range(3) if source != target
                   for dx, dt in ((-260, 0), (-300, 15), (-220, -10)))
"""Every ordered pair of the three people, each at three sideways offsets and time offsets (18 clips): the
donor person walks beside the target one, to their left (the right is the clip's edge)."""


def lighting(frames: list[np.ndarray], gain: float, offset: float) -> list[np.ndarray]:
    """A dimmer or brighter room (exposure, a lamp): every frame scaled and shifted."""
    return [cv2.convertScaleAbs(f, alpha=gain, beta=offset) for f in frames]


def noise(frames: list[np.ndarray], sigma: float, seed: int = 17) -> list[np.ndarray]:
    """Gaussian sensor noise (a dark room's grain), a fresh draw per frame from a fixed seed."""
    rng = np.random.default_rng(seed)
    return [np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8) for f in frames]


def scaled(frames: list[np.ndarray], factor: float) -> list[np.ndarray]:
    """The same scene from a lower- or higher-resolution camera."""
    h, w = frames[0].shape[:2]
    size = (round(w * factor), round(h * factor))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return [cv2.resize(f, size, interpolation=interpolation) for f in frames]


PERTURBATIONS = {
    "as-is": lambda fs: fs,
    "dim": lambda fs: lighting(fs, 0.6, -10),
    "bright": lambda fs: lighting(fs, 1.3, 25),
    "noisy": lambda fs: noise(fs, 8.0),
    "half-size": lambda fs: scaled(fs, 0.5),
    "1.5x-size": lambda fs: scaled(fs, 1.5),
}
"""Single-passage variants that must never count two people."""


def write(frames: list[np.ndarray], path: Path, fps: float = FPS) -> Path:
    """Frames as an MJPEG AVI (a container every OpenCV build reads), for a camera worker to play."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path
