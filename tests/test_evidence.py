"""Evidence: the ring buffer, snapshot and clip encoding with real video frames, and the encrypted store."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera.evidence import (
    CLIP_MEDIA_TYPE,
    SNAPSHOT_MEDIA_TYPE,
    EvidenceError,
    EvidenceStore,
    RingBuffer,
    encode_clip,
    encode_snapshot,
)

ROOT = Path(__file__).resolve().parents[1]
_LOCAL_VIDEO = ROOT / "tests/data/video/door-entries-part1.mp4"
VIDEO = _LOCAL_VIDEO if _LOCAL_VIDEO.exists() else Path("/work/shared/testdata/video/door-entries-part1.mp4")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """30 real frames of the door video."""
    cap = cv2.VideoCapture(str(VIDEO), cv2.CAP_FFMPEG)
    out = []
    while len(out) < 30:
        ok, frame = cap.read()
        assert ok
        out.append(frame)
    cap.release()
    return out


@pytest.fixture
def store(tmp_path: Path) -> EvidenceStore:
    return EvidenceStore(tmp_path / "evidence", os.urandom(32))


# --- ring buffer -----------------------------------------------------------------------------------


def test_ring_buffer_keeps_the_last_seconds(frames: list[np.ndarray]) -> None:
    ring = RingBuffer(seconds=1.0)
    assert ring.span is None and ring.nearest(5.0) is None and ring.window(0, 10) == []
    for i, frame in enumerate(frames):  # 10 fps: t = 100.0, 100.1, ... 102.9
        ring.append(frame, 100.0 + i / 10)
    oldest, newest = ring.span  # type: ignore[misc]
    assert newest == pytest.approx(102.9)
    assert oldest == pytest.approx(101.9)
    assert len(ring) == 11


def test_ring_buffer_window_and_nearest(frames: list[np.ndarray]) -> None:
    ring = RingBuffer(seconds=10.0)
    for i, frame in enumerate(frames):
        ring.append(frame, 100.0 + i / 10)
    cut = ring.window(100.95, 101.55)
    assert [round(t, 2) for t, _ in cut] == [101.0, 101.1, 101.2, 101.3, 101.4, 101.5]
    assert all(f.shape == frames[0].shape for _, f in cut)
    t, frame = ring.nearest(101.26)  # type: ignore[misc]
    assert t == pytest.approx(101.3)
    # JPEG at quality 90 is lossy but close: the mean absolute error per pixel stays small.
    assert np.abs(frame.astype(int) - frames[13].astype(int)).mean() < 4
    assert ring.nearest(50.0)[0] == pytest.approx(100.0)  # type: ignore[index]
    assert ring.window(200.0, 300.0) == []


def test_ring_buffer_evicts_by_bytes(frames: list[np.ndarray]) -> None:
    one = len(encode_snapshot(frames[0], quality=90))
    ring = RingBuffer(seconds=3600.0, max_bytes=5 * one)
    for i, frame in enumerate(frames):
        ring.append(frame, float(i))
    assert ring.nbytes <= 5 * one
    assert 3 <= len(ring) <= 6
    assert ring.span[1] == len(frames) - 1  # type: ignore[index]  # the newest is always kept


def test_ring_buffer_keeps_the_newest_frame_even_over_budget(frames: list[np.ndarray]) -> None:
    ring = RingBuffer(seconds=10.0, max_bytes=1)
    ring.append(frames[0], 1.0)
    ring.append(frames[1], 2.0)
    assert len(ring) == 1 and ring.span == (2.0, 2.0)


def test_ring_buffer_compresses(frames: list[np.ndarray]) -> None:
    ring = RingBuffer(seconds=10.0)
    for i, frame in enumerate(frames):
        ring.append(frame, float(i) / 10)
    assert ring.nbytes < sum(f.nbytes for f in frames) / 5


# --- snapshot and clip -------------------------------------------------------------------------------


def test_snapshot_is_a_jpeg_of_the_frame(frames: list[np.ndarray]) -> None:
    data = encode_snapshot(frames[0])
    assert data.startswith(b"\xff\xd8\xff")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frames[0].shape


def test_clip_plays_back_with_every_frame(frames: list[np.ndarray], tmp_path: Path) -> None:
    data = encode_clip([(i / 10, f) for i, f in enumerate(frames)], fps=10.0)
    path = tmp_path / "clip.webm"
    path.write_bytes(data)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    assert data[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a Matroska/WebM file, what browsers play
    assert int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") == b"VP80"
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == frames[0].shape
        count += 1
    cap.release()
    assert count == len(frames)


def test_clip_resizes_odd_frames_and_rejects_nonsense(frames: list[np.ndarray], tmp_path: Path) -> None:
    small = cv2.resize(frames[1], (320, 180))
    path = tmp_path / "clip.webm"
    path.write_bytes(encode_clip([(0.0, frames[0]), (0.1, small)], fps=10.0))
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert [cap.read()[1].shape for _ in range(2)] == [frames[0].shape] * 2
    with pytest.raises(ValueError, match="at least one frame"):
        encode_clip([], fps=10.0)
    with pytest.raises(ValueError, match="frame rate"):
        encode_clip([(0.0, frames[0])], fps=0.0)


# --- store ---------------------------------------------------------------------------------------------


def test_store_round_trip(store: EvidenceStore, frames: list[np.ndarray]) -> None:
    jpeg = encode_snapshot(frames[0])
    digest = store.put(jpeg, SNAPSHOT_MEDIA_TYPE)
    assert digest == hashlib.sha256(jpeg).hexdigest()
    assert store.exists(digest)
    assert store.get(digest) == (jpeg, SNAPSHOT_MEDIA_TYPE)
    path = store.root / digest[:2] / f"{digest}.bin"
    assert path.is_file()
    assert (path.stat().st_mode & 0o777) == 0o600
    clip = encode_clip([(0.0, frames[0]), (0.1, frames[1])], fps=10.0)
    assert store.get(store.put(clip, CLIP_MEDIA_TYPE)) == (clip, CLIP_MEDIA_TYPE)
    empty = store.put(b"", "application/octet-stream")
    assert store.get(empty) == (b"", "application/octet-stream")


def test_put_is_idempotent(store: EvidenceStore) -> None:
    first = store.put(b"same bytes", "text/plain")
    path = store.root / first[:2] / f"{first}.bin"
    stored = path.read_bytes()
    assert store.put(b"same bytes", "text/plain") == first
    assert path.read_bytes() == stored  # not rewritten
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left behind


def test_encrypted_at_rest(store: EvidenceStore, frames: list[np.ndarray]) -> None:
    jpeg = encode_snapshot(frames[0])
    digest = store.put(jpeg, SNAPSHOT_MEDIA_TYPE)
    blob = (store.root / digest[:2] / f"{digest}.bin").read_bytes()
    assert b"\xff\xd8\xff" not in blob
    assert b"JFIF" not in blob
    assert b"image/jpeg" not in blob
    assert jpeg[100:132] not in blob


def test_each_put_uses_a_fresh_nonce(tmp_path: Path) -> None:
    key = os.urandom(32)
    a, b = EvidenceStore(tmp_path / "a", key), EvidenceStore(tmp_path / "b", key)
    digest = a.put(b"x" * 100, "text/plain")
    b.put(b"x" * 100, "text/plain")
    blob_a = (a.root / digest[:2] / f"{digest}.bin").read_bytes()
    blob_b = (b.root / digest[:2] / f"{digest}.bin").read_bytes()
    assert blob_a != blob_b


def test_tampered_file_is_detected(store: EvidenceStore) -> None:
    digest = store.put(b"badge 4711 at door 3" * 10, "text/plain")
    path = store.root / digest[:2] / f"{digest}.bin"
    for offset in (40, -1):  # a byte of the ciphertext, a byte of the tag
        blob = bytearray(path.read_bytes())
        original = blob[offset]
        blob[offset] ^= 0x01
        path.write_bytes(bytes(blob))
        with pytest.raises(EvidenceError, match="failed authentication"):
            store.get(digest)
        blob[offset] = original
        path.write_bytes(bytes(blob))
    assert store.get(digest)[0] == b"badge 4711 at door 3" * 10


def test_truncated_or_foreign_file_is_detected(store: EvidenceStore) -> None:
    digest = store.put(b"evidence", "text/plain")
    path = store.root / digest[:2] / f"{digest}.bin"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(EvidenceError, match="not an evidence file"):
        store.get(digest)
    path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG someone dropped here" * 4)
    with pytest.raises(EvidenceError, match="not an evidence file"):
        store.get(digest)


def test_swapped_files_are_detected(store: EvidenceStore) -> None:
    a = store.put(b"door 3: granted, Alice", "text/plain")
    b = store.put(b"door 3: forced open", "text/plain")
    shutil.copyfile(store.root / a[:2] / f"{a}.bin", store.root / b[:2] / f"{b}.bin")
    with pytest.raises(EvidenceError, match="failed authentication"):
        store.get(b)
    assert store.get(a)[0] == b"door 3: granted, Alice"


def test_wrong_key_is_detected(store: EvidenceStore) -> None:
    digest = store.put(b"evidence", "text/plain")
    other = EvidenceStore(store.root, os.urandom(32))
    with pytest.raises(EvidenceError, match="different key"):
        other.get(digest)


def test_missing_evidence(store: EvidenceStore) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(digest)
    with pytest.raises(EvidenceError, match="no evidence"):
        store.get(digest)


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "A" * 64,
        hashlib.sha256(b"x").hexdigest().upper(),
        "abc123",
        hashlib.sha256(b"x").hexdigest() + "\n",
        hashlib.sha256(b"x").hexdigest()[:62] + "/.",
        "",
        "g" * 64,
    ],
)
def test_malformed_hashes_are_rejected(store: EvidenceStore, bad: str) -> None:
    with pytest.raises(EvidenceError, match="not a sha256"):
        store.get(bad)
    with pytest.raises(EvidenceError, match="not a sha256"):
        store.exists(bad)


def test_bad_key_and_media_type_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EvidenceStore(tmp_path, b"short")
    store = EvidenceStore(tmp_path, os.urandom(32))
    for bad in ("", "jpeg", "image/jpeg\n", "x" * 200 + "/" + "y" * 100):
        with pytest.raises(ValueError, match="not a media type"):
            store.put(b"data", bad)
