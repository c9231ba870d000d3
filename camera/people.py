"""Counting people, not blobs: OpenCV's HOG people detector run on a zone's moving region only.

A motion blob is not a person: a body splits into torso and legs, a shadow on the wall moves with a foot,
and the correlator reads "more objects than grants" as tailgating. Here a zone with motion holds at least
one person, and two or more only when the detector finds that many people side by side (detections whose
columns do not overlap, so a torso and legs, one above the other, are never two) in two evaluations in a
row (one stray window on a table leg is not a second person).

Chosen by measurement on tests/data/video/door-entries-part1.mp4 (report in docs/cameras.md): the HOG
detector found someone in about two thirds of moving frames on motion regions, the Haar full-body and
upper-body cascades in a quarter to a third (a camera looking down at people's backs, heads often cut off
by the frame). The region is padded (a blob is often only the moving part of a person) with the frame's
edge replicated, and scaled so the moving region is `crop_height` px tall: the default detector's 64x128
window then fits a person filling it, without the cost of a pyramid over the whole frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PeopleSettings:
    """Tuning, measured on the door clip, its perturbed versions and two-person composites (tests/test_people.py).

    interval_s: a zone's region is examined at most this often; between, the last count holds. Bounds the
        cost to a few detector runs per second per zone, whatever the frame rate.
    crop_height: the padded moving region is scaled to this height before detection.
    pad_x, pad_y: padding around the moving region, as fractions of its height (sideways: a person standing
        next to the one who moves is still in the region).
    hit_threshold: HOG SVM margin a window needs; a little below 0 finds people seen from behind.
    confirm: evaluations in a row that must all see two or more people before two are reported.
    forget_s: a zone quiet this long starts afresh (the next passage is someone else).
    """

    interval_s: float = 0.1
    crop_height: int = 160
    pad_x: float = 0.25
    pad_y: float = 0.12
    hit_threshold: float = -0.5
    confirm: int = 2
    forget_s: float = 1.0

    def __post_init__(self) -> None:
        if self.interval_s < 0 or self.forget_s <= 0:
            raise ValueError("interval_s must be >= 0 and forget_s > 0")
        if self.crop_height < 128:
            raise ValueError(f"crop_height must hold the detector's 128 px window, got {self.crop_height}")
        if self.pad_x < 0 or self.pad_y < 0 or self.confirm < 1:
            raise ValueError("pad_x and pad_y must be >= 0, confirm >= 1")


@dataclass
class _ZoneState:
    last_t: float = float("-inf")
    """When the zone was last asked (any frame with motion)."""
    examined_t: float = float("-inf")
    recent: list[int] = field(default_factory=list)
    """The last `confirm` evaluations' people counts."""


class PeopleDetector:
    """Per camera: people among a zone's moving blobs, at a bounded rate. Implements motion.PeopleCounter."""

    def __init__(self, settings: PeopleSettings = PeopleSettings()) -> None:
        self.settings = settings
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        self._zones: dict[str, _ZoneState] = {}
        self.evaluations = 0
        """Detector runs so far (for benchmarks: the cost is bounded by interval_s, not the frame rate)."""

    def count(self, zone: str, frame: np.ndarray, boxes: Sequence[Box], t: float) -> int:
        """People among ``boxes`` in the zone: 1, or the number confirmed side by side."""
        if not boxes:
            return 0
        s = self.settings
        state = self._zones.setdefault(zone, _ZoneState())
        if t - state.last_t > s.forget_s:
            state.recent = []
        state.last_t = t
        if t - state.examined_t >= 0.9 * s.interval_s:  # 0.9: frame times jitter (and round)
            state.examined_t = t
            self.evaluations += 1
            state.recent = (state.recent + [len(self.people(frame, boxes))])[-s.confirm:]
        if len(state.recent) < s.confirm:
            return 1
        return max(1, min(state.recent))

    def most(self, frames: Sequence[tuple[float, np.ndarray]]) -> int:
        """Most people confirmed at once in timed frames (a face check's window: the whole frame is the
        region, examined a few times per second, not every frame)."""
        raw: list[int] = []
        last = float("-inf")
        for t, frame in frames:
            if t - last >= 0.9 * self.settings.interval_s:
                last = t
                raw.append(len(self.people(frame, ((0, 0, frame.shape[1], frame.shape[0]),))))
        k = min(self.settings.confirm, len(raw))  # a count holds when `confirm` examinations in a row find it
        return max((min(raw[i:i + k]) for i in range(len(raw) - k + 1)), default=0)

    def people(self, frame: np.ndarray, boxes: Sequence[Box]) -> list[Box]:
        """People side by side in the padded region around ``boxes`` (frame pixels), strongest first."""
        if not boxes:
            raise ValueError("people() needs at least one moving box")
        s = self.settings
        h, w = frame.shape[:2]
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        px, py = int(s.pad_x * (y1 - y0)), int(s.pad_y * (y1 - y0))
        x0, y0, x1, y1 = x0 - px, y0 - py, x1 + px, y1 + py
        region = frame[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        region = cv2.copyMakeBorder(region, max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w),
                                    cv2.BORDER_REPLICATE)
        scale = s.crop_height / region.shape[0]
        region = cv2.resize(region, (max(64, round(region.shape[1] * scale)), s.crop_height),
                            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rects, weights = self._hog.detectMultiScale(region, hitThreshold=s.hit_threshold, winStride=(8, 8),
                                                    padding=(8, 8), scale=1.05)
        if not len(rects):
            return []
        scores = np.ravel(np.asarray(weights, np.float64))
        # Non-maximum suppression on columns (full-height strips): any sideways overlap is the same person,
        # so windows on a torso and on the legs below it are one, and two people must stand side by side.
        columns = [(int(x), 0, int(rw), 1) for x, _, rw, _ in rects]
        keep: np.ndarray = np.ravel(np.asarray(cv2.dnn.NMSBoxes(columns, (scores - scores.min() + 1).tolist(), 0.0, 0.0)))
        kept = [tuple(int(v) for v in rects[i]) for i in keep]
        sx = region.shape[1] / (x1 - x0)
        return [(x0 + round(rx / sx), y0 + round(ry / scale), round(rw / sx), round(rh / scale))
                for rx, ry, rw, rh in kept]
