"""Door windows cut from the real face videos (tests/data/faces-video, SOURCES.md), and who is enrolled from
which frame, for tests/test_face_windows.py and bench/bench_face_windows.py.

Three people: A, the man of the two webcam clips; B, the man of headpose-man.mp4 and of the right half of
headpose-woman-and-man.mp4; C, the woman of headpose-woman.mp4 and of its left half. Each enrollment (a
gallery person of its own, ENROLLED) is from a frame of one clip and verified only on windows of another:

- A: frame 40 of webcam-man-then-titlecard.mov as an enrollment photo (encode_photo); windows of
  webcam-man-blink.mp4.
- A2: frame 36 of webcam-man-blink.mp4; windows of webcam-man-then-titlecard.mov while he is there (0-71).
- B: frame 0 of headpose-man.mp4; windows of headpose-woman-and-man.mp4 from frame 4 (before it, both
  people face the camera: `several`).
- B2: the right half of frame 0 of headpose-woman-and-man.mp4; windows of headpose-man.mp4.
- C: the left half of frame 0 of headpose-woman-and-man.mp4; windows of headpose-woman.mp4.

Only A's frame is a photo enrollment accepts (the others are 270-360 px frames with 72-86 px faces); the
others are encoded as the door camera does (faces_in_frames on that one frame). Windows are as long as a
face-required door's (cameras.FACE_WINDOWS, 2 s; the whole clip when shorter) and SHORT_WINDOW_S, starting
every WINDOW_STEP_S. Impostors: every window against every enrollment of another identity, among them
obama.jpg + obama2.jpg and biden.jpg.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from badge_bridge import face_match
from badge_bridge.cameras import FACE_WINDOWS
from camera import faces
from tests.video_files import fps_of, frames_of

VIDEO = Path(__file__).parent / "data" / "faces-video"
PHOTOS = Path(__file__).parent / "data" / "faces"
WINDOW_STEP_S = 0.16
SHORT_WINDOW_S = 1.0
"""Also windows half as long: a holder who stepped up late."""
ENROLLED = {"A": 1, "A2": 2, "B": 3, "B2": 4, "C": 5, "obama": 6, "biden": 7}
"""Gallery person id of each enrollment."""


def identity(enrollment: str) -> str:
    """Who an enrollment is of: A and A2 are the same man."""
    return enrollment.rstrip("2")
Frames = list[tuple[float, np.ndarray]]


def read_video(name: str) -> Frames:
    """Every frame of a clip as (t, BGR), like a camera's ring buffer."""
    fps = fps_of(VIDEO / name)
    return [(1_700_000_000.0 + i / fps, frame) for i, frame in enumerate(frames_of(VIDEO / name))]


def png(image_bgr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1])).save(buf, "PNG")
    return buf.getvalue()


def windows(frames: Frames, seconds: float) -> list[Frames]:
    """Door windows of ``seconds`` (the whole clip when shorter), starting every WINDOW_STEP_S."""
    fps = (len(frames) - 1) / (frames[-1][0] - frames[0][0])
    length = min(len(frames), round(seconds * fps))
    step = max(1, round(WINDOW_STEP_S * fps))
    return [frames[s:s + length] for s in range(0, len(frames) - length + 1, step)]


def door_encoding(frame: np.ndarray) -> np.ndarray:
    """The encoding of the largest face of one frame, as the door camera computes it."""
    seen = faces.faces_in_frames([(0.0, frame)], max_frames=1, encode=1)
    return max(seen[0], key=lambda f: f.box[1] - f.box[3]).encoding


@dataclass
class Holder:
    enrollment: str
    """The key in ENROLLED the windows' badge belongs to."""
    seconds: float
    windows: list[Frames]


def gallery() -> face_match.Gallery:
    g = face_match.Gallery()
    woman_and_man = read_video("headpose-woman-and-man.mp4")[0][1]
    half = woman_and_man.shape[1] // 2
    g.add(ENROLLED["A"], faces.encode_photo(png(read_video("webcam-man-then-titlecard.mov")[40][1])))
    g.add(ENROLLED["A2"], door_encoding(read_video("webcam-man-blink.mp4")[36][1]))
    g.add(ENROLLED["B"], door_encoding(read_video("headpose-man.mp4")[0][1]))
    g.add(ENROLLED["B2"], door_encoding(woman_and_man[:, half:]))
    g.add(ENROLLED["C"], door_encoding(woman_and_man[:, :half]))
    for name in ("obama.jpg", "obama2.jpg"):
        g.add(ENROLLED["obama"], faces.encode_photo((PHOTOS / name).read_bytes()))
    g.add(ENROLLED["biden"], faces.encode_photo((PHOTOS / "biden.jpg").read_bytes()))
    return g


def holders() -> list[Holder]:
    """Each enrollment's door windows, full length and short, from a clip not used to enroll it."""
    clips = {"A": read_video("webcam-man-blink.mp4"), "A2": read_video("webcam-man-then-titlecard.mov")[:72],
             "B": read_video("headpose-woman-and-man.mp4")[4:], "B2": read_video("headpose-man.mp4"),
             "C": read_video("headpose-woman.mp4")}
    return [Holder(enrollment, s, windows(frames, s)) for enrollment, frames in clips.items()
            for s in (sum(FACE_WINDOWS["required"]), SHORT_WINDOW_S)]
