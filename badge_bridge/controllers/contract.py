"""The versioned MQTT contract between the bridge, IP door controllers and consoles (docs/mqtt.md).

Every message is JSON with ``v`` (contract version), ``id`` (unique per sender; a redelivery repeats it) and
``ts`` (sender's time, ISO 8601 with a zone). The pydantic models here are the contract: the JSON Schemas in
docs/schemas/ are generated from them (``badge-bridge mqtt schemas``), and a test keeps the two equal.

Topics, under the site's ``mqtt.topic_prefix`` (default ``badge-bridge/v1``)::

    controllers/<controller>/events     controller -> bridge, QoS 1   ControllerEvent
    controllers/<controller>/status     controller -> all, retained    ControllerStatus (also the last will)
    controllers/<controller>/commands   bridge -> controller, QoS 1    Command
    controllers/<controller>/sync       bridge -> controller, retained CredentialSync
    controllers/<controller>/receipts   bridge -> controller, QoS 1    Receipt (ids committed to the audit log)
    bridge/status/<partition>/<instance> bridge -> all, retained       BridgeStatus (also the last will)
    bridge/events                       bridge -> consoles, QoS 0      PublishedEvents (one per commit)
    bridge/doors/<door>                 bridge -> consoles, retained   DoorState
    console/commands                    console -> bridge, QoS 1       ConsoleCommand
    cameras/<camera>/events             camera -> bridge, QoS 1        CameraEvent (motion, evidence saved)
    cameras/<camera>/status             camera -> all, retained        CameraStatus (also the last will)
    cameras/<camera>/requests           bridge -> camera, QoS 1        EvidenceRequest, FaceRequest, PeopleRequest
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationInfo,
    model_validator,
)

VERSION: Final = 1
MAX_PAYLOAD = 16 * 1024
"""Inbound messages larger than this are refused before parsing."""



def _version(value: object) -> object:
    """``true`` and ``1.0`` equal 1 in Python; the contract wants the integer."""
    if type(value) is not int:
        raise ValueError(f"the contract version must be the integer {VERSION}")
    return value


ISO_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})$")


def _zoned(value: object) -> object:
    """Only ISO 8601 with its zone: a bare number (or numeric text) would be read as Unix seconds in UTC."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not ISO_TIME.match(value):
        raise ValueError("a time is an ISO 8601 string with its zone, e.g. 2026-03-01T12:00:00Z")
    return value


def _v_required(schema: dict[str, Any]) -> None:
    schema["required"] = ["v", *schema.get("required", [])]


Version = Annotated[Literal[1], BeforeValidator(_version)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_zoned), Strict(False)]
"""Lax after ``_zoned``: pydantic's strict mode would not parse the text it let through."""
Key = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
MessageId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,63}$")]
CardFormat = Literal["wiegand26", "wiegand34", "wiegand37", "ascii"]


class Versioned(BaseModel):
    """Strict: a number where the schema says string (or a string for a number) is refused, not coerced. A
    message must name its contract version; the bridge's own, built in Python, get it by default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False, json_schema_extra=_v_required)
    v: Version = VERSION

    @model_validator(mode="after")
    def _v_given(self, info: ValidationInfo) -> Versioned:
        if info.mode == "json" and "v" not in self.model_fields_set:
            raise ValueError(f"v: missing: every message names the contract version ({VERSION})")
        return self


class Message(Versioned):
    id: MessageId
    ts: Timestamp


# --- controller -> bridge ----------------------------------------------------------------------------


class Card(BaseModel):
    """A card read, either decoded by the controller or as the raw Wiegand bits (the bridge decodes them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    format: CardFormat | None = None
    number: str | None = Field(None, pattern=r"^[\x21-\x7e]{1,64}$")
    """ASCII only, no spaces: "12:1001" must not also arrive as "١٢:١٠٠١" or "12:1001 "."""
    raw_hex: str | None = Field(None, pattern=r"^(?:[0-9a-fA-F]{2}){1,8}$")
    bits: int | None = Field(None, ge=26, le=64)

    @model_validator(mode="after")
    def _one_form(self) -> Card:
        decoded = self.format is not None and self.number is not None
        raw = self.raw_hex is not None and self.bits is not None
        if decoded == raw:
            raise ValueError("give either format and number, or raw_hex and bits")
        return self


class Biometric(BaseModel):
    """The reader's own match result; the template never leaves the reader."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    match: bool
    ref: str | None = Field(None, max_length=128)
    """The enrolled identity the reader matched, compared with the credential's biometric reference."""
    score: float | None = Field(None, ge=0, le=1)


class OfflineDecision(BaseModel):
    """A decision the controller made alone while the bridge was unreachable, reported afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    granted: bool
    reason: str = Field(max_length=64)
    sync_version: str | None = Field(None, max_length=64)


class CredentialPresented(Message):
    type: Literal["credential"]
    reader: Key
    card: Card
    pin: str | None = Field(None, pattern=r"^\d{4,8}$")
    """Checked against its keyed hash and dropped: never logged, never stored."""
    biometric: Biometric | None = None
    offline: OfflineDecision | None = None


class DoorContact(Message):
    type: Literal["door"]
    door: Key
    state: Literal["opened", "closed"]


class RequestToExit(Message):
    type: Literal["rex"]
    door: Key


class Tamper(Message):
    type: Literal["tamper"]
    state: Literal["active", "cleared"]
    reader: Key | None = None


class Heartbeat(Message):
    type: Literal["heartbeat"]
    uptime_s: float = Field(ge=0)
    sync_version: str | None = Field(None, max_length=64)


ControllerEvent = Annotated[
    CredentialPresented | DoorContact | RequestToExit | Tamper | Heartbeat, Field(discriminator="type")
]
controller_event = TypeAdapter(ControllerEvent)
EVENT_TYPES = frozenset({"credential", "door", "rex", "tamper", "heartbeat"})
"""The discriminator values, which pydantic puts in front of a field path in its errors."""


class ControllerStatus(Versioned):
    """Retained. The controller's last will publishes ``{"v":1,"online":false}``, so ``ts`` is optional."""

    online: bool
    ts: Timestamp | None = None
    firmware: str | None = Field(None, max_length=64)


# --- bridge -> controller ----------------------------------------------------------------------------


class ControllerCommand(Message):
    """A command to a controller. ``mac``: HMAC-SHA256 under the controller's sync key over the RFC 8785 bytes of
    the message without ``mac`` (docs/mqtt.md, "Command MAC"); the bridge always sends one, and a controller
    that checks it acts on no command without a valid one."""

    mac: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class Grant(ControllerCommand):
    type: Literal["grant"]
    door: Key
    reader: Key | None = None
    request: str
    """The id of the credential event this answers."""
    open_time_s: float = Field(gt=0, le=60)


class Deny(ControllerCommand):
    type: Literal["deny"]
    door: Key
    reader: Key | None = None
    request: str
    reason: str
    feedback: Literal["red", "beep", "none"] = "red"


class Unlock(ControllerCommand):
    """Hold the door unlocked (``duration_s`` None: until a lock command) or release it for a moment."""

    type: Literal["unlock"]
    door: Key
    duration_s: float | None = Field(None, gt=0, le=86_400)
    by: str | None = None
    reason: str | None = None


class Lock(ControllerCommand):
    type: Literal["lock"]
    door: Key


class Lockdown(ControllerCommand):
    """Lock every listed door and refuse everyone but exempt responders until lifted."""

    type: Literal["lockdown"]
    active: bool
    doors: list[Key]


Command = Annotated[Grant | Deny | Unlock | Lock | Lockdown, Field(discriminator="type")]
command = TypeAdapter(Command)


class SyncSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    tz: str
    intervals: list[tuple[int, int, int]]
    """(weekday 0=Monday, start minute, end minute), end exclusive."""
    holidays: list[date] = []


class SyncDoor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    factors: list[Literal["card", "pin", "biometric"]]
    two_person: bool = False
    two_person_window_s: float = 30.0
    open_time_s: float = 5.0


class SyncEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    card: str = Field(pattern=r"^[0-9a-f]{64}$")
    """HMAC-SHA256, under the controller's sync key, of ``format:number`` (the card itself is not sent)."""
    doors: dict[str, list[str]]
    """Door key -> schedule keys under which this credential opens it."""
    biometric_ref: str | None = None
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    lockdown_exempt: bool = False


class CredentialSync(Message):
    """Retained: what a controller needs to decide alone for its own doors while the bridge is away.

    Offline a controller enforces status (only active credentials are listed), validity, schedules,
    biometric match and the two-person rule; it cannot check a PIN (only the bridge holds the PIN key), so
    a door that requires a PIN stays shut offline, and it cannot enforce anti-passback (no site-wide view).
    """

    type: Literal["sync"]
    version: str
    """Digest of the content: a controller reports it in heartbeats and offline decisions."""
    key_id: str
    """Which sync key the card hashes are under (the key is provisioned on the controller)."""
    doors: dict[str, SyncDoor]
    schedules: dict[str, SyncSchedule]
    entries: list[SyncEntry]
    mac: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    """As on commands (docs/mqtt.md, "Command MAC"): whoever can publish on the retained sync topic still
    cannot add a card to a controller's offline list, nor bring back an older list (``ts`` only grows)."""


RECEIPT_MAX_IDS = 200
"""Ids per receipt: 200 ids of 64 characters stay under MAX_PAYLOAD, which firmware may apply too."""


class Receipt(Message):
    """End-to-end receipt (docs/mqtt.md, "Receipts"): these events of the controller are committed to the audit
    log, so it may forget them. A controller keeps every event but heartbeats until its receipt comes, and
    publishes it again, with the same id and bytes, after a timeout and after reconnecting: the broker
    acknowledges a publish before its disk has it, so its QoS 1 acknowledgement is no proof of delivery.
    Sealed with a MAC like commands: a forged receipt would make a controller drop events unlogged."""

    type: Literal["receipt"]
    ids: list[MessageId] = Field(min_length=1, max_length=RECEIPT_MAX_IDS)
    mac: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


# --- bridge -> consoles ------------------------------------------------------------------------------


class BridgeStatus(Versioned):
    """Retained, one per bridge process (``bridge/status/<partition>/<instance>``), also its last will. A
    partition is served while any of its instances says ``online``; only the ``active`` one decides."""

    online: bool
    instance: str
    partition: str | None = None
    role: Literal["active", "standby"] | None = None
    """None in the last will: the broker sends it when the process is gone, whatever its role was."""
    ts: Timestamp | None = None


class PublishedEvent(Message):
    """An audited event as consoles see it (the audit log's own fields)."""

    id: str = Field(max_length=128)
    kind: str
    source: str
    door: str | None = None
    subject: dict[str, Any] = {}
    detail: dict[str, Any] = {}


class PublishedEvents(Versioned):
    """The events of one audit commit, in log order: one message per commit, not per event, because the
    bridge's network thread is what limits its ingest rate."""

    chain: str
    events: list[PublishedEvent]


class DoorState(Versioned):
    door: Key
    ts: Timestamp
    contact: Literal["open", "closed", "unknown"]
    lock: Literal["locked", "unlocked", "lockdown"]
    alarms: list[str]
    """Active door alarms: door.forced, door.held_open."""
    online: bool


# --- console -> bridge -------------------------------------------------------------------------------


ConsoleAction = Literal["unlock", "lock", "lockdown", "lift_lockdown"]


class ConsoleCommand(Message):
    """An operator's action, carried to the bridge and audited there with the user who asked. The bridge acts
    only on one signed by the console that names an enabled user with the role for it and an open session of
    theirs; anything else is dead-lettered and raises ``console.forged_command``."""

    type: ConsoleAction
    user: str = Field(max_length=64)
    reason: str = Field(min_length=1, max_length=500)
    door: Key | None = None
    """For unlock and lock; for lockdown, None means the whole site."""
    area: Key | None = None
    """For lockdown of one area's doors."""
    duration_s: float | None = Field(None, gt=0, le=86_400)
    override: Literal[True] | None = None
    """An emergency override of an unlock: it opens a door although another door of its interlock (a
    mantrap) is open or unlocked. Audited with ``reason``; absent otherwise (docs/workflows.md)."""
    session: str | None = Field(None, max_length=64)
    """The operator's console session: the hex SHA-256 of its token (``console_session.token_sha256``)."""
    signature: str | None = Field(None, max_length=256)
    """Ed25519 under the console command key, hex, over ``console_signing.signed_bytes`` (docs/mqtt.md,
    "Console command signatures"). Optional here so that an unsigned command is refused as forged."""


# --- cameras (docs/cameras.md) -----------------------------------------------------------------------

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Box = tuple[Annotated[int, Field(ge=0, le=16384)], Annotated[int, Field(ge=0, le=16384)],
            Annotated[int, Field(ge=0, le=16384)], Annotated[int, Field(ge=0, le=16384)]]


WHOLE_FRAME = "frame"
"""The zone a camera with no door reports its motion in."""


class Motion(Message):
    """Motion and presence in one door zone of a camera. ``ts`` is when the change happened on the camera's
    clock: the first moving frame for ``start``, the last frame with someone present for ``end``; ``update``
    says more objects are in the zone, or that they stopped (``still``) or move again. The episode lasts
    while anyone is present, moving or not."""

    type: Literal["motion"]
    zone: Key
    """The door the zone watches (WHOLE_FRAME for a camera that watches no door)."""
    state: Literal["start", "update", "end"]
    started: Timestamp
    """The episode's first moving frame: start, update and end of one episode share it."""
    boxes: list[Box] = Field(default=[], max_length=64)
    """x, y, width, height in pixels of the camera's frame."""
    area: float = Field(ge=0, le=1)
    """Fraction of the zone in motion (for end: the episode's peak)."""
    objects: int = Field(ge=0, le=1000)
    """Objects in the zone in the frame at ``ts``: moving, or present and standing still."""
    peak_objects: int = Field(ge=0, le=1000)
    still: int = Field(0, ge=0, le=1000)
    """On an update: how many of the objects stand still (nothing in the zone has moved for a couple of
    seconds); an update with 0 says they move again. A still person keeps the episode open: present."""
    absorbed: bool = False
    """On an end: the zone stood still so long (minutes) that what stood there was learned into the
    background (a bag left behind?); it ended by time, not because anyone was seen leaving."""


class EvidenceItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    kind: Literal["snapshot", "clip"]
    sha256: Sha256
    """Of the plain content; the file is stored encrypted under this name in the evidence store."""
    media_type: Literal["image/jpeg", "video/x-msvideo", "video/webm"]
    bytes: int = Field(ge=1)
    frames: int = Field(ge=1)
    start: Timestamp
    end: Timestamp


class EvidenceSaved(Message):
    """The answer to an EvidenceRequest: what was stored, or why nothing could be."""

    type: Literal["evidence"]
    event: str = Field(max_length=128)
    items: list[EvidenceItem] = Field(default=[], max_length=4)
    error: str | None = Field(None, max_length=500)


class SeenFace(BaseModel):
    """A face the camera saw: its 128-number encoding goes to the bridge, which holds the enrolled ones and
    compares; it is never stored or logged (the audit log keeps distances only)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    frame: int = Field(ge=0, le=100)
    """Which examined frame (faces of one frame are different people)."""
    t: Timestamp
    box: Box
    """top, right, bottom, left in pixels of the camera's frame."""
    encoding: list[Annotated[float, Field(ge=-4, le=4)]] = Field(min_length=128, max_length=128)


class Liveness(BaseModel):
    """Whether the face the camera saw is a live person or a presentation attack (a print, a screen)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    verdict: Literal["live", "spoof", "unknown"]
    """``unknown``: too few usable frames of the face to tell (the bridge treats it as not verified)."""
    score: float = Field(ge=0, le=1)
    """How strongly the cues say attack (0 live, 1 attack); ``spoof`` at or above the worker's threshold."""
    cues: dict[Annotated[str, Field(max_length=32)], Annotated[float, Field(ge=-1e6, le=1e6)]] = Field(
        default={}, max_length=16)
    """Each cue's measurement (e.g. planarity, blink, moire), for the audit log and tuning."""
    reason: str = Field("", max_length=200)


class FacesSeen(Message):
    """The answer to a FaceRequest: the faces in the frames around the badge."""

    type: Literal["faces"]
    event: str = Field(max_length=128)
    frames: int = Field(ge=0, le=100)
    """Frames examined."""
    faces: list[SeenFace] = Field(default=[], max_length=8)
    people: int | None = Field(None, ge=0, le=100)
    """Most people the person detector counted in one frame of the window (faces turned away included)."""
    liveness: Liveness | None = None
    """Asked for by ``FaceRequest.liveness``."""
    error: str | None = Field(None, max_length=500)


class PeopleCounted(Message):
    """The answer to a PeopleRequest: how many people the camera saw inside a mantrap around the badge."""

    type: Literal["people"]
    event: str = Field(max_length=128)
    frames: int = Field(ge=0, le=1000)
    """Frames examined (none: the buffer had no frames around the moment, and ``people`` says nothing)."""
    people: int = Field(ge=0, le=100)
    """Most people the person detector confirmed in one frame of the window."""
    error: str | None = Field(None, max_length=500)


CameraEvent = Annotated[Motion | EvidenceSaved | FacesSeen | PeopleCounted, Field(discriminator="type")]
camera_event = TypeAdapter(CameraEvent)


class CameraStatus(Versioned):
    """Retained. The worker's last will publishes ``{"v":1,"online":false}``, so the rest is optional."""

    online: bool
    ts: Timestamp | None = None
    state: Literal["connecting", "online", "reconnecting", "error", "ended", "stopped"] | None = None
    tamper: Literal["covered", "defocused", "moved", "frozen", "dark"] | None = None
    """The stream is up but its picture cannot be trusted (``reason`` says why); None: a sound picture."""
    reason: str = Field("", max_length=500)
    fps: float | None = Field(None, ge=0, le=1000)
    width: int | None = Field(None, ge=1, le=16384)
    height: int | None = Field(None, ge=1, le=16384)


class AroundEvent(Message):
    """A request about the frames around the moment ``at`` of an audited event at a door."""

    event: str = Field(max_length=128)
    """The audited event the answer belongs to."""
    door: Key
    at: Timestamp


class EvidenceRequest(AroundEvent):
    """Save what the camera saw around ``at``: a snapshot, and a clip when ``clip`` is set (alarms)."""

    type: Literal["evidence_request"]
    before_s: float = Field(ge=0, le=60)
    after_s: float = Field(ge=0, le=60)
    clip: bool = False


class FaceRequest(AroundEvent):
    """Look for faces around ``at`` (a badge at the door) and answer with FacesSeen."""

    type: Literal["face_request"]
    before_s: float = Field(ge=0, le=10)
    after_s: float = Field(ge=0, le=10)
    liveness: bool = False
    """Also judge whether the face is live (a face-required door): the answer carries ``liveness``."""


class PeopleRequest(AroundEvent):
    """Count the people inside a mantrap around ``at`` (a badge at its inner door) and answer with
    PeopleCounted; ``door`` is the inner door, which the camera watches."""

    type: Literal["people_request"]
    before_s: float = Field(ge=0, le=10)
    after_s: float = Field(ge=0, le=10)


CameraRequest = Annotated[EvidenceRequest | FaceRequest | PeopleRequest, Field(discriminator="type")]
camera_request = TypeAdapter(CameraRequest)


SCHEMAS: dict[str, Any] = {
    "controller-event": controller_event,
    "controller-status": ControllerStatus,
    "command": command,
    "credential-sync": CredentialSync,
    "receipt": Receipt,
    "bridge-status": BridgeStatus,
    "published-events": PublishedEvents,
    "door-state": DoorState,
    "console-command": ConsoleCommand,
    "camera-event": camera_event,
    "camera-status": CameraStatus,
    "evidence-request": EvidenceRequest,
    "face-request": FaceRequest,
    "people-request": PeopleRequest,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each message, by file stem."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.json_schema() if isinstance(model, TypeAdapter) else model.model_json_schema()
        out[name] = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                     "$id": f"badge-bridge/v{VERSION}/{name}.schema.json", **schema}
    return out
