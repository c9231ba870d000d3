"""Presentation attacks and live windows for the liveness tests and bench, reproducible (fixed seeds).

Attacks: a photo (tests/data/faces, or the real print and tablet of tests/data/faces-video) held up to the
door camera as a print or a screen is held: a plane under perspective whose tilt changes over the frames,
with hand tremor, composited on real door-camera frames (tests/data/video/door-entries-part1.mp4), with
some of blur, glare, moire, washed-out colour, a screen's bezel, and JPEG compression, the face 70-160 px.
Live: the real face clips of tests/data/faces-video cut into 2 s windows at their own rate.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from camera.faces import _fr
from tests.video_files import fps_of, frames_of

DATA = Path(__file__).parent / "data"
PHOTOS = ("faces/obama.jpg", "faces/obama2.jpg", "faces/biden.jpg", "faces-video/pad-printed-photo.jpg",
          "faces-video/pad-tablet-screen.jpg")
LIVE = {"faces-video/webcam-man-blink.mp4": (0, 72), "faces-video/webcam-man-then-titlecard.mov": (0, 60),
        "faces-video/headpose-man.mp4": (0, 62), "faces-video/headpose-woman.mp4": (0, 23),
        "faces-video/headpose-woman-and-man.mp4": (0, 56)}
"""Clip and its frames with a face (the title card clip's face part: its first 60 frames)."""
DOOR_FPS = 10.0
WINDOW_S = 2.0
T0 = 1_700_000_000.0

Window = list[tuple[float, np.ndarray]]


@dataclass(frozen=True)
class Attack:
    """What one generated attack did, for failure messages."""

    seed: int
    photo: str
    face_px: int
    tilt_deg: float
    artefacts: tuple[str, ...]


@functools.cache
def _background() -> tuple[np.ndarray, ...]:
    """Door-camera frames of a still stretch (SOURCES.md: 31-60 and 454-502), as real backgrounds."""
    cap = cv2.VideoCapture(str(DATA / "video/door-entries-part1.mp4"))
    frames = []
    for i in range(503):
        ok, frame = cap.read()
        assert ok, f"door-entries-part1.mp4 ends at frame {i}"
        if 31 <= i <= 60 or 454 <= i <= 502:
            frames.append(frame)
    cap.release()
    return tuple(frames)


@functools.cache
def _photo(name: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A photo cut to what a print of it would show (the face and some surroundings) and its face box there."""
    image = cv2.imread(str(DATA / name))
    assert image is not None, name
    (top, right, bottom, left), *_ = _fr().face_locations(np.ascontiguousarray(image[:, :, ::-1]), 1, "hog")
    w = right - left
    y0, y1 = max(0, top - w), min(image.shape[0], bottom + w)
    x0, x1 = max(0, left - w), min(image.shape[1], right + w)
    return image[y0:y1, x0:x1].copy(), (top - y0, right - x0, bottom - y0, left - x0)


def _moire(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-photographed screen or halftone: a fine periodic pattern beating across the picture."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    period, angle = rng.uniform(2.2, 4.0), rng.uniform(0, np.pi)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    return np.clip(image * (1 + rng.uniform(0.12, 0.25) * wave[..., None]), 0, 255).astype(np.uint8)


def _washed(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A print's small gamut: colour and contrast lifted towards paper white."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float64)
    hsv[..., 1] *= rng.uniform(0.3, 0.6)
    hsv[..., 2] = 255 * rng.uniform(0.2, 0.4) + hsv[..., 2] * rng.uniform(0.55, 0.75)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)


def _bezel(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A tablet: the picture inside a dark bezel, a little brighter than the room."""
    b = max(6, int(image.shape[1] * rng.uniform(0.05, 0.1)))
    lit = np.clip(image.astype(np.float64) * rng.uniform(1.05, 1.25) + 10, 0, 255).astype(np.uint8)
    return cv2.copyMakeBorder(lit, b, b, b, b, cv2.BORDER_CONSTANT, value=(20, 20, 22))


def attack(seed: int, photo: str | None = None, *, seconds: float = WINDOW_S,
           face_px: int | None = None) -> tuple[Window, Attack]:
    """One attack window (2 s at the door camera's 10 fps): a print or screen of a photo (a name under
    tests/data, or any path), held and moved; ``face_px`` fixes the face's width instead of drawing it."""
    rng = np.random.default_rng(seed)
    photo = photo or PHOTOS[seed % len(PHOTOS)]
    source, (top, right, bottom, left) = _photo(photo)
    chosen = tuple(a for a in ("moire", "washed", "bezel", "glare", "blur") if rng.random() < 0.4)
    if "moire" in chosen:
        source = _moire(source, rng)
    if "washed" in chosen:
        source = _washed(source, rng)
    if "bezel" in chosen:
        before = source.shape[1]
        source = _bezel(source, rng)
        b = (source.shape[1] - before) // 2
        top, right, bottom, left = top + b, right + b, bottom + b, left + b
    face_px = int(rng.integers(70, 161)) if face_px is None else face_px
    scale = face_px / (right - left)
    h, w = source.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    backgrounds = _background()
    bg_index = int(rng.integers(len(backgrounds)))
    fh, fw = backgrounds[0].shape[:2]
    focal = fw * 1.0
    centre = np.array([rng.uniform(0.35, 0.65) * fw, rng.uniform(0.3, 0.55) * fh])
    tilt = float(rng.uniform(2.0, 20.0))
    phases = rng.uniform(0, 2 * np.pi, 3)
    rates = rng.uniform(0.3, 1.2, 3)
    tremor = np.zeros(2)
    frames: Window = []
    for k in range(int(seconds * DOOR_FPS)):
        t = k / DOOR_FPS
        yaw, pitch, roll = (np.radians(a) for a in (tilt * np.sin(2 * np.pi * rates[0] * t + phases[0]),
                                                     0.6 * tilt * np.sin(2 * np.pi * rates[1] * t + phases[1]),
                                                     0.3 * tilt * np.sin(2 * np.pi * rates[2] * t + phases[2])))
        tremor = 0.8 * tremor + rng.normal(0, 1.5, 2)
        rotation = cv2.Rodrigues(np.array([pitch, yaw, roll]))[0]
        plane = np.c_[(corners - [w / 2, h / 2]) * scale, np.zeros(4)]  # the print, in pixels at distance focal
        moved = plane @ rotation.T + [0, 0, focal]
        projected = (moved[:, :2] * focal / moved[:, 2:]) + centre + tremor
        homography = cv2.getPerspectiveTransform(corners, projected.astype(np.float32))
        frame = backgrounds[(bg_index + k) % len(backgrounds)].copy()
        warped = cv2.warpPerspective(source, homography, (fw, fh), flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), homography, (fw, fh)) > 127
        frame[mask] = warped[mask]
        if "glare" in chosen:
            gx, gy = cv2.perspectiveTransform(np.float32([[[w * 0.4, h * 0.35]]]), homography)[0, 0]
            yy, xx = np.mgrid[0:fh, 0:fw]
            blob = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * (face_px * 0.25) ** 2)) * mask
            frame = np.clip(frame + 230 * blob[..., None], 0, 255).astype(np.uint8)
        if "blur" in chosen:
            frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.8, 1.6))
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 92))])
        assert ok
        frames.append((T0 + t, cv2.imdecode(jpeg, cv2.IMREAD_COLOR)))
    return frames, Attack(seed, photo, face_px, round(tilt, 1), chosen)


@functools.cache
def live_clip(name: str) -> tuple[float, tuple[np.ndarray, ...]]:
    """A live clip's rate and its frames with a face (LIVE)."""
    first, last = LIVE[name]
    return fps_of(DATA / name), frames_of(DATA / name)[first:last]


def live_windows(step_s: float = 0.25) -> Iterator[tuple[str, Window]]:
    """Every 2 s window (a clip shorter than that: the whole clip) of the live clips, ``step_s`` apart."""
    for name in LIVE:
        fps, frames = live_clip(name)
        size = min(len(frames), round(WINDOW_S * fps))
        step = max(1, round(step_s * fps))
        for start in range(0, len(frames) - size + 1, step):
            yield f"{name}@{start}", [(T0 + (start + i) / fps, frames[start + i]) for i in range(size)]
