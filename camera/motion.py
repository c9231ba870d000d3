"""Motion detection per door zone: turns camera frames into zone start/update/end changes.

One `MotionDetector` runs per camera in that camera's worker process; it holds only frame -> `ZoneChange`
logic (no capture, no MQTT). The method follows Frigate's improved motion detector (downscale, grayscale,
blur, running-average background, threshold, dilate, blobs, min area, re-seed on a frame-wide change) with
changes for the false motion Frigate users complain about most:

* Photometric compensation. Each frame is mapped onto the background's brightness scale by a monotone tone
  curve fitted from (frame, background) pixel pairs on pixels that were not moving in the previous frame.
  A lamp switched on, auto exposure, slow daylight drift or an IR gamma change are all global monotone
  intensity changes, so they cancel out; a person does not, because the fit ignores pixels that moved.
* Colour <-> IR switches. Frames are always processed in grayscale; a frame that turns from colour to gray
  (or back) re-seeds the background, since IR reflectance differs per material and no tone curve fits it.
* Frame-wide change. When more than `global_change` of the frame still differs after compensation, the
  background is re-seeded and the frame is skipped, without ending or starting any episode.
* Noise-aware threshold. The pixel threshold rises with the noise measured in the frame's own difference
  image, so a grainy night image does not light up.
* Ghosts. A second, fast background tells fresh change from old: the ghost a person leaves where they
  stood is not counted as an object, so it neither keeps an episode alive nor inflates `peak_objects`.
* Time, not frames. Learning rate, minimum duration and end hysteresis are in seconds, from the `t` given.

The background adapts with a time constant of `background_s`, so a person who stops moving (at a desk,
at a reader) fades from the motion mask within a few seconds: this reports motion, not presence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Point = tuple[float, float]
Box = tuple[int, int, int, int]
_LEVELS = np.arange(256, dtype=np.float64)
_IDENTITY = np.arange(256, dtype=np.uint8)
_GRAY_CHROMA = 1.5  # mean |B-G| + |G-R| below this is a gray (IR night mode) frame; colour scenes score 10+
_MAX_BLOBS = 64  # candidate blobs per frame considered for objects; bounds the cost under heavy clutter


@dataclass(frozen=True)
class Zone:
    """A named region of the frame (usually the door key) whose motion is reported on its own."""

    name: str
    polygon: tuple[Point, ...]


@dataclass(frozen=True)
class MotionSettings:
    """Detector tuning; the defaults were chosen on the door-entries and synthetic test scenes.

    min_area: smallest blob, as a fraction of the frame area, that counts as a moving object. 1% is well
        under a person at door-camera distance (3-10% of the frame) and well over pets' tails, insects,
        a hand moving while its owner stands still, or a blinking status light.
    min_duration_s: motion must last this long before a zone starts an episode; filters one-frame
        glitches (compression bursts, a dropped frame) while still catching someone walking past a door.
    end_after_s: the zone must be quiet this long before the episode ends; bridges the moments a walking
        person's blob drops out (slow steps, pausing at the reader) so one crossing is one episode.
    detect_height: frames are downscaled to this height before any work; 180 px keeps a person dozens of
        pixels tall and the cost per frame under a millisecond or two at 1080p.
    blur_px: Gaussian blur kernel (odd, at detection size) against sensor noise and compression blocks.
    threshold: smallest difference from the background, in gray levels after compensation, that a pixel
        needs to count as changed.
    noise_factor: the threshold is raised to noise_factor x the noise level estimated from the frame's
        difference image (robust MAD), so heavy noise does not count as motion.
    background_s: time constant of the running-average background. Short enough that a person who stops
        moving is absorbed within seconds, long enough that a walking person stays a solid blob.
    recent_s: time constant of a second, fast background. A blob is only a moving object when at least
        `moving_share` of its pixels also differ from this one: the ghost a person leaves where they stood
        is old change and is not counted. (A re-seed resets both backgrounds, so someone moving through a
        colour <-> IR switch leaves a ghost that counts for about a second.)
    moving_share: see recent_s.
    dilate_px: dilation (at detection size) that joins the fragments of one moving body into one blob.
    merge_gap: blobs closer than this fraction of the frame height sideways (twice that above or below)
        are one object: an upright person often splits into head, body and legs.
    global_change: when more than this fraction of the frame differs after compensation, the change is
        frame-wide (lights, IR, camera bumped): the background is re-seeded and the frame is skipped.
    zone_overlap: an object counts for a zone when at least this fraction of it (or of the zone, if the zone
        is smaller) lies inside the zone; keeps a person passing next to a zone from triggering it.
    """

    min_area: float = 0.01
    min_duration_s: float = 0.3
    end_after_s: float = 1.5
    detect_height: int = 180
    blur_px: int = 5
    threshold: int = 20
    noise_factor: float = 5.0
    background_s: float = 1.0
    recent_s: float = 0.25
    moving_share: float = 0.1
    dilate_px: int = 5
    merge_gap: float = 0.06
    global_change: float = 0.4
    zone_overlap: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.min_area < 1:
            raise ValueError(f"min_area must be a fraction of the frame in (0, 1), got {self.min_area}")
        if self.min_duration_s < 0 or self.end_after_s < 0 or self.background_s <= 0 or self.recent_s <= 0:
            raise ValueError("min_duration_s and end_after_s must be >= 0, background_s and recent_s > 0")
        if self.detect_height < 16:
            raise ValueError(f"detect_height must be >= 16 px, got {self.detect_height}")
        if self.blur_px < 1 or self.blur_px % 2 == 0:
            raise ValueError(f"blur_px must be an odd number >= 1, got {self.blur_px}")
        if not all(0 < f <= 1 for f in (self.global_change, self.zone_overlap, self.moving_share)):
            raise ValueError("global_change, zone_overlap and moving_share must be fractions in (0, 1]")
        if self.merge_gap < 0:
            raise ValueError(f"merge_gap must be >= 0, got {self.merge_gap}")
        if self.threshold < 1 or self.noise_factor < 0 or self.dilate_px < 0:
            raise ValueError("threshold must be >= 1, noise_factor and dilate_px >= 0")


@dataclass(frozen=True)
class ZoneChange:
    """One zone's motion episode starting, growing (more objects than its peak so far) or ending.

    t: start -> the first frame of the motion (not when min_duration elapsed); update -> this frame;
        end -> the last frame with motion.
    boxes: x, y, w, h in original-frame pixels of the blobs counted for the zone in frame t.
    area: fraction of the zone covered by motion in frame t (end: the episode's peak).
    objects: separate person-sized blobs in the zone in frame t; peak_objects: the episode's maximum.
    """

    zone: str
    state: Literal["start", "update", "end"]
    t: float
    boxes: tuple[Box, ...]
    area: float
    objects: int
    peak_objects: int


@dataclass
class _Episode:
    """Per-zone state machine: a candidate run (not yet min_duration long), then an active episode."""

    run_start: float | None = None
    run_peak: int = 0
    active: bool = False
    last_motion: float = 0.0
    last_boxes: tuple[Box, ...] = ()
    last_objects: int = 0
    peak_objects: int = 0
    peak_area: float = 0.0


class MotionDetector:
    """Frame -> zone motion changes for one camera; see the module docstring for the method."""

    def __init__(self, width: int, height: int, fps: float, zones: Sequence[Zone] = (),
                 masks: Sequence[Sequence[Point]] = (), settings: MotionSettings = MotionSettings()) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"frame size must be at least 16x16 px, got {width}x{height}")
        if not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.width, self.height, self.fps, self.settings = width, height, fps, settings
        dh = min(settings.detect_height, height)
        dw = max(16, round(width * dh / height))
        self._size = (dw, dh)
        self._scale = (width / dw, height / dh)
        zones = tuple(zones) or (Zone("frame", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))),)
        names = [z.name for z in zones]
        if len(set(names)) != len(names):
            raise ValueError(f"zone names must be unique, got {names}")
        for z in zones:
            _check_polygon(z.polygon, f"zone {z.name!r}")
        for i, poly in enumerate(masks):
            _check_polygon(poly, f"mask {i}")
        self._zones = zones
        self._zone_masks = [self._rasterize([z.polygon]) > 0 for z in zones]
        self._zone_px = [max(1, int(np.count_nonzero(m))) for m in self._zone_masks]
        ignored = self._rasterize(masks)
        self._valid = ignored == 0
        self._valid_px = max(1, int(np.count_nonzero(self._valid)))
        self._min_px = settings.min_area * dw * dh
        self._kernel = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (settings.dilate_px, settings.dilate_px))
                        if settings.dilate_px > 1 else None)
        self._episodes = {z.name: _Episode() for z in zones}
        self._bg: np.ndarray | None = None
        self._recent = np.zeros((dh, dw), np.float32)
        self._threshold_value = float(settings.threshold)
        self._moving = np.zeros((dh, dw), np.bool_)
        self._gray_mode: bool | None = None
        self._last_t: float | None = None

    def _rasterize(self, polygons: Sequence[Sequence[Point]]) -> np.ndarray:
        """Polygons in normalized coordinates -> a 0/255 mask at detection size."""
        dw, dh = self._size
        mask = np.zeros((dh, dw), np.uint8)
        for poly in polygons:
            pts = np.array([[round(x * dw), round(y * dh)] for x, y in poly], np.int32)
            cv2.fillPoly(mask, [pts], 255)
        return mask

    def active(self) -> dict[str, bool]:
        """Zone -> whether an episode is under way now."""
        return {name: ep.active for name, ep in self._episodes.items()}

    def process(self, frame: np.ndarray, t: float) -> list[ZoneChange]:
        """Feed one frame (BGR or grayscale, width x height) taken at time t; returns the zone changes."""
        if frame.shape[:2] != (self.height, self.width) or frame.ndim not in (2, 3) or (
                frame.ndim == 3 and frame.shape[2] not in (1, 3)):
            raise ValueError(f"frame shape {frame.shape} does not match {self.width}x{self.height} "
                             "grayscale or BGR")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame must be 8-bit (uint8), got {frame.dtype}")
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"frame time went backwards: {t} after {self._last_t}")
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t

        small, gray_mode = self._prepare(frame)
        if self._bg is None or gray_mode != self._gray_mode:
            # first frame, or a colour <-> IR switch: nothing to compare with yet
            self._gray_mode = gray_mode
            self._reseed(small)
            return []

        bg_u8 = cv2.convertScaleAbs(self._bg)
        matched = cv2.LUT(small, self._tone_curve(small, bg_u8))
        diff = cv2.absdiff(matched, bg_u8)
        self._threshold_value = self._threshold(diff)
        changed = diff > self._threshold_value
        changed &= self._valid
        if np.count_nonzero(changed) > self.settings.global_change * self._valid_px:
            self._reseed(small)
            return []

        recent = cv2.absdiff(small, cv2.convertScaleAbs(self._recent)) > self._threshold_value
        cv2.accumulateWeighted(small, self._bg, 1.0 - math.exp(-dt / self.settings.background_s))
        cv2.accumulateWeighted(small, self._recent, 1.0 - math.exp(-dt / self.settings.recent_s))
        fg: np.ndarray = changed.view(np.uint8)
        if self._kernel is not None:
            fg = cv2.dilate(fg, self._kernel)
        self._moving = fg.astype(np.bool_)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        group_of, boxes, sizes = self._objects(stats, np.bincount(labels[recent & self._moving], minlength=count))
        out: list[ZoneChange] = []
        for zone, zmask, zpx in zip(self._zones, self._zone_masks, self._zone_px, strict=True):
            inside = np.bincount(group_of[labels[zmask]], minlength=len(sizes) + 1)[1:]
            hits = np.flatnonzero(inside >= self.settings.zone_overlap * np.minimum(sizes, zpx))
            area = float(inside[hits].sum()) / zpx
            out.extend(self._step(zone.name, t, tuple(boxes[i] for i in hits), area))
        return out

    def _objects(self, stats: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, list[Box], np.ndarray]:
        """Moving blobs -> objects: label -> object number (0 = none), object boxes and sizes in pixels.

        Blobs are candidates when they are at least a tenth of min_area and `moving_share` of them changed
        within `recent_s` (a ghost left where someone stood has not). Candidates whose boxes come within
        `merge_gap` of each other sideways, or twice that above or below, are one object (an upright person
        often splits into head, body and legs); an object counts when it reaches min_area.
        """
        area = stats[:, cv2.CC_STAT_AREA]
        cand = np.flatnonzero((area >= 0.1 * self._min_px) & (live >= self.settings.moving_share * area))
        cand = cand[cand > 0]
        cand = cand[np.argsort(area[cand])[::-1][:_MAX_BLOBS]]
        gap = self.settings.merge_gap * self._size[1] / 2  # each box grows by half the gap
        x0 = stats[cand, cv2.CC_STAT_LEFT] - gap
        y0 = stats[cand, cv2.CC_STAT_TOP] - 2 * gap
        x1 = x0 + stats[cand, cv2.CC_STAT_WIDTH] + 2 * gap
        y1 = y0 + stats[cand, cv2.CC_STAT_HEIGHT] + 4 * gap
        touch = (x0[:, None] < x1[None, :]) & (x0[None, :] < x1[:, None]) & (y0[:, None] < y1[None, :]) & (
            y0[None, :] < y1[:, None])
        group = np.arange(len(cand))
        for _ in range(len(cand)):  # label propagation to the smallest index in each touching cluster
            merged = np.where(touch, group[None, :], len(cand)).min(axis=1)
            if np.array_equal(merged, group):
                break
            group = merged
        roots, group = np.unique(group, return_inverse=True)
        sizes = np.bincount(group, weights=area[cand], minlength=len(roots))
        keep = sizes >= self._min_px
        number = np.cumsum(keep) * keep  # object number per group, 0 for groups under min_area
        group_of = np.zeros(len(stats), np.intp)
        group_of[cand] = number[group]
        boxes = []
        for g in np.flatnonzero(keep):
            members = stats[cand[group == g]]
            left, top = members[:, 0].min(), members[:, 1].min()
            right, bottom = (members[:, 0] + members[:, 2]).max(), (members[:, 1] + members[:, 3]).max()
            boxes.append(self._box(left, top, right - left, bottom - top))
        return group_of, boxes, sizes[keep]

    def _prepare(self, frame: np.ndarray) -> tuple[np.ndarray, bool]:
        """Grayscale, downscaled, blurred frame and whether the camera is in a gray (IR) mode."""
        if frame.ndim == 3 and frame.shape[2] == 3:
            probe = frame[::16, ::16].astype(np.int16)
            chroma = np.abs(probe[..., 0] - probe[..., 1]).mean() + np.abs(probe[..., 1] - probe[..., 2]).mean()
            gray_mode = bool(chroma < _GRAY_CHROMA)
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        else:
            gray_mode = True
            frame = frame.reshape(frame.shape[:2])
        small = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        if self.settings.blur_px > 1:
            small = cv2.GaussianBlur(small, (self.settings.blur_px, self.settings.blur_px), 0)
        return small, gray_mode

    def _reseed(self, small: np.ndarray) -> None:
        self._bg = small.astype(np.float32)
        self._recent = self._bg.copy()
        self._moving[:] = False

    def _tone_curve(self, small: np.ndarray, bg: np.ndarray) -> np.ndarray:
        """Monotone lookup table mapping this frame's gray levels onto the background's.

        From the joint histogram of (frame, background) over pixels that were still in the previous frame,
        each of 16 frame-intensity bands gives a control point (median frame level, median background
        level). A quadratic (gain, offset and a gamma-like bend) is fitted to them by iteratively
        reweighted least squares with Tukey weights: a band dominated by a moving person (a dark coat in a
        scene with few dark background pixels) disagrees with the rest and is voted out, while a lamp or
        exposure change moves every band together and is followed.
        """
        use = self._valid & ~self._moving
        pairs = small[use].astype(np.int32) * 256 + bg[use]
        joint = np.bincount(pairs, minlength=65536).reshape(16, 16, 256)
        by_band = joint.sum(axis=1)  # (band, background level)
        frame_hist = joint.sum(axis=2)  # (band, frame level within band)
        counts = by_band.sum(axis=1)
        keep = counts >= max(20, pairs.size // 500)
        if keep.sum() < 3:
            return _IDENTITY
        half = counts[keep, None] / 2
        x = (np.flatnonzero(keep) * 16 + np.argmax(frame_hist[keep].cumsum(axis=1) >= half, axis=1)) / 255.0
        y = np.argmax(by_band[keep].cumsum(axis=1) >= half, axis=1).astype(np.float64)
        weight = np.sqrt(counts[keep])
        for _ in range(4):
            coef = np.polyfit(x, y, 2, w=weight)
            resid = np.abs(y - np.polyval(coef, x))
            scale = max(6.0, 4.685 * 1.4826 * float(np.median(resid)))
            tukey = np.clip(1 - (resid / scale) ** 2, 0, None) ** 2
            if np.count_nonzero(tukey) < 3:
                break
            weight = np.sqrt(counts[keep]) * tukey
        lut = np.clip(np.polyval(coef, _LEVELS / 255.0), 0, 255)
        return np.rint(np.maximum.accumulate(lut)).astype(np.uint8)

    def _threshold(self, diff: np.ndarray) -> float:
        """The pixel threshold, raised above the noise level (1.4826 x median |difference|)."""
        hist = cv2.calcHist([diff], [0], None, [256], [0, 256]).ravel().cumsum()
        median = float(np.searchsorted(hist, hist[-1] / 2))
        return max(float(self.settings.threshold), self.settings.noise_factor * 1.4826 * median)

    def _box(self, x: int, y: int, w: int, h: int) -> Box:
        """A box at detection size -> x, y, w, h in original-frame pixels."""
        sx, sy = self._scale
        left, top = int(x * sx), int(y * sy)
        return left, top, min(self.width - left, math.ceil(w * sx)), min(self.height - top, math.ceil(h * sy))

    def _step(self, name: str, t: float, boxes: tuple[Box, ...], area: float) -> list[ZoneChange]:
        """Advance one zone's episode with this frame's blobs."""
        ep, s = self._episodes[name], self.settings
        objects = len(boxes)
        if not ep.active:
            if not objects:
                ep.run_start = None
                return []
            if ep.run_start is None:
                ep.run_start, ep.run_peak = t, 0
            ep.run_peak = max(ep.run_peak, objects)
            if t - ep.run_start + 1.0 / self.fps < s.min_duration_s:
                return []
            ep.active, ep.peak_objects, ep.peak_area = True, ep.run_peak, area
            ep.last_motion, ep.last_boxes, ep.last_objects = t, boxes, objects
            return [ZoneChange(name, "start", ep.run_start, boxes, area, objects, ep.peak_objects)]
        if objects:
            ep.last_motion, ep.last_boxes, ep.last_objects = t, boxes, objects
            ep.peak_area = max(ep.peak_area, area)
            if objects > ep.peak_objects:
                ep.peak_objects = objects
                return [ZoneChange(name, "update", t, boxes, area, objects, objects)]
            return []
        if t - ep.last_motion < s.end_after_s:
            return []
        ep.active, ep.run_start = False, None
        return [ZoneChange(name, "end", ep.last_motion, ep.last_boxes, ep.peak_area, ep.last_objects,
                           ep.peak_objects)]


def _check_polygon(polygon: Sequence[Point], what: str) -> None:
    if len(polygon) < 3:
        raise ValueError(f"{what}: a polygon needs at least 3 points, got {len(polygon)}")
    for point in polygon:
        if len(point) != 2 or not all(0.0 <= c <= 1.0 for c in point):
            raise ValueError(f"{what}: point {tuple(point)} is not a normalized (x, y) with both in 0..1")
