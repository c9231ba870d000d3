"""Liveness at a face-required door: is the face in the frames around the badge a live head, or a photo or
screen held up to the camera (a presentation attack)?

A face match alone is fooled by a printed photo of the badge holder (distance 0.33-0.39, well within the
tolerance). This module looks at several frames of the same face and combines two kinds of cue:

- geometry over time (68 dlib landmarks per frame): a print or a screen is a plane, so however it is
  tilted, its landmarks in every frame fit one homography of the reference frame's; a real head turning
  or nodding does not (the nose moves against the cheeks), and it blinks and moves its mouth. These only
  speak when the face moved: a person standing still gives the same landmarks as a photo held still.
- texture of the face crop, which must carry the decision when nothing moved: moire (periodic peaks in
  the spectrum, a screen or a halftone print re-photographed), glare (a clipped, colourless highlight on
  glossy paper or glass), washed-out colour (the small gamut of a print), and a straight edge (the border
  of the print or the screen) moving with the face.

The result is the contract's ``Liveness``: ``score`` is the attack likelihood 0..1, ``spoof`` at or above
the threshold, ``unknown`` when fewer than ``min_frames`` frames had a usable face. What it cannot catch is
in docs/faces.md ("Liveness").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from badge_bridge.controllers import contract as c
from camera.faces import _examination_order, _fr

Box = tuple[int, int, int, int]
"""(top, right, bottom, left), face_recognition's order."""

LANDMARK_FACE_PX = 120
"""Faces are searched and landmarked at about this width: dlib's detector window is 80 px, and landmarks
on a bigger face are no more precise than the camera was."""
MOVED = 0.035
"""A frame whose landmarks moved this much (residual after a similarity, over the distance between the eyes)
from the reference frame's tells a plane from a head; less is landmark noise."""
TEXTURE_PX = 96
"""Face crops are compared at this size, so texture cues do not depend on the distance to the camera."""


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.5
    """Score at or above which the face is a spoof."""
    frames: int = 8
    """Frames examined, spread over the window."""
    min_frames: int = 4
    """Fewer frames with a usable face: ``unknown``."""


@dataclass(frozen=True)
class _Face:
    """One frame's face: its box in the frame, its 68 landmarks, and a normalised crop for the texture cues."""

    box: Box
    points: np.ndarray
    crop: np.ndarray


def assess(frames: Sequence[tuple[float, np.ndarray]], known: Sequence[tuple[float, Box]] = (),
           settings: Settings = Settings()) -> c.Liveness:
    """The liveness of the largest face in ``frames`` (t, BGR), e.g. a door event's ring-buffer window.
    ``known`` are faces already found (time, box in the frame), e.g. by faces.faces_in_frames: the face is
    tracked from them to neighbouring frames instead of searched in whole frames."""
    if settings.min_frames < 2 or settings.frames < settings.min_frames:
        raise ValueError(f"liveness needs min_frames >= 2 and frames >= min_frames, got {settings}")
    # The frames spread over the window as the face search picks them, in time order.
    picked = [frames[i] for i in sorted(_examination_order(len(frames), settings.frames))]
    faces = _track(picked, known)
    if len(faces) < settings.min_frames:
        return c.Liveness(verdict="unknown", score=0.5, cues={"frames": float(len(faces))},
                          reason=f"a usable face in {len(faces)} of {len(picked)} frames; "
                                 f"{settings.min_frames} are needed")
    cues = {"frames": float(len(faces)), **_geometry(faces), **_texture(faces)}
    score, reason = _score(cues)
    return c.Liveness(verdict="spoof" if score >= settings.threshold else "live", score=round(score, 4),
                      cues={k: round(v, 4) for k, v in cues.items()}, reason=reason)


# --- finding the face in each frame ---------------------------------------------------------------------

def _track(frames: Sequence[tuple[float, np.ndarray]], known: Sequence[tuple[float, Box]]) -> list[_Face]:
    """The face in each frame, in time order: starting from the largest known face (or the one found in the
    middle frame), searched only around its box in the nearest frame already done."""
    if not frames:
        return []
    if known:
        t0, box0 = max(known, key=lambda tb: tb[1][1] - tb[1][3])
        start = min(range(len(frames)), key=lambda i: abs(frames[i][0] - t0))
    else:
        start = len(frames) // 2
        found = _detect(frames[start][1])
        if found is None:
            return []
        box0 = found
    done: dict[int, _Face] = {}
    face = _face_near(frames[start][1], box0)
    if face is None:
        return []
    done[start] = face
    for direction in (-1, 1):
        box = face.box
        i = start + direction
        while 0 <= i < len(frames):
            near = _face_near(frames[i][1], box)
            if near is not None:
                done[i] = near
                box = near.box
            i += direction
    return [done[i] for i in sorted(done)]


def _detect(frame: np.ndarray) -> Box | None:
    """The largest face in a whole frame (scaled to 640 wide, as faces_in_frames does)."""
    h, w = frame.shape[:2]
    scale = min(1.0, 640 / w)
    small = frame if scale == 1.0 else cv2.resize(frame, (640, round(h * scale)), interpolation=cv2.INTER_AREA)
    boxes = _fr().face_locations(np.ascontiguousarray(small[:, :, ::-1]), number_of_times_to_upsample=0, model="hog")
    if not boxes:
        return None
    top, right, bottom, left = max(boxes, key=lambda b: b[1] - b[3])
    return (round(top / scale), round(right / scale), round(bottom / scale), round(left / scale))


def _face_near(frame: np.ndarray, box: Box) -> _Face | None:
    """The face within a region twice the size of ``box`` around it, scaled so it is LANDMARK_FACE_PX wide."""
    top, right, bottom, left = box
    size = max(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    h, w = frame.shape[:2]
    x0, y0 = max(0, int(cx - size)), max(0, int(cy - size))
    x1, y1 = min(w, int(cx + size)), min(h, int(cy + size))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    scale = LANDMARK_FACE_PX / max(size, 1)
    region = cv2.resize(frame[y0:y1, x0:x1], None, fx=scale, fy=scale,
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    rgb = np.ascontiguousarray(region[:, :, ::-1])
    fr = _fr()
    boxes = fr.face_locations(rgb, number_of_times_to_upsample=0, model="hog")
    if not boxes:
        return None
    rx, ry = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
    found = min(boxes, key=lambda b: ((b[1] + b[3]) / 2 - rx) ** 2 + ((b[0] + b[2]) / 2 - ry) ** 2)
    marks = fr.face_landmarks(rgb, face_locations=[found], model="large")[0]
    points = np.array([p for part in marks.values() for p in part], dtype=np.float64)
    points = points / scale + (x0, y0)
    t, r, b, lf = found
    frame_box = (round(t / scale + y0), round(r / scale + x0), round(b / scale + y0), round(lf / scale + x0))
    crop = _crop(frame, frame_box)
    return _Face(frame_box, points, crop) if crop is not None else None


def _crop(frame: np.ndarray, box: Box) -> np.ndarray | None:
    """The face and a margin around it (cheeks, hairline, where a print's edge shows), at TEXTURE_PX."""
    top, right, bottom, left = box
    m = (right - left) // 4
    h, w = frame.shape[:2]
    y0, y1, x0, x1 = max(0, top - m), min(h, bottom + m), max(0, left - m), min(w, right + m)
    if y1 - y0 < 16 or x1 - x0 < 16:
        return None
    return cv2.resize(frame[y0:y1, x0:x1], (TEXTURE_PX, TEXTURE_PX), interpolation=cv2.INTER_AREA)


# --- cues ----------------------------------------------------------------------------------------------

# Indices into the concatenated landmark dict (chin 17, eyebrows 5+5, nose bridge 4, nose tip 5, eyes 6+6).
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_TOP_LIP = slice(48, 60)
_BOTTOM_LIP = slice(60, 72)


def _eye_aspect(eye: np.ndarray) -> float:
    """Height over width of a 6-point eye: drops towards 0 in a blink."""
    return float((np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4]))
                 / (2 * np.linalg.norm(eye[0] - eye[3]) + 1e-9))


def _geometry(faces: list[_Face]) -> dict[str, float]:
    """How the landmarks moved over the frames, relative to the face's size (the distance between the eyes).

    ``motion``: the largest residual after the best similarity (shift, turn, scale) of the reference frame's
    landmarks: how much the face changed shape in the picture (a tilt, a turn, an expression). ``nonplanar``:
    the median residual after the best homography: what is left when the change is explained as a plane
    moving. For a print, nonplanar stays at landmark noise however much it moved; a head turning leaves it
    well above. ``blink``: the relative range of the eye aspect ratio; ``mouth``: that of the lips' height."""
    ref = faces[len(faces) // 2].points
    iod = float(np.linalg.norm(ref[_LEFT_EYE].mean(0) - ref[_RIGHT_EYE].mean(0))) + 1e-9
    motion, nonplanar = [], []
    for face in faces:
        if face is faces[len(faces) // 2]:
            continue
        src, dst = face.points.astype(np.float32), ref.astype(np.float32)
        similarity, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        homography, _ = cv2.findHomography(src, dst, 0)
        if similarity is None or homography is None:
            continue
        moved = cv2.transform(src[None], similarity)[0]
        warped = cv2.perspectiveTransform(src[None], homography)[0]
        motion.append(float(np.sqrt(np.mean(np.sum((moved - dst) ** 2, axis=1)))) / iod)
        nonplanar.append(float(np.sqrt(np.mean(np.sum((warped - dst) ** 2, axis=1)))) / iod)
    ears = np.array([(_eye_aspect(f.points[_LEFT_EYE]) + _eye_aspect(f.points[_RIGHT_EYE])) / 2 for f in faces])
    lips = np.array([np.linalg.norm(f.points[_BOTTOM_LIP].mean(0) - f.points[_TOP_LIP].mean(0)) for f in faces]) / iod
    planar = [h / m for m, h in zip(motion, nonplanar, strict=True) if m >= MOVED]
    return {"motion": float(np.median(motion)) if motion else 0.0,
            "nonplanar": float(np.median(nonplanar)) if nonplanar else 0.0,
            "planar": float(np.median(planar)) if planar else 1.0, "moved": float(len(planar)),
            "blink": float((ears.max() - ears.min()) / (ears.max() + 1e-9)), "mouth": float(lips.max() - lips.min())}


def _texture(faces: list[_Face]) -> dict[str, float]:
    """Texture of the face crops, the median over frames (one bad frame does not decide).

    ``moire``: the strongest peak in the upper half of the spectrum over the median there (periodic
    patterns: a screen's pixel grid, a halftone, beating with the camera's sensor). ``glare``: the share of
    clipped, colourless pixels (a specular highlight on paper or glass). ``saturation``: the mean colour
    saturation (a print's gamut is small, a screen's highlights wash out). ``edge``: the strongest straight
    line across the crop's margin, long relative to the crop (the edge of a print or a screen's bezel)."""
    moire, glare, saturation, edge = [], [], [], []
    window = np.outer(np.hanning(TEXTURE_PX), np.hanning(TEXTURE_PX))
    fy, fx = np.meshgrid(np.fft.fftfreq(TEXTURE_PX), np.fft.fftfreq(TEXTURE_PX), indexing="ij")
    high = np.hypot(fx, fy) > 0.18
    for face in faces:
        grey = cv2.cvtColor(face.crop, cv2.COLOR_BGR2GRAY).astype(np.float64)
        spectrum = np.abs(np.fft.fft2((grey - grey.mean()) * window))
        band = spectrum[high]
        moire.append(float(band.max() / (np.median(band) + 1e-9)))
        hsv = cv2.cvtColor(face.crop, cv2.COLOR_BGR2HSV)
        glare.append(float(np.mean((hsv[..., 2] >= 245) & (hsv[..., 1] <= 40))))
        saturation.append(float(hsv[..., 1].mean() / 255))
        edge.append(_straight_edge(grey.astype(np.uint8)))
    return {"moire": float(np.median(moire)), "glare": float(np.median(glare)),
            "saturation": float(np.median(saturation)), "edge": float(np.median(edge))}


def _straight_edge(grey: np.ndarray) -> float:
    """Length of the longest straight edge segment in the crop's outer margin, over the crop's side."""
    edges = cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), 60, 150)
    m = TEXTURE_PX // 6
    edges[m:-m, m:-m] = 0  # the face itself has no long straight edges worth counting
    lines = cv2.HoughLinesP(edges, 1, math.pi / 180, threshold=TEXTURE_PX // 3, minLineLength=TEXTURE_PX // 2,
                            maxLineGap=3)
    if lines is None or lines.size == 0:
        return 0.0
    return float(max(math.hypot(x1 - x0, y1 - y0) for x0, y0, x1, y1 in lines.reshape(-1, 4)) / TEXTURE_PX)


def _ramp(value: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear between: evidence that grows with a cue."""
    return min(1.0, max(0.0, (value - low) / (high - low)))


def _score(cues: dict[str, float]) -> tuple[float, str]:
    """Attack likelihood: the strongest single piece of evidence, each cue ramped between the most a live face
    showed in the test clips and what attacks show (tests/test_liveness.py measures both). Texture evidence
    alone suffices (a live face has no glare spot, bezel or moire); the plane needs frames that moved and no
    lips moving (a head that talks is not a photo)."""
    evidence = {
        "glare": _ramp(cues["glare"], 0.003, 0.015),
        "edge": _ramp(cues["edge"], 0.15, 0.25),
        "moire": _ramp(cues["moire"], 36.0, 44.0),
        "washed-out colour": _ramp(-cues["saturation"], -0.11, -0.08),
        "moves as a plane": _ramp(-cues["mouth"], -0.08, -0.06) * max(
            float(cues["moved"] >= 3) * _ramp(-cues["nonplanar"], -0.045, -0.035),
            # a smaller tilt: the homography explains more than the similarity, and leaves landmark noise only
            _ramp(cues["motion"] - cues["nonplanar"], 0.004, 0.008) * _ramp(-cues["nonplanar"], -0.03, -0.024)),
    }
    strongest = max(evidence, key=lambda k: evidence[k])
    score = evidence[strongest]
    if score > 0:
        return score, f"{strongest} ({score:.2f})"
    return score, "no attack cue" if cues["moved"] >= 3 else "no attack cue; the face barely moved"
