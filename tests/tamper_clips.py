"""Camera tamper and its look-alikes, generated over real video with fixed seeds (tests and bench/bench_tamper.py).

A ``Clip`` is one of the test videos (tests/data/video) with a perturbation in frames ``[start, end)``: the
tampers a camera must report (a hand or cloth over the lens, spray, defocus, turned away, knocked, a frozen
stream, darkness) and the nuisances it must not (lamp steps with clipped highlights, a colour -> gray
switch, sensor noise, a person walking close past the lens). Frames are decoded and perturbed as they are
read (a decoded clip would take hundreds of MB), and every random layer comes from a fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

VIDEO = Path(__file__).parent / "data" / "video"
DOOR, OUTDOOR = "door-entries-part1.mp4", "vtest.avi"
FPS = 10.0
"""Both test videos are 10 fps."""
START_S, END_S, AFTER_S = 12.0, 30.0, 38.0
"""Where a tamper goes (after the detector has learned the scene, and long enough to be reported), and how
long its clip plays."""
NUISANCE_S = 50.0
"""How long a nuisance clip plays."""

Change = Callable[[np.ndarray, int], np.ndarray]
"""(frame, index) -> the perturbed frame, for indices in the clip's [start, end)."""


@dataclass(frozen=True)
class Clip:
    name: str
    video: str
    change: Callable[[], Change] | None
    """Makes the perturbation (fresh random state each time the clip plays)."""
    expect: frozenset[str]
    """Tamper kinds any of which is a right answer; empty: nothing may be raised."""
    start: int
    """First perturbed frame."""
    end: int
    """First frame after the perturbation."""

    length: int | None = None
    """Frames to play (None: the whole video)."""

    def frames(self) -> Iterator[np.ndarray]:
        change = self.change() if self.change is not None else None
        for i, frame in enumerate(read(self.video)):
            if self.length is not None and i >= self.length:
                return
            yield change(frame, i) if change is not None and self.start <= i < self.end else frame


def read(name: str) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(VIDEO / name))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open {VIDEO / name}")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def _ramp(i: int, start: int, frames: float) -> float:
    """0 before start, rising linearly to 1 over ``frames`` frames."""
    return float(np.clip((i - start + 1) / max(frames, 1.0), 0.0, 1.0))


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).astype(np.uint8)


def _sensor(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The sensor's own noise, which lies behind the lens whatever is in front of it."""
    return _u8(image + rng.normal(0.0, 1.5, image.shape).astype(np.float32))


def _texture(shape: tuple[int, ...], seed: int, scale: int, colour: tuple[int, int, int], spread: float) -> np.ndarray:
    """A smooth random texture around ``colour`` (BGR): skin, cloth or paint seen far out of focus."""
    h, w = shape[:2]
    coarse = np.random.default_rng(seed).normal(0.0, 1.0, (max(2, h // scale), max(2, w // scale))).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    return np.clip(np.array(colour, np.float32) * (1.0 + spread * field), 0, 255)


def cover(start: int, seed: int, *, close_s: float = 0.4, colour: tuple[int, int, int] = (95, 120, 170),
          leak: float = 0.08) -> Change:
    """A hand or a cloth slid over the lens from the left within ``close_s``. Held against the lens it is far
    out of focus: a smooth texture with a soft leading edge, and a little of the scene leaking through."""
    layer: list[np.ndarray] = []
    rng = np.random.default_rng(seed)

    def change(f: np.ndarray, i: int) -> np.ndarray:
        w = f.shape[1]
        if not layer:
            layer.append(_texture(f.shape, seed, 24, colour, 0.12))
        edge = _ramp(i, start, close_s * FPS) * w * 1.2  # the soft edge sweeps past the right side
        x = np.arange(w, dtype=np.float32)[None, :, None]
        alpha = (1.0 - leak) * np.clip((edge - x) / (0.2 * w), 0.0, 1.0)
        return _sensor(f * (1.0 - alpha) + layer[0] * alpha, rng)

    return change


def spray(start: int, seed: int, *, opacity: float = 0.8) -> Change:
    """Paint sprayed on the lens over half a second: a speckled translucent film that scatters the light."""
    layers: list[np.ndarray] = []
    rng = np.random.default_rng(seed)

    def change(f: np.ndarray, i: int) -> np.ndarray:
        if not layers:
            density = rng.uniform(0.7, 1.0, f.shape[:2]).astype(np.float32)
            layers.extend([_texture(f.shape, seed, 32, (60, 70, 80), 0.2), cv2.GaussianBlur(density, (0, 0), 15)[..., None]])
        k = _ramp(i, start, 0.5 * FPS)
        alpha = opacity * k * layers[1]
        return _sensor(cv2.GaussianBlur(f, (0, 0), 0.5 + 8 * k) * (1.0 - alpha) + layers[0] * alpha, rng)

    return change


def defocus(start: int, seed: int, *, sigma: float = 5.0) -> Change:
    """The focus ring turned: a Gaussian blur growing over a second to ``sigma`` px per 432 lines."""
    rng = np.random.default_rng(seed)

    def change(f: np.ndarray, i: int) -> np.ndarray:
        s = sigma * f.shape[0] / 432 * _ramp(i, start, FPS)
        return _sensor(cv2.GaussianBlur(f, (0, 0), s), rng) if s > 0.3 else f

    return change


def _warp(f: np.ndarray, dx: float, dy: float, angle: float, beyond: np.ndarray | None = None) -> np.ndarray:
    """The view shifted by dx, dy of the frame and rolled by ``angle`` degrees; what comes into view at the
    edges is ``beyond`` (the world next to the scene), or the scene's own edge mirrored."""
    h, w = f.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, 2] += (dx * w, dy * h)
    if beyond is None:
        return cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    out = cv2.resize(beyond, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(f, m, (w, h), out, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_TRANSPARENT)


def turned_away(start: int, video: str) -> Change:
    """Turned over a second to look elsewhere: a pan of 40% of the width with a tilt and a slight roll;
    what comes into view is another place (the frames of ``video``)."""
    source = iter(())  # type: Iterator[np.ndarray]

    def change(f: np.ndarray, i: int) -> np.ndarray:
        nonlocal source
        beyond = next(source, None)
        if beyond is None:
            source = read(video)
            beyond = next(source)
        k = _ramp(i, start, FPS)
        return _warp(f, 0.4 * k, -0.1 * k, 3 * k, beyond)

    return change


def other_scene(start: int, video: str) -> Change:
    """Turned (in half a second) to a view of another scene: the frames of another video."""
    source = iter(())  # type: Iterator[np.ndarray]

    def change(f: np.ndarray, i: int) -> np.ndarray:
        nonlocal source
        if i < start + 0.5 * FPS:
            return _warp(f, 0.3 * _ramp(i, start, 0.5 * FPS), 0.0, 0.0)
        frame = next(source, None)
        if frame is None:
            source = read(video)
            frame = next(source)
        return cv2.resize(frame, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_AREA)

    return change


def knocked(*, dx: float = 0.12, dy: float = 0.08, angle: float = 4.0) -> Change:
    """Knocked: from one frame to the next the view shifts by ``dx``, ``dy`` of the frame and rolls."""
    return lambda f, _i: _warp(f, dx, dy, angle)


def frozen(start: int) -> Change:
    """The stream repeats one frame (a hung encoder, a replayed still) while it keeps coming."""
    held: list[np.ndarray] = []

    def change(f: np.ndarray, _i: int) -> np.ndarray:
        if not held:
            held.append(f)
        return held[0].copy()

    return change


def darkness(seed: int, *, level: float = 0.03) -> Change:
    """The lights cut (or the IR illuminator taped over): little left but sensor noise at high gain."""
    rng = np.random.default_rng(seed)
    return lambda f, _i: _u8(f * level + rng.normal(2.0, 2.0, f.shape).astype(np.float32))


def lamp(gain: float) -> Change:
    """A lamp switched: every pixel times ``gain``, highlights clipped at 255."""
    return lambda f, _i: _u8(f.astype(np.float32) * gain)


def gray() -> Change:
    """A colour -> IR (night mode) switch: the camera sends gray frames."""
    return lambda f, _i: cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def noise(seed: int, *, sigma: float = 10.0) -> Change:
    """Grainy sensor noise (gain turned up at dusk), fresh in every frame."""
    rng = np.random.default_rng(seed)
    return lambda f, _i: _u8(f + rng.normal(0.0, sigma, f.shape).astype(np.float32))


def passer_by(start: int, seed: int, *, cross_s: float = 1.0, width: float = 0.5) -> Change:
    """Someone walking right past the lens: a dark, out-of-focus body ``width`` of the frame wide crossing it
    in ``cross_s`` (from its leading edge in to its trailing edge out), hiding up to half the picture."""
    body: list[np.ndarray] = []

    def change(f: np.ndarray, i: int) -> np.ndarray:
        h, w = f.shape[:2]
        if not body:
            body.append(_texture(f.shape, seed, 16, (50, 55, 65), 0.2))
        centre = -width * w / 2 + _ramp(i, start, cross_s * FPS) * (1 + width) * w
        x = np.arange(w, dtype=np.float32)[None, :, None]
        y = np.arange(h, dtype=np.float32)[:, None, None]
        dist = ((x - centre) / (width * w / 2)) ** 2 + ((y - 0.8 * h) / (0.9 * h)) ** 2
        alpha = np.clip((1.0 - dist) * 3.0, 0.0, 1.0)
        return _u8(f * (1.0 - alpha) + body[0] * alpha)

    return change


def _at(s: float) -> int:
    return round(s * FPS)


def tampers(video: str) -> list[Clip]:
    """Every tamper over the video, from START_S to END_S, and the clip plays on until AFTER_S."""
    a, b = _at(START_S), _at(END_S)
    other = OUTDOOR if video == DOOR else DOOR

    def clip(name: str, change: Callable[[], Change], *expect: str) -> Clip:
        return Clip(name, video, change, frozenset(expect), a, b, _at(AFTER_S))

    return [
        clip("hand", lambda: cover(a, 1), "covered"),
        clip("cloth", lambda: cover(a, 2, colour=(40, 40, 45), leak=0.02), "covered", "dark"),
        clip("spray", lambda: spray(a, 3), "covered", "defocused"),
        clip("defocus", lambda: defocus(a, 7), "defocused"),
        clip("turned-away", lambda: turned_away(a, other), "moved"),
        clip("turned-to-another-scene", lambda: other_scene(a, other), "moved"),
        clip("knocked", knocked, "moved"),
        clip("frozen", lambda: frozen(a), "frozen"),
        clip("darkness", lambda: darkness(4), "dark"),
    ]


def nuisances(video: str) -> list[Clip]:
    """The whole clean video, and look-alikes over its first NUISANCE_S; none may raise anything."""
    a, n = _at(START_S), _at(NUISANCE_S)
    clips = [Clip("clean", video, None, frozenset(), 0, 0)]
    clips += [Clip(f"lamp-x{g}", video, partial(lamp, g), frozenset(), a, n, n) for g in (0.6, 1.3, 1.6, 2.0)]
    clips += [Clip("gray", video, gray, frozenset(), a, n, n), Clip("noise", video, partial(noise, 5), frozenset(), a, n, n)]
    clips += [Clip(f"passer-by-at-{s:g}s", video, partial(passer_by, _at(s), 6 + k), frozenset(), _at(s),
                   _at(s + 1.0), n) for k, s in enumerate((START_S, 25.0, 40.0))]
    return clips
