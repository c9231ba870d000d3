"""Motion detection per door zone, on real video and on synthesized scenes with the usual false-motion causes.

Real clips and their licenses: tests/data/video/SOURCES.md. Synthetic scenes are 640x480 at 15 fps over a
textured static background (coloured blocks and a gradient), so each nuisance is isolated and exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera.motion import MotionDetector, MotionSettings, Zone, ZoneChange
from tests.video_files import frames_of

VIDEO = Path(__file__).parent / "data" / "video"
# still stretches of door-entries-part1.mp4 by frame index (SOURCES.md); people are in view between them, and
# in the second, fourth and fifth someone stands at the table (present: tests/test_presence.py)
STILL = ((31, 60), (113, 179), (206, 227), (307, 363), (382, 430), (454, 502))
EMPTY = (STILL[0], STILL[2], STILL[5])
W, H, FPS = 640, 480, 15.0
PERSON = (60, 160)  # w, h in px: 3% of the frame, a person at door-camera distance


def _decode(name: str) -> list[np.ndarray]:
    return [frame.copy() for frame in frames_of(VIDEO / name)]  # the tests draw on them


def _run(frames: list[np.ndarray], fps: float, **kwargs: object) -> tuple[list[ZoneChange], list[bool]]:
    """All changes, and per frame whether the whole-frame zone is active after it."""
    h, w = frames[0].shape[:2]
    det = MotionDetector(w, h, fps, **kwargs)  # type: ignore[arg-type]
    changes, active = [], []
    for i, frame in enumerate(frames):
        changes += det.process(frame, i / fps)
        active.append(any(det.active().values()))
    return changes, active


@pytest.fixture(scope="module")
def door() -> tuple[list[ZoneChange], list[bool]]:
    return _run(_decode("door-entries-part1.mp4"), 10.0)


def test_door_video_empty_stretches_are_quiet(door: tuple[list[ZoneChange], list[bool]]) -> None:
    """Inside each empty stretch no episode is under way; an episode may run on end_after_s past its start
    (its motion ended there) and the last half second is left out, since the stretch ends are a MOG2 estimate.
    (The still stretches with someone standing at the table are present, no longer quiet.)"""
    _, active = door
    margin = round(MotionSettings().end_after_s * 10) + 1
    flagged = [i for a, b in EMPTY for i in range(max(a + margin, 30), b - 4) if active[i]]
    assert flagged == []


def test_door_video_reports_each_person(door: tuple[list[ZoneChange], list[bool]]) -> None:
    changes, active = door
    starts = [c for c in changes if c.state == "start"]
    for a, b in ((61, 112), (180, 205), (228, 306), (364, 381), (431, 453)):
        assert any(active[a:b + 1]), f"no motion while a person moves in frames {a}-{b}"
    assert sum(not active[i] for a, b in ((61, 112), (180, 205), (228, 306)) for i in range(a, b)) < 0.2 * 180
    ends = [c for c in changes if c.state == "end"]
    # one episode per visit: enter, stand at the table, leave (the empty stretches separate the visits)
    assert len(starts) >= 3 and len(ends) >= len(starts) - 1
    for s, e in zip(starts, ends, strict=False):
        assert s.t < e.t and s.boxes and s.peak_objects >= 1


def test_vtest_always_has_motion() -> None:
    _, active = _run(_decode("vtest.avi"), 10.0)
    assert sum(active[30:]) > 0.9 * len(active[30:])


# ---- synthetic scenes ----

def _background(seed: int = 1) -> np.ndarray:
    """Coloured 40x30 px blocks (levels 30-170) plus a gentle gradient: texture everywhere, no clipping."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(30, 170, (H // 30, W // 40, 3)).astype(np.float32)
    img = cv2.resize(blocks, (W, H), interpolation=cv2.INTER_NEAREST)
    img += np.linspace(-12, 12, W, dtype=np.float32)[None, :, None]
    return img


def _person(rng: np.random.Generator, w: int = PERSON[0], h: int = PERSON[1]) -> np.ndarray:
    """A dark textured body: darker than the background blocks so it is not lost against them."""
    return rng.uniform(5, 45, (h, w, 3)).astype(np.float32)


def _paste(img: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    h, w = patch.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 < x1 and y0 < y1:
        img[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]


Scene = Callable[[int, np.ndarray], np.ndarray]  # frame index, background copy -> frame (float32 BGR)


def _frames(n: int, scene: Scene, seed: int = 1) -> Iterator[np.ndarray]:
    bg = _background(seed)
    for i in range(n):
        yield np.clip(scene(i, bg.copy()), 0, 255).astype(np.uint8)


def _changes(n: int, scene: Scene, **kwargs: object) -> list[ZoneChange]:
    det = MotionDetector(W, H, FPS, **kwargs)  # type: ignore[arg-type]
    out: list[ZoneChange] = []
    for i, frame in enumerate(_frames(n, scene)):
        out += det.process(frame, i / FPS)
    return out


def _crossing(start: int, speed: int = 12, y: int = 200, seed: int = 5) -> Callable[[int, np.ndarray], np.ndarray]:
    """A person entering from the left at frame `start`, walking right at `speed` px per frame."""
    body = _person(np.random.default_rng(seed))

    def draw(i: int, img: np.ndarray) -> np.ndarray:
        if i >= start:
            _paste(img, body, -PERSON[0] + (i - start) * speed, y)
        return img
    return draw


def _lamp(i: int, img: np.ndarray) -> np.ndarray:
    """Lamp on at 2 s: +60 brightness and 20% more contrast, in one frame."""
    return (img - 100) * 1.2 + 160 if i >= 30 else img


def _ir(i: int, img: np.ndarray) -> np.ndarray:
    """Colour until 2 s, IR night mode until 4 s, colour again. IR is gray with a different channel response
    (materials reflect IR unlike visible light), a gamma and a brightness change."""
    if 30 <= i < 60:
        mix = 0.2 * img[..., 0] + 0.3 * img[..., 1] + 0.5 * img[..., 2]
        gray = 255 * (mix / 255) ** 0.7 + 15
        return np.repeat(gray[..., None], 3, axis=2)
    return img


def _noise(i: int, img: np.ndarray) -> np.ndarray:
    return img + np.random.default_rng(1000 + i).normal(0, 8, img.shape).astype(np.float32)


def _drift(i: int, img: np.ndarray) -> np.ndarray:
    """+80 brightness over 30 s."""
    return img + 80 * i / (30 * FPS)


def _small_object(i: int, img: np.ndarray) -> np.ndarray:
    """A 10x10 px square bouncing around the frame (0.03% of it: an insect, a pet's tail)."""
    x, y = (37 + 9 * i) % (2 * (W - 10)), (91 + 7 * i) % (2 * (H - 10))
    x, y = min(x, 2 * (W - 10) - x), min(y, 2 * (H - 10) - y)
    img[y:y + 10, x:x + 10] = 250
    return img


@pytest.mark.parametrize("scene, n", [(_lamp, 90), (_ir, 120), (_noise, 150), (_drift, 450), (_small_object, 150)],
                         ids=["lamp", "colour-ir-colour", "noise", "drift", "small-object"])
def test_nuisances_give_no_motion(scene: Scene, n: int) -> None:
    assert _changes(n, scene) == []


def test_grayscale_frames_and_colour_to_gray_switch() -> None:
    """A camera that hands over 2-D gray frames in IR mode and BGR in colour mode."""
    det = MotionDetector(W, H, FPS)
    out: list[ZoneChange] = []
    for i, frame in enumerate(_frames(90, _ir)):
        out += det.process(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if 30 <= i < 60 else frame, i / FPS)
    assert out == []


def _assert_one_crossing(changes: list[ZoneChange], entry_frame: int) -> None:
    assert [c.state for c in changes] == ["start", "end"], changes
    start, end = changes
    # the body is 60 px wide at 12 px/frame: it covers min_area within a few frames of entering
    assert entry_frame / FPS <= start.t <= (entry_frame + 4) / FPS
    assert start.objects == 1 and start.peak_objects == 1 and end.peak_objects == 1
    x, y, _w, h = start.boxes[0]
    assert y < 200 + PERSON[1] and y + h > 200 and x < (start.t * FPS - entry_frame) * 12 + 60
    # the body leaves the frame (640 + 60) / 12 = 58 frames after entry; the background it uncovers last
    # still counts as change for a few frames
    assert (entry_frame + 50) / FPS <= end.t <= (entry_frame + 58 + 10) / FPS
    assert 0 < end.area <= 1


def test_person_crossing_gives_one_start_and_one_end() -> None:
    _assert_one_crossing(_changes(120, _crossing(15)), 15)


def test_person_crossing_during_noise_and_drift() -> None:
    walk = _crossing(40)
    _assert_one_crossing(_changes(150, lambda i, img: _noise(i, _drift(i, walk(i, img)))), 40)


def test_person_crossing_just_after_lamp_step() -> None:
    walk = _crossing(35)
    _assert_one_crossing(_changes(130, lambda i, img: walk(i, _lamp(i, img))), 35)


def test_two_people_count_as_two() -> None:
    first, second = _crossing(10, seed=5), _crossing(25, seed=6)
    changes = _changes(120, lambda i, img: second(i, first(i, img)))
    states = [c.state for c in changes]
    assert states[0] == "start" and "update" in states and states[-1] == "end" and states.count("start") == 1
    update = next(c for c in changes if c.state == "update")
    assert update.objects == 2 and update.peak_objects == 2 and len(update.boxes) == 2
    assert changes[-1].peak_objects == 2


SCREEN = ((0.05, 0.05), (0.25, 0.05), (0.25, 0.2), (0.05, 0.2))  # the polygon around the blinking block


def _screen(i: int, img: np.ndarray) -> np.ndarray:
    """A 96x60 px wall screen switching between two pictures every half second."""
    img[40:100, 48:144] = (220, 220, 220) if (i // 8) % 2 else (20, 60, 20)
    return img


def test_masked_screen_is_ignored_and_unmasked_screen_is_motion() -> None:
    assert _changes(90, _screen, masks=[SCREEN]) == []
    assert [c.state for c in _changes(90, _screen)][:1] == ["start"]


def test_crossing_outside_a_zone_does_not_trigger_it() -> None:
    def walk_down(i: int, img: np.ndarray) -> np.ndarray:
        """A person walking down the right third of the frame."""
        _paste(img, _person(np.random.default_rng(3)), 500, -PERSON[1] + 10 * i)
        return img
    left = Zone("left-door", ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))
    right = Zone("right-door", ((0.7, 0.0), (1.0, 0.0), (1.0, 1.0), (0.7, 1.0)))
    changes = _changes(120, walk_down, zones=[left, right])
    assert {c.zone for c in changes} == {"right-door"}
    assert [c.state for c in changes] == ["start", "end"]


def test_active_follows_episode() -> None:
    det = MotionDetector(W, H, FPS, zones=[Zone("door-1", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)))])
    walk, seen = _crossing(5), []
    for i, frame in enumerate(_frames(100, walk)):
        det.process(frame, i / FPS)
        seen.append(det.active()["door-1"])
    assert not seen[0] and any(seen) and not seen[-1]


def test_min_duration_is_in_seconds() -> None:
    """With min_duration_s = 1.5, a person seen walking for 0.4 s is not motion at 15 fps nor at 30 fps,
    and one seen for 3 s is."""
    def glimpse(seconds: float, fps: float) -> list[ZoneChange]:
        body = _person(np.random.default_rng(9))
        det, out = MotionDetector(W, H, fps, settings=MotionSettings(min_duration_s=1.5)), []
        for i, frame in enumerate(_frames(round(6 * fps), lambda i, img: img)):
            t = i / fps
            if 1.0 <= t < 1.0 + seconds:
                _paste(frame, body.astype(np.uint8), round(100 + 150 * (t - 1.0)), 200)
            out += det.process(frame, t)
        return out
    assert glimpse(0.4, 15.0) == [] and glimpse(0.4, 30.0) == []
    assert [c.state for c in glimpse(3.0, 15.0)] == ["start", "end"]
    assert [c.state for c in glimpse(3.0, 30.0)] == ["start", "end"]


# ---- arguments ----

@pytest.mark.parametrize("kwargs, message", [
    ({"width": 0}, "frame size"),
    ({"fps": 0}, "fps must be a positive"),
    ({"fps": float("nan")}, "fps must be a positive"),
    ({"zones": [Zone("d", ((0, 0), (1, 0)))]}, "at least 3 points"),
    ({"zones": [Zone("d", ((0, 0), (1.2, 0), (1, 1)))]}, "not a normalized"),
    ({"zones": [Zone("d", ((0, 0), (1, 0), (1, 1))), Zone("d", ((0, 0), (1, 0), (0, 1)))]}, "unique"),
    ({"masks": [((0, 0), (0.5, -0.1), (1, 1))]}, "mask 0"),
])
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"width": W, "height": H, "fps": FPS, **kwargs}
    with pytest.raises(ValueError, match=message):
        MotionDetector(**args)  # type: ignore[arg-type]


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="min_area"):
        MotionSettings(min_area=0)
    with pytest.raises(ValueError, match="blur_px"):
        MotionSettings(blur_px=4)


def test_frame_shape_and_time_are_checked() -> None:
    det = MotionDetector(W, H, FPS)
    with pytest.raises(ValueError, match="does not match 640x480"):
        det.process(np.zeros((H, W + 1, 3), np.uint8), 0.0)
    with pytest.raises(ValueError, match="does not match"):
        det.process(np.zeros((H, W, 4), np.uint8), 0.0)
    with pytest.raises(ValueError, match="uint8"):
        det.process(np.zeros((H, W, 3), np.float32), 0.0)
    det.process(np.zeros((H, W), np.uint8), 1.0)
    with pytest.raises(ValueError, match="backwards"):
        det.process(np.zeros((H, W), np.uint8), 0.5)
