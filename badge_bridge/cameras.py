"""The bridge's side of the cameras: what camera workers report, joined with the doors.

Camera workers (``camera/``) know nothing of the database; they publish motion per door zone and their
status, and answer evidence requests. Here those become audited events, the correlator
(``correlate.py``) turns door events plus motion into findings (unauthorized entry, tailgating, "granted,
nobody passed", a forced door seen or not seen), and every door event and alarm at a watched door asks
the cameras for a snapshot (alarms: a clip too), which comes back as an ``evidence.saved`` event naming
the content hashes. The caller (``ingest.Processor``) holds its lock around every method.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from badge_bridge.audit.writer import Effect
from badge_bridge.clock import Clock
from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.correlate import ALARMS, TAILGATING, Correlator, DoorWindows, Finding
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.face_match import Gallery, SeenFace, verify
from badge_bridge.records import alarm_cleared, alarm_raised

log = logging.getLogger(__name__)
_PROBE = np.zeros(128)
"""Any encoding: asking the gallery for a distance tells whether the person is enrolled at all."""

SNAPSHOT_KINDS = frozenset({EventKind.ACCESS_GRANTED, EventKind.ACCESS_DENIED, EventKind.DOOR_FORCED,
                            EventKind.DOOR_HELD_OPEN, EventKind.DOOR_UNAUTHORIZED_ENTRY, EventKind.DOOR_TAILGATING,
                            EventKind.DOOR_FORCED_CONFIRMED, EventKind.FACE_ABSENT,
                            EventKind.FACE_SPOOF})
"""Door events whose moment is worth a still picture."""
CLIP_KINDS = frozenset({EventKind.ALARM_RAISED})
"""Events worth a clip as well: the desk wants to see what happened, not only a frame of it."""
IN_VIEW: dict[str, timedelta] = {EventKind.DOOR_UNAUTHORIZED_ENTRY: timedelta(seconds=1),
                                 EventKind.DOOR_TAILGATING: timedelta(seconds=0.5)}
"""These findings are dated by the first moving frame, when a person is barely in the picture: their
snapshot is taken this much later, when they are."""
SILENT_START = timedelta(seconds=30)
"""A camera that has not reported this long after the bridge started is reported offline."""

FACE_WINDOWS = {"check": (1.0, 2.0), "required": (1.5, 0.5)}
"""Seconds of frames before and after the badge searched for the holder's face: a check can wait for the
person to step through; a required match holds the door, so it looks mostly at who stood at the reader."""
CHECK_ANSWER_S = 15.0
"""A face check with no answer by then is recorded as unverified (the camera is away or overloaded)."""

Emitted = list[tuple[Event, Effect | None]]
SendRequest = Callable[[str, c.EvidenceRequest | c.FaceRequest | c.PeopleRequest], None]
PEOPLE_WINDOW = (1.0, 0.5)
"""Seconds of frames before and after a badge at a mantrap's inner door in which its camera counts people."""


MAX_EPISODE = timedelta(days=1)
"""Longer than any motion episode a camera reports; an earlier ``started`` is a broken or hostile worker
(and would overflow the correlator's time arithmetic)."""

class CameraRejected(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class FaceCheck:
    door: str
    person: int
    subject: dict[str, object]
    mode: str
    deadline: datetime
    liveness: bool = False
    """Liveness was asked for (a required door, ``[faces] liveness`` not off)."""


@dataclass
class PeopleCheck:
    camera: str
    deadline: datetime


class CameraDesk:
    def __init__(self, config: SiteConfig, send_request: SendRequest, started: datetime, clock: Clock) -> None:
        self.instance = config.site.instance
        self.evidence = config.evidence
        self.send_request = send_request
        self.started = started
        self.clock = clock
        self.cameras = {cam.key: cam for cam in config.cameras}
        self.door_cameras: dict[str, list[str]] = {}
        for cam in config.cameras:
            for door in cam.doors:
                self.door_cameras.setdefault(door, []).append(cam.key)
        windows = {d.key: DoorWindows(**d.correlation.model_dump()) for d in config.doors if d.key in self.door_cameras}
        self.correlator = Correlator(windows, {cam.key: cam.doors for cam in config.cameras})
        for camera in self.cameras:
            # Until a camera reports, nobody knows it sees anything: nothing is concluded from its silence.
            self.correlator.camera_status(camera, False, started)
        self.online: dict[str, bool] = {}
        self.tampered: dict[str, str] = {}
        """Camera -> what is wrong with its picture (``CameraStatus.tamper``), while it is."""
        self.seeing = {camera: False for camera in self.cameras}
        """Camera -> whether the correlator was last told it sees (online and not tampered)."""
        self.seeing_since = {camera: started for camera in self.cameras}
        """Camera -> when that was (what the correlator was told)."""
        self.face_doors = {d.key: d for d in config.doors if d.face != "off"}
        self.faces = config.faces
        self.gallery: Gallery | None = None
        """Enrolled faces, decrypted (set by the bridge when it loads the site, if any door checks faces)."""
        self.face_checks: dict[str, FaceCheck] = {}
        self.people_checks: dict[str, PeopleCheck] = {}
        """Mantrap people counts asked for, by the credential event they hold."""

    # --- camera workers ------------------------------------------------------------------------------

    def motion(self, camera: str, msg: c.Motion) -> Emitted:
        cam = self._camera(camera)
        door: str | None = msg.zone
        if not cam.doors and msg.zone == c.WHOLE_FRAME:
            door = None  # a camera watching no door: exterior surveillance, recorded, not correlated
        elif msg.zone not in cam.doors:
            raise CameraRejected("unknown_zone", f"camera {camera!r} watches no door {msg.zone!r} "
                                                 f"(its doors: {', '.join(cam.doors) or 'none'})")
        if msg.started > msg.ts:
            raise CameraRejected("invalid_message", f"motion started {msg.started.isoformat()}, after its own "
                                                    f"time {msg.ts.isoformat()}")
        if msg.ts - msg.started > MAX_EPISODE:
            raise CameraRejected("invalid_message", f"motion started {msg.started.isoformat()}, more than "
                                                    f"{MAX_EPISODE} before its own time {msg.ts.isoformat()}")
        if msg.still > msg.objects or (msg.still and msg.state != "update") or (msg.absorbed and msg.state != "end"):
            raise CameraRejected("invalid_message", f"motion {msg.state} with still={msg.still}, objects={msg.objects}, "
                                                    f"absorbed={msg.absorbed}: still objects are reported by an update "
                                                    "and are among its objects, absorbed by an end")
        eid = f"{camera}:{msg.id}"
        if door is not None and camera not in self.tampered:
            # The correlator pairs an episode by its start; only the end is told by its own time. Motion in a
            # tampered picture (covered, turned) proves nobody passed or not: recorded, not correlated.
            at = msg.ts if msg.state == "end" else msg.started
            self.correlator.motion(door, camera, msg.state, at, eid, objects=msg.objects,
                                   peak_objects=msg.peak_objects, at=msg.ts, still=msg.still, absorbed=msg.absorbed)
        detail: dict[str, object] = {"started": msg.started.isoformat(), "area": round(msg.area, 4),
                                     "objects": msg.objects, "peak_objects": msg.peak_objects,
                                     "boxes": [list(b) for b in msg.boxes]}
        if msg.state == "update":
            detail["still"] = msg.still  # presence: they stopped (still > 0) or move again (0)
        if msg.absorbed:
            detail["absorbed"] = True
        events: Emitted = []
        if not self.online.get(camera):
            # Motion proves the worker is alive even if its retained status was lost.
            events += self._status(camera, True, msg.ts, f"{eid}:alive", "motion reported")
        return events + [(Event(id=eid, kind=f"motion.{msg.state}", source=camera, ts=msg.ts, door=door,
                                detail={"zone": msg.zone, **detail}), None)]

    def evidence_saved(self, camera: str, msg: c.EvidenceSaved) -> Emitted:
        self._camera(camera)
        kind = EventKind.EVIDENCE_FAILED if msg.error and not msg.items else EventKind.EVIDENCE_SAVED
        detail: dict[str, object] = {"event": msg.event,
                                     "items": [i.model_dump(mode="json") for i in msg.items]}
        if msg.error:
            detail["error"] = msg.error
        return [(Event(id=evidence_event_id(msg.event, camera), kind=kind, source=camera, ts=msg.ts, detail=detail),
                 None)]

    def status(self, camera: str, status: c.CameraStatus, now: datetime) -> Emitted:
        """The stream's state, and (while it is online) whether its picture can be trusted: a tampered camera
        is blind for its doors, alarmed until its worker finds the picture sound again."""
        self._camera(camera)
        if status.state == "connecting":
            return []  # a first attempt under way says nothing yet about the picture
        ts = min(status.ts or now, now)
        reason = status.reason or (status.state or "")
        online = status.online and status.state in (None, "online")
        cause = f"{camera}:status:{ts.isoformat()}"
        events = self._tamper(camera, status.tamper, ts, cause, reason) if online else []
        return self._status(camera, online, ts, cause, reason) + events

    def blind(self, door: str) -> bool:
        """Whether every camera of the door is known not to see it now (offline or tampered). One not heard
        from yet is asked all the same: no answer in time denies anyway."""
        cameras = self.door_cameras.get(door, [])
        return bool(cameras) and all(self.camera_blind(cam) for cam in cameras)

    def camera_blind(self, camera: str) -> bool:
        """Whether the camera is known not to see now: offline or tampered (one not heard from yet is not)."""
        return self.online.get(camera) is False or camera in self.tampered

    def _camera(self, camera: str):
        cam = self.cameras.get(camera)
        if cam is None:
            raise CameraRejected("unknown_camera", f"camera {camera!r} is not in the site file")
        return cam

    def _sees(self, camera: str, ts: datetime) -> None:
        """Tell the correlator when the camera starts or stops seeing: online with a sound picture."""
        sees = bool(self.online.get(camera)) and camera not in self.tampered
        if sees != self.seeing[camera]:
            # Never dated before the last change: a status from before it (a worker's clock stepped back, a
            # retained status arriving late, a forgery) would otherwise rewrite the camera's past, and an
            # "offline from T1" left open behind it keeps every later episode from being judged.
            ts = max(ts, self.seeing_since.get(camera, ts))
            self.seeing[camera], self.seeing_since[camera] = sees, ts
            self.correlator.camera_status(camera, sees, ts)

    def _tamper(self, camera: str, tamper: str | None, ts: datetime, cause: str, reason: str) -> Emitted:
        previous = self.tampered.get(camera)
        if previous == tamper:
            return []
        detail: dict[str, object] = {"reason": reason[:500], "doors": list(self.cameras[camera].doors)}
        if tamper is None:
            del self.tampered[camera]
            self._sees(camera, ts)
            return [(Event(id=f"{cause}:{EventKind.CAMERA_TAMPER_CLEARED}"[:128], kind=EventKind.CAMERA_TAMPER_CLEARED,
                           source=camera, ts=ts, detail={**detail, "was": previous}), None),
                    alarm_cleared(EventKind.CAMERA_TAMPER, door=None, source=camera, cause=cause, ts=ts, by_source=True)]
        self.tampered[camera] = tamper
        self._sees(camera, ts)
        events: Emitted = [(Event(id=f"{cause}:{EventKind.CAMERA_TAMPER}"[:128], kind=EventKind.CAMERA_TAMPER,
                                  source=camera, ts=ts, detail={"tamper": tamper, **detail}), None)]
        if previous is None:  # another kind of tamper on top of one alarmed is recorded, not alarmed again
            events.append(alarm_raised(EventKind.CAMERA_TAMPER, door=None, source=camera, cause=cause, ts=ts,
                                       detail={"tamper": tamper, **detail}))
        return events

    def _status(self, camera: str, online: bool, ts: datetime, cause: str, reason: str) -> Emitted:
        previous = self.online.get(camera)
        if previous == online:
            return []
        self.online[camera] = online
        self._sees(camera, ts)
        kind = EventKind.CAMERA_ONLINE if online else EventKind.CAMERA_OFFLINE
        events: Emitted = [(Event(id=f"{cause}:{kind}"[:128], kind=kind, source=camera, ts=ts,
                                  detail={"reason": reason[:500]} if reason else {}), None)]
        if not online:
            # A blind camera breaks the surveillance promise: the desk must know.
            events.append(alarm_raised(EventKind.CAMERA_OFFLINE, door=None, source=camera, cause=cause, ts=ts,
                                       detail={"reason": reason[:500]}))
        elif previous is False:
            events.append(alarm_cleared(EventKind.CAMERA_OFFLINE, door=None, source=camera, cause=cause, ts=ts,
                                        by_source=True))
        return events

    # --- door events and time ------------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Every event the bridge records: door events feed the correlator, events at a watched door ask its
        cameras for evidence, and a grant at a door that checks faces asks for the holder's face."""
        if event.door is None or event.door not in self.door_cameras:
            return
        self.correlator.door_event(event.door, event.kind, event.ts, event.id)
        door = self.face_doors.get(event.door)
        person = event.subject.get("person")
        if event.kind == EventKind.ACCESS_GRANTED and door is not None and door.face == "check" and isinstance(person, int):
            self.request_faces(event.id, event.door, person, dict(event.subject), event.ts, mode="check")
        clip = event.kind in CLIP_KINDS
        if clip or event.kind in SNAPSHOT_KINDS:
            self._request(event, clip)

    def _request(self, event: Event, clip: bool) -> None:
        assert event.door is not None
        now = self.clock()
        for camera in self.door_cameras[event.door]:
            request = c.EvidenceRequest(id=Event.new_id("ev")[:64].replace(":", "-"), ts=now, type="evidence_request",
                                        event=event.id, door=event.door, at=event.ts + IN_VIEW.get(event.kind, timedelta()),
                                        before_s=self.evidence.before_s, after_s=self.evidence.after_s, clip=clip)
            self.send_request(camera, request)

    # --- faces --------------------------------------------------------------------------------------

    def enrolled(self, person: int) -> bool:
        return self.gallery is not None and self.gallery.distance_to(person, _PROBE) is not None

    def request_faces(self, event_id: str, door: str, person: int, subject: dict[str, object], at: datetime,
                      *, mode: str) -> None:
        before, after = FACE_WINDOWS[mode]
        limit = self.face_doors[door].face_timeout_s if mode == "required" else CHECK_ANSWER_S
        liveness = mode == "required" and self.faces.liveness != "off"
        self.face_checks[event_id] = FaceCheck(door, person, subject, mode, self.clock() + timedelta(seconds=limit),
                                               liveness)
        for camera in self.door_cameras[door]:
            self.send_request(camera, c.FaceRequest(id=Event.new_id("fr")[:64].replace(":", "-"), ts=self.clock(),
                                                    type="face_request", event=event_id, door=door, at=at,
                                                    before_s=before, after_s=after, liveness=liveness))

    def faces_seen(self, camera: str, msg: c.FacesSeen) -> tuple[Emitted, tuple[str, str] | None]:
        """The first answer for a badge decides (a door's other cameras answer too: later ones are ignored).
        Returns the events and, for the policy, (event id, outcome): ``verified`` when the holder's face was
        seen (among others, for ``several``), else the verdict's outcome; where liveness is enforced,
        ``spoof`` for a presentation attack (whoever's face it shows) and ``unverified_liveness`` for the
        holder's face whose liveness could not be judged."""
        self._camera(camera)
        check = self.face_checks.get(msg.event)
        if check is None:
            return [], None
        if camera not in self.door_cameras.get(check.door, ()):
            raise CameraRejected("not_this_door", f"camera {camera!r} answered the face check at door {check.door!r}, "
                                                  "which it does not watch: ignored, the check waits for the door's own")
        if camera in self.tampered:
            raise CameraRejected("camera_tampered", f"camera {camera!r} answered the face check at door "
                                                    f"{check.door!r} while its picture is {self.tampered[camera]}: "
                                                    "ignored, the check waits for a sound picture or its time limit")
        del self.face_checks[msg.event]
        per_frame: list[list[SeenFace]] = [[] for _ in range(msg.frames)]
        for face in msg.faces:
            if face.frame < msg.frames:
                per_frame[face.frame].append(SeenFace(face.t.timestamp(), face.box, np.array(face.encoding)))
        door = self.face_doors[check.door]
        tolerance = self.faces.strict_tolerance if door.face_strict else self.faces.tolerance
        assert self.gallery is not None
        verdict = verify(per_frame, self.gallery, check.person, tolerance)
        if (msg.people or 0) >= 2:  # people turned away or too small for a face still count
            verdict = replace(verdict, outcome="several")
        detail: dict[str, object] = {"event": msg.event, "mode": check.mode, "frames": msg.frames,
                                     "faces": verdict.faces, "tolerance": tolerance}
        if verdict.distance is not None:
            detail["distance"] = round(verdict.distance, 4)
        if verdict.outcome == "mismatch":
            detail["seen"] = ("unknown" if verdict.nearest is None
                              else {"person": verdict.nearest, "distance": round(verdict.nearest_distance or 0, 4)})
        if msg.error:
            detail["error"] = msg.error
        eid = f"face:{msg.event}"[:128]
        holder_seen = verdict.distance is not None and verdict.distance <= tolerance
        outcome: str = "verified" if holder_seen else verdict.outcome
        kind = f"face.{verdict.outcome}"
        spoof: dict[str, object] | None = None  # the alarm's detail, when the face is a presentation attack
        if check.liveness:
            liveness = msg.liveness
            detail["liveness"] = _liveness_detail(liveness)
            enforced = self.faces.liveness == "required"
            if liveness is not None and liveness.verdict == "live" and liveness.score >= self.faces.liveness_threshold:
                detail["liveness_refused"] = "a 'live' verdict with an attack score at or above the threshold"
                liveness = None  # inconsistent (a broken or forged answer): not known to be live
            if liveness is not None and liveness.verdict == "spoof":
                kind, detail["match"] = EventKind.FACE_SPOOF, verdict.outcome
                spoof = {"score": liveness.score, "match": verdict.outcome}
                outcome = "spoof" if enforced else outcome
            elif enforced and outcome == "verified" and (verdict.outcome == "several" or _strangers(
                    per_frame, self.gallery, check.person, tolerance)):
                # Liveness is judged on one face: with someone else's face in the window (a live stranger
                # beside a photo of the holder, in turns or together) it may not be the holder's.
                kind, outcome = EventKind.FACE_SEVERAL, "several"
                verdict = replace(verdict, outcome="several")
            elif enforced and outcome == "verified" and (liveness is None or liveness.verdict != "live"):
                kind, detail["match"] = EventKind.FACE_UNVERIFIED, verdict.outcome
                detail["reason"] = "the holder's face was seen, but not whether it is live"
                outcome = "unverified_liveness"
        events: Emitted = [(Event(id=eid, kind=kind, source=camera, ts=msg.ts, door=check.door,
                                  subject=check.subject, detail=detail), None)]
        if spoof is not None:
            events.append(alarm_raised(EventKind.FACE_SPOOF, door=check.door, source=camera, cause=eid, ts=msg.ts,
                                       detail=spoof))
        elif verdict.outcome == "mismatch":
            events.append(alarm_raised(EventKind.FACE_MISMATCH, door=check.door, source=camera, cause=eid, ts=msg.ts))
        elif verdict.outcome == "several":
            # More faces than badges: evidence of tailgating, alarmed like the correlator's own finding.
            events.append(alarm_raised(TAILGATING, door=check.door, source=camera, cause=eid, ts=msg.ts,
                                       detail={"evidence": "faces", "faces": verdict.faces, "people": msg.people}))
        return events, (msg.event, outcome)

    # --- mantrap people counts ----------------------------------------------------------------------

    def request_people(self, event_id: str, camera: str, door: str, at: datetime, limit_s: float) -> None:
        """Ask the mantrap's camera how many people stand inside around ``at`` (a badge at its inner door)."""
        self.people_checks[event_id] = PeopleCheck(camera, self.clock() + timedelta(seconds=limit_s))
        before, after = PEOPLE_WINDOW
        self.send_request(camera, c.PeopleRequest(id=Event.new_id("pr")[:64].replace(":", "-"), ts=self.clock(),
                                                  type="people_request", event=event_id, door=door, at=at,
                                                  before_s=before, after_s=after))

    def people_counted(self, camera: str, msg: c.PeopleCounted) -> tuple[str, int | None, str] | None:
        """(credential event, people counted or None, why none) for a count asked of this camera; None for an
        answer nobody waits for (late, or redelivered). A count from a camera whose picture is tampered, or
        from another camera, is refused: the hold waits for a sound answer or its time limit."""
        self._camera(camera)
        check = self.people_checks.get(msg.event)
        if check is None:
            return None
        if camera != check.camera:
            raise CameraRejected("not_this_camera", f"camera {camera!r} answered the people count asked of "
                                                    f"{check.camera!r}: ignored")
        if camera in self.tampered:
            raise CameraRejected("camera_tampered", f"camera {camera!r} answered a people count while its picture "
                                                    f"is {self.tampered[camera]}: ignored")
        del self.people_checks[msg.event]
        if not msg.frames:
            return msg.event, None, msg.error or "no frames around the badge"
        return msg.event, msg.people, msg.error or ""

    def people_expired(self, now: datetime) -> list[str]:
        """The credential events whose people count did not come in time."""
        expired = [eid for eid, check in self.people_checks.items() if check.deadline <= now]
        for eid in expired:
            del self.people_checks[eid]
        return expired

    def faces_expired(self, now: datetime) -> tuple[Emitted, list[str]]:
        """Face checks past their time limit, recorded as ``face.unverified``; returns those events and the
        ids of the required ones, which the caller denies."""
        events: Emitted = []
        required = []
        for eid, check in list(self.face_checks.items()):
            if check.deadline > now:
                continue
            del self.face_checks[eid]
            events.append((Event(id=f"face:{eid}"[:128], kind=EventKind.FACE_UNVERIFIED, source=self.instance, ts=now,
                                 door=check.door, subject=check.subject,
                                 detail={"event": eid, "mode": check.mode,
                                         "reason": "no answer from the door's cameras in time"}), None))
            if check.mode == "required":
                required.append(eid)
        return events, required

    def tick(self, now: datetime) -> Emitted:
        events: Emitted = []
        if now - self.started > SILENT_START:
            for camera in self.cameras:
                if camera not in self.online:
                    events += self._status(camera, False, now, f"{camera}:silent-since-start:{self.started.isoformat()}",
                                           "no status from the camera worker since the bridge started")
        for finding in self.correlator.advance(now):
            events += self._finding(finding)
        return events

    def _finding(self, f: Finding) -> Emitted:
        source = f.camera or self.instance
        # Two findings of a kind at one door and instant (two grants unused) differ by their causes.
        digest = hashlib.sha256("\n".join(f.causes).encode()).hexdigest()[:12]
        eid = f"{f.kind}:{f.door}:{f.ts.isoformat()}:{digest}"[:128]
        if f.ended:
            # the condition is over (the loiterer left): recorded, and the alarm cleared on the desk's queue
            return [(Event(id=f"{eid}:ended"[:128], kind=f.kind, source=source, ts=f.ts, door=f.door,
                           detail={**f.detail, "state": "ended", "causes": list(f.causes)}), None),
                    alarm_cleared(f.kind, door=f.door, source=source, cause=eid, ts=f.ts)]
        events: Emitted = [(Event(id=eid, kind=f.kind, source=source, ts=f.ts, door=f.door,
                                  detail={**f.detail, "causes": list(f.causes)}), None)]
        if f.kind in ALARMS:
            events.append(alarm_raised(f.kind, door=f.door, source=source, cause=eid, ts=f.ts,
                                       detail={"camera": f.camera} if f.camera else None))
        return events


def _liveness_detail(liveness: c.Liveness | None) -> dict[str, object]:
    """What the audit keeps of a liveness answer: verdict, score, the cues' measurements and the reason (no
    image, no encoding). A camera that did not answer it is recorded as ``missing``."""
    if liveness is None:
        return {"verdict": "missing", "score": None}
    return {"verdict": liveness.verdict, "score": liveness.score, "cues": dict(liveness.cues),
            "reason": liveness.reason}


def _strangers(seen: list[list[SeenFace]], gallery: Gallery, person: int, tolerance: float) -> bool:
    """Whether a face in the window is not the holder's (farther than ``tolerance`` from every enrolled one)."""
    return any((d := gallery.distance_to(person, face.encoding)) is None or d > tolerance
               for frame in seen for face in frame)


def evidence_event_id(event_id: str, camera: str) -> str:
    """Derived, so a redelivered answer is recorded once, and the console finds an event's evidence by prefix."""
    return f"evidence:{camera}:{event_id}"[:128]
