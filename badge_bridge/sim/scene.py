"""Generated camera footage with a known script: people (textured, person-sized blocks) walking through a
door zone at known times, for tests and benchmarks that must know exactly when someone passed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Crossing:
    start_s: float
    duration_s: float
    people: int = 1
    """Walking side by side, far enough apart to be told apart."""


def background(width: int, height: int, seed: int = 7) -> np.ndarray:
    """A still room: a floor gradient, a tiled wall and fixed objects all over, so there is texture to compare
    (a camera's tamper check knows a scene by its structure: a bare room would be mostly the person in it)."""
    rng = np.random.default_rng(seed)
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:] = np.linspace(60, 170, height, dtype=np.uint8)[:, None, None]
    frame[: height // 3] = (200, 205, 210)
    tile = max(8, width // 32)
    frame[: height // 3: tile] = (150, 155, 160)
    frame[: height // 3, ::tile] = (150, 155, 160)
    for _ in range(60):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        color = tuple(int(v) for v in rng.integers(20, 235, 3))
        cv2.rectangle(frame, (x, y), (x + int(rng.integers(10, 40)), y + int(rng.integers(10, 40))), color, -1)
    return frame


def render(base: np.ndarray, crossings: Sequence[Crossing], t: float) -> np.ndarray:
    """The frame at ``t`` seconds: each crossing moves its people left to right over the frame."""
    frame = base.copy()
    height, width = frame.shape[:2]
    pw, ph = max(width // 10, 20), max(height // 3, 40)
    for crossing in crossings:
        progress = (t - crossing.start_s) / crossing.duration_s
        if not 0 <= progress <= 1:
            continue
        x = int(-pw + progress * (width + pw))
        for i in range(crossing.people):
            y = height // 3 + i * (ph // 2)
            x0 = x - i * 2 * pw
            cv2.rectangle(frame, (x0, y), (x0 + pw, y + ph), (40, 30, 25), -1)
            cv2.rectangle(frame, (x0 + pw // 4, y + ph // 8), (x0 + 3 * pw // 4, y + ph // 3), (90, 120, 160), -1)
    return frame


def write_video(path: Path, crossings: Sequence[Crossing], total_s: float, *, fps: float = 15.0,
                width: int = 640, height: int = 480) -> Path:
    """An MJPEG AVI of the script (a container every OpenCV build reads)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    base = background(width, height)
    for i in range(int(total_s * fps)):
        writer.write(render(base, crossings, i / fps))
    writer.release()
    return path


def paste_face(frame: np.ndarray, photo: np.ndarray, face_box: tuple[int, int, int, int], at: tuple[int, int],
               face_px: int) -> None:
    """Put the person of ``photo`` (BGR) into ``frame`` with their face ``face_px`` wide at ``at`` (x, y):
    the face box (top, right, bottom, left) with a margin around it, scaled."""
    top, right, bottom, left = face_box
    margin = (right - left) // 2
    crop = photo[max(0, top - margin):bottom + margin, max(0, left - margin):right + margin]
    scale = face_px / (right - left)
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    x, y = at
    h, w = min(crop.shape[0], frame.shape[0] - y), min(crop.shape[1], frame.shape[1] - x)
    frame[y:y + h, x:x + w] = crop[:h, :w]


@dataclass(frozen=True)
class Appearance:
    """Someone standing at the reader from ``start_s`` to ``end_s``: a photo and where its face is in it
    (top, right, bottom, left)."""

    photo: Path
    face_box: tuple[int, int, int, int]
    start_s: float
    end_s: float


def write_face_video(path: Path, appearances: Sequence[Appearance], total_s: float, *, fps: float = 15.0,
                     width: int = 640, height: int = 480, face_px: int = 130) -> Path:
    """A door camera's view of people standing at the reader, one after the other, swaying a little."""
    photos = {a.photo: _read_image(a.photo) for a in appearances}
    for photo, image in photos.items():
        if image is None:
            raise RuntimeError(f"cannot read {photo}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    base = background(width, height)
    for i in range(int(total_s * fps)):
        frame = base.copy()
        t = i / fps
        for a in appearances:
            if a.start_s <= t < a.end_s:
                paste_face(frame, photos[a.photo], a.face_box, (width // 3 + int(10 * np.sin(t * 3)), height // 6),
                           face_px)
        writer.write(frame)
    writer.release()
    return path


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"{path}: not a readable image")
    return image
