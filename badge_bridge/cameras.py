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
from datetime import UTC, datetime, timedelta

from badge_bridge.audit import Effect
from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.correlate import ALARMS, Correlator, DoorWindows, Finding
from badge_bridge.events import Event
from badge_bridge.records import alarm_cleared, alarm_raised

log = logging.getLogger(__name__)

SNAPSHOT_KINDS = frozenset({"access.granted", "access.denied", "door.forced", "door.held_open",
                            "door.unauthorized_entry", "door.tailgating", "door.forced_confirmed"})
"""Door events whose moment is worth a still picture."""
CLIP_KINDS = frozenset({"alarm.raised"})
"""Events worth a clip as well: the desk wants to see what happened, not only a frame of it."""
WHOLE_FRAME = "frame"
"""The zone a camera with no door reports its motion in."""
IN_VIEW = {"door.unauthorized_entry": timedelta(seconds=1), "door.tailgating": timedelta(seconds=0.5)}
"""These findings are dated by the first moving frame, when a person is barely in the picture: their
snapshot is taken this much later, when they are."""
SILENT_START = timedelta(seconds=30)
"""A camera that has not reported this long after the bridge started is reported offline."""

Emitted = list[tuple[Event, Effect | None]]
SendRequest = Callable[[str, c.EvidenceRequest], None]


class CameraRejected(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class CameraDesk:
    def __init__(self, config: SiteConfig, send_request: SendRequest, started: datetime) -> None:
        self.instance = config.site.instance
        self.evidence = config.evidence
        self.send_request = send_request
        self.started = started
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

    # --- camera workers ------------------------------------------------------------------------------

    def motion(self, camera: str, msg: c.Motion) -> Emitted:
        cam = self._camera(camera)
        door: str | None = msg.zone
        if not cam.doors and msg.zone == WHOLE_FRAME:
            door = None  # a camera watching no door: exterior surveillance, recorded, not correlated
        elif msg.zone not in cam.doors:
            raise CameraRejected("unknown_zone", f"camera {camera!r} watches no door {msg.zone!r} "
                                                 f"(its doors: {', '.join(cam.doors) or 'none'})")
        if msg.started > msg.ts:
            raise CameraRejected("invalid_message", f"motion started {msg.started.isoformat()}, after its own "
                                                    f"time {msg.ts.isoformat()}")
        eid = f"{camera}:{msg.id}"
        if door is not None:
            # The correlator pairs an episode by its start; only the end is told by its own time.
            at = msg.ts if msg.state == "end" else msg.started
            self.correlator.motion(door, camera, msg.state, at, eid, objects=msg.objects,
                                   peak_objects=msg.peak_objects)
        detail = {"started": msg.started.isoformat(), "area": round(msg.area, 4), "objects": msg.objects,
                  "peak_objects": msg.peak_objects, "boxes": [list(b) for b in msg.boxes]}
        events: Emitted = []
        if not self.online.get(camera):
            # Motion proves the worker is alive even if its retained status was lost.
            events += self._status(camera, True, msg.ts, f"{eid}:alive", "motion reported")
        return events + [(Event(id=eid, kind=f"motion.{msg.state}", source=camera, ts=msg.ts, door=door,
                                detail={"zone": msg.zone, **detail}), None)]

    def evidence_saved(self, camera: str, msg: c.EvidenceSaved) -> Emitted:
        self._camera(camera)
        kind = "evidence.failed" if msg.error and not msg.items else "evidence.saved"
        detail: dict[str, object] = {"event": msg.event,
                                     "items": [i.model_dump(mode="json") for i in msg.items]}
        if msg.error:
            detail["error"] = msg.error
        return [(Event(id=evidence_event_id(msg.event, camera), kind=kind, source=camera, ts=msg.ts, detail=detail),
                 None)]

    def status(self, camera: str, status: c.CameraStatus, now: datetime) -> Emitted:
        self._camera(camera)
        if status.state == "connecting":
            return []  # a first attempt under way says nothing yet about the picture
        ts = min(status.ts or now, now)
        reason = status.reason or (status.state or "")
        return self._status(camera, status.online and status.state in (None, "online"), ts,
                            f"{camera}:status:{ts.isoformat()}", reason)

    def _camera(self, camera: str):  # noqa: ANN202 - the site file's CameraConfig
        cam = self.cameras.get(camera)
        if cam is None:
            raise CameraRejected("unknown_camera", f"camera {camera!r} is not in the site file")
        return cam

    def _status(self, camera: str, online: bool, ts: datetime, cause: str, reason: str) -> Emitted:
        previous = self.online.get(camera)
        if previous == online:
            return []
        self.online[camera] = online
        self.correlator.camera_status(camera, online, ts)
        kind = "camera.online" if online else "camera.offline"
        events: Emitted = [(Event(id=f"{cause}:{kind}"[:128], kind=kind, source=camera, ts=ts,
                                  detail={"reason": reason[:500]} if reason else {}), None)]
        if not online:
            # A blind camera breaks the surveillance promise: the desk must know.
            events.append(alarm_raised("camera.offline", door=None, source=camera, cause=cause, ts=ts,
                                       detail={"reason": reason[:500]}))
        elif previous is False:
            events.append(alarm_cleared("camera.offline", door=None, source=camera, cause=cause, ts=ts,
                                        by_source=True))
        return events

    # --- door events and time ------------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Every event the bridge records: door events feed the correlator, and events at a watched door
        ask its cameras for evidence."""
        if event.door is None or event.door not in self.door_cameras:
            return
        self.correlator.door_event(event.door, event.kind, event.ts, event.id)
        clip = event.kind in CLIP_KINDS
        if clip or event.kind in SNAPSHOT_KINDS:
            self._request(event, clip)

    def _request(self, event: Event, clip: bool) -> None:
        assert event.door is not None
        now = datetime.now(UTC)
        for camera in self.door_cameras[event.door]:
            request = c.EvidenceRequest(id=Event.new_id("ev")[:64].replace(":", "-"), ts=now, type="evidence_request",
                                        event=event.id, door=event.door, at=event.ts + IN_VIEW.get(event.kind, timedelta()),
                                        before_s=self.evidence.before_s, after_s=self.evidence.after_s, clip=clip)
            self.send_request(camera, request)

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
        events: Emitted = [(Event(id=eid, kind=f.kind, source=source, ts=f.ts, door=f.door,
                                  detail={**f.detail, "causes": list(f.causes)}), None)]
        if f.kind in ALARMS:
            events.append(alarm_raised(f.kind, door=f.door, source=source, cause=eid, ts=f.ts,
                                       detail={"camera": f.camera} if f.camera else None))
        return events


def evidence_event_id(event_id: str, camera: str) -> str:
    """Derived, so a redelivered answer is recorded once, and the console finds an event's evidence by prefix."""
    return f"evidence:{camera}:{event_id}"[:128]
