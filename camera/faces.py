"""Faces in pictures: enrollment photos to encodings, and the faces in a door camera's frames.

face_recognition (dlib's HOG detector and its 128-d ResNet encoder) does the vision; this module decides
which pixels it sees. What the encodings mean at a door (the gallery, the verdict, sealing them at rest) is
badge_bridge/face_match.py, which needs no dlib. An encoding is biometric data: it is never logged.

dlib and its models (~100 MB) load on first use, not on import, so the workers that never check a face do
not pay for them.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from badge_bridge.face_match import DEFAULT_TOLERANCE, Gallery, SeenFace

MAX_PIXELS = 40_000_000
"""Bigger than any camera a site enrolls from; beyond it an upload is a mistake or a decompression bomb."""
ENROLL_SIDE = 1024
"""Enrollment photos are searched for faces at this longest side (a 12 MP photo takes seconds at full size)."""
MIN_ENROLL_FACE_PX = 80
"""Narrowest face (in the photo's pixels) worth enrolling: the encoder works on a 150 px face chip, and a
face much smaller than that is mostly interpolation."""
MIN_ENROLL_SIDE = 360
"""Shortest side of an enrollment photo: a 320x240 thumbnail was scaled down from something better, and its
face, even when it fills the picture, has lost the detail the encoder needs; ask for the original. A 640x360
webcam capture is the smallest picture a site enrolls from."""
MIN_ENROLL_SHARPNESS = 100.0
"""Variance of the Laplacian of the face scaled to QUALITY_SIDE px. Measured (tests/test_enrollment_quality.py):
sharp photos 450-850, the same photos under a Gaussian blur of 1% of the face width (sigma 3 at 270 px) 40-65."""
MAX_ENROLL_YAW = 0.35
"""Nose tip off the eyes' midpoint, in eye distances (see _yaw): 0 facing the camera, ~0.2 a slight turn
(obama2.jpg), 0.4-0.5 the turned heads of the headpose clips, whose encodings are 0.45-0.55 from the frontal."""
ENROLL_EXPOSURE = (50.0, 205.0)
"""Mean grey level of the face that is neither too dark nor washed out (0-255)."""
QUALITY_SIDE = 100
"""Faces are scaled to this square before their sharpness is measured, so the figure does not depend on size."""
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP")
"""What enrollment accepts; PIL's rarer decoders are not exposed to uploads."""


class FaceError(ValueError):
    """A photo that cannot be used, with a stable ``code`` (not_an_image, image_too_small, no_face,
    several_faces, face_too_small, face_cut_off, face_turned, face_blurred, face_too_dark,
    face_overexposed) for programs and a message the operator can act on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@functools.cache
def _fr() -> ModuleType:
    """face_recognition, imported on first use (it loads dlib and every model at import)."""
    with warnings.catch_warnings():
        # face_recognition_models uses pkg_resources, which setuptools 80.9+ warns about (removed in 82).
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import face_recognition
    # Its import turns on PIL's LOAD_TRUNCATED_IMAGES for the whole process; a half-uploaded photo must be
    # refused, not padded with gray and enrolled.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    return face_recognition


def load_image(data: bytes) -> np.ndarray:
    """The photo as RGB uint8, turned upright as its EXIF orientation says (phones store it sideways)."""
    try:
        img = Image.open(io.BytesIO(data), formats=PHOTO_FORMATS)
    except Image.DecompressionBombError:
        raise FaceError("not_an_image", f"photo is over {MAX_PIXELS // 1_000_000} MP; send a smaller copy") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise FaceError("not_an_image", "file is not a JPEG, PNG or WebP image") from None
    with img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise FaceError("not_an_image", f"photo is {w}x{h} ({w * h / 1e6:.0f} MP); the limit is "
                                            f"{MAX_PIXELS // 1_000_000} MP, send a smaller copy")
        try:
            img.load()
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError, EOFError):
            raise FaceError("not_an_image", "the image cannot be decoded (cut short or damaged)") from None


def encode_photo(data: bytes) -> np.ndarray:
    """The encoding of the one face in an enrollment photo, refused (FaceError) unless that face is whole,
    large, frontal, sharp and well exposed: an enrolled face is the reference every door compares with for
    years, and a poor one turns into refusals of the right person. Faces are searched on a copy scaled to
    ENROLL_SIDE (upsampled once, so faces down to ~40 px there are found), the encoding is computed on the
    full-size photo for the most detail."""
    fr = _fr()
    rgb = load_image(data)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_ENROLL_SIDE:
        raise FaceError("image_too_small", f"the photo is {w}x{h}; enroll the original photo, at least "
                                           f"{MIN_ENROLL_SIDE} px on its shorter side (not a thumbnail)")
    scale = min(1.0, ENROLL_SIDE / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    found = fr.face_locations(small, number_of_times_to_upsample=1, model="hog")
    if not found:
        raise FaceError("no_face", "no face found in the photo; use a well-lit photo of the face from the front")
    if len(found) > 1:
        raise FaceError("several_faces", f"photo shows {len(found)} faces; enroll a photo of the person alone")
    box = _scale_box(found[0], 1 / scale, (h, w))
    landmarks = fr.face_landmarks(rgb, face_locations=[box])[0]
    _check_enrollment_face(rgb, box, landmarks)
    return fr.face_encodings(rgb, known_face_locations=[box], num_jitters=1)[0].astype(np.float64)


def _check_enrollment_face(rgb: np.ndarray, box: tuple[int, int, int, int], landmarks: dict[str, list]) -> None:
    """FaceError unless the face found in an enrollment photo is worth enrolling."""
    h, w = rgb.shape[:2]
    top, right, bottom, left = box
    points = np.array([p for part in landmarks.values() for p in part])
    if (top <= 1 or left <= 1 or bottom >= h - 1 or right >= w - 1 or points.min() <= 1
            or points[:, 0].max() >= w - 1 or points[:, 1].max() >= h - 1):
        raise FaceError("face_cut_off", "the face is cut off at the edge of the photo; enroll a photo with the "
                                        "whole face and some space around it")
    width = right - left
    if width < MIN_ENROLL_FACE_PX:
        raise FaceError("face_too_small", f"the face is {width} px wide; enroll a photo where it is at least "
                                          f"{MIN_ENROLL_FACE_PX} px wide (closer, or a larger photo)")
    yaw = _yaw(landmarks)
    if yaw > MAX_ENROLL_YAW:
        raise FaceError("face_turned", "the face is turned away from the camera; enroll a photo of the face "
                                       "from the front, looking at the camera")
    gray = _face_gray(rgb, box, cv2.COLOR_RGB2GRAY)
    brightness = float(gray.mean())
    if brightness < ENROLL_EXPOSURE[0]:
        raise FaceError("face_too_dark", "the face is too dark; enroll a photo taken in better light")
    if brightness > ENROLL_EXPOSURE[1]:
        raise FaceError("face_overexposed", "the face is washed out (overexposed or lit by a flash); enroll a "
                                            "photo in even light")
    if _sharpness(gray) < MIN_ENROLL_SHARPNESS:  # after exposure: a dark face has little contrast, hence few edges
        raise FaceError("face_blurred", "the face is blurred (out of focus or moving); enroll a sharp photo")


def _scale_box(box: tuple[int, int, int, int], factor: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A (top, right, bottom, left) box from a resized image back to the original, inside its bounds."""
    h, w = shape
    top, right, bottom, left = (round(v * factor) for v in box)
    return max(top, 0), min(right, w), min(bottom, h), max(left, 0)


def _examination_order(n: int, max_frames: int) -> list[int]:
    """At most ``max_frames`` indices of ``n`` frames, spread evenly over the window, the one nearest the
    middle first: the badge is read at the middle, when the holder faces the reader."""
    if n <= max_frames:
        picked = list(range(n))
    else:
        picked = sorted({min(n - 1, int((i + 0.5) * n / max_frames)) for i in range(max_frames)})
    middle = (n - 1) / 2
    return sorted(picked, key=lambda i: (abs(i - middle), i))


def _yaw(landmarks: dict[str, list]) -> float:
    """How far the head is turned: the nose tip's offset from the eyes' midpoint, in eye distances (68-point
    landmarks). 0 facing the camera; a head turned aside moves the nose towards one eye."""
    left, right = np.mean(landmarks["left_eye"], axis=0), np.mean(landmarks["right_eye"], axis=0)
    nose = np.asarray(landmarks["nose_tip"][2], dtype=np.float64)  # the middle of the five: the tip
    eyes = float(np.linalg.norm(right - left))
    return abs(float(nose[0]) - (left[0] + right[0]) / 2) / max(eyes, 1.0)


def _face_gray(image: np.ndarray, box: tuple[int, int, int, int], conversion: int) -> np.ndarray:
    """The face's pixels in grey, scaled to QUALITY_SIDE square."""
    top, right, bottom, left = box
    crop = cv2.cvtColor(image[max(top, 0):bottom, max(left, 0):right], conversion)
    return cv2.resize(crop, (QUALITY_SIDE, QUALITY_SIDE), interpolation=cv2.INTER_AREA)


def _sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: edges of a focused face give a high value, blur and motion a low one."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def _quality(rgb: np.ndarray, box: tuple[int, int, int, int], landmarks: dict[str, list]) -> float:
    """How much a detected face is worth encoding, 0-1: frontal (the encoder is trained on frontal faces),
    large (below 100 px its 150 px chip is interpolated) and sharp (motion blur when the head moves)."""
    frontal = max(0.0, 1.0 - _yaw(landmarks) / 0.5)
    size = min(1.0, (box[1] - box[3]) / 100)
    sharp = min(1.0, _sharpness(_face_gray(rgb, box, cv2.COLOR_RGB2GRAY)) / MIN_ENROLL_SHARPNESS)
    return frontal * size * sharp


class Window(list[list[SeenFace]]):
    """faces_in_frames's answer: the encoded frames' faces (a list per encoded frame, best first; empty when
    no face was found), and ``turned_away``, the reason to give when no frontal face was found but a head
    turned aside or tilted was: a person there, not facing the camera."""

    turned_away: str | None = None


@dataclass(frozen=True)
class _Candidate:
    frame: int
    boxes: list[tuple[int, int, int, int]]
    """In the original frame's pixels."""
    quality: float


FACE_PX = 100
"""After the first face, frames are searched scaled so the smallest face seen so far is about this wide: HOG's
cost goes with the pixels, and a 180 px face is found as well at half the width (dlib's window is 80 px)."""


def _rgb(frame: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """The BGR frame as contiguous RGB no wider than ``width``, and the scale applied."""
    h, w = frame.shape[:2]
    scale = min(1.0, width / w)
    small = frame if scale == 1.0 else cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small[:, :, ::-1]), scale


def faces_in_frames(frames: Sequence[tuple[float, np.ndarray]], *, max_frames: int = 6, encode: int = 2,
                    detect_width: int = 640,
                    stop_when: Callable[[list[SeenFace]], bool] | None = None) -> Window:
    """The faces in the best ``encode`` of up to ``max_frames`` frames of a door event's (t, BGR frame) list,
    per encoded frame, best first (each face carries its frame's time).

    The ``max_frames`` frames are spread over the window, the one nearest the middle first; it is scaled to
    ``detect_width`` and searched by HOG without upsampling (~23 ms a frame at 640x480 on one core; faces
    narrower than ~50-60 px at that width are not seen: mount door cameras so a face at the reader is 100 px
    or more). Once a face is found, the other frames are searched scaled so the smallest face so far is
    FACE_PX wide (~6 ms for a 180 px face): a second person much further away than the first is then seen only
    in the first frame. Each face found gets its 68 landmarks (~2 ms) and a quality (_quality: frontal, large,
    sharp); only the best frames are encoded, at ``detect_width`` (~75 ms a face), a frame with several faces
    first (tailgating evidence whatever their quality). Measured on the face videos
    (bench/bench_face_windows.py): the best two of six refuse the holder at tolerance 0.5 in none of the
    windows where main's two middle frames of four refused 1.7 %. ``stop_when`` is asked after each encoded
    frame with its faces: True ends the encoding. When no frame has a frontal face, a few frames are searched
    for a head turned aside or tilted (_turned_away): found, ``turned_away`` says so, and the camera's answer
    tells the desk.
    """
    fr = _fr()
    candidates = []
    width = detect_width
    for i in _examination_order(len(frames), max_frames):
        frame = frames[i][1]
        rgb, scale = _rgb(frame, width)
        boxes = fr.face_locations(rgb, number_of_times_to_upsample=0, model="hog")
        if not boxes:
            continue
        quality = max(_quality(rgb, box, marks) for box, marks in
                      zip(boxes, fr.face_landmarks(rgb, face_locations=boxes), strict=True))
        candidates.append(_Candidate(i, [_scale_box(box, 1 / scale, frame.shape[:2]) for box in boxes], quality))
        smallest = min(box[1] - box[3] for box in boxes) / scale  # in the original frame's pixels
        width = min(width, max(round(frame.shape[1] * FACE_PX / smallest), FACE_PX * 2))
    seen = Window()
    if not candidates:
        seen.turned_away = _turned_away(frames, detect_width)
        return seen
    candidates.sort(key=lambda c: (len(c.boxes) < 2, -c.quality))
    for c in candidates[:encode]:
        t, frame = frames[c.frame]
        rgb, scale = _rgb(frame, detect_width)
        boxes = [_scale_box(box, scale, rgb.shape[:2]) for box in c.boxes]
        encodings = fr.face_encodings(rgb, known_face_locations=boxes, num_jitters=1)
        faces = [SeenFace(t, box, np.asarray(enc, dtype=np.float64))
                 for box, enc in zip(c.boxes, encodings, strict=True)]
        seen.append(faces)
        if stop_when is not None and stop_when(faces):
            break
    return seen


TURNED_FRAMES = 2
"""Frames of a window without a frontal face searched for a turned or tilted one."""
TILT_DEGREES = 30.0
"""A head tilted to the shoulder (the headpose clips) is missed by HOG beyond ~20 degrees; turned back by this
it is found again."""
TILT_MIN_SCORE = 0.4
"""dlib's detection score a turned-back face must reach: the tilted heads of the headpose clips score 0.55-1.7,
the cartoon of webcam-man-then-titlecard.mov up to 0.15."""


@functools.cache
def _profile_cascade() -> cv2.CascadeClassifier:
    import cv2.data  # not in OpenCV's type stubs' package namespace; a module of its own

    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_profileface.xml")


def _turned_away(frames: Sequence[tuple[float, np.ndarray]], detect_width: int) -> str | None:
    """Why no face was found, when it is a head turned aside or tilted: the profile cascade finds profiles
    facing one way, so each frame is searched as it is and mirrored, and HOG (trained upright) is run on the
    frame turned by +-TILT_DEGREES. Only when nothing frontal was found, on TURNED_FRAMES frames: ~50 ms each
    at 640x360."""
    detector = _fr().api.face_detector
    cascade = _profile_cascade()
    order = _examination_order(len(frames), TURNED_FRAMES)
    turned = 0
    for i in order:
        rgb, _ = _rgb(frames[i][1], detect_width)
        # The cascade at half the size: a 100 px face is 50 px there, twice its 20 px window, at a third the cost.
        gray = cv2.cvtColor(cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        centre = (rgb.shape[1] / 2, rgb.shape[0] / 2)
        tilted = (cv2.warpAffine(rgb, cv2.getRotationMatrix2D(centre, angle, 1.0), rgb.shape[1::-1])
                  for angle in (TILT_DEGREES, -TILT_DEGREES))
        if (any(len(cascade.detectMultiScale(g, scaleFactor=1.2, minNeighbors=5, minSize=(24, 24)))
                for g in (gray, cv2.flip(gray, 1)))
                or any(max(detector.run(t, 0, 0.0)[1], default=0.0) >= TILT_MIN_SCORE for t in tilted)):
            turned += 1
    if not turned:
        return None
    return (f"face turned away: a head turned aside or tilted in {turned} of {len(order)} frames, "
            "none facing the camera")


def decided(gallery: Gallery | None = None, person_id: int | None = None, tolerance: float = DEFAULT_TOLERANCE, *,
            single_faces: int = 2) -> Callable[[list[SeenFace]], bool]:
    """A ``stop_when`` for faces_in_frames that stops once more frames would not change the outcome of
    face_match.verify: a frame with several faces (``several`` whatever follows), a face within ``tolerance``
    of the holder (when the gallery is at hand), or ``single_faces`` frames of one face each (a mismatch gets
    one retry, on the next best frame). Encoding a face costs ~75 ms on one core (dlib-bin has no BLAS), and
    faces_in_frames encodes only its ``encode`` best frames; this ends it sooner still when the first settles
    it (a frame of two faces, the holder verified)."""
    single = 0

    def stop(faces: list[SeenFace]) -> bool:
        nonlocal single
        if len(faces) >= 2:
            return True
        if not faces:
            return False
        if gallery is not None and person_id is not None:
            distance = gallery.distance_to(person_id, faces[0].encoding)
            if distance is not None and distance <= tolerance:
                return True
        single += 1
        return single >= single_faces

    return stop
