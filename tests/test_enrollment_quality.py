"""Enrollment refuses photos that would make a poor reference, each with its code: a face cut off at the
edge, a thumbnail, a blurred face, a turned head, a dark or washed-out face; good photos still enroll."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camera import faces
from tests.face_windows import PHOTOS, png, read_video
from tests.test_faces import OBAMA_BOX


def obama() -> np.ndarray:
    return cv2.imread(str(PHOTOS / "obama.jpg"))


def refused(image: np.ndarray) -> str:
    with pytest.raises(faces.FaceError) as err:
        faces.encode_photo(png(image))
    assert str(err.value)
    return err.value.code


def test_cut_off_face() -> None:
    """The photo cropped through the face: the left third of the face is gone."""
    _, right, _, left = OBAMA_BOX
    assert refused(obama()[:, left + (right - left) // 3:]) == "face_cut_off"


def test_thumbnail() -> None:
    assert refused(cv2.resize(obama(), (320, 240), interpolation=cv2.INTER_AREA)) == "image_too_small"
    top, right, bottom, left = OBAMA_BOX
    tight = cv2.resize(obama()[top - 60:bottom + 60, left - 60:right + 60], (240, 320), interpolation=cv2.INTER_AREA)
    assert refused(tight) == "image_too_small"  # a portrait thumbnail whose face is large enough


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "biden.jpg"])
def test_blurred(name: str) -> None:
    """A Gaussian blur of sigma 3 px (about 1 % of these faces' width): what a focus miss does."""
    assert refused(cv2.GaussianBlur(cv2.imread(str(PHOTOS / name)), (0, 0), 3)) == "face_blurred"


def test_turned_head() -> None:
    """headpose-woman.mp4's first frame, where she looks aside, scaled up so the face is large enough."""
    frame = read_video("headpose-woman.mp4")[0][1]
    assert refused(cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)) == "face_turned"


def test_dark_and_overexposed() -> None:
    image = obama().astype(np.float32)
    assert refused(np.clip(image * 0.25, 0, 255).astype(np.uint8)) == "face_too_dark"
    assert refused(np.clip(image * 1.6 + 40, 0, 255).astype(np.uint8)) == "face_overexposed"


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "biden.jpg"])
def test_good_photos_enroll(name: str) -> None:
    assert faces.encode_photo((PHOTOS / name).read_bytes()).shape == (128,)


def test_webcam_frame_enrolls() -> None:
    """A frontal frame of the 960x540 webcam clip is a usable enrollment photo."""
    frame = read_video("webcam-man-then-titlecard.mov")[40][1]
    assert faces.encode_photo(png(frame)).shape == (128,)
