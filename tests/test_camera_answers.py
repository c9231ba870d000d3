"""Camera answers the bridge must not take at face value: a face answer from a camera that does not watch the
door or whose picture is tampered, a photo of the holder beside a stranger's live face, a 'live' verdict with
an attack score, motion flags that contradict each other, and a camera status dated before the last one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge.controllers import contract as c
from badge_bridge.models import DeadLetter
from tests.test_face_factor import FaceRig, encodings  # noqa: F401 - encodings is a fixture
from tests.test_liveness import answer, rig_for  # noqa: F401 - rig_for is a fixture
from tests.test_tamper import status

LIVE = c.Liveness(verdict="live", score=0.05, cues={"moved": 5.0})


def _letters(rig: FaceRig) -> list[str]:
    assert rig.writer.flush()
    with Session(rig.engine) as session:
        return list(session.scalars(select(DeadLetter.reason)))


def _faces(rig: FaceRig, camera: str, *faces: tuple[int, np.ndarray], liveness: c.Liveness | None = LIVE) -> None:
    """An answer from ``camera``: (frame, encoding) per face."""
    request = rig.requests[-1]
    seen = [c.SeenFace(frame=i, t=request.at, box=(100, 260, 230, 130), encoding=[float(v) for v in enc])
            for i, enc in faces]
    msg = c.FacesSeen(id=f"f-{camera}", ts=rig.clock(), type="faces", event=request.event,
                      frames=1 + max(i for i, _ in faces), faces=seen, liveness=liveness)
    rig.p.camera_event(camera, msg, b"{}", f"cameras/{camera}/events", None)


@pytest.mark.parametrize("tampered", [False, True], ids=["other camera", "tampered camera"])
def test_an_answer_from_a_camera_that_cannot_see_the_door_is_refused_and_the_check_waits(
        rig_for: Callable[[str], FaceRig], encodings: dict[str, np.ndarray], tampered: bool) -> None:  # noqa: F811
    rig = rig_for("required")
    status(rig, None)
    rig.card("12:1001")
    if tampered:
        status(rig, "moved")  # turned toward a screen after the badge: its answer is not the door's
        _faces(rig, "cam-lobby", (0, encodings["obama2"]))
    else:
        _faces(rig, "cam-outside", (0, encodings["obama2"]))  # the car park's camera, for the lobby's door
    assert rig.commands() == []  # no grant from it
    assert any(("camera_tampered" if tampered else "not_this_door") in r for r in _letters(rig))
    if not tampered:
        answer(rig, encodings["obama2"], LIVE)  # the door's own camera still decides
        (grant,) = rig.commands()
        assert isinstance(grant, c.Grant)
    else:
        rig.tick(rig.clock() + timedelta(seconds=5))  # no sound picture before the time limit (4 s): denied
        (deny,) = rig.commands()
        assert isinstance(deny, c.Deny) and deny.reason == "face_timeout"


@pytest.mark.parametrize("together", [False, True], ids=["in turns", "together"])
def test_a_photo_of_the_holder_beside_a_live_stranger_is_not_verified(
        rig_for: Callable[[str], FaceRig], encodings: dict[str, np.ndarray], together: bool) -> None:  # noqa: F811
    """Liveness is judged on one face: the live one may be the stranger's, the matching one a photo."""
    rig = rig_for("required")
    rig.card("12:1001")
    _faces(rig, "cam-lobby", (0, encodings["obama2"]), (0 if together else 1, encodings["biden"]))
    (deny,) = rig.commands()
    assert isinstance(deny, c.Deny) and deny.reason == "face_mismatch"
    assert "face.several" in rig.kinds() and "face.verified" not in rig.kinds()


def test_a_live_verdict_with_an_attack_score_is_not_live(rig_for: Callable[[str], FaceRig],  # noqa: F811
                                                        encodings: dict[str, np.ndarray]) -> None:  # noqa: F811
    rig = rig_for("required")
    rig.card("12:1001")
    answer(rig, encodings["obama2"], c.Liveness(verdict="live", score=0.97))
    (deny,) = rig.commands()
    assert isinstance(deny, c.Deny) and deny.reason == "face_liveness_unverified"
    unverified = json.loads(next(e for e in rig.entries() if e.kind == "face.unverified").detail)
    assert "liveness_refused" in unverified


@pytest.mark.parametrize("fields", [dict(state="update", objects=1, still=2), dict(state="start", objects=1, still=1),
                                    dict(state="update", objects=1, absorbed=True)],
                         ids=["more still than objects", "still on a start", "absorbed on an update"])
def test_contradictory_motion_flags_are_dead_lettered(rig_for: Callable[[str], FaceRig],  # noqa: F811
                                                      fields: dict[str, object]) -> None:
    rig = rig_for("required")
    now = rig.clock()
    msg = c.Motion.model_validate({"v": 1, "id": "m1", "ts": now.isoformat(), "type": "motion", "zone": "main-entrance",
                                   "started": now.isoformat(), "area": 0.2, "peak_objects": 1, **fields})
    rig.p.camera_event("cam-lobby", msg, b"{}", "cameras/cam-lobby/events", None)
    assert any("still objects are reported by an update" in r for r in _letters(rig))
    assert not [k for k in rig.kinds() if k.startswith("motion.")]


def test_a_status_dated_before_the_last_does_not_rewrite_the_cameras_past(
        rig_for: Callable[[str], FaceRig]) -> None:  # noqa: F811
    """Tamper at T1, then 'sound' dated before T1 (a clock stepped back, a late retained status, a forgery): the
    camera sees from the clear on, so an unbadged passage after it is still an unauthorized entry."""
    rig = rig_for("off")
    status(rig, None)
    rig.tick(rig.clock() + timedelta(seconds=2))
    status(rig, "covered")
    back = rig.clock() - timedelta(seconds=30)
    msg = c.CameraStatus(online=True, ts=back, state="online", tamper=None, reason="sound")
    rig.p.camera_status("cam-lobby", msg, b"{}", "cameras/cam-lobby/status", None)
    rig.tick(rig.clock() + timedelta(seconds=10))
    now = rig.clock()
    start = c.Motion(id="m1", ts=now, type="motion", zone="main-entrance", state="start", started=now, area=0.3,
                     objects=1, peak_objects=1)
    rig.p.camera_event("cam-lobby", start, b"{}", "cameras/cam-lobby/events", None)
    rig.tick(rig.clock() + timedelta(seconds=10))
    assert "door.unauthorized_entry" in rig.kinds()
