"""The face as a factor at the door, on a real database with real face encodings (tests/data/faces): the
grant waits for the camera's verdict; a mismatch, an absent face or no verdict in time denies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.face_match import Gallery
from badge_bridge.keys import KeyStore
from badge_bridge.models import Person
from camera.faces import encode_photo
from tests.test_ingest import Rig

FACES = Path(__file__).parent / "data" / "faces"


@pytest.fixture(scope="module")
def encodings() -> dict[str, np.ndarray]:
    return {name: encode_photo((FACES / f"{name}.jpg").read_bytes()) for name in ("obama", "obama2", "biden")}


def face_site(site: SiteConfig, mode: str) -> SiteConfig:
    doors = [d.model_copy(update={"face": mode}) if d.key == "main-entrance" else d for d in site.doors]
    return site.model_copy(update={"doors": doors})


class FaceRig(Rig):
    """The processor with Ada enrolled with obama.jpg; the door camera's requests are collected."""

    def __init__(self, engine: Engine, site: SiteConfig, keys: KeyStore, encodings: dict[str, np.ndarray]) -> None:
        super().__init__(engine, site, keys)
        with Session(engine) as session:
            self.ids = {p.name: p.id for p in session.scalars(select(Person))}
        gallery = Gallery()
        gallery.add(self.ids["Ada"], encodings["obama"])
        gallery.add(self.ids["Alan"], encodings["biden"])
        self.p.set_gallery(gallery)

    @property
    def requests(self) -> list[c.FaceRequest]:
        """The face requests to the door's cameras (evidence requests, snapshots of the decision, are not asked)."""
        return [r for r in self.camera_requests if isinstance(r, c.FaceRequest)]

    def answer(self, *faces: np.ndarray, frames: int = 4, together: bool = False) -> None:
        """The camera's answer: one face per examined frame, or all in the first (``together``)."""
        request = self.requests[-1]
        seen = [c.SeenFace(frame=0 if together else i, t=request.at, box=(100, 260, 230, 130), encoding=[float(v) for v in enc])
                for i, enc in enumerate(faces)]
        live = c.Liveness(verdict="live", score=0.0) if request.liveness else None  # tests/test_liveness.py: attacks
        msg = c.FacesSeen(id=f"f{len(self.requests)}", ts=self.clock(), type="faces", event=request.event,
                          frames=frames, faces=seen, liveness=live)
        self.p.camera_event("cam-lobby", msg, b"{}", "cameras/cam-lobby/events", None)

    def commands(self) -> list[object]:
        return [cmd for _, cmd in self.sent]


@pytest.fixture
def rig(engine: Engine, site: SiteConfig, keys: KeyStore, encodings: dict[str, np.ndarray]) -> Iterator[FaceRig]:
    r = FaceRig(engine, face_site(site, "required"), keys, encodings)
    yield r
    r.writer.stop()


def test_the_grant_waits_for_the_face_and_a_match_opens(rig: FaceRig, encodings: dict[str, np.ndarray]) -> None:
    rig.card("12:1001")
    assert rig.commands() == [], "nothing may open before the face is seen"
    assert [r.door for r in rig.requests] == ["main-entrance"]
    rig.answer(encodings["obama2"])  # Ada, another photo
    (grant,) = rig.commands()
    assert isinstance(grant, c.Grant) and grant.door == "main-entrance"
    logged = {e.kind: e for e in rig.entries()}
    assert {"access.face_check", "face.verified", "access.granted"} <= set(logged)
    assert json.loads(logged["access.granted"].detail)["factors"] == ["card", "face"]
    assert json.loads(logged["face.verified"].detail)["distance"] < 0.6
    assert "encoding" not in " ".join(e.detail + e.subject for e in rig.entries())


def test_someone_else_is_denied_and_alarmed(rig: FaceRig, encodings: dict[str, np.ndarray]) -> None:
    rig.card("12:1001")
    rig.answer(encodings["biden"])  # Ada's badge, Alan's face
    (deny,) = rig.commands()
    assert isinstance(deny, c.Deny) and deny.reason == "face_mismatch"
    mismatch = next(e for e in rig.entries() if e.kind == "face.mismatch")
    detail = json.loads(mismatch.detail)
    assert detail["distance"] > 0.6 and detail["seen"]["person"] == rig.ids["Alan"]
    assert [a.kind for a in rig.alarms() if a.door == "main-entrance"] == ["face.mismatch"]


def test_no_verdict_in_time_denies(rig: FaceRig) -> None:
    rig.card("12:1001")
    start = rig.clock()
    rig.tick(start + timedelta(seconds=2))
    assert rig.commands() == []
    rig.tick(start + timedelta(seconds=5))  # the door's face_timeout_s is 4
    (deny,) = rig.commands()
    assert isinstance(deny, c.Deny) and deny.reason == "face_timeout"
    assert "face.unverified" in rig.kinds()
    rig.answer()  # the late answer changes nothing
    assert len(rig.commands()) == 1


def test_nobody_facing_the_camera_is_denied_as_missing(rig: FaceRig) -> None:
    rig.card("12:1001")
    rig.answer()
    (deny,) = rig.commands()
    assert deny.reason == "face_required"
    assert "face.absent" in rig.kinds()


def test_a_holder_not_enrolled_is_denied_at_once(rig: FaceRig) -> None:
    rig.card("12:1002")  # Grace has no face enrolled
    (deny,) = rig.commands()
    assert deny.reason == "face_required" and rig.requests == []


def test_check_mode_grants_at_once_and_alarms_a_lent_badge(engine: Engine, site: SiteConfig, keys: KeyStore,
                                                             encodings: dict[str, np.ndarray]) -> None:
    rig = FaceRig(engine, face_site(site, "check"), keys, encodings)
    try:
        rig.card("12:1001")
        (grant,) = rig.commands()
        assert isinstance(grant, c.Grant)  # the door opens; the face is checked after
        rig.answer(encodings["biden"], encodings["obama2"], together=True)  # two faces in one frame, Ada among them
        kinds = rig.kinds()
        assert "face.several" in kinds
        assert [a.kind for a in rig.alarms() if a.door == "main-entrance"] == ["door.tailgating"]
    finally:
        rig.writer.stop()
