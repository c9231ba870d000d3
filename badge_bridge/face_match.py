"""Face matching: the enrolled gallery, the verdict on the faces a door camera saw, and encodings sealed at rest.

A face here is its 128-number encoding (camera/faces.py computes them with dlib); everything in this module
is arithmetic on those numbers, so the bridge decides a door's verdict without loading dlib. An encoding
is biometric data: it is never logged, and at rest it is sealed (AES-256-GCM) to the person it belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DEFAULT_TOLERANCE = 0.6
"""face_recognition's default: distances below it are the same person for most adults in its benchmark."""
STRICT_TOLERANCE = 0.5
"""For critical rooms: fewer look-alikes accepted, more retries for the right person."""

_SEAL_MAGIC = b"BBFT1"
_NONCE_BYTES = 12
_ENCODING_DTYPE = np.dtype("<f8")
_ENCODING_BYTES = 128 * _ENCODING_DTYPE.itemsize


@dataclass(frozen=True)
class SeenFace:
    """One face found in a camera frame."""

    t: float
    """The frame's time."""
    box: tuple[int, int, int, int]
    """top, right, bottom, left in the original frame's pixels."""
    encoding: np.ndarray
    """(128,)"""


class Gallery:
    """Enrolled encodings in one float64 matrix, for vectorized comparison (10,000 people must be fast).

    Distances use |a-b|^2 = |a|^2 - 2a.b + |b|^2 with the rows' squared norms kept, so one comparison is a
    single matrix-vector product. Not safe for concurrent changes; build a new one and swap it in.
    """

    def __init__(self) -> None:
        self._matrix = np.empty((64, 128), np.float64)
        self._norms = np.empty(64, np.float64)
        self._ids = np.empty(64, np.int64)
        self._n = 0

    def add(self, person_id: int, encoding: np.ndarray) -> None:
        """One more encoding of ``person_id`` (a person may have several photos)."""
        vector = _check_encoding(encoding)
        if self._n == len(self._ids):
            grow = len(self._ids)
            self._matrix = np.concatenate([self._matrix, np.empty((grow, 128), np.float64)])
            self._norms = np.concatenate([self._norms, np.empty(grow, np.float64)])
            self._ids = np.concatenate([self._ids, np.empty(grow, np.int64)])
        self._matrix[self._n] = vector
        self._norms[self._n] = vector @ vector
        self._ids[self._n] = person_id
        self._n += 1

    def remove(self, person_id: int) -> None:
        """Forget every encoding of ``person_id``."""
        keep = np.flatnonzero(self._ids[: self._n] != person_id)
        n = len(keep)
        self._matrix[:n] = self._matrix[keep]
        self._norms[:n] = self._norms[keep]
        self._ids[:n] = self._ids[keep]
        self._n = n

    def __len__(self) -> int:
        return self._n

    def _distances(self, rows: slice | np.ndarray, encoding: np.ndarray) -> np.ndarray:
        vector = _check_encoding(encoding)
        squared = self._norms[rows] - 2 * (self._matrix[rows] @ vector) + vector @ vector
        return np.sqrt(np.maximum(squared, 0.0))

    def distance_to(self, person_id: int, encoding: np.ndarray) -> float | None:
        """The smallest distance from ``encoding`` to the person's enrolled encodings; None if not enrolled."""
        rows = np.flatnonzero(self._ids[: self._n] == person_id)
        if not len(rows):
            return None
        return float(self._distances(rows, encoding).min())

    def nearest(self, encoding: np.ndarray) -> tuple[int, float] | None:
        """The closest enrolled person and their distance; None for an empty gallery."""
        if not self._n:
            return None
        distances = self._distances(slice(0, self._n), encoding)
        best = int(distances.argmin())
        return int(self._ids[best]), float(distances[best])


def _check_encoding(encoding: np.ndarray) -> np.ndarray:
    vector = np.asarray(encoding, dtype=np.float64)
    if vector.shape != (128,) or not np.isfinite(vector).all():
        raise ValueError(f"a face encoding is 128 finite numbers, got shape {vector.shape}")
    return vector


@dataclass(frozen=True)
class Verdict:
    """What the door camera showed about the badge holder."""

    outcome: Literal["verified", "mismatch", "absent", "several"]
    distance: float | None
    """The holder's best distance among the faces seen (None: no face, or the holder is not enrolled)."""
    faces: int
    """Most faces seen in one frame."""
    nearest: int | None = None
    """For a mismatch: the enrolled person the face is closest to within tolerance (someone else), else None
    (unknown)."""
    nearest_distance: float | None = None


def verify(seen: Sequence[Sequence[SeenFace]], gallery: Gallery, person_id: int,
           tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """The badge holder's face against the faces seen at the door.

    ``several`` wins over everything (two faces at once is tailgating evidence, whoever they are), then
    ``absent``; otherwise the holder is ``verified`` when any face is within ``tolerance`` of them, and a
    ``mismatch`` names who the face is (best match within tolerance) when it is someone enrolled.

    The best distance decides, not a mean: the camera sends the best frames of the window by quality
    (camera/faces.py), and on the face videos the mean of the two refused the holder more often (at 0.5,
    1 s windows: 3 % against 2 %; 4 frames searched: 9 % against 2 %), and with the best no impostor was
    accepted at 0.5 or 0.6 (bench/bench_face_windows.py).
    """
    faces = [face for frame in seen for face in frame]
    most = max((len(frame) for frame in seen), default=0)
    distances = [d for face in faces if (d := gallery.distance_to(person_id, face.encoding)) is not None]
    best = min(distances, default=None)
    if most >= 2:
        return Verdict("several", best, most)
    if not faces:
        return Verdict("absent", None, 0)
    if best is not None and best <= tolerance:
        return Verdict("verified", best, most)
    matches = [m for face in faces if (m := gallery.nearest(face.encoding)) is not None and m[1] <= tolerance]
    if not matches:
        return Verdict("mismatch", best, most)
    who, distance = min(matches, key=lambda m: m[1])
    return Verdict("mismatch", best, most, who, distance)


def _associated_data(person_id: int) -> bytes:
    return _SEAL_MAGIC + person_id.to_bytes(8, "big", signed=True)


def seal_encoding(key: bytes, person_id: int, encoding: np.ndarray) -> bytes:
    """The encoding encrypted for storage: magic ``BBFT1`` | nonce (12) | AES-256-GCM of 128 little-endian
    float64, with the magic and the person id as associated data, so a template copied to another person's
    row does not open."""
    vector = _check_encoding(encoding)
    nonce = os.urandom(_NONCE_BYTES)
    plain = vector.astype(_ENCODING_DTYPE).tobytes()
    sealed = AESGCM(_check_key(key)).encrypt(nonce, plain, _associated_data(person_id))
    return _SEAL_MAGIC + nonce + sealed


def open_encoding(key: bytes, person_id: int, blob: bytes) -> np.ndarray:
    """The encoding sealed by seal_encoding for ``person_id``; ValueError when it does not open."""
    header = len(_SEAL_MAGIC) + _NONCE_BYTES
    if not blob.startswith(_SEAL_MAGIC) or len(blob) != header + _ENCODING_BYTES + 16:
        raise ValueError("face template cannot be decrypted: not a sealed template of this version")
    try:
        nonce, sealed = blob[len(_SEAL_MAGIC):header], blob[header:]
        plain = AESGCM(_check_key(key)).decrypt(nonce, sealed, _associated_data(person_id))
    except InvalidTag:
        raise ValueError("face template cannot be decrypted: wrong key or tampered (or another person's)") from None
    return np.frombuffer(plain, dtype=_ENCODING_DTYPE).astype(np.float64)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != 32:
        raise ValueError("the face template key must be 32 bytes (AES-256)")
    return key
