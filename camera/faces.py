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
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP")
"""What enrollment accepts; PIL's rarer decoders are not exposed to uploads."""


class FaceError(ValueError):
    """A photo that cannot be used, with a stable ``code`` (not_an_image, no_face, several_faces,
    face_too_small) for programs and a message the operator can act on."""

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
    """The encoding of the one face in an enrollment photo. Faces are searched on a copy scaled to
    ENROLL_SIDE (upsampled once, so faces down to ~40 px there are found), the encoding is computed on the
    full-size photo for the most detail."""
    fr = _fr()
    rgb = load_image(data)
    h, w = rgb.shape[:2]
    scale = min(1.0, ENROLL_SIDE / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    found = fr.face_locations(small, number_of_times_to_upsample=1, model="hog")
    if not found:
        raise FaceError("no_face", "no face found in the photo; use a well-lit photo of the face from the front")
    if len(found) > 1:
        raise FaceError("several_faces", f"photo shows {len(found)} faces; enroll a photo of the person alone")
    box = _scale_box(found[0], 1 / scale, (h, w))
    width = box[1] - box[3]
    if width < MIN_ENROLL_FACE_PX:
        raise FaceError("face_too_small", f"the face is {width} px wide; enroll a photo where it is at least "
                                          f"{MIN_ENROLL_FACE_PX} px wide (closer, or a larger photo)")
    return fr.face_encodings(rgb, known_face_locations=[box], num_jitters=1)[0].astype(np.float64)


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


def faces_in_frames(frames: Sequence[tuple[float, np.ndarray]], *, max_frames: int = 4, detect_width: int = 640,
                    stop_when: Callable[[list[SeenFace]], bool] | None = None) -> list[list[SeenFace]]:
    """The faces in up to ``max_frames`` of a door event's (t, BGR frame) list, per examined frame, in the
    order examined (nearest the middle first; each face carries its frame's time).

    Each frame is scaled to ``detect_width`` and searched by HOG without upsampling, which keeps detection
    near 23 ms a frame at 640x480 on one core; the price is that faces narrower than ~50-60 px at that width
    (dlib's detection window is 80 px; measured: 50 px found, 45 px missed), a person a few metres from a
    wide-angle camera, are not seen. Mount door cameras so a face at the reader is 100 px or more.
    ``stop_when`` is asked after each frame with its faces: True ends the search (the caller has what it
    needs, e.g. one clear face), saving the remaining frames' time.
    """
    fr = _fr()
    seen: list[list[SeenFace]] = []
    for i in _examination_order(len(frames), max_frames):
        t, frame = frames[i]
        h, w = frame.shape[:2]
        scale = min(1.0, detect_width / w)
        small = (frame if scale == 1.0
                 else cv2.resize(frame, (detect_width, round(h * scale)), interpolation=cv2.INTER_AREA))
        rgb = np.ascontiguousarray(small[:, :, ::-1])
        boxes = fr.face_locations(rgb, number_of_times_to_upsample=0, model="hog")
        encodings = fr.face_encodings(rgb, known_face_locations=boxes, num_jitters=1) if boxes else []
        faces = [SeenFace(t, _scale_box(box, 1 / scale, (h, w)), np.asarray(enc, dtype=np.float64))
                 for box, enc in zip(boxes, encodings, strict=True)]
        seen.append(faces)
        if stop_when is not None and stop_when(faces):
            break
    return seen


def decided(gallery: Gallery | None = None, person_id: int | None = None, tolerance: float = DEFAULT_TOLERANCE, *,
            single_faces: int = 2) -> Callable[[list[SeenFace]], bool]:
    """A ``stop_when`` for faces_in_frames that stops once more frames would not change the outcome of
    face_match.verify: a frame with several faces (``several`` whatever follows), a face within ``tolerance``
    of the holder (when the gallery is at hand), or ``single_faces`` frames of one face each (a mismatch gets
    one retry, for a face caught turning away). Encoding a face costs ~75 ms on one core (dlib-bin has no BLAS), so
    this is what keeps a door event within 300 ms: all 4 frames of a face take ~400 ms, of two faces ~700.
    Frames without a face cost only detection (~23 ms) and never stop the search."""
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
