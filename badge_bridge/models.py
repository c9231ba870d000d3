"""SQLAlchemy 2 typed models: the installation, the people and their credentials, and the audit log.

The installation tables (site .. access levels) mirror the site file and are synced from it by key; people,
credentials and console users are managed through the CLI and the console. Times are timezone-aware UTC.
The audit tables store times as integer microseconds since the epoch: exact, portable between SQLite and
PostgreSQL, and cheap to hash.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite would otherwise hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# --- installation (synced from the site file) -----------------------------------------------------


class Site(Base):
    __tablename__ = "site"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))


class Area(Base):
    __tablename__ = "area"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    anti_passback: Mapped[str] = mapped_column(String(8), default="none")
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)
    """Entries into it are listed person by person in the monthly review (the data hall, the cages)."""


class Door(Base):
    __tablename__ = "door"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    area_in_id: Mapped[int | None] = mapped_column(ForeignKey("area.id"))
    area_out_id: Mapped[int | None] = mapped_column(ForeignKey("area.id"))
    open_time_s: Mapped[float] = mapped_column(Float, default=5.0)
    held_open_limit_s: Mapped[float] = mapped_column(Float, default=30.0)
    two_person: Mapped[bool] = mapped_column(Boolean, default=False)
    two_person_window_s: Mapped[float] = mapped_column(Float, default=30.0)
    factors: Mapped[str] = mapped_column(String(64), default="card")
    """Comma-separated required factors: card, pin, biometric."""
    interlock: Mapped[str | None] = mapped_column(String(64))
    """The interlock group (a mantrap, ``[[interlocks]]`` in the site file) the door belongs to."""

    area_in: Mapped[Area | None] = relationship(foreign_keys=[area_in_id])
    area_out: Mapped[Area | None] = relationship(foreign_keys=[area_out_id])


class Controller(Base):
    __tablename__ = "controller"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Reader(Base):
    __tablename__ = "reader"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    controller_id: Mapped[int] = mapped_column(ForeignKey("controller.id"))
    door_id: Mapped[int] = mapped_column(ForeignKey("door.id"))
    direction: Mapped[str] = mapped_column(String(3), default="in")
    kind: Mapped[str] = mapped_column(String(16), default="card")
    osdp_address: Mapped[int | None] = mapped_column(Integer)


class CameraDoor(Base):
    __tablename__ = "camera_door"
    camera_id: Mapped[int] = mapped_column(ForeignKey("camera.id", ondelete="CASCADE"), primary_key=True)
    door_id: Mapped[int] = mapped_column(ForeignKey("door.id", ondelete="CASCADE"), primary_key=True)


class Camera(Base):
    __tablename__ = "camera"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    url: Mapped[str] = mapped_column(String(500))
    doors: Mapped[list[Door]] = relationship(secondary="camera_door")


class Schedule(Base):
    __tablename__ = "schedule"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    timezone: Mapped[str] = mapped_column(String(64))
    intervals: Mapped[list[ScheduleInterval]] = relationship(cascade="all, delete-orphan")
    holidays: Mapped[list[Holiday]] = relationship(cascade="all, delete-orphan")


class ScheduleInterval(Base):
    __tablename__ = "schedule_interval"
    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedule.id", ondelete="CASCADE"))
    weekday: Mapped[int] = mapped_column(Integer)
    """0 = Monday."""
    start_minute: Mapped[int] = mapped_column(Integer)
    end_minute: Mapped[int] = mapped_column(Integer)


class Holiday(Base):
    __tablename__ = "holiday"
    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedule.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)


class AccessLevel(Base):
    __tablename__ = "access_level"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    doors: Mapped[list[AccessLevelDoor]] = relationship(cascade="all, delete-orphan")


class AccessLevelDoor(Base):
    __tablename__ = "access_level_door"
    level_id: Mapped[int] = mapped_column(ForeignKey("access_level.id", ondelete="CASCADE"), primary_key=True)
    door_id: Mapped[int] = mapped_column(ForeignKey("door.id", ondelete="CASCADE"), primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedule.id"), primary_key=True)
    door: Mapped[Door] = relationship()
    schedule: Mapped[Schedule] = relationship()


class Tenant(Base):
    """A customer with people of their own and cages (``[[tenants]]`` in the site file, which also sets the
    limits their admins work within). Never deleted: their people's history names them."""

    __tablename__ = "tenant"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")


# --- people and credentials -----------------------------------------------------------------------


class PersonLevel(Base):
    __tablename__ = "person_level"
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), primary_key=True)
    level_id: Mapped[int] = mapped_column(ForeignKey("access_level.id", ondelete="CASCADE"), primary_key=True)


class Person(Base):
    __tablename__ = "person"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    employee_no: Mapped[str | None] = mapped_column(String(64), unique=True)
    company: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    """active; pending (a customer's new person awaiting approval by site staff), refused, or left: a person
    who left keeps their history but may not hold working credentials."""
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenant.id"), index=True)
    """The customer the person belongs to; None for site staff."""
    kind: Mapped[str] = mapped_column(String(16), default="staff")
    """staff (anyone with their own access), or visitor: their badge opens doors only with an escort."""
    may_escort: Mapped[bool] = mapped_column(Boolean, default=False)
    lockdown_exempt: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    levels: Mapped[list[AccessLevel]] = relationship(secondary="person_level")
    credentials: Mapped[list[Credential]] = relationship(back_populates="person")


class FaceTemplate(Base):
    """One enrolled face: the 128-number encoding, sealed (AES-256-GCM under the evidence key, bound to the
    person); the photo only if the site keeps photos, and then encrypted in the evidence store."""

    __tablename__ = "face_template"
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    photo_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))


class Credential(Base):
    __tablename__ = "credential"
    __table_args__ = (UniqueConstraint("format", "number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    format: Mapped[str] = mapped_column(String(16))
    """wiegand26, wiegand34, wiegand37 or ascii."""
    number: Mapped[str] = mapped_column(String(64))
    """Canonical card number: 'FC:CARD' for Wiegand formats with a facility code, the text for ascii."""
    pin_hash: Mapped[str | None] = mapped_column(String(128))
    """HMAC-SHA256 of the PIN under the site's PIN pepper; never the PIN itself."""
    biometric_ref: Mapped[str | None] = mapped_column(String(128))
    """Reference to an enrolled template (device identity or face enrollment id), never the template."""
    status: Mapped[str] = mapped_column(String(16), default="active")
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    person: Mapped[Person] = relationship(back_populates="credentials")


class ConsoleUser(Base):
    __tablename__ = "console_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    """argon2id."""
    role: Mapped[str] = mapped_column(String(16))
    """guard, supervisor, admin, auditor, wall or tenant_admin."""
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenant.id"))
    """For a tenant_admin: the one customer whose people, cages and events they see."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """One login at the console, kept on the server so it can be ended: logout, a password change or reset,
    disabling the user or changing their role end every session of theirs at once. The cookie carries the
    session's random token; only its SHA-256 is stored, so reading this table does not let anyone in."""

    __tablename__ = "console_session"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("console_user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """Absolute end, however active the session is: a stolen cookie does not live for ever."""
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_reason: Mapped[str | None] = mapped_column(String(64))
    """logout, password_changed, user_disabled, role_changed, expired, idle ..."""
    address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(256), default="")


class Visit(Base):
    """A visitor's visit: registered by a host for a time window, the ID checked and a temporary badge
    issued at the desk, the badge returned at the end (badge_bridge.visitors)."""

    __tablename__ = "visit"
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    """The visitor (a person of kind visitor)."""
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenant.id"), index=True)
    """The customer hosting the visit; None for a visit of the site's own."""
    host: Mapped[str] = mapped_column(String(64))
    """The console user who registered the visit."""
    purpose: Mapped[str] = mapped_column(Text, default="")
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    state: Mapped[str] = mapped_column(String(16), default="expected")
    """expected, on_site (badge issued), returned (badge back), cancelled."""
    id_checked_by: Mapped[str | None] = mapped_column(String(64))
    id_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    id_document: Mapped[str] = mapped_column(String(64), default="")
    """What the desk saw (e.g. "passport, last 4: 1234"); never a scan."""
    credential_id: Mapped[int | None] = mapped_column(ForeignKey("credential.id"))
    """The temporary badge issued."""
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the overdue alarm was raised (the badge was not back by ``ends_at``)."""


class AccessRequest(Base):
    """A request for a level for a time window, with a reason; an approved one opens the level's doors to the
    person inside the window only, and expires at its end (badge_bridge.access_requests)."""

    __tablename__ = "access_request"
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    level_id: Mapped[int] = mapped_column(ForeignKey("access_level.id"))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenant.id"), index=True)
    """The person's customer, when they have one: their tenant admin approves too."""
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reason: Mapped[str] = mapped_column(Text)
    ticket: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    """open, approved, refused, expired or cancelled."""
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tenant_approved_by: Mapped[str | None] = mapped_column(String(64))
    """For a customer's person: their tenant admin's approval, needed with site staff's."""
    decided_by: Mapped[str | None] = mapped_column(String(64))
    """The site supervisor who approved or refused (the tenant admin, for a refusal of theirs)."""
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    comment: Mapped[str] = mapped_column(Text, default="")
    level: Mapped[AccessLevel] = relationship()


# --- operations -----------------------------------------------------------------------------------


class Alarm(Base):
    __tablename__ = "alarm"
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    """The alarm.raised event that opened it."""
    kind: Mapped[str] = mapped_column(String(64))
    """door.forced, door.held_open, reader.tamper, controller.offline, ..."""
    door: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(128), default="")
    """The controller, reader or camera that raised it."""
    state: Mapped[str] = mapped_column(String(16), default="open")
    """open, acknowledged or resolved."""
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    assigned_to: Mapped[str | None] = mapped_column(String(64))
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the condition ended (the door closed, the controller came back); the desk still acknowledges."""
    comment: Mapped[str] = mapped_column(Text, default="")
    """The acknowledgement: what the guard saw or did."""
    resolution: Mapped[str] = mapped_column(Text, default="")
    """How it was resolved (the supervisor's comment); never overwrites the acknowledgement."""
    resolved_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_alarm_state", "state"),)


class SiteState(Base):
    """What the bridges must not forget across a restart or a failover (lockdowns, timed unlocks,
    anti-passback positions, two-person waits), one row per fact of the whole site, shared by its partitions,
    written by a partition's audit writer in the transaction of the audit entry that changed it
    (``event_id``), read back at start and announced to the other partitions (ingest.persist)."""

    __tablename__ = "site_state"
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    """Canonical JSON."""
    event_id: Mapped[str] = mapped_column(String(128))
    partition: Mapped[str] = mapped_column(String(64))
    """The partition whose bridge wrote it last (its audit chain holds ``event_id``)."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PartitionLease(Base):
    """Which bridge of a partition is active: it holds the lease until ``expires_at`` (the database's clock)
    and renews it; a standby takes it once expired, with the next ``token``. Every audit commit of the active
    checks its token in the same transaction (badge_bridge.failover.lease), so a bridge that lost the lease
    never writes again."""

    __tablename__ = "partition_lease"
    partition: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    """The holding bridge's instance name (host and process)."""
    token: Mapped[int] = mapped_column(BigInteger)
    """The fencing token: one more at every takeover, never reused."""
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeadLetter(Base):
    """Input that was refused, kept with the reason so an operator can act on it and nothing is lost."""

    __tablename__ = "dead_letter"
    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    """The first ``records.PAYLOAD_KEEP`` bytes, secrets scrubbed."""
    payload_size: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    payload_sha256: Mapped[str | None] = mapped_column(String(64))
    """Of the payload as received: a copy kept elsewhere (a broker log, a capture) can be matched to it."""


# --- the audit log --------------------------------------------------------------------------------


class AuditEntry(Base):
    """One immutable event in a writer's hash chain. UPDATE and DELETE are refused by triggers."""

    __tablename__ = "audit_entry"
    __table_args__ = (
        UniqueConstraint("chain_id", "seq"),
        Index("ix_audit_entry_ts", "ts_us"),
        Index("ix_audit_entry_door_ts", "door", "ts_us"),
        Index("ix_audit_entry_person_ts", "person_id", "ts_us"),
        Index("ix_audit_entry_kind_ts", "kind", "ts_us"),
        Index("ix_audit_entry_ts_id", "ts_us", "id"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    ts_us: Mapped[int] = mapped_column(BigInteger)
    received_us: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(128))
    door: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(Text)
    """Canonical JSON: person and credential references, never a PIN or template."""
    detail: Mapped[str] = mapped_column(Text)
    """Canonical JSON."""
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[int | None] = mapped_column(Integer)
    """The subject's person, for searching; not hashed (the subject is), and checked against it by verify."""


class Checkpoint(Base):
    """A signed statement 'chain C had head H at seq N at time T' (Ed25519)."""

    __tablename__ = "checkpoint"
    __table_args__ = (UniqueConstraint("chain_id", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    signed_us: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class SigningKey(Base):
    """Public halves of every signing key ever used, so old checkpoints still verify after rotation."""

    __tablename__ = "signing_key"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))
    """Raw Ed25519 public key, hex."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Segment(Base):
    """A sealed run of one chain's entries (one UTC day): the RFC 9162 Merkle root of their hashes, signed,
    so one entry can be proven with O(log n) hashes and the entries can later be pruned while the chain
    stays anchored. UPDATE is refused by triggers except the one-way prune marking; DELETE is refused."""

    __tablename__ = "segment"
    __table_args__ = (
        UniqueConstraint("chain_id", "first_seq", name="uq_segment_chain_id"),
        UniqueConstraint("chain_id", "day", name="uq_segment_chain_id_day"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(64))
    prev_segment_last_hash: Mapped[str] = mapped_column(String(64))
    """The chain hash before first_seq: what anchors the chain once the entries before it are pruned."""
    last_hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))
    sealed_us: Mapped[int] = mapped_column(BigInteger)
    pruned: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    pruned_us: Mapped[int | None] = mapped_column(BigInteger)
    prune_key_id: Mapped[str | None] = mapped_column(String(64))
    prune_signature: Mapped[str | None] = mapped_column(String(128))
    """Signed 'these entries were pruned on purpose', so verify can tell retention from deletion."""


class PruneWindow(Base):
    """The seq range a running prune may delete; its rows exist only inside prune()'s transaction, and the
    audit_entry DELETE trigger refuses any row no window (of a segment marked pruned) covers."""

    __tablename__ = "prune_window"
    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class TreeHead(Base):
    """A signed tree head (RFC 9162 style) of one chain: its size and the Merkle root over all its entries,
    published to the witnesses, which keep their own copy outside this database."""

    __tablename__ = "tree_head"
    __table_args__ = (UniqueConstraint("chain_id", "size"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(64))
    """Hex RFC 9162 root over the chain's entry hashes 1..size (leaf i is entry i's hash)."""
    head_hash: Mapped[str] = mapped_column(String(64))
    """The chain hash of entry ``size`` (GENESIS for an empty chain)."""
    signed_us: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class WitnessCosignature(Base):
    """A witness's countersignature of a tree head: that witness held this head and nothing it contradicts, at
    ``cosigned_us`` (an unchanged head is countersigned again hourly: proof that the chain had not grown)."""

    __tablename__ = "witness_cosignature"
    __table_args__ = (UniqueConstraint("chain_id", "size", "witness_key_id", "cosigned_us"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    witness_key_id: Mapped[str] = mapped_column(String(64))
    cosigned_us: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(String(128))


class TreeFrontier(Base):
    """The O(log n) complete subtrees of a chain's Merkle tree at one size (``merkle.CompactRange``), kept
    so the tree can be taken up again without rereading every entry (after a restart, at a month's start,
    after the entries before it were pruned). Not signed: a wrong frontier gives a root no signed head has."""

    __tablename__ = "tree_frontier"
    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    nodes: Mapped[str] = mapped_column(Text)
    """The subtree hashes, hex, concatenated, largest first."""
