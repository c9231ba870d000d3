"""One camera's worker: capture, motion per door zone, evidence on request. Runs in its own process.

It knows nothing of the database (DESIGN.md): it publishes motion and its status on MQTT and answers the
bridge's evidence requests from its ring buffer. Evidence is cut and encrypted on a thread of its own, so
writing a clip never holds up motion detection; a request waits until the frames after its moment have
been captured.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from pydantic import ValidationError

from badge_bridge.config import CameraConfig, SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.mqtt_client import Will, site_client
from badge_bridge.topics import CAMERA, Topics
from camera.capture import Capture, Status, parse_source
from camera.evidence import CLIP_MEDIA_TYPE, EvidenceStore, RingBuffer, encode_clip, encode_snapshot
from camera.motion import MotionDetector, MotionSettings, Zone, ZoneChange
from camera.people import PeopleDetector
from camera.tamper import TamperDetector, TamperSettings

log = logging.getLogger(__name__)

MAX_PENDING = 256
"""Evidence requests waiting for their frames; beyond this the oldest are answered with an error."""


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass
class _Pending:
    request: c.EvidenceRequest | c.FaceRequest | c.PeopleRequest
    due: float
    """Capture time after which the frames after the moment are in the buffer."""


class CameraWorker:
    def __init__(self, config: SiteConfig, camera: CameraConfig, evidence_key: bytes) -> None:
        self.config = config
        self.camera = camera
        topics = Topics(config.mqtt.topic_prefix)
        self.events_topic, self.status_topic = topics.camera_events(camera.key), topics.camera_status(camera.key)
        self.requests_topic = topics.camera_requests(camera.key)
        self.stop = threading.Event()
        self.store = EvidenceStore(config.path(config.evidence.dir), evidence_key)
        self.ring = RingBuffer(camera.buffer_s)
        self.detector: MotionDetector | None = None
        self.capture: Capture | None = None
        self.tamper: TamperDetector | None = None
        self.stream = Status("connecting", "")
        """The capture's last status, published with the tamper state."""
        self.requests: queue.Queue[c.EvidenceRequest | c.FaceRequest | c.PeopleRequest] = queue.Queue()
        self.pending: list[_Pending] = []
        self.saving: queue.Queue[_Pending | None] = queue.Queue()
        self.answering: queue.Queue[_Pending | None] = queue.Queue()
        """Face and people requests: their own thread, so a door held for the answer never waits behind alarm clips."""
        self.fps = camera.max_fps
        self.frames = 0
        self._seq = 0
        self._episode_start: dict[str, float] = {}
        self.client = site_client(config, f"badge-bridge-camera-{camera.key}", role=CAMERA, key=camera.key, will=Will(
            self.status_topic, c.CameraStatus(online=False).model_dump_json(exclude_none=True)))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    # --- MQTT ----------------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object, reason: mqtt.ReasonCode,
                    _props: object) -> None:
        if not reason.is_failure:
            client.subscribe(self.requests_topic, qos=1)

    def _on_message(self, _client: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        try:
            request = c.camera_request.validate_json(msg.payload)
        except ValidationError as exc:
            log.warning("camera %s: refused a request: %s", self.camera.key, exc.errors()[0]["msg"])
            return
        self.requests.put(request)

    def _publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def _next_id(self, what: str) -> str:
        self._seq += 1
        return f"{what}-{self.camera.key}-{int(time.time() * 1000)}-{self._seq}"[:64]

    def _status(self, status: Status) -> None:
        log.info("camera %s: %s %s", self.camera.key, status.state, status.reason)
        if status.fps:
            self.fps = min(status.fps, self.camera.max_fps)
        self.stream = status
        self._publish_status()
        if status.state != "online":
            self.detector = None  # a new stream may have a new size; the background is stale anyway

    def _publish_status(self) -> None:
        """The stream's state, and whether its picture can be trusted (the reason says why not)."""
        status, detector = self.stream, self.tamper
        tamper, reason = (detector.kind, detector.reason) if detector and detector.kind else (None, status.reason)
        message = c.CameraStatus(online=status.state == "online", ts=datetime.now(UTC), state=status.state,
                                 tamper=tamper, reason=reason[:500], fps=status.fps, width=status.width,
                                 height=status.height)
        self._publish(self.status_topic, message.model_dump_json(exclude_none=True), retain=True)

    # --- the loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        self.client.connect_async(self.config.mqtt.host, self.config.mqtt.port, keepalive=30)
        self.client.loop_start()
        workers = [threading.Thread(target=self._serve_forever, args=(q,), name=f"{what}-{self.camera.key}", daemon=True)
                   for q, what in ((self.saving, "evidence"), (self.answering, "faces"))]
        for worker in workers:
            worker.start()
        capture = self.capture = Capture(self.camera.url, base_dir=self.config.base_dir, loop=self.camera.loop, pace=True,
                          on_status=self._status, stop=self.stop)
        min_gap = 1.0 / self.camera.max_fps
        last = 0.0
        try:
            for frame, t in capture.frames():
                if t - last < min_gap * 0.9:
                    continue  # a faster stream is thinned to max_fps
                last = t
                self.process(frame, t)
        finally:
            capture.close()
            for q, worker in zip((self.saving, self.answering), workers, strict=True):
                q.put(None)
                worker.join(10)
            self._publish(self.status_topic, c.CameraStatus(online=False, ts=datetime.now(UTC), state="stopped",
                                                   reason="worker stopped").model_dump_json(exclude_none=True),
                          retain=True)
            self.client.loop_stop()
            self.client.disconnect()

    def process(self, frame: np.ndarray, t: float) -> None:
        """One frame: into the ring buffer, through the detector, and release evidence now due."""
        self.frames += 1
        self.ring.append(frame, t)
        if self.camera.tamper:
            self._check_tamper(frame, t)
        if self.tamper is not None and self.tamper.kind:
            # Motion in a covered or turned picture means nothing (the bridge holds the doors blind); the
            # background is stale once it is sound again, so the detector starts afresh then.
            self.detector = None
        else:
            self._detect_motion(frame, t)
        while not self.requests.empty():
            request = self.requests.get_nowait()
            self.pending.append(_Pending(request, request.at.timestamp() + request.after_s))
        if len(self.pending) > MAX_PENDING:
            for dropped in self.pending[:-MAX_PENDING]:
                self._refuse(dropped.request, "too many requests at once; this one was dropped")
            self.pending = self.pending[-MAX_PENDING:]
        due = [p for p in self.pending if p.due <= t]
        if due:
            self.pending = [p for p in self.pending if p.due > t]
            for p in due:
                (self.saving if isinstance(p.request, c.EvidenceRequest) else self.answering).put(p)

    def _detect_motion(self, frame: np.ndarray, t: float) -> None:
        if self.detector is None:
            self.detector = self._detector(frame)
        try:
            changes = self.detector.process(frame, t)
        except ValueError as exc:  # the wall clock stepped back, or the stream changed size mid-way
            log.warning("camera %s: motion detector restarted: %s", self.camera.key, exc)
            self.detector = None
            changes = []
        for change in changes:
            self._publish(self.events_topic, self._motion(change).model_dump_json(exclude_none=True))

    def _check_tamper(self, frame: np.ndarray, t: float) -> None:
        """A covered, defocused, turned, frozen or dark picture is published in the status (retained). A new
        stream size is learned afresh; a file played back is never frozen (its still stretches are content)."""
        if self.tamper is None or frame.shape[:2] != (self.tamper.height, self.tamper.width):
            live = parse_source(self.camera.url, self.config.base_dir).kind != "file"
            self.tamper = TamperDetector(frame.shape[1], frame.shape[0], TamperSettings(frozen=live))
        try:
            change = self.tamper.process(frame, t)
        except ValueError as exc:  # the wall clock stepped back
            log.warning("camera %s: tamper check restarted: %s", self.camera.key, exc)
            self.tamper = None
            return
        if change is not None:
            log.warning("camera %s: tamper %s: %s", self.camera.key, change.kind or "cleared", change.reason)
            self._publish_status()

    def _detector(self, frame: np.ndarray) -> MotionDetector:
        height, width = frame.shape[:2]
        zones = [Zone(z.door, tuple(z.polygon)) for z in self.camera.zones]
        zoned = {z.door for z in self.camera.zones}
        zones += [Zone(door, ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))) for door in self.camera.doors
                  if door not in zoned]
        settings = MotionSettings() if self.camera.min_area is None else MotionSettings(min_area=self.camera.min_area)
        masks = [tuple(m) for m in self.camera.masks]
        return MotionDetector(width, height, self.fps, zones or [Zone(c.WHOLE_FRAME, ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))],
                              masks, settings, people=PeopleDetector())  # people, not blobs, count as objects

    def _motion(self, change: ZoneChange) -> c.Motion:
        ts = _dt(change.t)
        return c.Motion(id=self._next_id(f"m{change.state[0]}"), ts=ts, type="motion", zone=change.zone,
                        state=change.state, started=min(_dt(self._started(change)), ts),
                        boxes=[(int(x), int(y), int(w), int(h)) for x, y, w, h in change.boxes][:64],
                        area=float(min(max(change.area, 0.0), 1.0)), objects=change.objects,
                        peak_objects=change.peak_objects, still=change.still, absorbed=change.absorbed)

    def _started(self, change: ZoneChange) -> float:
        """Episodes are keyed by their start, which the detector reports on start; remember it per zone."""
        if change.state == "start":
            self._episode_start[change.zone] = change.t
        return self._episode_start.get(change.zone, change.t)

    # --- evidence ------------------------------------------------------------------------------------

    def _serve_forever(self, requests: queue.Queue[_Pending | None]) -> None:
        while (p := requests.get()) is not None:
            try:
                if isinstance(p.request, c.FaceRequest):
                    self._faces(p.request)
                elif isinstance(p.request, c.PeopleRequest):
                    self._people(p.request)
                else:
                    self._save(p.request)
            except Exception as exc:  # a failed clip must not stop the next one
                log.exception("camera %s: answering %s for %s failed", self.camera.key, p.request.type, p.request.event)
                self._refuse(p.request, f"failed: {exc}"[:500])

    def _refuse(self, request: c.EvidenceRequest | c.FaceRequest | c.PeopleRequest, reason: str) -> None:
        if isinstance(request, c.FaceRequest):
            answer: c.EvidenceSaved | c.FacesSeen = c.FacesSeen(id=self._next_id("f"), ts=datetime.now(UTC),
                                                                 type="faces", event=request.event, frames=0,
                                                                 error=reason)
            self._publish(self.events_topic, answer.model_dump_json(exclude_none=True))
        elif isinstance(request, c.PeopleRequest):
            self._publish(self.events_topic, c.PeopleCounted(id=self._next_id("p"), ts=datetime.now(UTC), type="people",
                                                             event=request.event, frames=0, people=0,
                                                             error=reason).model_dump_json(exclude_none=True))
        else:
            self._answer(request, [], reason)

    def _faces(self, request: c.FaceRequest) -> None:
        """The faces in the frames around the badge; the bridge compares them with the enrolled ones."""
        from camera.faces import Window, decided, faces_in_frames  # dlib loads only in workers that verify faces

        at = request.at.timestamp()
        frames = self.ring.window(at - request.before_s, at + request.after_s)
        # Stop once the frames settle it (two faces, or one face twice): encoding a face costs ~75 ms here.
        seen = faces_in_frames(frames, stop_when=decided()) if frames else Window()
        liveness = None
        if request.liveness and frames:
            from camera.liveness import Settings, assess
            liveness = assess(frames, [(f.t, f.box) for found in seen for f in found],
                              Settings(threshold=self.config.faces.liveness_threshold))
        faces = [c.SeenFace(frame=i, t=_dt(face.t), box=tuple(int(v) for v in face.box),  # type: ignore[arg-type]
                            encoding=[round(float(v), 5) for v in face.encoding])
                 for i, frame_faces in enumerate(seen) for face in frame_faces][:8]
        answer = c.FacesSeen(id=self._next_id("f"), ts=datetime.now(UTC), type="faces", event=request.event,
                             frames=len(seen), faces=faces, people=PeopleDetector().most(frames), liveness=liveness,
                             error=seen.turned_away if frames else "no frames around the badge in the buffer")
        self._publish(self.events_topic, answer.model_dump_json(exclude_none=True))

    def _people(self, request: c.PeopleRequest) -> None:
        """The people inside a mantrap around a badge at its inner door (the whole frame is the region)."""
        at = request.at.timestamp()
        frames = self.ring.window(at - request.before_s, at + request.after_s)
        answer = c.PeopleCounted(id=self._next_id("p"), ts=datetime.now(UTC), type="people", event=request.event,
                                 frames=len(frames), people=min(PeopleDetector().most(frames), 100) if frames else 0,
                                 error=None if frames else "no frames around the badge in the buffer")
        self._publish(self.events_topic, answer.model_dump_json(exclude_none=True))

    def _save(self, request: c.EvidenceRequest) -> None:
        at = request.at.timestamp()
        nearest = self.ring.nearest(at)
        if nearest is None or abs(nearest[0] - at) > max(2.0, request.before_s):
            span = self.ring.span
            have = f"{_dt(span[0]).isoformat()} to {_dt(span[1]).isoformat()}" if span else "nothing"
            self._answer(request, [], f"no frames near {request.at.isoformat()} in the buffer (it holds {have})")
            return
        t, frame = nearest
        jpeg = encode_snapshot(frame)
        items = [c.EvidenceItem(kind="snapshot", sha256=self.store.put(jpeg, "image/jpeg"), media_type="image/jpeg",
                                bytes=len(jpeg), frames=1, start=_dt(t), end=_dt(t))]
        if request.clip:
            frames = self.ring.window(at - request.before_s, at + request.after_s)
            if frames:
                clip = encode_clip(frames, self._clip_fps())
                items.append(c.EvidenceItem(kind="clip", sha256=self.store.put(clip, CLIP_MEDIA_TYPE),
                                            media_type=CLIP_MEDIA_TYPE, bytes=len(clip), frames=len(frames),
                                            start=_dt(frames[0][0]), end=_dt(frames[-1][0])))
        self._answer(request, items, None)

    def _clip_fps(self) -> float:
        """The rate frames were kept at: the stream's measured rate (an MJPEG server's claim is often
        wrong), thinned to max_fps."""
        measured = self.capture.fps if self.capture is not None else None
        return min(measured or self.fps, self.camera.max_fps)

    def _answer(self, request: c.EvidenceRequest, items: list[c.EvidenceItem], error: str | None) -> None:
        answer = c.EvidenceSaved(id=self._next_id("e"), ts=datetime.now(UTC), type="evidence", event=request.event,
                                 items=items, error=error)
        self._publish(self.events_topic, answer.model_dump_json(exclude_none=True))


def run_worker(site_file: str, camera_key: str) -> None:
    """Process entry point (spawned by ``camera.supervisor``): load the site, run until SIGTERM."""
    import signal

    from badge_bridge import logs
    from badge_bridge.config import load_config
    from badge_bridge.keys import KeyStore

    logs.setup("json", logging.INFO)
    cv2.setNumThreads(1)  # one process per camera: processes, not OpenCV threads, share the cores
    config = load_config(site_file)
    camera = next(cam for cam in config.cameras if cam.key == camera_key)
    worker = CameraWorker(config, camera, KeyStore(config.keys_dir()).evidence_key())
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
    worker.run()
