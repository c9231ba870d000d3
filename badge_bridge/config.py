"""The site file: one TOML document describing the installation, loaded into a typed, validated config.

Errors name the field path (``doors[2].area_in``) and what was expected, because the person reading
them is a facilities engineer with the file open, not a Python developer.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from badge_bridge.floor_plan import DrawingError, ViewBox, read_drawing, relative_path

KEY = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DATABASE_URL_ENV = "BADGE_BRIDGE_DATABASE_URL"
DATABASE_OWNER_URL_ENV = "BADGE_BRIDGE_DATABASE_OWNER_URL"
MQTT_HOST_ENV, MQTT_PORT_ENV = "BADGE_BRIDGE_MQTT_HOST", "BADGE_BRIDGE_MQTT_PORT"
"""Override the broker of the site file (a standby broker, the demo's own)."""


class ConfigError(Exception):
    """A site file that cannot be used; the message is meant for the operator as-is."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name such as 'Europe/Berlin')") from None
    return value


class SiteSection(_Model):
    name: str
    timezone: str = "UTC"
    instance: KEY = "bridge-1"
    """The default partition's name (controllers and cameras that name no ``partition``), which is also the
    name of its audit chain: one chain per partition, written by whichever of its bridges holds the lease."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _check_timezone(value)


class DatabaseSection(_Model):
    url: str = "sqlite:///var/badge-bridge.db"
    owner_url: str | None = None
    """PostgreSQL: the role that owns the tables, for `init` (migrations, grants) and `audit prune`; the
    bridge's own role on ``url`` may then only INSERT and SELECT the audit tables (badge_bridge/grants.py)."""


class KeysSection(_Model):
    dir: str = "var/keys"
    """Holds the audit signing key and the PIN pepper; keep it off the database's disks and backups."""


class WitnessRef(_Model):
    """A witness the bridge publishes its signed tree heads to (``badge-bridge witness serve`` elsewhere)."""

    url: str = Field(pattern=r"^https?://\S+$", max_length=500)
    public_key: str
    """The witness's public key file (hex), relative to the site file: its countersignatures are checked."""


class AuditSection(_Model):
    witnesses: list[WitnessRef] = []
    publish_seconds: float = Field(10.0, gt=0, le=10)
    """How often each chain's signed tree head goes to the witnesses (at most 10 s: what changes after the
    last countersigned head is what a database administrator could still cut unseen)."""
    batch_max: int = Field(1000, ge=1, le=100_000)
    queue_max: int = Field(100_000, ge=100)
    state_check_seconds: float = Field(60.0, gt=0)
    """How often the bridge compares the access tables with the log's admin entries (audit.state_mismatch)."""
    retention_days: int = Field(366, ge=90)
    """`audit prune` keeps at least this many days (whole sealed days; PCI DSS asks for three months of
    access records, many auditors a year)."""


class MqttSection(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    topic_prefix: str = "badge-bridge/v1"
    client_id: str | None = None
    """Default: badge-bridge-<partition> (the default partition is ``site.instance``); set, with several
    partitions, each partition's is ``<client_id>-<partition>``. The broker keeps the persistent session under
    this id, and the partition's standby resumes it."""
    session_expiry_s: int = Field(7 * 86_400, ge=60)
    """How long the broker queues events for a bridge that is down."""
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_max_s: int = Field(10, ge=1, le=300)
    brokers: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\[\]-]{1,200}:\d{1,5}$")]] = []
    """More brokers (``host:port``), tried in order after ``host``:``port`` when it cannot be reached: the
    nodes of a broker cluster, or a standby broker. Every client of the site (bridges, consoles, camera
    workers, simulated controllers) fails over along the same list."""

    def endpoints(self) -> list[tuple[str, int]]:
        """Every broker to try, in order: ``host``:``port`` first."""
        out = [(self.host, self.port)]
        for item in self.brokers:
            host, _, port = item.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out


class FailoverSection(_Model):
    """How a partition's standby bridges watch its active one (PostgreSQL only: the lease lives there)."""

    lease_s: float = Field(2.0, ge=0.5, le=60)
    """The active's lease: a standby takes over this long after the active's last renewal. Also the longest
    the doors of a dead active's partition go unanswered, plus the standby's start."""
    renew_s: float = Field(0.4, gt=0, le=20)
    """How often the active renews its lease (well under ``lease_s``: a renewal can be slow)."""
    poll_s: float = Field(0.1, gt=0, le=10)
    """How often a standby tries to take the lease (one short transaction: a standby is on the doors' path
    for up to this long after the lease expires)."""

    @model_validator(mode="after")
    def _renew_inside_lease(self) -> FailoverSection:
        if self.renew_s * 2 > self.lease_s:
            raise ValueError(f"renew_s ({self.renew_s}) must be at most half of lease_s ({self.lease_s}): one slow "
                             "renewal would otherwise hand the doors to a standby")
        return self


class IngestSection(_Model):
    """What the bridge accepts from devices, whatever the protocol."""

    max_future_s: float = Field(30.0, ge=1, le=3600)
    """An event dated further ahead of the bridge's clock is refused (the sender's clock is wrong)."""
    offline_window_s: int = Field(7 * 86_400, ge=60)
    """An event older than this is refused: no controller buffers longer (match mqtt.session_expiry_s)."""
    offline_grace_s: float = Field(10.0, ge=0, le=600)
    """An offline decision dated while the bridge heard its controller online is refused, but for this
    margin at each end (a controller needs a moment to notice that the bridge is gone, or back)."""
    console_max_age_s: float = Field(30.0, ge=1, le=600)
    """A console command older than this is refused as forged: it is acted on now or never."""
    stall_s: float = Field(15.0, gt=0, le=3600)
    """/health turns 503 when events have waited this long with no commit, or a message this long unanswered."""


class MetricsSection(_Model):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    """Prometheus metrics at /metrics and a health check at /health; 0 picks a free port."""


class ConsoleSection(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tls_cert: str | None = None
    """PEM certificate (chain) and key: with both, the console speaks HTTPS only."""
    tls_key: str | None = None
    session_minutes: int = Field(15, ge=1, le=720)
    """Idle time after which an operator must log in again (an open live feed counts as presence)."""
    session_max_hours: int = Field(12, ge=1, le=72)
    """Absolute end of a session, however active: a stolen cookie does not live for ever."""
    login_failures_per_account: int = Field(5, ge=1, le=100)
    """Failed logins for one user name per ``login_window_minutes``; then that name is refused (429)."""
    login_failures_per_address: int = Field(100, ge=1, le=10000)
    """Failed logins from one address per window: generous, a desk shares one address behind NAT or a proxy."""
    login_window_minutes: int = Field(15, ge=1, le=1440)
    trusted_proxies: int = Field(0, ge=0, le=5)
    """Reverse proxies in front of the console whose X-Forwarded-For/-Proto/-Host are believed (0: none;
    the client's address is the socket's, and a forged header changes nothing)."""
    secure_cookies: bool | None = None
    """Send cookies only over HTTPS. Default: on when TLS is configured."""
    workers_threads: int = Field(64, ge=4, le=1024)
    """Threads serving requests; every open live feed holds one."""

    @model_validator(mode="after")
    def _cert_and_key(self) -> ConsoleSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both for HTTPS, or neither")
        return self


class AreaConfig(_Model):
    key: KEY
    name: str = ""
    anti_passback: Literal["none", "soft", "hard"] = "none"
    restricted: bool = False
    """Sensitive space (data hall, cage, NOC): the monthly review lists every entry into it by person."""


class Interval(_Model):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")

    @model_validator(mode="after")
    def _order(self) -> Interval:
        if not (self.start_minute() < self.end_minute() <= 1440):
            raise ValueError(f"start {self.start} must be before end {self.end} (end at most 24:00)")
        return self

    def start_minute(self) -> int:
        return _minutes(self.start)

    def end_minute(self) -> int:
        return _minutes(self.end)


def _minutes(hhmm: str) -> int:
    hours, minutes = (int(p) for p in hhmm.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{hhmm!r} is not a time of day (expected HH:MM, 00:00 to 24:00)")
    return hours * 60 + minutes


class ScheduleConfig(_Model):
    key: KEY
    name: str = ""
    timezone: str | None = None
    """Defaults to the site's time zone."""
    intervals: list[Interval] = Field(min_length=1)
    holidays: list[date] = []

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return value if value is None else _check_timezone(value)


class Correlation(_Model):
    """How door events and camera motion at a door are joined (docs/cameras.md), in seconds."""

    grant_window_s: float = Field(8.0, gt=0, le=120)
    approach_s: float = Field(1.0, ge=0, le=60)
    passage_s: float = Field(4.0, gt=0, le=120)
    skew_s: float = Field(0.3, ge=0, le=30)
    settle_s: float = Field(0.2, ge=0, le=10)
    loitering_s: float = Field(60.0, ge=0, le=3600)
    """Someone present in the door's camera zone this long (moving or standing still) raises door.loitering;
    0 turns it off."""


class FacesSection(_Model):
    tolerance: float = Field(0.6, gt=0, lt=1.5)
    """Largest face distance that counts as the same person: face_recognition's default."""
    strict_tolerance: float = Field(0.5, gt=0, lt=1.5)
    """For doors with ``face_strict``: fewer impostors pass, more genuine people are asked to retry."""
    keep_photos: bool = False
    """Keep enrollment photos (encrypted in the evidence store); off: only the encodings are kept."""
    liveness: Literal["required", "record", "off"] = "required"
    """At ``face = "required"`` doors, whether the face must be live (docs/faces.md, "Liveness"):
    ``required`` denies a spoof and a face whose liveness could not be judged; ``record`` records and alarms
    a spoof but lets the match decide (to measure a site's cameras before enforcing); ``off`` never asks."""
    liveness_threshold: float = Field(0.5, gt=0, le=1)
    """Attack score (camera/liveness.py) at or above which the face is a spoof: lower catches more attacks
    and asks more live people to try again."""


class EvidenceSection(_Model):
    dir: str = "var/evidence"
    """Encrypted snapshots and clips, named by the SHA-256 of their content."""
    before_s: float = Field(3.0, ge=0, le=60)
    after_s: float = Field(3.0, ge=0, le=60)


class DoorConfig(_Model):
    key: KEY
    name: str = ""
    area_in: KEY | None = None
    area_out: KEY | None = None
    open_time_s: float = Field(5.0, gt=0, le=60)
    held_open_limit_s: float = Field(30.0, gt=0, le=3600)
    two_person: bool = False
    two_person_window_s: float = Field(30.0, gt=0, le=600)
    factors: list[Literal["card", "pin", "biometric"]] = ["card"]
    correlation: Correlation = Correlation()
    face: Literal["off", "check", "required"] = "off"
    """At a door with a camera: ``check`` compares the face of whoever badged with the badge holder's after
    the grant (alarm on a mismatch); ``required`` makes the match a factor of the grant itself."""
    face_strict: bool = False
    """Use faces.strict_tolerance here (critical rooms)."""
    face_timeout_s: float = Field(4.0, gt=0, le=30)
    """``required``: deny when no verdict has come in this long after the badge."""

    @field_validator("factors")
    @classmethod
    def _card_first(cls, value: list[str]) -> list[str]:
        if "card" not in value:
            raise ValueError("must include 'card': every request starts from a credential identifier")
        return value


class ControllerConfig(_Model):
    key: KEY
    name: str = ""
    partition: KEY | None = None
    """The partition whose bridges serve this controller (default: ``site.instance``)."""
    kind: Literal["mqtt", "esp-rfid", "osdp"]
    port: str | None = None
    """Serial port of an OSDP bus."""
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 115200
    require_secure: bool = True
    """OSDP: refuse to talk to a reader without secure channel (libosdp's EnforceSecure). Turning it off
    is for a bench, never a building."""
    install_window_s: float = Field(600.0, gt=0, le=86400)
    """OSDP: how long after the bridge starts a reader with ``install_mode`` may take its key over the default
    key (which anyone on the bus could do too); then it is enforced like the others."""
    topic: str | None = Field(None, pattern=r"^[^#+\s]{1,128}$")
    """esp-rfid: the device's MQTT base topic (default: the controller key)."""
    device: str | None = Field(None, max_length=64)
    """esp-rfid: the device's fixed IPv4 address, which its firmware requires in every command (doorip)."""
    silent_after_s: float | None = Field(None, ge=10, le=86_400)
    """Report the controller offline when nothing was heard from it for this long: for a device without an
    MQTT last will, such as esp-rfid in plain mode (then about three heartbeat intervals: esp-rfid's default
    interval is 180 s, so 600)."""

    @model_validator(mode="after")
    def _esp_needs_address(self) -> ControllerConfig:
        if self.kind == "esp-rfid":
            try:
                ipaddress.IPv4Address(self.device or "")
            except ValueError:
                raise ValueError(f"device {self.device!r}: an esp-rfid controller needs its fixed IPv4 address "
                                 "(the firmware obeys only commands naming it)") from None
        return self


class ReaderConfig(_Model):
    key: KEY
    controller: KEY
    door: KEY
    direction: Literal["in", "out"] = "in"
    kind: Literal["card", "keypad", "biometric"] = "card"
    osdp_address: int | None = Field(None, ge=0, le=126)
    output: int = Field(0, ge=0, le=255)
    """OSDP: the reader's output that drives the door strike."""
    contact_input: int | None = Field(0, ge=0, le=255)
    """OSDP: the reader's input wired to the door contact (1 = open); None if not wired."""
    rex_input: int | None = Field(1, ge=0, le=255)
    """OSDP: the reader's input wired to the request-to-exit button; None if not wired."""
    install_mode: bool = False
    """OSDP: let a new reader take its secure-channel key over the default key, once. Turn off afterwards."""


Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
"""(x, y) as fractions of the frame's width and height, so a zone survives a change of resolution."""


class CameraZone(_Model):
    door: KEY
    polygon: list[Point] = Field(min_length=3)
    """The door's approach as the camera sees it."""


class CameraConfig(_Model):
    key: KEY
    name: str = ""
    partition: KEY | None = None
    """The partition whose bridges take this camera's events (default: ``site.instance``); it must be that of
    the doors it watches."""
    url: str
    """``file:path`` (relative to the site file), ``rtsp://``, ``http://`` (MJPEG), or ``device:0``."""
    doors: list[KEY] = []
    zones: list[CameraZone] = []
    """One polygon per door this camera watches; a door listed in ``doors`` without a zone gets the whole
    frame."""
    masks: list[list[Point]] = []
    """Polygons where motion never counts: clocks, screens, blinking lights, trees."""
    loop: bool = False
    """Play a file source again from the start when it ends (the demo's cameras)."""
    max_fps: float = Field(15.0, gt=0, le=60)
    """Frames analysed per second; a faster stream is thinned to this."""
    buffer_s: float = Field(12.0, ge=2, le=120)
    """Seconds of frames the worker keeps in memory for snapshots and clips."""
    min_area: float | None = Field(None, gt=0, lt=1)
    """Smallest moving blob that counts, as a fraction of the frame (default: the detector's)."""
    tamper: bool = True
    """Check the picture for a covered, defocused, turned, frozen or dark lens (docs/cameras.md, Tamper). Off
    only for a camera whose view changes on purpose (a PTZ camera on patrol): its doors are then never held
    blind by a tamper."""


class LevelDoor(_Model):
    door: KEY
    schedule: KEY


class AccessLevelConfig(_Model):
    key: KEY
    name: str = ""
    doors: list[LevelDoor] = Field(min_length=1)


class InterlockConfig(_Model):
    """A mantrap: doors of which at most one may be open or unlocked at a time (docs/workflows.md)."""

    key: KEY
    name: str = Field("", max_length=200)
    doors: list[KEY] = Field(min_length=2, max_length=8)
    """Outer door first, inner door last."""
    wait_s: float = Field(5.0, ge=0, le=30)
    """How long a grant at one door waits for the others to close before it is denied ``interlock_busy``."""
    single_occupancy: bool = False
    """The camera must count exactly the people badged through before the inner (last) door opens."""
    camera: KEY | None = None
    """The camera watching the inside of the mantrap (required with single_occupancy)."""
    occupancy_timeout_s: float = Field(4.0, gt=0, le=30)


class TenantConfig(_Model):
    """A customer with cages: the limits the operator sets on what the customer's own admins may grant."""

    key: KEY
    name: str = Field("", max_length=200)
    areas: list[KEY] = Field(min_length=1)
    """Their cages: a tenant admin sees the events at doors into these areas."""
    levels: list[KEY] = Field(min_length=1)
    """The access levels a tenant admin may give their people (doors x schedules, set by the operator)."""
    max_validity_days: int = Field(90, ge=1, le=3660)
    """No credential or access of theirs runs longer than this from the day it is given."""


class VisitorsSection(_Model):
    """Visitors with escorts (docs/workflows.md)."""

    escort_window_s: float = Field(30.0, gt=0, le=600)
    """How long before or after a visitor's badge an escort's badge at the same door counts."""
    levels: list[KEY] = []
    """The access levels a visitor's badge may be given (where visitors may be taken); empty: any."""
    max_visit_hours: float = Field(24.0, gt=0, le=24 * 31)


Priority = Literal["high", "medium", "low"]

DEFAULT_PRIORITIES: dict[str, Priority] = {
    "door.forced": "high", "door.tailgating": "high", "door.unauthorized_entry": "high", "face.mismatch": "high",
    "face.spoof": "high", "console.forged_command": "high", "camera.tamper": "high", "audit.foreign_entry": "high",
    "access.device_disagrees": "high",
    "door.held_open": "medium", "reader.tamper": "medium", "controller.offline": "medium",
    "camera.offline": "medium", "door.loitering": "medium", "mantrap.occupancy": "high", "visitor.overdue": "medium",
}
"""What the desk sees first; any kind not named here is ``low``."""


class AlarmsSection(_Model):
    """The desk's alarm panel (docs/console.md): how urgent each alarm kind is."""

    priorities: dict[str, Priority] = {}
    """Alarm kind -> high, medium or low, over DEFAULT_PRIORITIES (a site may raise reader.offline, say)."""

    def priority(self, kind: str) -> Priority:
        return self.priorities.get(kind) or DEFAULT_PRIORITIES.get(kind, "low")


Coordinate = Annotated[float, Field(allow_inf_nan=False)]


class PlanConfig(_Model):
    """A floor plan on the console: an SVG drawing and where each door sits on it, in the drawing's own
    coordinates (its viewBox). The path is checked with the site file (relative, inside its folder); the
    drawing itself when the console loads it (``drawing``): the bridge, which never shows it, does
    not stop over a picture."""

    key: KEY
    name: str = Field("", max_length=200)
    area: KEY | None = None
    """The area it shows (muster and the feed's area filter link to it)."""
    svg: str = Field(min_length=1, max_length=500)
    """The drawing, a path relative to the site file; shown as an image (never inlined: no script in it runs)."""
    doors: dict[str, tuple[Coordinate, Coordinate]] = Field({}, max_length=1000)
    """Door key -> (x, y) on the drawing."""

    @field_validator("svg")
    @classmethod
    def _inside(cls, value: str) -> str:
        relative_path(value)  # a DrawingError is a ValueError: pydantic names the field
        return value

    def drawing(self, where: str, base_dir: Path) -> tuple[bytes, ViewBox]:
        """The checked drawing and its viewBox, or DrawingError naming the field (``where``: ``plans[0]``)."""
        try:
            data, box = read_drawing(base_dir, self.svg)
        except DrawingError as exc:
            raise DrawingError(f"{where}.svg: {exc}") from None
        outside = [f"{where}.doors.{door}: position ({x:g}, {y:g}) is outside the drawing's viewBox ({box})"
                   for door, (x, y) in self.doors.items() if not box.contains(x, y)]
        if outside:
            raise DrawingError("\n".join(outside))
        return data, box


class SiteConfig(_Model):
    """The whole site file. ``base_dir`` is where relative paths in it are resolved from."""

    site: SiteSection
    database: DatabaseSection = DatabaseSection()
    keys: KeysSection = KeysSection()
    audit: AuditSection = AuditSection()
    mqtt: MqttSection = MqttSection()
    ingest: IngestSection = IngestSection()
    failover: FailoverSection = FailoverSection()
    metrics: MetricsSection = MetricsSection()
    console: ConsoleSection = ConsoleSection()
    evidence: EvidenceSection = EvidenceSection()
    faces: FacesSection = FacesSection()
    alarms: AlarmsSection = AlarmsSection()
    visitors: VisitorsSection = VisitorsSection()
    areas: list[AreaConfig] = []
    schedules: list[ScheduleConfig] = []
    doors: list[DoorConfig] = []
    controllers: list[ControllerConfig] = []
    readers: list[ReaderConfig] = []
    cameras: list[CameraConfig] = []
    access_levels: list[AccessLevelConfig] = []
    plans: list[PlanConfig] = []
    interlocks: list[InterlockConfig] = []
    tenants: list[TenantConfig] = []
    base_dir: Path = Path(".")
    foreign_doors: list[str] = []
    """Set by ``partition_view``: the site's doors that other partitions serve (a console command naming one
    is theirs, not an unknown door)."""
    site_partitions: list[str] = []
    """Set by ``partition_view``: every partition of the site (whose bridges may announce shared facts)."""

    @model_validator(mode="after")
    def _references(self) -> SiteConfig:
        errors: list[str] = []
        for section in ("areas", "schedules", "doors", "controllers", "readers", "cameras", "access_levels", "plans",
                        "interlocks", "tenants"):
            seen: set[str] = set()
            for i, item in enumerate(getattr(self, section)):
                if item.key in seen:
                    errors.append(f"{section}[{i}].key: duplicate key {item.key!r}")
                seen.add(item.key)
        areas = {a.key for a in self.areas}
        doors = {d.key for d in self.doors}
        controllers = {c.key for c in self.controllers}
        schedules = {s.key for s in self.schedules}

        def ref(path: str, value: str | None, known: set[str], what: str) -> None:
            if value is not None and value not in known:
                choices = ", ".join(sorted(known)) or "none defined"
                errors.append(f"{path}: unknown {what} {value!r} (expected one of: {choices})")

        for i, d in enumerate(self.doors):
            ref(f"doors[{i}].area_in", d.area_in, areas, "area")
            ref(f"doors[{i}].area_out", d.area_out, areas, "area")
        kinds = {c.key: c.kind for c in self.controllers}
        addresses: set[tuple[str, int]] = set()
        for i, r in enumerate(self.readers):
            ref(f"readers[{i}].controller", r.controller, controllers, "controller")
            ref(f"readers[{i}].door", r.door, doors, "door")
            if kinds.get(r.controller) == "osdp":
                if r.osdp_address is None:
                    errors.append(f"readers[{i}].osdp_address: a reader on an OSDP bus needs its address (0-126)")
                elif (r.controller, r.osdp_address) in addresses:
                    errors.append(f"readers[{i}].osdp_address: address {r.osdp_address} is used twice on bus "
                                  f"{r.controller!r}")
                addresses.add((r.controller, r.osdp_address or 0))
        for i, ctl in enumerate(self.controllers):
            if ctl.kind == "osdp" and not ctl.port:
                errors.append(f"controllers[{i}].port: an OSDP bus needs its serial port, e.g. /dev/ttyUSB0")
        for i, c in enumerate(self.cameras):
            for j, door in enumerate(c.doors):
                ref(f"cameras[{i}].doors[{j}]", door, doors, "door")
            for j, zone in enumerate(c.zones):
                if zone.door not in c.doors:
                    errors.append(f"cameras[{i}].zones[{j}].door: {zone.door!r} is not in this camera's doors "
                                  f"({', '.join(c.doors) or 'none'})")
        watched = {door for cam in self.cameras for door in cam.doors}
        for i, d in enumerate(self.doors):
            if d.face != "off" and d.key not in watched:
                errors.append(f"doors[{i}].face: {d.face!r} needs a camera watching door {d.key!r} "
                              "(list it in a camera's doors)")
        for i, plan in enumerate(self.plans):
            ref(f"plans[{i}].area", plan.area, areas, "area")
            for door in plan.doors:
                ref(f"plans[{i}].doors.{door}", door, doors, "door")
        errors += self._partition_errors()
        for i, lvl in enumerate(self.access_levels):
            for j, ld in enumerate(lvl.doors):
                ref(f"access_levels[{i}].doors[{j}].door", ld.door, doors, "door")
                ref(f"access_levels[{i}].doors[{j}].schedule", ld.schedule, schedules, "schedule")
        errors += self._workflow_errors(ref)
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def _workflow_errors(self, ref: Callable[[str, str | None, set[str], str], None]) -> list[str]:
        """Interlocks, tenants and visitors name known doors, areas, levels and cameras; a door is in one
        interlock, and an interlock's doors and camera are served by one partition."""
        errors: list[str] = []
        doors, areas = {d.key for d in self.doors}, {a.key for a in self.areas}
        levels, cameras = {lvl.key for lvl in self.access_levels}, {c.key: c for c in self.cameras}
        partition = self.door_partitions()
        grouped: dict[str, str] = {}
        for i, group in enumerate(self.interlocks):
            if len(set(group.doors)) != len(group.doors):
                errors.append(f"interlocks[{i}].doors: a door is named twice")
            for j, door in enumerate(group.doors):
                ref(f"interlocks[{i}].doors[{j}]", door, doors, "door")
                if grouped.setdefault(door, group.key) != group.key:
                    errors.append(f"interlocks[{i}].doors[{j}]: door {door!r} is already in interlock "
                                  f"{grouped[door]!r}; a door is in one interlock")
            ref(f"interlocks[{i}].camera", group.camera, set(cameras), "camera")
            if group.single_occupancy and group.camera is None:
                errors.append(f"interlocks[{i}].camera: single_occupancy needs the camera that sees inside the "
                              "mantrap")
            camera = cameras.get(group.camera or "")
            if camera is not None and group.doors[-1] not in camera.doors:
                errors.append(f"interlocks[{i}].camera: camera {camera.key!r} must list the inner door "
                              f"{group.doors[-1]!r} in its doors")
            served = {partition.get(d) for d in group.doors if d in partition}
            if len(served) > 1:
                errors.append(f"interlocks[{i}].doors: the doors of an interlock must be served by one partition "
                              f"(found {', '.join(sorted(str(p) for p in served))})")
        for i, tenant in enumerate(self.tenants):
            for j, area in enumerate(tenant.areas):
                ref(f"tenants[{i}].areas[{j}]", area, areas, "area")
            for j, level in enumerate(tenant.levels):
                ref(f"tenants[{i}].levels[{j}]", level, levels, "access level")
        for j, level in enumerate(self.visitors.levels):
            ref(f"visitors.levels[{j}]", level, levels, "access level")
        return errors

    def interlock_of(self, door: str) -> InterlockConfig | None:
        return next((group for group in self.interlocks if door in group.doors), None)

    def tenant(self, key: str) -> TenantConfig | None:
        return next((t for t in self.tenants if t.key == key), None)

    @property
    def partitioned(self) -> bool:
        """A partition's view of a site of several partitions (``partition_view``)."""
        return bool(self.foreign_doors)

    def _partition_errors(self) -> list[str]:
        """A door is served by one partition: its readers' controllers and its cameras all in it."""
        errors: list[str] = []
        controllers = {ctl.key: self.partition_of(ctl) for ctl in self.controllers}
        owner: dict[str, tuple[str, str]] = {}
        """Door -> (partition, what put it there) of the first reader or camera seen."""
        items: list[tuple[str, str, str]] = [(f"readers[{i}].controller", r.door, controllers[r.controller])
                                             for i, r in enumerate(self.readers) if r.controller in controllers]
        items += [(f"cameras[{i}].partition", door, self.partition_of(cam))
                  for i, cam in enumerate(self.cameras) for door in cam.doors]
        for where, door, partition in items:
            first = owner.setdefault(door, (partition, where))
            if first[0] != partition:
                errors.append(f"{where}: door {door!r} is in partition {first[0]!r} ({first[1]}) but this puts it "
                              f"in {partition!r}: a door's readers and cameras must be served by one partition")
        return errors

    def partition_of(self, item: ControllerConfig | CameraConfig) -> str:
        return item.partition or self.site.instance

    def partitions(self) -> list[str]:
        """The site's partitions, sorted; at least the default one."""
        items: list[ControllerConfig | CameraConfig] = [*self.controllers, *self.cameras]
        return sorted({self.site.instance, *self.site_partitions} | {self.partition_of(x) for x in items})

    def door_partitions(self) -> dict[str, str]:
        """Each door -> the partition serving it (a door with no reader nor camera: the default partition)."""
        controllers = {ctl.key: self.partition_of(ctl) for ctl in self.controllers}
        out = {d.key: self.site.instance for d in self.doors}
        for cam in self.cameras:
            out.update((door, self.partition_of(cam)) for door in cam.doors)
        for r in self.readers:
            out[r.door] = controllers.get(r.controller, self.site.instance)
        return out

    def partition_view(self, partition: str) -> SiteConfig:
        """The site as one partition's bridge serves it: its controllers, their readers, its doors and
        cameras, and ``site.instance`` set to the partition (its chain and its MQTT session). Areas, schedules
        and access levels stay whole: they are the site's."""
        if partition not in self.partitions():
            raise ConfigError(f"partition {partition!r} is not in the site file (expected one of: "
                              f"{', '.join(self.partitions())})")
        doors = self.door_partitions()
        mine = {d for d, p in doors.items() if p == partition}
        controllers = [ctl for ctl in self.controllers if self.partition_of(ctl) == partition]
        keys = {ctl.key for ctl in controllers}
        return self.model_copy(update={
            "site": self.site.model_copy(update={"instance": partition}),
            "controllers": controllers,
            "readers": [r for r in self.readers if r.controller in keys],
            "doors": [d for d in self.doors if d.key in mine],
            "cameras": [cam for cam in self.cameras if self.partition_of(cam) == partition],
            "foreign_doors": sorted(set(doors) - mine),
            "site_partitions": self.partitions(),
        })

    def path(self, value: str) -> Path:
        """Resolve a path from the file relative to the file's own folder."""
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    def database_url(self) -> str:
        """The environment wins over the file, so production secrets stay out of the site file."""
        url = os.environ.get(DATABASE_URL_ENV) or self.database.url
        match = re.match(r"^sqlite:///(?!/)(.+)$", url)
        if match and match.group(1) != ":memory:":
            return f"sqlite:///{self.path(match.group(1))}"
        return url

    def database_owner_url(self) -> str:
        """Where migrations and pruning run: the owner role's URL, else the bridge's own."""
        return os.environ.get(DATABASE_OWNER_URL_ENV) or self.database.owner_url or self.database_url()

    def keys_dir(self) -> Path:
        return self.path(self.keys.dir)

    def site_tz(self) -> ZoneInfo:
        return ZoneInfo(self.site.timezone)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_config(path: str | Path) -> SiteConfig:
    """Load and validate a site file, or raise ConfigError naming the file, field path and expectation."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such site file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the site file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the site file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw["base_dir"] = path.resolve().parent
    mqtt = raw.setdefault("mqtt", {}) if isinstance(raw.get("mqtt", {}), dict) else {}
    if os.environ.get(MQTT_HOST_ENV):
        mqtt["host"] = os.environ[MQTT_HOST_ENV]
    if os.environ.get(MQTT_PORT_ENV, "").isdigit():
        mqtt["port"] = int(os.environ[MQTT_PORT_ENV])
    try:
        return SiteConfig.model_validate(raw)
    except ValidationError as exc:
        lines: list[str] = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            # The whole-file reference check names its own field paths, one error per line.
            where = f"{_format_loc(err['loc'])}: " if err["loc"] else ""
            lines.extend(f"{path}: {where}{part}" for part in msg.split("\n"))
        raise ConfigError("\n".join(lines)) from None


def weekday_number(day: str) -> int:
    """Monday-based weekday number of a day name from the site file."""
    return DAYS.index(day)
