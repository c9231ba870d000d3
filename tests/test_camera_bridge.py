"""Cameras end to end: real camera worker processes playing generated footage with a known script, a
real Mosquitto, the bridge, and the audit log: unauthorized entry, tailgating, "granted, nobody passed",
evidence saved encrypted and readable, a worker killed and restarted, bad camera input dead-lettered."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge.audit.verify import verify
from badge_bridge.controllers import contract as c
from badge_bridge.events import from_us
from badge_bridge.models import Alarm, DeadLetter, Person
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.scene import Appearance, Crossing, write_face_video, write_video
from camera.enrollment import enroll_face
from camera.evidence import EvidenceStore
from camera.supervisor import Supervisor
from tests.conftest import CAMERAS, let_the_bridge_read
from tests.test_mqtt_bridge import Site, entries, listen
from tests.video_composites import Composite, empty_room, passage, walk_in, write
from tests.waiting import wait_until

pytestmark = CAMERAS


def camera_site(tmp_path: Path, db_url: str, broker: Broker, keys, video: Path, *, loop: bool = False,
                extra: list[tuple[str, str]] = []) -> Site:  # noqa: B006 - never mutated
    """The example site with the lobby camera playing ``video``."""
    return Site(tmp_path, db_url, broker, keys,
                (f'url = "file:{Path(__file__).parent / "data"}/video/door-entries-part1.mp4"', f'url = "file:{video}"'),
                ("loop = true                    # the demo plays", f"loop = {str(loop).lower()}  # the demo plays"),
                *extra)


class Cameras:
    """The camera supervisor on a thread, running only the lobby camera."""

    def __init__(self, site: Site) -> None:
        self.supervisor = Supervisor(site.config, site.site_file, ["cam-lobby"])
        self.thread = threading.Thread(target=self.supervisor.run, daemon=True)

    def __enter__(self) -> Supervisor:
        self.thread.start()
        return self.supervisor

    def __exit__(self, *exc: object) -> None:
        self.supervisor.stopping.set()
        self.thread.join(20)


def kinds_at(engine, door: str) -> list[str]:
    return [e.kind for e in entries(engine) if e.door == door]


def alarms(engine, kind: str) -> list[Alarm]:
    with Session(engine) as s:
        return list(s.scalars(select(Alarm).where(Alarm.kind == kind)))


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    path = tmp_path / "videos"
    path.mkdir()
    return path


def test_unbadged_passage_raises_unauthorized_entry_with_evidence(tmp_path: Path, db_url: str, broker: Broker,
                                                                  keys, video_dir: Path) -> None:
    video = write_video(video_dir / "walk-in.avi", [Crossing(3.0, 2.5)], 9.0)
    site = camera_site(tmp_path, db_url, broker, keys, video)
    try:
        site.start_bridge()
        with Cameras(site):
            wait_until(lambda: alarms(site.engine, "door.unauthorized_entry"), timeout=30, what="unauthorized entry")
            wait_until(lambda: any(e.kind == "evidence.saved" and json.loads(e.detail)["event"].startswith("alarm:")
                                   for e in entries(site.engine)), timeout=30, what="the alarm's evidence")
        logged = entries(site.engine)
        found = [e for e in logged if e.kind == "door.unauthorized_entry"]
        assert len(found) == 1 and found[0].source == "cam-lobby"
        assert "motion.start" in kinds_at(site.engine, "main-entrance")
        evidence = next(e for e in logged if e.kind == "evidence.saved" and json.loads(e.detail)["event"].startswith("alarm:"))
        items = {i["kind"]: i for i in json.loads(evidence.detail)["items"]}
        assert set(items) == {"snapshot", "clip"}
        store = EvidenceStore(site.config.path(site.config.evidence.dir), keys.evidence_key())
        jpeg, media = store.get(items["snapshot"]["sha256"])
        assert media == "image/jpeg"
        picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (480, 640, 3)
        _clip, media = store.get(items["clip"]["sha256"])
        assert media == "video/webm" and items["clip"]["frames"] >= 30
        report = verify(site.engine, site.engine.url.render_as_string(hide_password=False), keys.trusted_public_keys())
        assert report.ok, [str(f) for f in report.findings]
    finally:
        site.close()


def test_badged_passages_tailgating_and_unused_grant(tmp_path: Path, db_url: str, broker: Broker, keys,
                                                     video_dir: Path) -> None:
    """One badge, one person: nothing to report. One badge, two people: tailgating. A badge and nobody
    passing: recorded as unused. Real people (the door clip, and two of its people side by side): the person
    detector counts people, not blocks."""
    # far enough apart that the first badge's window (grant_window_s = 8) is over when the pair walks
    empty = [empty_room()]
    video = write(walk_in(passage(0)) + empty * 30 + walk_in(Composite(0, 1, -260, 0).frames()) + empty * 150,
                  video_dir / "script.avi")
    site = camera_site(tmp_path, db_url, broker, keys, video)
    try:
        site.start_bridge()
        lobby = site.sim("ctl-lobby")
        _, feed = listen(broker, "badge-bridge/v1/bridge/events", c.PublishedEvents.model_validate_json)
        with Cameras(site):
            badged = 0
            while badged < 2:  # badge as each passage starts, like a person at the reader
                wait_until(lambda seen=badged: sum(ev.kind == "motion.start" and ev.door == "main-entrance"
                                                   for batch in list(feed) for ev in batch.events) > seen,
                           timeout=30, what=f"passage {badged + 1}")
                lobby.present("main-in", None, "wiegand26", "12:1001")
                badged += 1
            wait_until(lambda: alarms(site.engine, "door.tailgating"), timeout=30, what="tailgating")
            wait_until(lambda: any(e.kind == "motion.end" for e in entries(site.engine)
                                   if json.loads(e.detail).get("peak_objects", 0) >= 2), timeout=30, what="episode end")
            lobby.present("main-in", None, "wiegand26", "12:1002")  # nobody walks
            wait_until(lambda: "access.unused" in kinds_at(site.engine, "main-entrance"), timeout=30,
                       what="unused grant")
        assert not alarms(site.engine, "door.unauthorized_entry")
        assert len(alarms(site.engine, "door.tailgating")) == 1
        unused = [e for e in entries(site.engine) if e.kind == "access.unused"]
        assert len(unused) == 1
    finally:
        site.close()


def test_worker_killed_goes_offline_and_comes_back(tmp_path: Path, db_url: str, broker: Broker, keys,
                                                    video_dir: Path) -> None:
    video = write_video(video_dir / "still.avi", [], 4.0)
    site = camera_site(tmp_path, db_url, broker, keys, video, loop=True)
    try:
        site.start_bridge()
        with Cameras(site) as supervisor:
            wait_until(lambda: "camera.online" in [e.kind for e in entries(site.engine)], timeout=30, what="online")
            pid = supervisor.procs["cam-lobby"].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # the broker publishes its last will
            wait_until(lambda: alarms(site.engine, "camera.offline"), timeout=30, what="offline alarm")
            wait_until(lambda: [e.kind for e in entries(site.engine) if e.source == "cam-lobby"].count("camera.online") == 2,
                       timeout=40, what="restarted worker online")
            assert supervisor.procs["cam-lobby"].pid != pid
            with Session(site.engine) as s:
                alarm = s.scalars(select(Alarm).where(Alarm.kind == "camera.offline")).one()
                assert alarm.source == "cam-lobby" and alarm.cleared_at is not None
    finally:
        site.close()


def test_bad_camera_input_is_dead_lettered(tmp_path: Path, db_url: str, broker: Broker, keys,
                                           video_dir: Path) -> None:
    video = write_video(video_dir / "still.avi", [], 2.0)
    site = camera_site(tmp_path, db_url, broker, keys, video)
    try:
        # The generated ACL keeps an unknown camera's topic from the bridge; behind a broker that lets it
        # through, the bridge's own check still refuses it.
        let_the_bridge_read(broker, "badge-bridge/v1/cameras/+/events")
        site.start_bridge()
        camera = site.sim("ctl-lobby", "anyone")  # the test-only account that may publish anywhere
        prefix = "badge-bridge/v1/cameras"
        t0 = datetime.now(UTC) - timedelta(minutes=1)  # inside the offline window
        motion = {"v": 1, "id": "m1", "ts": t0.isoformat(), "type": "motion", "zone": "main-entrance",
                  "state": "start", "started": t0.isoformat(), "area": 0.2, "objects": 1, "peak_objects": 1}
        camera.publish_raw(json.dumps(motion), topic=f"{prefix}/cam-nowhere/events")
        camera.publish_raw(json.dumps({**motion, "id": "m2", "zone": "noc"}), topic=f"{prefix}/cam-lobby/events")
        camera.publish_raw(json.dumps({**motion, "id": "m3", "started": (t0 + timedelta(seconds=1)).isoformat()}),
                           topic=f"{prefix}/cam-lobby/events")
        camera.publish_raw(b"{not json", topic=f"{prefix}/cam-lobby/events")
        camera.publish_raw(json.dumps({**motion, "id": "m4", "area": 7}), topic=f"{prefix}/cam-lobby/events")
        wait_until(lambda: len(dead_letters(site)) >= 5, what="five dead letters")
        reasons = "\n".join(dead_letters(site))
        for expected in ("unknown_camera", "unknown_zone", "after its own time", "malformed_json", "area"):
            assert expected in reasons, reasons
        camera.publish_raw(json.dumps({**motion, "id": "m5"}), topic=f"{prefix}/cam-lobby/events")
        wait_until(lambda: "motion.start" in kinds_at(site.engine, "main-entrance"), what="a good message after bad")
    finally:
        site.close()


def dead_letters(site: Site) -> list[str]:
    with Session(site.engine) as s:
        return list(s.scalars(select(DeadLetter.reason)))


@pytest.fixture(autouse=True)
def _site_broker_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Workers load the site file themselves: no broker override from the environment may leak in."""
    monkeypatch.delenv("BADGE_BRIDGE_MQTT_PORT", raising=False)
    monkeypatch.delenv("BADGE_BRIDGE_MQTT_HOST", raising=False)
    yield


def test_face_check_verifies_the_holder_and_alarms_a_stranger(tmp_path: Path, db_url: str, broker: Broker, keys,
                                                              video_dir: Path) -> None:
    """Ada (enrolled from obama.jpg) badges while the camera sees her (obama2.jpg): verified. Later her
    badge is used while the camera sees someone else (biden.jpg): mismatch, alarm, evidence."""
    faces = Path(__file__).parent / "data" / "faces"
    video = write_face_video(video_dir / "faces.avi", [
        Appearance(faces / "obama2.jpg", (290, 438, 558, 171), 0.0, 9.0),
        Appearance(faces / "biden.jpg", (241, 740, 562, 419), 9.0, 30.0)], 30.0)
    site = camera_site(tmp_path, db_url, broker, keys, video,
                       extra=[("correlation = { grant_window_s = 8", 'face = "check"\ncorrelation = { grant_window_s = 8')])
    try:
        with Session(site.engine) as s, s.begin():
            ada = s.scalar(select(Person.id).where(Person.name == "Ada"))
            enroll_face(s, "test", ada, (faces / "obama.jpg").read_bytes(), key=keys.evidence_key(), photos=None)
        site.start_bridge()
        lobby = site.sim("ctl-lobby")
        with Cameras(site):
            wait_until(lambda: "camera.online" in [e.kind for e in entries(site.engine)], timeout=30, what="online")
            online = next(e for e in entries(site.engine) if e.kind == "camera.online")
            start = from_us(online.ts_us)
            # The camera plays the video in real time but falls behind on a busy machine (it skips no frame), so
            # each badge comes where a late video still shows the right face for the whole check (1 s before
            # the badge to 2 s after): Ada's at 3 s (she is there from the start), the other's at 20 s (there
            # from 9 s: the video may be up to 10 s late).
            wait_until(lambda: datetime.now(UTC) > start + timedelta(seconds=3), what="Ada in front of the camera")
            lobby.present("main-in", None, "wiegand26", "12:1001")
            wait_until(lambda: "face.verified" in kinds_at(site.engine, "main-entrance"), timeout=30, what="verified")
            wait_until(lambda: datetime.now(UTC) > start + timedelta(seconds=20), what="someone else in front of it")
            lobby.present("main-in", None, "wiegand26", "12:1001")
            wait_until(lambda: alarms(site.engine, "face.mismatch"), timeout=30, what="mismatch alarm",
                       detail=lambda: [(e.kind, e.detail) for e in entries(site.engine) if e.kind.startswith("face.")])
        verified = next(e for e in entries(site.engine) if e.kind == "face.verified")
        assert json.loads(verified.detail)["distance"] < 0.6
        mismatch = next(e for e in entries(site.engine) if e.kind == "face.mismatch")
        assert json.loads(mismatch.detail)["distance"] > 0.6
        assert json.loads(mismatch.subject)["person"] == ada
        assert len([e for e in entries(site.engine) if e.kind == "access.granted"]) == 2  # check mode never holds the door
    finally:
        site.close()
