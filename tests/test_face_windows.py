"""The door's face answer on real live video cut into door windows (tests/face_windows.py says who is
enrolled from which frame): at a strict door (tolerance 0.5) the holder is refused in at most 5 % of windows
and nobody else is ever accepted; a head turned away is reported as such, not as nobody."""

from __future__ import annotations

import pytest

from badge_bridge import face_match
from camera import faces
from tests import face_windows as fw
from tests.face_windows import ENROLLED, identity


@pytest.fixture(scope="module")
def gallery() -> face_match.Gallery:
    return fw.gallery()


@pytest.fixture(scope="module")
def answers() -> list[tuple[str, faces.Window]]:
    """Each holder window's answer from the camera side, computed once (about 0.3 s each)."""
    return [(h.enrollment, faces.faces_in_frames(w)) for h in fw.holders() for w in h.windows]


def test_enough_windows(answers: list[tuple[str, faces.Window]]) -> None:
    per_enrollment = {e: sum(1 for who, _ in answers if who == e) for e in ("A", "A2", "B", "B2", "C")}
    assert all(n >= 6 for n in per_enrollment.values()), per_enrollment
    assert len(answers) >= 100


@pytest.mark.parametrize("tolerance", [face_match.STRICT_TOLERANCE, face_match.DEFAULT_TOLERANCE])
def test_holders_rarely_refused(answers: list[tuple[str, faces.Window]], gallery: face_match.Gallery,
                                tolerance: float) -> None:
    refused = [who for who, seen in answers
               if face_match.verify(seen, gallery, ENROLLED[who], tolerance).outcome != "verified"]
    assert len(refused) <= 0.05 * len(answers), (len(refused), len(answers), refused)


@pytest.mark.parametrize("tolerance", [face_match.STRICT_TOLERANCE, face_match.DEFAULT_TOLERANCE])
def test_nobody_else_accepted(answers: list[tuple[str, faces.Window]], gallery: face_match.Gallery,
                              tolerance: float) -> None:
    """Every window checked against each other enrolled person's badge (the video people and the photos)."""
    accepted = [(who, other) for who, seen in answers for other in ENROLLED if identity(other) != identity(who)
                and face_match.verify(seen, gallery, ENROLLED[other], tolerance).outcome == "verified"]
    assert not accepted


def test_best_frames_are_encoded_not_the_middle_ones(answers: list[tuple[str, faces.Window]]) -> None:
    """Two frames encoded per window, chosen by quality: their times are not always the window's middle."""
    assert all(len(seen) == 2 and all(len(frame) == 1 for frame in seen) for _, seen in answers)


def test_turned_head_is_not_nobody() -> None:
    """The woman of headpose-woman-and-man.mp4 with her head tilted to the shoulder (its left half, after
    frame 4): HOG finds no upright face, the answer says a head is turned away; an empty scene (the title
    card after the man leaves webcam-man-then-titlecard.mov) says nothing of the kind."""
    woman = [(t, f[:, : f.shape[1] // 2].copy()) for t, f in fw.read_video("headpose-woman-and-man.mp4")[4:]]
    turned = [faces.faces_in_frames(w) for w in fw.windows(woman, 1.0)[::3]]
    assert turned and all(len(seen) == 0 for seen in turned)
    assert all(seen.turned_away and "turned away" in seen.turned_away for seen in turned)
    title = fw.read_video("webcam-man-then-titlecard.mov")[80:]
    empty = [faces.faces_in_frames(w) for w in fw.windows(title, 1.0)[::4]]
    assert empty and all(len(seen) == 0 and seen.turned_away is None for seen in empty)
