"""Counting people, not blobs (camera/people.py), on the real door clip: one person is never two (as-is and
perturbed: lighting, noise, scale), two people side by side are two (composites of the clip's own people),
and end to end through a camera worker, the bridge and a real broker: one badge and one person is no
tailgating, one badge and two people is. Clips: tests/video_composites.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker
from camera.faces import encode_photo
from camera.motion import MotionDetector, ZoneChange
from camera.people import PeopleDetector, PeopleSettings
from tests.conftest import CAMERAS
from tests.test_camera_bridge import Cameras, alarms, camera_site
from tests.test_face_factor import FACES, FaceRig, face_site
from tests.test_mqtt_bridge import entries, listen
from tests.video_composites import COMPOSITES, FPS, LEAD, PASSAGES, PERTURBATIONS, Composite, passage, walk_in, write
from tests.waiting import wait_until


def _count(frames: list[np.ndarray]) -> tuple[list[ZoneChange], PeopleDetector]:
    h, w = frames[0].shape[:2]
    people = PeopleDetector()
    det = MotionDetector(w, h, FPS, people=people)
    changes = []
    for i, frame in enumerate(frames):
        changes += det.process(frame, i / FPS)
    return changes, people


@pytest.mark.parametrize("perturbation", list(PERTURBATIONS))
@pytest.mark.parametrize("index", range(len(PASSAGES)))
def test_one_person_is_never_two(index: int, perturbation: str) -> None:
    """Each of the clip's three passages, as filmed and perturbed: motion is seen, never two objects."""
    changes, people = _count(PERTURBATIONS[perturbation](passage(index)))
    assert any(ch.state == "start" for ch in changes), "the passage was not seen at all"
    assert people.evaluations > 0
    split = [(ch.state, ch.t, ch.objects, ch.peak_objects) for ch in changes if max(ch.objects, ch.peak_objects) >= 2]
    assert split == []


def test_two_people_side_by_side_are_two() -> None:
    """Composites (one of the clip's people pasted beside another, at several offsets): at least 90% reach
    two objects."""
    counted = {comp: max((ch.peak_objects for ch in _count(comp.frames())[0]), default=0) for comp in COMPOSITES}
    missed = [comp for comp, peak in counted.items() if peak < 2]
    assert len(missed) <= 0.1 * len(COMPOSITES), missed
    assert max(counted.values()) < 3, counted  # two people, never three


def test_detector_runs_at_a_bounded_rate() -> None:
    """However many frames move, the detector runs at most once per interval_s per zone."""
    frames = passage(2)
    changes, people = _count(frames)
    assert changes
    assert people.evaluations <= len(frames) / FPS / PeopleSettings().interval_s + 1


def test_torso_and_legs_one_above_the_other_are_one_person() -> None:
    """A person's blob split in two (upper and lower half, apart) is counted once, every time."""
    frames = passage(1)
    people = PeopleDetector(PeopleSettings(interval_s=0))
    counts = [people.count("door", frame, ((380, 0, 180, 200), (380, 220, 180, 210)), i / FPS)
              for i, frame in enumerate(frames[40:140])]
    assert counts and set(counts) == {1}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="crop_height"):
        PeopleSettings(crop_height=64)
    with pytest.raises(ValueError, match="confirm"):
        PeopleSettings(confirm=0)
    with pytest.raises(ValueError, match="at least one moving box"):
        PeopleDetector().people(passage(0)[0], [])


def test_face_window_counts_people_turned_away() -> None:
    """A face check's window (3 s of frames, whole frame): two people side by side are two, one is one."""
    def window(frames: list[np.ndarray], start: int) -> list[tuple[float, np.ndarray]]:
        return [(i / FPS, frame) for i, frame in enumerate(frames[start:start + 30])]

    assert PeopleDetector().most(window(Composite(target=0, source=1, dx=-260, dt=0).frames(), 40)) == 2
    assert [PeopleDetector().most(window(passage(i), 40)) for i in range(len(PASSAGES))] == [1, 1, 1]
    assert PeopleDetector().most(window(passage(0), 0)[:LEAD]) == 0  # the empty room before anyone walks in


@pytest.mark.parametrize(("people", "outcome", "alarmed"), [(2, "face.several", ["door.tailgating"]),
                                                          (1, "face.verified", [])])
def test_two_people_in_the_face_window_is_several(engine: Engine, site: SiteConfig, keys: KeyStore, people: int,
                                                  outcome: str, alarmed: list[str]) -> None:
    """The holder's face alone, but the person detector counted two in one frame (a tailgater turned away):
    ``several`` and a tailgating alarm; counted one: verified."""
    ada = encode_photo((FACES / "obama.jpg").read_bytes())
    rig = FaceRig(engine, face_site(site, "check"), keys, {"obama": ada, "biden": encode_photo(
        (FACES / "biden.jpg").read_bytes())})
    try:
        rig.card("12:1001")
        request = rig.requests[-1]
        holder = encode_photo((FACES / "obama2.jpg").read_bytes())
        seen = [c.SeenFace(frame=0, t=request.at, box=(100, 260, 230, 130), encoding=[float(v) for v in holder])]
        rig.p.camera_event("cam-lobby", c.FacesSeen(id="f1", ts=rig.clock(), type="faces", event=request.event,
                                                    frames=4, faces=seen, people=people), b"{}",
                           "cameras/cam-lobby/events", None)
        assert outcome in rig.kinds()
        assert [a.kind for a in rig.alarms() if a.door == "main-entrance"] == alarmed
    finally:
        rig.writer.stop()


# --- end to end: camera worker, bridge, broker, correlator ------------------------------------------------


def _badged_passage(tmp_path: Path, db_url: str, broker: Broker, keys, video: Path) -> list[str]:
    """Play ``video`` on the lobby camera, badge once as the passage starts, wait for the episode's end;
    returns the tailgating findings' reasons."""
    site = camera_site(tmp_path, db_url, broker, keys, video)
    try:
        site.start_bridge()
        lobby = site.sim("ctl-lobby")
        _, feed = listen(broker, "badge-bridge/v1/bridge/events", c.PublishedEvents.model_validate_json)
        with Cameras(site):
            wait_until(lambda: any(ev.kind == "motion.start" and ev.door == "main-entrance"
                                   for batch in list(feed) for ev in batch.events), timeout=60, what="the passage")
            lobby.present("main-in", None, "wiegand26", "12:1001")
            wait_until(lambda: any(e.kind == "motion.end" for e in entries(site.engine)), timeout=90,
                       what="the passage's end")
            wait_until(lambda: "access.granted" in [e.kind for e in entries(site.engine)], timeout=30, what="grant")
            peaks = [json.loads(e.detail).get("peak_objects", 0) for e in entries(site.engine)
                     if e.kind.startswith("motion.")]
            if max(peaks) >= 2:
                wait_until(lambda: alarms(site.engine, "door.tailgating"), timeout=30, what="tailgating")
        return [json.loads(e.detail)["reason"] for e in entries(site.engine) if e.kind == "door.tailgating"]
    finally:
        site.close()


@CAMERAS
def test_one_badge_one_person_is_no_tailgating(tmp_path: Path, db_url: str, broker: Broker, keys) -> None:
    video = write(walk_in(passage(0)), tmp_path / "one.avi")
    assert _badged_passage(tmp_path, db_url, broker, keys, video) == []


@CAMERAS
def test_one_badge_two_people_is_tailgating(tmp_path: Path, db_url: str, broker: Broker, keys) -> None:
    video = write(walk_in(Composite(target=0, source=1, dx=-260, dt=0).frames()), tmp_path / "two.avi")
    assert _badged_passage(tmp_path, db_url, broker, keys, video) == ["more people than authorizations"]
