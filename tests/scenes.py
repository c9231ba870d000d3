"""Generators for the lighting and presence tests and bench: lamp steps and ramps with clipped highlights,
a dimmed noisy night version of a clip, and the door clip's ground truth (who is in view, who stands still).

Everything is deterministic: noise comes from fixed seeds, switch moments from a fixed list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from camera.motion import MotionDetector, MotionSettings, Zone, ZoneChange
from tests.video_files import frames_of

VIDEO = Path(__file__).parent / "data" / "video"
DOOR, VTEST = "door-entries-part1.mp4", "vtest.avi"
FPS = 10.0
# door-entries-part1.mp4 by frame index (SOURCES.md): nobody in view, someone standing at the table
EMPTY = ((31, 60), (206, 227), (454, 502))
STANDING = ((113, 179), (307, 363), (382, 430))
WARM_UP = 60  # frames before a switch moment the detector sees, so its background has settled
AFTER = 30  # frames after a switch moment the detector sees
CAUSED = 5  # an episode whose first moving frame is this close after the switch may be the switch's doing
REACH = 0.05  # without the switch, a zone is in use when an object reaches this share of itself into it
SEED = 17

Frames = list[np.ndarray]
Lighting = Callable[[int, np.ndarray], np.ndarray]  # frame index from the switch (<0 before), frame -> frame


def decode(name: str) -> tuple[np.ndarray, ...]:
    return frames_of(VIDEO / name)


def person_frames() -> list[int]:
    """Frames of the door clip with someone in view: after the first empty stretch, outside the empty ones."""
    empty = {i for a, b in EMPTY for i in range(a, b + 1)}
    return [i for i in range(EMPTY[0][1] + 1, len(decode(DOOR))) if i not in empty]


def standing_frames() -> list[int]:
    return [i for a, b in STANDING for i in range(a, b + 1)]


def gain(g: float) -> Lighting:
    """A lamp step: every pixel times g from the switch on, clipped at 255 like a real sensor."""
    lut = np.clip(np.arange(256) * g, 0, 255).astype(np.uint8)
    return lambda i, frame: cv2.LUT(frame, lut) if i >= 0 else frame


def ramp(g: float, seconds: float) -> Lighting:
    """Daylight or a dimmer: the gain goes from 1 to g over `seconds`, clipped at 255."""
    def apply(i: int, frame: np.ndarray) -> np.ndarray:
        k = 1 + (g - 1) * min(max(i, 0) / (seconds * FPS), 1.0)
        return cv2.LUT(frame, np.clip(np.arange(256) * k, 0, 255).astype(np.uint8))
    return apply


def clipped_share(frame: np.ndarray, g: float) -> float:
    """Share of pixels at 255 (all channels) once the frame is multiplied by g."""
    return float(np.mean(np.all(gain(g)(0, frame) == 255, axis=2)))


def dim(frames: Sequence[np.ndarray], g: float = 0.3, noise: float = 2.0, seed: int = SEED) -> Frames:
    """A night version: the gain g and sensor noise of `noise` gray levels (fixed seed per frame)."""
    rng = np.random.default_rng(seed)
    return [np.clip(f * g + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8) for f in frames]


def switch_moments(n: int, count: int, seed: int = SEED) -> list[int]:
    """`count` distinct frames at which a lamp switches, each with WARM_UP frames before and AFTER after."""
    rng = np.random.default_rng(seed)
    return sorted(int(k) for k in rng.choice(np.arange(WARM_UP, n - AFTER), count, replace=False))


def grid(n: int = 3) -> list[Zone]:
    """n x n zones over the frame, so a false episode shows even while someone moves elsewhere."""
    return [Zone(f"z{r}{c}", ((c / n, r / n), ((c + 1) / n, r / n), ((c + 1) / n, (r + 1) / n), (c / n, (r + 1) / n)))
            for r in range(n) for c in range(n)]


def episodes(name: str, lighting: Lighting | None, k: int, zone_overlap: float = MotionSettings.zone_overlap
             ) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """Run the detector on the grid zones from WARM_UP frames before a switch at k to AFTER frames after it:
    (zone, first moving frame) of the episode starts after the switch, and (zone, frame) of every active
    zone then."""
    frames = decode(name)
    h, w = frames[0].shape[:2]
    det = MotionDetector(w, h, FPS, grid(), settings=MotionSettings(zone_overlap=zone_overlap))
    started: set[tuple[str, int]] = set()
    active: set[tuple[str, int]] = set()
    for i in range(k - WARM_UP, k + AFTER):
        frame = frames[i] if lighting is None else lighting(i - k, frames[i])
        changes: list[ZoneChange] = det.process(frame, i / FPS)
        if i >= k:
            started |= {(c.zone, round(c.t * FPS)) for c in changes if c.state == "start"}
            active |= {(zone, i) for zone, on in det.active().items() if on}
    return started, active


@cache
def _unlit(name: str, k: int) -> set[str]:
    """Zones a real object reaches into (REACH of it, not the detector's zone_overlap) in the AFTER frames
    from k, without any switch. A person on a zone border is one blob with whatever they are merged with:
    when a lamp step hides part of that group (a leg against a pavement clipped to the same white, or a
    second pedestrian), the part in the neighbouring zone becomes a bigger share of it and that zone starts
    an episode; vtest.avi at frame 452 x2.0 (and 319 x1.3 before the clipping slack), a head with about the same
    px in the zone either way (215 and 190). That is a real person, not motion the lamp made."""
    real, busy = episodes(name, None, k, REACH)
    return {z for z, _ in real} | {z for z, _ in busy}


def false_episodes(name: str, lighting: Lighting, k: int) -> int:
    """Episodes whose motion began within CAUSED frames of the switch, in a zone where the same clip without
    the switch has no object reaching into it in the AFTER frames (`_unlit`): motion the lamp made (a person's
    motion does not wait for the lamp, and the clip without it shows them, if a little later)."""
    used = _unlit(name, k)
    lit, _ = episodes(name, lighting, k)
    return sum(k <= i < k + CAUSED and z not in used for z, i in lit)


def active_frames(frames: Sequence[np.ndarray], zones: Sequence[Zone] = ()) -> list[bool]:
    """Per frame whether any zone's episode is under way after it (the whole frame if no zones)."""
    h, w = frames[0].shape[:2]
    det = MotionDetector(w, h, FPS, zones)
    out = []
    for i, frame in enumerate(frames):
        det.process(frame, i / FPS)
        out.append(any(det.active().values()))
    return out
