"""Camera tamper on real video (tests/data/video) with generated tampers and look-alikes (tests/tamper_clips.py):
every tamper is raised within 2 s of its start in the frames' own time and cleared after it ends; the clean
clips, lamp steps, a colour -> gray switch, sensor noise and a person walking close past the lens raise
nothing. Then the bridge's side on a real database: a tampered camera is alarmed, its door is blind (a grant
there is ``access.blind``, not ``access.unused``), and a door that requires a face fails secure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine

from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker
from camera.tamper import TamperChange, TamperDetector, TamperSettings
from tests import tamper_clips
from tests.conftest import CAMERAS
from tests.tamper_clips import DOOR, FPS, OUTDOOR, Clip
from tests.test_camera_bridge import Cameras, alarms, camera_site, kinds_at
from tests.test_face_factor import FaceRig, encodings, face_site  # noqa: F401 - encodings is a fixture
from tests.test_ingest import Rig
from tests.test_mqtt_bridge import entries
from tests.waiting import wait_until

RAISE_WITHIN_S = 2.0
CLEAR_WITHIN_S = 5.0


def play(clip: Clip, settings: TamperSettings | None = None) -> list[TamperChange]:
    detector: TamperDetector | None = None
    changes = []
    for i, frame in enumerate(clip.frames()):
        if detector is None:
            detector = TamperDetector(frame.shape[1], frame.shape[0], settings or TamperSettings())
        if (change := detector.process(frame, i / FPS)) is not None:
            changes.append(change)
    return changes


TAMPERS = [clip for video in (DOOR, OUTDOOR) for clip in tamper_clips.tampers(video)]
NUISANCES = [clip for video in (DOOR, OUTDOOR) for clip in tamper_clips.nuisances(video)]


@pytest.mark.parametrize("clip", TAMPERS, ids=[f"{c.video}-{c.name}" for c in TAMPERS])
def test_tamper_is_raised_within_2_s_and_cleared_after(clip: Clip) -> None:
    changes = play(clip)
    start, end = clip.start / FPS, clip.end / FPS
    assert [c.kind is None for c in changes] == [False, True], changes
    raised, cleared = changes
    assert raised.kind in clip.expect, raised
    assert start <= raised.t <= start + RAISE_WITHIN_S, raised
    assert raised.reason
    assert end <= cleared.t <= end + CLEAR_WITHIN_S, cleared


@pytest.mark.parametrize("clip", NUISANCES, ids=[f"{c.video}-{c.name}" for c in NUISANCES])
def test_look_alikes_raise_nothing(clip: Clip) -> None:
    assert play(clip) == []


def test_a_file_played_back_is_never_frozen() -> None:
    """A video file's still stretches are its content (and a synthetic one has no sensor noise at all)."""
    clip = next(c for c in tamper_clips.tampers(DOOR) if c.name == "frozen")
    assert play(clip, TamperSettings(frozen=False)) == []


def test_bad_settings_and_frames_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="fractions"):
        TamperSettings(lost=1.5)
    with pytest.raises(ValueError, match="positive seconds"):
        TamperSettings(raise_s=0)
    with pytest.raises(ValueError, match="at least 16x16"):
        TamperDetector(8, 8)
    detector = TamperDetector(64, 48)
    with pytest.raises(ValueError, match="is not 64x48 uint8"):
        detector.process(np.zeros((48, 64, 3), np.float32), 0.0)
    detector.process(np.zeros((48, 64, 3), np.uint8), 1.0)
    with pytest.raises(ValueError, match="backwards"):
        detector.process(np.zeros((48, 64, 3), np.uint8), 0.5)


# --- the bridge -----------------------------------------------------------------------------------------------

def status(rig: Rig, tamper: str | None, reason: str = "") -> None:
    """The lobby camera's worker reports its stream online and its picture tampered or sound."""
    msg = c.CameraStatus(online=True, ts=rig.clock(), state="online", tamper=tamper,  # type: ignore[arg-type]
                         reason=reason or f"tamper: {tamper}")
    rig.p.camera_status("cam-lobby", msg, msg.model_dump_json().encode(), "cameras/cam-lobby/status", None)


@pytest.fixture
def rig(engine: Engine, site: SiteConfig, keys: KeyStore) -> Iterator[Rig]:
    r = Rig(engine, site, keys)
    yield r
    r.writer.stop()


def test_a_tampered_camera_is_alarmed_and_blinds_its_door(rig: Rig) -> None:
    status(rig, None)
    rig.tick(rig.clock() + timedelta(seconds=1))
    status(rig, "covered", "detail lost in 100% of the picture")
    rig.card("12:1001")  # granted while the only camera of the door is covered; nobody is seen
    rig.tick(rig.clock() + timedelta(seconds=20))
    status(rig, None, "sound")
    rig.tick(rig.clock() + timedelta(seconds=3))  # the grant's window (from 1.3 s before it) clear of blind time
    rig.card("12:1002")  # granted with the camera sound again; nobody passes
    rig.tick(rig.clock() + timedelta(seconds=20))
    kinds = rig.kinds()
    assert kinds.count("access.blind") == 1 and kinds.count("access.unused") == 1
    assert kinds.index("access.blind") < kinds.index("camera.tamper_cleared") < kinds.index("access.unused")
    blind = next(e for e in rig.entries() if e.kind == "access.blind")
    assert blind.door == "main-entrance" and "blind" in json.loads(blind.detail)["reason"]
    tamper = next(e for e in rig.entries() if e.kind == "camera.tamper")
    assert json.loads(tamper.detail) == {"tamper": "covered", "reason": "detail lost in 100% of the picture",
                                         "doors": ["main-entrance"]}
    (alarm,) = [a for a in rig.alarms() if a.kind == "camera.tamper"]
    assert alarm.source == "cam-lobby" and alarm.cleared_at is not None


def test_motion_reported_from_a_tampered_picture_does_not_make_a_blind_grant_seen(rig: Rig) -> None:
    """Noise under a hand over the lens, or a worker that keeps reporting: the grant stays blind."""
    status(rig, None)
    rig.tick(rig.clock() + timedelta(seconds=1))
    status(rig, "covered")
    now = rig.clock()
    start = c.Motion(id="m1", ts=now, type="motion", zone="main-entrance", state="start", started=now, area=0.3,
                     objects=1, peak_objects=1)
    rig.p.camera_event("cam-lobby", start, b"{}", "cameras/cam-lobby/events", None)
    rig.card("12:1001")
    rig.tick(rig.clock() + timedelta(seconds=20))
    kinds = rig.kinds()
    assert "motion.start" in kinds  # recorded
    assert kinds.count("access.blind") == 1


def test_a_redelivered_tamper_status_raises_one_alarm(rig: Rig) -> None:
    status(rig, "frozen")
    status(rig, "frozen")
    assert [a.kind for a in rig.alarms()] == ["camera.tamper"]


def test_a_face_required_door_fails_secure_while_its_camera_is_tampered(
        engine: Engine, site: SiteConfig, keys: KeyStore, encodings: dict[str, np.ndarray]) -> None:  # noqa: F811
    rig = FaceRig(engine, face_site(site, "required"), keys, encodings)
    try:
        status(rig, "covered")
        rig.card("12:1001")
        (deny,) = [cmd for _, cmd in rig.sent]
        assert isinstance(deny, c.Deny) and deny.reason == "face_camera_blind"
        assert rig.requests == []  # no face verdict is waited for: none could be trusted
        status(rig, None)
        rig.card("12:1001")
        assert [r.door for r in rig.requests] == ["main-entrance"]  # sound again: the face is asked for
    finally:
        rig.writer.stop()


# --- end to end: a camera worker on a video, a real broker, the bridge ----------------------------------------

COVERED_S = (10.0, 30.0)
"""When the lens is covered in the end-to-end clip (video time)."""


def covered_clip(path: Path) -> Path:
    """The door video's first 40 s with a hand over the lens from 10 s to 30 s, as an MJPEG AVI."""
    a, b = (round(s * FPS) for s in COVERED_S)
    clip = Clip("hand", DOOR, lambda: tamper_clips.cover(a, 1), frozenset({"covered"}), a, b, round(40 * FPS))
    writer: cv2.VideoWriter | None = None
    for frame in clip.frames():
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (frame.shape[1], frame.shape[0]))
        writer.write(frame)
    assert writer is not None
    writer.release()
    return path


@CAMERAS
def test_covering_the_lens_end_to_end(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker raises the tamper within 2 s of the hand; the bridge alarms it, records a grant made meanwhile
    as access.blind (not access.unused: nobody could be seen), and clears the alarm when the hand is gone."""
    monkeypatch.delenv("BADGE_BRIDGE_MQTT_PORT", raising=False)  # workers load the site file's broker
    monkeypatch.delenv("BADGE_BRIDGE_MQTT_HOST", raising=False)
    (tmp_path / "videos").mkdir()
    site = camera_site(tmp_path, db_url, broker, keys, covered_clip(tmp_path / "videos" / "covered.avi"))
    try:
        site.start_bridge()
        lobby = site.sim("ctl-lobby")
        with Cameras(site):
            wait_until(lambda: "camera.online" in [e.kind for e in entries(site.engine)], timeout=30, what="online")
            wait_until(lambda: alarms(site.engine, "camera.tamper"), timeout=60, what="tamper alarm")
            # a grant whose window (from 1.3 s before it) is clear of the motion seen before the hand came
            raised = alarms(site.engine, "camera.tamper")[0].raised_at.replace(tzinfo=UTC)
            wait_until(lambda: datetime.now(UTC) > raised + timedelta(seconds=3), what="3 s into the tamper")
            lobby.present("main-in", None, "wiegand26", "12:1001")  # granted; nobody can be seen passing
            wait_until(lambda: "access.blind" in kinds_at(site.engine, "main-entrance"), timeout=30, what="blind grant")
            wait_until(lambda: all(a.cleared_at for a in alarms(site.engine, "camera.tamper")), timeout=60,
                       what="tamper cleared")
        logged = entries(site.engine)
        online = next(e for e in logged if e.kind == "camera.online")
        tamper = next(e for e in logged if e.kind == "camera.tamper")
        cleared = next(e for e in logged if e.kind == "camera.tamper_cleared")
        assert json.loads(tamper.detail)["tamper"] == "covered"
        # the worker plays the clip in real time from when it came online (it may fall behind, never ahead)
        assert (tamper.ts_us - online.ts_us) / 1e6 >= COVERED_S[0]
        assert (cleared.ts_us - online.ts_us) / 1e6 >= COVERED_S[1]
        assert "access.unused" not in kinds_at(site.engine, "main-entrance")
        assert len(alarms(site.engine, "camera.tamper")) == 1
    finally:
        site.close()
