"""Camera tamper: a picture that can no longer be trusted, told from the frames alone.

One `TamperDetector` runs per camera in its worker, beside the motion detector. Without it a covered lens
is silent: the motion detector re-seeds on the frame-wide change and then sees a still picture, and the
door's grants read as "granted, nobody passed". Each frame is reduced to a small grayscale copy (the
motion detector's 180 lines) and compared with a reference of the scene learned slowly while the picture
is sound:

* dark: almost no light at all (the 98th percentile of brightness under ``dark_level``).
* frozen: the stream keeps coming but no pixel changes by more than ``frozen_diff`` gray levels for
  ``frozen_s``; a live sensor always has some noise, a hung encoder or a replayed still has none.
* covered / defocused: the fine structure (mean |Laplacian| per cell of a grid, less what the sensor
  noise alone gives, divided by the cell's brightness so a lamp step cancels out) has collapsed against
  the reference in most of the cells that had any. If the coarse layout (a 32 x 18 thumbnail) still
  correlates with the reference's, the lens is out of focus; if not, something is over it (a hand, a
  cloth, paint).
* moved: the structure is there but the thumbnail no longer lines up with the reference (a weak phase
  correlation peak: turned to another view) or lines up only shifted (knocked).

A condition must last ``raise_s`` before it is reported (a person walking close past the lens hides half
the picture for a moment) and the picture must be sound for ``clear_s`` before the report is cleared. Cells
more than half clipped (a lamp step on a bright wall) say nothing either way. The reference follows the
scene with a time constant of ``reference_s`` only while nothing is suspect, so a tamper is never learned
as the scene; a turn slow enough to be learned (over hours) is not seen (docs/cameras.md, Tamper).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Kind = Literal["covered", "defocused", "moved", "frozen", "dark"]
_GRID = (8, 6)  # cells across, down
_TINY_HEIGHT = 90  # lines of the every-pixel-sampled copy that the frozen check compares on every frame
_THUMB_HEIGHT = 72  # at most this many lines in the thumbnail for phase correlation
_COARSE = (32, 18)  # the layout of the picture: what a defocused view keeps and a covered one loses
_NOISE_LAPLACIAN = 3.57
"""Mean |Laplacian| (3x3 cross) of white noise of sigma 1: sqrt(2 / pi) x sqrt(20)."""
_SECOND_DIFF = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
"""Immerkaer's noise operator: blind to gradients, its response to white noise has sigma 6."""
_STRUCTURE = 0.06
"""Normalized Laplacian energy of a cell with detail; a blank wall or a covered lens has 0.02 to 0.04."""
_FLAT = 0.045
"""A cell with less energy than this has lost its detail whatever its reference (sensor noise under one
gray level at detection size escapes the noise estimates: both are medians of whole gray levels)."""


@dataclass(frozen=True)
class TamperSettings:
    """Tuning; the defaults were chosen on the door-entries and vtest clips with tests/tamper_clips.py.

    detect_height: frames are reduced to this height first (the motion detector's size).
    look_every_s: the full check runs at most this often (5 times a second is plenty for a 1 s hold, and
        a third of the cost at 15 fps); the frozen check compares every frame with the one before.
    learn_s: the first frames are averaged this long into the reference; nothing is reported before.
    reference_s: time constant of the reference while the picture is sound.
    raise_s: a condition is reported once it has lasted this long (sound frames under ``blink_s`` apart do
        not break it: a pan lines up with the reference by chance now and then); clear_s: cleared once
        sound this long.
    dark_level: a frame whose 98th percentile of brightness is under this is dark.
    frozen: whether a picture that stops changing is a tamper: yes for a live source, whose sensor always
        adds noise; no for a video file played back, whose still stretches are its content.
    frozen_diff, frozen_s: no pixel of the reduced frame changing by more than frozen_diff gray levels
        for frozen_s seconds is a frozen stream.
    lost: a cell has lost its structure when its normalized Laplacian energy is under this share of the
        reference's; lost_cells: the share of structured cells that must have lost it.
    match: a phase correlation peak under this is another view; shift: a peak farther than this share
        of the thumbnail's width is a shifted view.
    layout: a picture that lost its detail is defocused if its coarse layout still correlates with the
        reference's this well, covered if not.
    """

    detect_height: int = 180
    look_every_s: float = 0.2
    learn_s: float = 3.0
    reference_s: float = 60.0
    raise_s: float = 1.0
    blink_s: float = 0.5
    clear_s: float = 2.0
    dark_level: float = 25.0
    frozen: bool = True
    frozen_diff: int = 1
    frozen_s: float = 1.2
    lost: float = 0.35
    lost_cells: float = 0.6
    match: float = 0.08
    layout: float = 0.7
    shift: float = 0.04

    def __post_init__(self) -> None:
        if self.detect_height < 36:
            raise ValueError(f"detect_height must be at least 36 px, got {self.detect_height}")
        times = (self.look_every_s, self.learn_s, self.reference_s, self.raise_s, self.blink_s, self.clear_s,
                 self.frozen_s)
        if not all(math.isfinite(s) and s > 0 for s in times):
            raise ValueError("look_every_s, learn_s, reference_s, raise_s, blink_s, clear_s and frozen_s must be "
                             "positive seconds")
        if not all(0 < f < 1 for f in (self.lost, self.lost_cells, self.match, self.shift, self.layout)):
            raise ValueError("lost, lost_cells, match, shift and layout must be fractions in (0, 1)")


@dataclass(frozen=True)
class TamperChange:
    """The camera's tamper state changed at ``t``: ``kind`` None means the picture is sound again."""

    t: float
    kind: Kind | None
    reason: str


@dataclass(frozen=True)
class _Look:
    """One frame's verdict before hysteresis: a kind or None (sound), with the figures behind it."""

    kind: Kind | None
    reason: str


class TamperDetector:
    """Frames of one camera -> tamper raised / cleared; see the module docstring for the method."""

    def __init__(self, width: int, height: int, settings: TamperSettings = TamperSettings()) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"frame size must be at least 16x16 px, got {width}x{height}")
        self.width, self.height, self.settings = width, height, settings
        # Whole-number reductions take OpenCV's fast block-average path (a fractional INTER_AREA costs ~5x);
        # an HD frame is first thinned to every 2nd or 3rd pixel (averaging 36 pixels of 1080p into one
        # would cost more than all the rest).
        k = max(1, height // settings.detect_height)
        self._step = k // 2 if k >= 4 else 1
        k = k // self._step
        sub_w, sub_h = self._thinned = (width // self._step, height // self._step)
        self._crop, self._size = (sub_w // k * k, sub_h // k * k), (sub_w // k, sub_h // k)
        k = max(1, -(-self._size[1] // _THUMB_HEIGHT))
        self._thumb_crop, self._thumb_size = (self._size[0] // k * k, self._size[1] // k * k), (
            self._size[0] // k, self._size[1] // k)
        self._window = cv2.createHanningWindow(self._thumb_size, cv2.CV_32F)
        k = max(1, height // _TINY_HEIGHT)
        self._tiny = (width // k, height // k)
        self._prev_tiny: np.ndarray | None = None
        self._next_look: float | None = None
        self._ref_energy: np.ndarray | None = None
        self._ref_thumb: np.ndarray | None = None
        self._learned = 0.0
        self._prev: np.ndarray | None = None
        self._still_since: float | None = None
        self._last_t: float | None = None
        self._suspect_since: float | None = None
        self._suspect_last = 0.0
        self._reasons: dict[Kind, str] = {}
        self._votes: Counter[Kind] = Counter()
        """Each suspect frame's kind since the run began: the report names the commonest (a cloth sliding in
        first looks like another view, then like a covered lens)."""
        self._sound_since: float | None = None
        self.kind: Kind | None = None
        """The tamper reported now, None while the picture is sound."""
        self.reason = ""

    def process(self, frame: np.ndarray, t: float) -> TamperChange | None:
        """Feed one frame (BGR or grayscale, width x height, uint8) taken at time t; returns a change of the
        reported state, if any."""
        if frame.shape[:2] != (self.height, self.width) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} is not {self.width}x{self.height} uint8")
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"frame time went backwards: {t} after {self._last_t}")
        if self._last_t is not None and t - self._last_t > self.settings.raise_s:
            self._still_since = self._suspect_since = None  # a gap in the stream: start the timers again
        self._last_t = t
        frozen = self._frozen(cv2.resize(frame, self._tiny, interpolation=cv2.INTER_NEAREST), t)
        if self._next_look is not None and t < self._next_look:
            return self._hysteresis(frozen, t) if frozen is not None else None
        gap = 0.0 if self._next_look is None else t - self._next_look + self.settings.look_every_s
        self._next_look = t + self.settings.look_every_s
        thinned = frame if self._step == 1 else cv2.resize(frame, self._thinned, interpolation=cv2.INTER_NEAREST)
        small = cv2.resize(thinned[:self._crop[1], :self._crop[0]], self._size, interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        energy, usable = self._energy(small, self._noise(small))
        thumb = self._thumb(small)
        look = frozen or self._look(small, energy, usable, thumb)
        self._learn(look, gap, energy, usable, thumb)
        self._prev = small
        return self._hysteresis(look, t)

    def _frozen(self, tiny: np.ndarray, t: float) -> _Look | None:
        """Every frame: has no sampled pixel changed by more than frozen_diff for frozen_s?"""
        s, prev = self.settings, self._prev_tiny
        self._prev_tiny = tiny
        if not s.frozen or prev is None or int(cv2.absdiff(tiny, prev).max()) > s.frozen_diff:
            self._still_since = None
            return None
        self._still_since = t if self._still_since is None else self._still_since
        if t - self._still_since < s.frozen_s:
            return None
        return _Look("frozen", f"the picture has not changed for {t - self._still_since:.1f} s")

    # --- one frame ------------------------------------------------------------------------------------

    def _look(self, small: np.ndarray, energy: np.ndarray, usable: np.ndarray, thumb: np.ndarray) -> _Look:
        s = self.settings
        bright = _quantile(small[::2, ::2], 0.98)
        if bright < s.dark_level:
            return _Look("dark", f"no light: 98% of the picture is darker than {bright:.0f}/255")
        if self._ref_energy is None or self._ref_thumb is None or self._learned < s.learn_s:
            return _Look(None, "learning the scene")
        structured = usable & (self._ref_energy > _STRUCTURE)
        if np.count_nonzero(structured) >= 0.25 * structured.size:
            floor = np.maximum(s.lost * self._ref_energy[structured], _FLAT)
            lost = float(np.mean(energy[structured] < floor))
        else:
            lost = 0.0  # too little left to judge (a scene blown out by a lamp): nothing is concluded
        (dx, dy), peak = cv2.phaseCorrelate(self._ref_thumb, thumb, self._window)
        moved = math.hypot(dx, dy) / self._thumb_size[0]
        if lost >= s.lost_cells:
            layout = _correlation(cv2.resize(thumb, _COARSE, interpolation=cv2.INTER_AREA),
                                  cv2.resize(self._ref_thumb, _COARSE, interpolation=cv2.INTER_AREA))
            if layout >= s.layout:
                return _Look("defocused", f"sharpness lost in {lost:.0%} of the picture; its layout still "
                                          f"matches the scene (correlation {layout:.2f})")
            return _Look("covered", f"detail lost in {lost:.0%} of the picture and its layout no longer "
                                    f"matches the scene (correlation {layout:.2f})")
        if peak < s.match:
            return _Look("moved", f"the view no longer matches the scene (correlation peak {peak:.2f})")
        if moved >= s.shift:
            return _Look("moved", f"the view has shifted by {moved:.0%} of its width")
        return _Look(None, f"sound (detail lost in {lost:.0%}, peak {peak:.2f}, shift {moved:.1%})")

    def _noise(self, small: np.ndarray) -> float:
        """The sensor noise's sigma, the lesser of two estimates that can each only err high: from the
        difference with the previous frame (most pixels are still, unless the camera moves) and from the
        frame's own second differences (most pixels are on smooth surfaces, unless all is texture)."""
        sub = small[::2, ::2]
        spatial = _quantile(cv2.convertScaleAbs(cv2.filter2D(sub, cv2.CV_16S, _SECOND_DIFF)), 0.5) / (0.6745 * 6)
        if self._prev is None:
            return spatial
        return min(spatial, _quantile(cv2.absdiff(sub, self._prev[::2, ::2]), 0.5) / (0.6745 * math.sqrt(2)))

    def _energy(self, small: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
        """Per grid cell: mean |Laplacian| less what the sensor noise alone gives, over mean brightness (a
        lamp step scales both), and whether the cell is usable (at most half of it clipped at white)."""
        lap = cv2.convertScaleAbs(cv2.Laplacian(small, cv2.CV_16S, ksize=1))
        lap_cells = cv2.resize(lap, _GRID, interpolation=cv2.INTER_AREA).astype(np.float32)
        mean_cells = cv2.resize(small, _GRID, interpolation=cv2.INTER_AREA).astype(np.float32)
        clipped = cv2.resize((small >= 250).view(np.uint8), _GRID, interpolation=cv2.INTER_AREA)
        # a detail's and the noise's |Laplacian| add in quadrature (as the sum of two independent Gaussians)
        detail = np.sqrt(np.maximum(lap_cells * lap_cells - (_NOISE_LAPLACIAN * noise) ** 2, 0.0))
        return detail / (mean_cells + 10.0), clipped == 0

    def _thumb(self, small: np.ndarray) -> np.ndarray:
        crop = small[:self._thumb_crop[1], :self._thumb_crop[0]]
        return cv2.resize(crop, self._thumb_size, interpolation=cv2.INTER_AREA).astype(np.float32)

    # --- reference and hysteresis ---------------------------------------------------------------------

    def _learn(self, look: _Look, gap: float, energy: np.ndarray, usable: np.ndarray, thumb: np.ndarray) -> None:
        """Average the first learn_s into the reference, then follow the scene slowly while all is sound."""
        s = self.settings
        if self._ref_energy is None or self._ref_thumb is None:
            self._ref_energy, self._ref_thumb = energy.copy(), thumb.copy()
            return
        if look.kind is not None or self.kind is not None or self._suspect_since is not None:
            return
        if self._learned < s.learn_s:
            self._learned += gap
            weight = gap / max(self._learned, 1e-6)
        else:
            weight = 1.0 - math.exp(-gap / s.reference_s)
        self._ref_energy[usable] += weight * (energy[usable] - self._ref_energy[usable])
        cv2.accumulateWeighted(thumb, self._ref_thumb, weight)

    def _hysteresis(self, look: _Look, t: float) -> TamperChange | None:
        s = self.settings
        if look.kind is not None:
            self._sound_since = None
            if self._suspect_since is None:
                self._suspect_since = t
                self._votes.clear()
            self._suspect_last = t
            self._votes[look.kind] += 1
            self._reasons[look.kind] = look.reason
            # frozen counts its own time: the picture was already still for frozen_s
            if self.kind is None and (look.kind == "frozen" or t - self._suspect_since >= s.raise_s):
                kind = "frozen" if look.kind == "frozen" else self._votes.most_common(1)[0][0]
                self.kind, self.reason = kind, self._reasons[kind]
                return TamperChange(t, kind, self.reason)
            return None
        if t - self._suspect_last >= self.settings.blink_s:
            self._suspect_since = None
        if self.kind is None:
            return None
        self._sound_since = t if self._sound_since is None else self._sound_since
        if t - self._sound_since < s.clear_s:
            return None
        self.kind, self.reason = None, look.reason
        return TamperChange(t, None, f"the picture is sound again: {look.reason}")


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images; 0 when either is flat."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / norm if norm > 1e-6 else 0.0


def _quantile(image: np.ndarray, q: float) -> float:
    """The q-quantile of an 8-bit image, from its histogram (np.percentile sorts: ten times slower)."""
    counts = cv2.calcHist([image], [0], None, [256], [0, 256]).ravel().cumsum()
    return float(np.searchsorted(counts, q * counts[-1]))
