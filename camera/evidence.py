"""Evidence around door events and alarms: the last seconds of video, snapshots, clips, encrypted at rest.

The worker keeps a `RingBuffer` of recent frames; on an event it takes a snapshot (`nearest`) and a clip
(`window`), encodes them (`encode_snapshot`, `encode_clip`) and puts them in the `EvidenceStore`, whose
sha256 the audit entry carries. Because the audit entry holds the hash of the plaintext and every file
is authenticated against that hash, evidence cannot be swapped or altered without `get` saying so.

Ring buffer storage, measured (15 fps x 10 s of 1920x1080, the test videos upscaled, 2-core VM):
raw numpy is 890 MiB for the 150 frames, over the 256 MiB cap, so it would hold only ~2.9 s; JPEG at
quality 90 is 22-36 MiB (150-250 KiB a frame; real 1080p detail is likely 2x that), costs ~4.5 ms per
frame to encode (~7 % of one core at 15 fps) and ~6-10 ms to decode, which only happens when evidence is
cut. So frames are kept JPEG-compressed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import cv2
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SNAPSHOT_MEDIA_TYPE = "image/jpeg"
CLIP_MEDIA_TYPE: Final = "video/webm"  # what encode_clip writes: VP8 in WebM (older evidence: Motion JPEG AVI, video/x-msvideo)

_BUFFER_JPEG_QUALITY = 90  # high enough that a snapshot cut from the buffer still reads a face or a badge


class RingBuffer:
    """The last `seconds` of frames (never more than `max_bytes` of them), JPEG-compressed; thread-safe,
    because the capture loop appends while an event handler cuts evidence."""

    def __init__(self, seconds: float, max_bytes: int = 256 * 2**20) -> None:
        if seconds <= 0 or max_bytes <= 0:
            raise ValueError("a ring buffer needs a positive duration and size")
        self._seconds = seconds
        self._max_bytes = max_bytes
        self._items: deque[tuple[float, bytes]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def append(self, frame: np.ndarray, t: float) -> None:
        """Add a frame captured at `t` (time.time() seconds); forget what is too old or over budget."""
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, _BUFFER_JPEG_QUALITY])
        if not ok:
            raise ValueError(f"cannot JPEG-encode a frame of shape {frame.shape} and type {frame.dtype}")
        data = jpeg.tobytes()
        with self._lock:
            self._items.append((t, data))
            self._bytes += len(data)
            while len(self._items) > 1 and (self._items[0][0] < t - self._seconds or self._bytes > self._max_bytes):
                self._bytes -= len(self._items.popleft()[1])

    def window(self, t0: float, t1: float) -> list[tuple[float, np.ndarray]]:
        """Frames captured in [t0, t1], oldest first."""
        with self._lock:
            picked = [(t, data) for t, data in self._items if t0 <= t <= t1]
        return [(t, _decode(data)) for t, data in picked]

    def nearest(self, t: float) -> tuple[float, np.ndarray] | None:
        """The frame captured closest to `t`, or None when the buffer is empty."""
        with self._lock:
            if not self._items:
                return None
            best_t, data = min(self._items, key=lambda item: abs(item[0] - t))
        return best_t, _decode(data)

    @property
    def span(self) -> tuple[float, float] | None:
        """(oldest, newest) capture time held, or None when empty."""
        with self._lock:
            return (self._items[0][0], self._items[-1][0]) if self._items else None

    @property
    def nbytes(self) -> int:
        """Bytes of compressed frames held (the figure `max_bytes` bounds)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _decode(data: bytes) -> np.ndarray:
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:  # the ring holds only frames this process encoded
        raise ValueError("a buffered frame does not decode")
    return frame


def encode_snapshot(frame: np.ndarray, quality: int = 85) -> bytes:
    """A JPEG of `frame`: what the console shows next to the event."""
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot JPEG-encode a frame of shape {frame.shape} and type {frame.dtype}")
    return jpeg.tobytes()


def encode_clip(frames: Sequence[tuple[float, np.ndarray]], fps: float) -> bytes:
    """A VP8 WebM of `frames` (all resized to the first one's size), played back at `fps`.

    WebM because browsers play it in the page (`<video>`), so the desk sees the clip beside its event; this
    OpenCV build has no H.264 encoder ('avc1' fails) and browsers do not play its 'mp4v'. Measured on the
    door video (150 frames of 768x432, 2-core VM, loaded): Motion-JPEG AVI 3.9 MB in 0.3 s, VP8 WebM 1.6 MB
    in 2.6 s. The time is spent on the worker's evidence thread, after the snapshot is already stored.
    """
    if not frames:
        raise ValueError("a clip needs at least one frame")
    if not (fps > 0):
        raise ValueError(f"a clip needs a positive frame rate, not {fps}")
    height, width = frames[0][1].shape[:2]
    fd, name = tempfile.mkstemp(suffix=".webm", prefix="clip-")
    os.close(fd)
    path = Path(name)
    try:
        writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*"VP80"), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write VP8 WebM here (FFmpeg backend missing?)")
        try:
            for _, frame in frames:
                if frame.shape[:2] != (height, width):
                    frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
                writer.write(frame)
        finally:
            writer.release()
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


class EvidenceError(Exception):
    """Evidence that cannot be returned as stored: missing, altered, swapped, or under another key."""


_MAGIC = b"BBEV1"
_NONCE_BYTES = 12
_KEY_ID_BYTES = 8
_HEADER_BYTES = len(_MAGIC) + _KEY_ID_BYTES + _NONCE_BYTES
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


class EvidenceStore:
    """Content-addressed, encrypted at rest (AES-256-GCM from `cryptography`, random 96-bit nonce, the
    content's sha256 as associated data, so a file swapped for another's is detected).

    File ``root/ab/abcdef....bin`` = magic ``BBEV1`` | key id (8 bytes) | nonce (12) | AES-GCM of
    (media type length (1 byte) | media type | data), with magic, key id and the content's sha256 as
    associated data. The key id (an HMAC of a constant under the key, not the key) lets `get` say
    "wrong key" rather than "tampered".
    """

    def __init__(self, root: Path, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            raise ValueError("the evidence key must be 32 bytes (AES-256)")
        self.root = Path(root)
        self._aead = AESGCM(key)
        self._key_id = hmac.new(key, b"badge-bridge evidence key id", hashlib.sha256).digest()[:_KEY_ID_BYTES]

    def put(self, data: bytes, media_type: str) -> str:
        """Store `data`; return the sha256 hex of the plaintext. Storing the same bytes again is a no-op."""
        if not _MEDIA_TYPE.fullmatch(media_type) or len(media_type) > 255:
            raise ValueError(f"not a media type: {media_type!r}")
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.exists():
            return digest
        nonce = os.urandom(_NONCE_BYTES)
        header = _MAGIC + self._key_id + nonce
        kind = media_type.encode("ascii")
        sealed = self._aead.encrypt(nonce, bytes([len(kind)]) + kind + data, header + bytes.fromhex(digest))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".bin")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(header + sealed)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return digest

    def get(self, sha256: str) -> tuple[bytes, str]:
        """(data, media type) of the evidence with this plaintext sha256; EvidenceError says why not."""
        path = self._path(sha256)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise EvidenceError(f"no evidence {sha256}") from None
        except OSError as exc:
            raise EvidenceError(f"evidence {sha256} cannot be read: {exc.strerror}") from None
        if len(blob) < _HEADER_BYTES + 16 or not blob.startswith(_MAGIC):
            raise EvidenceError(f"evidence {sha256} is not an evidence file (truncated or overwritten)")
        header, sealed = blob[:_HEADER_BYTES], blob[_HEADER_BYTES:]
        if not hmac.compare_digest(header[len(_MAGIC) : len(_MAGIC) + _KEY_ID_BYTES], self._key_id):
            raise EvidenceError(f"evidence {sha256} was encrypted with a different key")
        nonce = header[-_NONCE_BYTES:]
        try:
            plain = self._aead.decrypt(nonce, sealed, header + bytes.fromhex(sha256))
        except InvalidTag:
            raise EvidenceError(
                f"evidence {sha256} failed authentication: the file was altered or is another evidence's file"
            ) from None
        kind_len = plain[0]
        media_type, data = plain[1 : 1 + kind_len].decode("ascii"), plain[1 + kind_len :]
        if hashlib.sha256(data).hexdigest() != sha256:  # unreachable unless the key leaked; cheap to check
            raise EvidenceError(f"evidence {sha256} does not hash to its name")
        return data, media_type

    def exists(self, sha256: str) -> bool:
        """Whether evidence with this hash is stored (not whether it is intact: `get` checks that)."""
        return self._path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        """Remove a file for good (an enrollment photo of someone whose faces were removed)."""
        self._path(sha256).unlink(missing_ok=True)

    def _path(self, sha256: str) -> Path:
        """Where a hash lives; only 64 lowercase hex characters name evidence, so no path can escape root."""
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
            raise EvidenceError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.bin"


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk too."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
