"""Motion and presence per door zone: turns camera frames into zone start/update/end changes.

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
* Clipped pixels. A pixel with a channel at 255 only says its true level is at least that (a lamp step
  clips a bright wall): it is left out of the tone-curve fit, and reading darker than the background by
  what the clip can have cut off (255 - curve(255), times the clipped share of a neighbour's blur kernel)
  is no change; darker by more (a dark coat in front of the wall) or brighter is. Likewise at black.
* Contrast- and noise-aware threshold. The pixel threshold scales down with the background's spread in a
  dim, flat scene (a person differs from the wall by fewer gray levels there) and rises with the noise
  measured in the frame's own difference image, so a grainy night image does not light up.
* Ghosts. A second, fast background tells fresh change from old: the ghost a person leaves where they
  stood is not counted as an object, so it neither keeps an episode alive nor inflates `peak_objects`.
* Time, not frames. Learning rate, minimum duration and end hysteresis are in seconds, from the `t` given.

* Presence. The slow background does not learn under the objects of the previous frame, so a person who
  stops (at a reader, at a table) stays different from the empty scene behind them; a changed blob that
  no longer moves stays an object while it overlaps where an object was (a ghost of a scene learned with
  someone in it never was one, and fades in). An episode therefore lasts while anyone is present, moving
  or not: a person who stands and then walks on is one episode. A zone whose objects have not moved for
  `still_s` reports an update with `still`, and another when they move again. A zone still for
  `max_still_s` (minutes) has its still objects learned into the background and its episode ended with
  `absorbed` (a bag left behind is scenery after that). A frame-wide re-seed forgets who stood still.

Only a moving object starts an episode. The background adapts with a time constant of `background_s`
everywhere no object is, so lighting drift, moved chairs and ghosts are absorbed within seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np

Point = tuple[float, float]
Box = tuple[int, int, int, int]
_LEVELS = np.arange(256, dtype=np.float64)
_IDENTITY = np.arange(256, dtype=np.uint8)
_GRAY_CHROMA = 1.5  # mean |B-G| + |G-R| below this is a gray (IR night mode) frame; colour scenes score 10+
_CLIP_HIGH, _CLIP_LOW = 250, 3  # blurred levels at or past these are taken as clipped by the sensor
_MAX_BLOBS = 64  # candidate blobs per frame considered for objects; bounds the cost under heavy clutter


class PeopleCounter(Protocol):
    """Counts the people in a zone's moving blobs (camera/people.py): blobs are not people, a body often
    splits into several."""

    def count(self, zone: str, frame: np.ndarray, boxes: Sequence[Box], t: float) -> int:
        """People among ``boxes`` (x, y, w, h in ``frame`` pixels, at least one) in ``frame`` taken at t."""
        ...


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
    contrast_ref: background spread (10th to 90th percentile, gray levels) at which `threshold` applies as
        is; a dimmer, flatter scene scales the threshold down with its spread (a person in a dim room differs
        from the wall by fewer gray levels), never under `min_threshold`, and never under the noise level.
    min_threshold: the floor of the contrast-normalised threshold, in gray levels.
    still_s: a zone whose objects have not moved for this long is reported still (an update with `still`),
        and moving again when one does; shorter pauses (a slow step) are not reported.
    max_still_s: a zone still this long has its still objects learned into the background and its episode
        ended with `absorbed` set: a bag left behind (or a person who stood still this long) is not present
        for ever. The loitering alarm, at a desk's minute or so, comes long before.
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
    contrast_ref: float = 100.0
    min_threshold: int = 4
    still_s: float = 2.0
    max_still_s: float = 300.0

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
        if not 1 <= self.min_threshold <= self.threshold or self.contrast_ref <= 0:
            raise ValueError("min_threshold must be in 1..threshold and contrast_ref > 0")
        if not 0 < self.still_s < self.max_still_s:
            raise ValueError("still_s must be > 0 and under max_still_s")


@dataclass(frozen=True)
class ZoneChange:
    """One zone's motion episode starting, growing (more objects than its peak so far) or ending.

    t: start -> the first frame of the motion (not when min_duration elapsed); update -> this frame;
        end -> the last frame with motion.
    boxes: x, y, w, h in original-frame pixels of the blobs counted for the zone in frame t.
    area: fraction of the zone covered by motion in frame t (end: the episode's peak).
    objects: people in the zone in frame t as the people counter saw them (without one: separate
        person-sized blobs), moving or present but still; peak_objects: the episode's maximum.
    still: on an update, the blobs standing still (the zone has not moved for `still_s`); 0 on an update
        saying they move again, and whenever the zone is moving.
    absorbed: on an end, the zone was still for `max_still_s` and what stood there was learned into the
        background: it ended by time, not because it left.
    """

    zone: str
    state: Literal["start", "update", "end"]
    t: float
    boxes: tuple[Box, ...]
    area: float
    objects: int
    peak_objects: int
    still: int = 0
    absorbed: bool = False


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
    last_moved: float = 0.0
    still: bool = False


class MotionDetector:
    """Frame -> zone motion changes for one camera; see the module docstring for the method."""

    def __init__(self, width: int, height: int, fps: float, zones: Sequence[Zone] = (),
                 masks: Sequence[Sequence[Point]] = (), settings: MotionSettings = MotionSettings(),
                 people: PeopleCounter | None = None) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"frame size must be at least 16x16 px, got {width}x{height}")
        if not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.width, self.height, self.fps, self.settings = width, height, fps, settings
        self._people = people
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
        self._present = np.zeros((dh, dw), np.bool_)
        """Pixels of the objects (moving or still) in the previous frame: a blob that stopped moving stays an
        object while it overlaps them, and the background does not learn under them."""
        self._gray_mode: bool | None = None
        self._clip: tuple[np.ndarray, np.ndarray] = (self._moving, self._moving)
        """Where the frame being processed has a channel clipped bright, dark (set by `_prepare`)."""
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
        high, low = self._clipped()
        lut = self._tone_curve(small, bg_u8, (high == 0) & (low == 0) & (bg_u8 < _CLIP_HIGH) & (bg_u8 > _CLIP_LOW))
        matched = cv2.LUT(small, lut)
        slack = (high * float(255 - int(lut[255])), low * float(lut[_CLIP_LOW]))
        diff = self._clipped_diff(matched, bg_u8, *slack)
        self._threshold_value = self._threshold(diff, bg_u8)
        changed = diff > self._threshold_value
        changed &= self._valid
        if np.count_nonzero(changed) > self.settings.global_change * self._valid_px:
            self._reseed(small)
            return []

        recent = self._clipped_diff(matched, cv2.convertScaleAbs(self._recent), *slack) > self._threshold_value
        fg: np.ndarray = changed.view(np.uint8)
        if self._kernel is not None:
            fg = cv2.dilate(fg, self._kernel)
        self._moving = fg.astype(np.bool_)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        group_of, boxes, sizes, still = self._objects(stats, np.bincount(labels[recent & self._moving], minlength=count),
                                                      np.bincount(labels[self._present & self._moving], minlength=count))
        self._learn(small, matched, dt, group_of[labels] > 0)
        out: list[ZoneChange] = []
        for zone, zmask, zpx in zip(self._zones, self._zone_masks, self._zone_px, strict=True):
            inside = np.bincount(group_of[labels[zmask]], minlength=len(sizes) + 1)[1:]
            hits = np.flatnonzero(inside >= self.settings.zone_overlap * np.minimum(sizes, zpx))
            area = float(inside[hits].sum()) / zpx
            zone_boxes = tuple(boxes[i] for i in hits)
            objects = len(zone_boxes) if self._people is None or not zone_boxes else max(
                1, self._people.count(zone.name, frame, zone_boxes, t))
            out.extend(self._step(zone.name, t, zone_boxes, area, int(still[hits].sum()), objects))
            if out and out[-1].absorbed:
                self._absorb(small, np.isin(group_of[labels], hits + 1))
        return out

    def _learn(self, small: np.ndarray, matched: np.ndarray, dt: float, objects: np.ndarray) -> None:
        """Update both backgrounds; the slow one not under this frame's objects, so a person who stops
        stays different from it (present) instead of fading in within `background_s`. The fast one learns
        the compensated frame: a lamp step does not make a still person look moving."""
        assert self._bg is not None
        self._present = objects
        cv2.accumulateWeighted(small, self._bg, 1.0 - math.exp(-dt / self.settings.background_s),
                               mask=(~objects).view(np.uint8))
        cv2.accumulateWeighted(matched, self._recent, 1.0 - math.exp(-dt / self.settings.recent_s))

    def _absorb(self, small: np.ndarray, region: np.ndarray) -> None:
        """Learn a region that stood still for max_still_s into the background: it is scenery now."""
        assert self._bg is not None
        self._bg[region] = small[region]
        self._present &= ~region

    def _clipped(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel, the share (0..1) of its blur kernel that is clipped bright, dark, from `_prepare`.
        Downscaling and blur mix a clipped patch into its neighbours, which then read too low (too high)
        by at most that share of what the clip cut off; the 3x3 dilation covers the downscaled pixels only
        partly clipped (too few to reach the clip level themselves)."""
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        blur = self.settings.blur_px
        shares = []
        for mask in self._clip:
            share = cv2.dilate(mask.view(np.uint8), kernel).astype(np.float32)
            shares.append(cv2.GaussianBlur(share, (blur, blur), 0) if blur > 1 else share)
        return shares[0], shares[1]

    @staticmethod
    def _clipped_diff(matched: np.ndarray, bg: np.ndarray, darker_slack: np.ndarray,
                      brighter_slack: np.ndarray) -> np.ndarray:
        """|frame - background| after compensation, less what clipping can explain. A pixel clipped bright
        only says its true level is at least what it reads: compensated, it reads at most 255 - lut[255]
        below the truth, and a neighbour mixing in a share of clipped pixels that share of it. So reading
        darker than the background by up to `darker_slack` is no change (a lamp step that clips a bright
        wall), reading darker by more is (a dark coat in front of that wall, or next to it); reading
        brighter always is. Likewise at the dark end with `brighter_slack`."""
        signed = matched.astype(np.float32) - bg
        diff = np.maximum(-signed - darker_slack, signed - brighter_slack)
        return np.clip(diff, 0, 255).astype(np.uint8)

    def _objects(self, stats: np.ndarray, live: np.ndarray,
                 kept: np.ndarray) -> tuple[np.ndarray, list[Box], np.ndarray, np.ndarray]:
        """Changed blobs -> objects: label -> object number (0 = none), object boxes, sizes in pixels, and
        whether each object is still (none of its blobs moving).

        Blobs are candidates when they are at least a tenth of min_area and either `moving_share` of them
        changed within `recent_s` (moving), or as much of them was an object in the previous frame (present,
        stopped). A ghost where the empty scene was learned with someone in it is neither. Candidates whose boxes come within
        `merge_gap` of each other sideways, or twice that above or below, are one object (an upright person
        often splits into head, body and legs); an object counts when it reaches min_area.
        """
        area = stats[:, cv2.CC_STAT_AREA]
        moving = live >= self.settings.moving_share * area
        cand = np.flatnonzero((area >= 0.1 * self._min_px) & (moving | (kept >= self.settings.moving_share * area)))
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
        still = np.bincount(group, weights=moving[cand], minlength=len(roots)) == 0
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
        return group_of, boxes, sizes[keep], still[keep]

    def _prepare(self, frame: np.ndarray) -> tuple[np.ndarray, bool]:
        """Grayscale, downscaled, blurred frame and whether the camera is in a gray (IR) mode; also notes
        (in `_clip`) where a channel is clipped bright (a lamp clips red before the gray level shows it)
        and where the gray level is clipped dark (a single channel at 0 is just a saturated colour)."""
        if frame.ndim == 3 and frame.shape[2] == 3:
            probe = frame[::16, ::16].astype(np.int16)
            chroma = np.abs(probe[..., 0] - probe[..., 1]).mean() + np.abs(probe[..., 1] - probe[..., 2]).mean()
            gray_mode = bool(chroma < _GRAY_CHROMA)
            colour = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
            small = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
            b, g, r = cv2.split(colour)
            self._clip = cv2.max(cv2.max(b, g), r) >= _CLIP_HIGH, small <= _CLIP_LOW
        else:
            gray_mode = True
            small = cv2.resize(frame.reshape(frame.shape[:2]), self._size, interpolation=cv2.INTER_AREA)
            self._clip = small >= _CLIP_HIGH, small <= _CLIP_LOW
        if self.settings.blur_px > 1:
            small = cv2.GaussianBlur(small, (self.settings.blur_px, self.settings.blur_px), 0)
        return small, gray_mode

    def _reseed(self, small: np.ndarray) -> None:
        self._bg = small.astype(np.float32)
        self._recent = self._bg.copy()
        self._moving[:] = False

    def _tone_curve(self, small: np.ndarray, bg: np.ndarray, unclipped: np.ndarray) -> np.ndarray:
        """Monotone lookup table mapping this frame's gray levels onto the background's.

        From the joint histogram of (frame, background) over pixels that were still in the previous frame,
        each of 16 frame-intensity bands gives a control point (median frame level, median background
        level). A quadratic (gain, offset and a gamma-like bend) is fitted to them by iteratively
        reweighted least squares with Tukey weights: a band dominated by a moving person (a dark coat in a
        scene with few dark background pixels) disagrees with the rest and is voted out, while a lamp or
        exposure change moves every band together and is followed. Pixels clipped in the frame or the
        background carry no level and are left out: with a bright wall clipped by a lamp, the top band would
        pair 255 with every background level above the clip point and bend the curve.
        """
        use = self._valid & ~self._moving & unclipped
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

    def _threshold(self, diff: np.ndarray, bg: np.ndarray) -> float:
        """The pixel threshold: `threshold` scaled down with the background's spread below `contrast_ref`
        (a dim scene's person-to-wall difference shrinks with its contrast), floored at `min_threshold`,
        and raised above the noise level (1.4826 x median |difference|)."""
        s = self.settings
        hist = cv2.calcHist([diff], [0], None, [256], [0, 256]).ravel().cumsum()
        median = float(np.searchsorted(hist, hist[-1] / 2))
        levels = cv2.calcHist([bg[::2, ::2]], [0], None, [256], [0, 256]).ravel().cumsum()
        p10, p90 = np.searchsorted(levels, levels[-1] * np.array([0.1, 0.9]))
        scaled = s.threshold * min(1.0, float(p90 - p10) / s.contrast_ref)
        return max(float(s.min_threshold), scaled, s.noise_factor * 1.4826 * median)

    def _box(self, x: int, y: int, w: int, h: int) -> Box:
        """A box at detection size -> x, y, w, h in original-frame pixels."""
        sx, sy = self._scale
        left, top = int(x * sx), int(y * sy)
        return left, top, min(self.width - left, math.ceil(w * sx)), min(self.height - top, math.ceil(h * sy))

    def _step(self, name: str, t: float, boxes: tuple[Box, ...], area: float, still: int,
              objects: int) -> list[ZoneChange]:
        """Advance one zone's episode with this frame's blobs (`still` of them not moving) and the objects
        (people) counted in them."""
        ep, s = self._episodes[name], self.settings
        if ep.active and objects:
            presence = self._presence(name, ep, t, boxes, area, still, objects)
            if presence:
                return presence
        if not ep.active:
            if not objects or still == len(boxes):
                ep.run_start = None  # only a moving object starts an episode
                return []
            if ep.run_start is None:
                ep.run_start, ep.run_peak = t, 0
            ep.run_peak = max(ep.run_peak, objects)
            if t - ep.run_start + 1.0 / self.fps < s.min_duration_s:
                return []
            ep.active, ep.peak_objects, ep.peak_area = True, ep.run_peak, area
            ep.last_motion, ep.last_boxes, ep.last_objects, ep.last_moved, ep.still = t, boxes, objects, t, False
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

    def _presence(self, name: str, ep: _Episode, t: float, boxes: tuple[Box, ...], area: float,
                  still: int, objects: int) -> list[ZoneChange]:
        """Still <-> moving reports of an active zone, and the end of a stay past max_still_s."""
        s = self.settings
        if still < len(boxes):
            ep.last_moved = t
            if ep.still:
                ep.still = False
                return [ZoneChange(name, "update", t, boxes, area, objects, max(ep.peak_objects, objects))]
            return []
        if t - ep.last_moved >= s.max_still_s:
            ep.active, ep.run_start, ep.still = False, None, False
            return [ZoneChange(name, "end", t, boxes, max(ep.peak_area, area), objects, ep.peak_objects,
                               absorbed=True)]
        if not ep.still and t - ep.last_moved >= s.still_s:
            ep.still = True
            ep.last_motion, ep.last_boxes, ep.last_objects = t, boxes, objects
            ep.peak_objects = max(ep.peak_objects, objects)
            return [ZoneChange(name, "update", t, boxes, area, objects, ep.peak_objects, still=still)]
        return []


def _check_polygon(polygon: Sequence[Point], what: str) -> None:
    if len(polygon) < 3:
        raise ValueError(f"{what}: a polygon needs at least 3 points, got {len(polygon)}")
    for point in polygon:
        if len(point) != 2 or not all(0.0 <= c <= 1.0 for c in point):
            raise ValueError(f"{what}: point {tuple(point)} is not a normalized (x, y) with both in 0..1")
