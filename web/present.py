"""How an event reads for a person at the desk: names instead of ids, the door's and area's names, site local
time with its zone, and what happened as a sentence, with the raw fields kept for the detail page.

Names come from the database once per batch (``lookup``: one query per kind of id, whatever the batch's
size), never per row: the live stream presents each committed batch once, in the console's MQTT thread,
for every browser (web.services.BridgeLink), and a page presents its rows with one lookup. Everything here
is plain text; templates escape it and feed.js puts it in with ``textContent``. A subject or detail is
whatever JSON the log or a message holds, so every value is checked for its type before it is used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from badge_bridge.config import SiteConfig
from badge_bridge.controllers.contract import PublishedEvents
from badge_bridge.events import from_us
from badge_bridge.models import AuditEntry, ConsoleUser, Credential, Person
from badge_bridge.policy import Reason
from web.params import ID_MAX

log = logging.getLogger(__name__)

DOOR_COMMANDS = frozenset({"console.unlock", "console.lock", "console.lockdown", "console.lift_lockdown",
                           "console.forged_command"})
DOOR_PREFIXES = ("access.", "door.", "alarm.", "face.")
IN_CLAUSE = 500
"""Ids per ``IN (...)`` of a lookup: far under every database's limit on bound parameters."""
TEXT_MAX = 300
"""The longest value a feed row shows of one field (the detail page shows it all)."""


def door_event(kind: str) -> bool:
    """What the desk watches by default: decisions, doors, alarms, face checks, operators' door commands.
    Motion, evidence, cameras, devices, logins and administration are behind the feed's filter."""
    return kind.startswith(DOOR_PREFIXES) or kind in DOOR_COMMANDS


LABELS = {
    "access.granted": "Access granted", "access.denied": "Access denied", "access.face_check": "Face check",
    "access.unused": "Granted, nobody passed", "access.blind": "Granted, cameras blind",
    "door.opened": "Door opened", "door.closed": "Door closed", "door.exit_request": "Exit request",
    "door.forced": "Door forced open", "door.held_open": "Door held open", "door.relocked": "Door relocked",
    "door.forced_confirmed": "Forced, seen on camera", "door.forced_unconfirmed": "Forced, nothing on camera",
    "door.unauthorized_entry": "Unauthorized entry", "door.tailgating": "Tailgating", "door.loitering": "Loitering",
    "alarm.raised": "ALARM", "alarm.cleared": "Alarm condition ended", "alarm.acknowledged": "Alarm acknowledged",
    "alarm.assigned": "Alarm assigned", "alarm.resolved": "Alarm resolved",
    "face.verified": "Face verified", "face.mismatch": "Face mismatch", "face.absent": "No face seen",
    "face.several": "Several faces", "face.spoof": "Face spoof (photo or screen)", "face.unverified": "Face not checked",
    "console.unlock": "Remote unlock", "console.lock": "Remote lock", "console.lockdown": "Lockdown",
    "console.lift_lockdown": "Lockdown lifted", "console.forged_command": "Forged console command",
    "console.login": "Console login", "console.login_failed": "Failed console login", "console.logout": "Console logout",
}
REASONS = {
    Reason.GRANTED: "", Reason.GRANTED_PASSBACK_VIOLATION: "anti-passback violation (let through, flagged)",
    Reason.GRANTED_TWO_PERSON: "second person of a two-person rule",
    Reason.UNKNOWN_CREDENTIAL: "unknown card", Reason.CREDENTIAL_SUSPENDED: "card suspended",
    Reason.CREDENTIAL_LOST: "card reported lost", Reason.CREDENTIAL_REVOKED: "card revoked",
    Reason.PERSON_INACTIVE: "person has left", Reason.NOT_YET_VALID: "card not valid yet",
    Reason.EXPIRED: "card expired", Reason.LOCKDOWN: "lockdown", Reason.NO_ACCESS_LEVEL: "no access to this door",
    Reason.OUTSIDE_SCHEDULE: "outside their hours", Reason.HOLIDAY: "holiday", Reason.PIN_REQUIRED: "PIN needed",
    Reason.PIN_WRONG: "wrong PIN", Reason.BIOMETRIC_REQUIRED: "fingerprint needed",
    Reason.BIOMETRIC_MISMATCH: "fingerprint did not match", Reason.FACE_REQUIRED: "face check needed",
    Reason.FACE_MISMATCH: "face did not match", Reason.FACE_TIMEOUT: "no face check in time",
    Reason.FACE_CAMERA_BLIND: "door camera blind, face not checkable", Reason.FACE_SPOOF: "photo or screen held up",
    Reason.FACE_LIVENESS_UNVERIFIED: "face liveness not confirmed", Reason.ANTI_PASSBACK: "anti-passback",
    Reason.TWO_PERSON_WAITING: "waiting for a second person", Reason.TWO_PERSON_SAME_PERSON: "same person twice",
    Reason.PERSON_NOT_APPROVED: "not approved by site staff yet",
}
REASONS.update({  # visitors and escorts
    Reason.ESCORT_WAITING: "visitor waiting for an escort", Reason.GRANTED_ESCORTED: "visitor, with their escort",
    Reason.GRANTED_ESCORTING: "escort, taking a visitor in",
})
FACTORS = {"card": "card", "pin": "PIN", "biometric": "fingerprint", "face": "face"}
DETAIL_LABELS = {
    "reason": "why", "factors": "factors", "failed": "failed factors", "direction": "direction", "reader": "reader",
    "alarm": "alarm", "cause": "cause", "comment": "comment", "alarm_kind": "alarm", "assigned_to": "assigned to",
    "duration_s": "for (s)", "doors": "doors", "area": "area", "limit_s": "limit (s)", "offline": "decided offline",
    "bridge_reason": "the bridge would have said", "actuated": "door released", "flagged": "flagged", "companion": "with person", "address": "address",
}


@dataclass(frozen=True)
class Names:
    """What a batch's ids stand for: person id -> (name, company, status), credential id -> card kind,
    console user -> role."""

    people: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    credentials: dict[int, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    unavailable: bool = False
    """The database did not answer: ids are shown as numbers, saying so, rather than as unknown."""


def _id(value: object) -> int | None:
    """A database id from JSON, or None (a bool is an int in Python; a hostile message may send anything)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= ID_MAX else None


def _chunks(values: set[Any]) -> Iterable[list[Any]]:
    ordered = sorted(values, key=str)
    for i in range(0, len(ordered), IN_CLAUSE):
        yield ordered[i:i + IN_CLAUSE]


def lookup(session: Session, subjects: Iterable[Mapping[str, Any]]) -> Names:
    """The names of every person, credential and console user the ``subjects`` name, in one query per kind."""
    people: set[int] = set()
    credentials: set[int] = set()
    users: set[str] = set()
    for subject in subjects:
        for key, into in (("person", people), ("credential", credentials), ("companion", people)):
            if (found := _id(subject.get(key))) is not None:
                into.add(found)
        if isinstance(user := subject.get("user"), str) and len(user) <= 64:
            users.add(user)
    names = Names()
    for chunk in _chunks(people):
        names.people.update((pid, (name, company or "", status)) for pid, name, company, status in session.execute(
            select(Person.id, Person.name, Person.company, Person.status).where(Person.id.in_(chunk))))
    for chunk in _chunks(credentials):
        names.credentials.update((cid, fmt) for cid, fmt in session.execute(
            select(Credential.id, Credential.format).where(Credential.id.in_(chunk))))
    for chunk in _chunks(users):
        names.users.update((user, role) for user, role in session.execute(
            select(ConsoleUser.username, ConsoleUser.role).where(ConsoleUser.username.in_(chunk))))
    return names


@dataclass(frozen=True)
class Who:
    name: str
    note: str = ""
    """Company, card kind or console role: whatever tells two people of one name apart."""
    person: int | None = None
    """The person page to link to."""


@dataclass(frozen=True)
class Shown:
    """One event as the console shows it; ``as_json`` is what a live row is built from."""

    event_id: str
    kind: str
    label: str
    time: str
    """Site local time with its zone abbreviation: ``2026-12-07 11:27:42 CET``."""
    utc: str
    """ISO 8601 in UTC, for ``<time datetime>`` and a tooltip; '' when the stored time is unreadable."""
    door: str
    """The door's key ('' for none), for the feed's door filter."""
    where: str
    areas: str
    who: Who | None
    text: str
    door_event: bool
    alarm: bool
    facts: list[tuple[str, str]]
    """Every detail field as (label, text), for the event page only (empty elsewhere)."""

    def as_json(self) -> dict[str, Any]:
        """What a live row is built from (by hand: ``dataclasses.asdict`` deep-copies, 4x the cost of the
        whole presentation)."""
        who = None if self.who is None else {"name": self.who.name, "note": self.who.note, "person": self.who.person}
        return {"event_id": self.event_id, "kind": self.kind, "label": self.label, "time": self.time, "utc": self.utc,
                "door": self.door, "where": self.where, "areas": self.areas, "who": who, "text": self.text,
                "door_event": self.door_event, "alarm": self.alarm}


class Presenter:
    """The site's names and time zone, fixed for the console's life (the site file is read at start)."""

    def __init__(self, config: SiteConfig) -> None:
        self.tz = ZoneInfo(config.site.timezone)
        self.zone = config.site.timezone
        self.areas = {a.key: a.name or a.key for a in config.areas}
        self.doors = {d.key: (d.name or d.key, d.area_out, d.area_in) for d in config.doors}

    def local(self, ts: datetime | int) -> tuple[str, str]:
        """(local text with zone, UTC ISO) of an aware datetime or microseconds since the epoch; a time the
        calendar cannot hold (a corrupt or hostile row) reads as such instead of failing the page."""
        try:
            when = from_us(ts) if isinstance(ts, int) else ts.astimezone(UTC)
            local = when.astimezone(self.tz)
            return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}", when.isoformat()
        except (OverflowError, ValueError, OSError):
            return "(time unreadable)", ""

    def where(self, door: str | None, source: str) -> tuple[str, str]:
        """(the door's name, or the device for an event without a door; the door's areas 'from → to')."""
        if not door:
            return source, ""
        name, out, into = self.doors.get(door, (door, None, None))
        areas = " → ".join(self.areas.get(a, a) for a in (out, into) if a)
        return name, areas

    def who(self, subject: Mapping[str, Any], names: Names) -> Who | None:
        person = subject.get("person")
        if person is not None:
            pid = _id(person)
            found = names.people.get(pid) if pid is not None else None
            if found is None:
                if names.unavailable and pid is not None:
                    return Who(f"person #{pid}", "name unavailable (database)", pid)
                return Who(f"unknown person #{_short(person)}")
            name, company, status = found
            card = names.credentials.get(_id(subject.get("credential")) or 0)
            note = " · ".join(x for x in (company, f"card {card}" if card else "",
                                          "has left" if status == "left" else "") if x)
            return Who(name, note, pid)
        if isinstance(card := subject.get("card"), str):
            return Who("unknown card", _short(card))
        if isinstance(user := subject.get("user"), str):
            role = names.users.get(user)
            return Who(user, f"console {role}" if role else "console")
        return None

    def show(self, *, event_id: str, kind: str, ts: datetime | int, door: str | None, source: str,
             subject: Mapping[str, Any], detail: Mapping[str, Any], names: Names, with_facts: bool = False) -> Shown:
        time, utc = self.local(ts)
        where, areas = self.where(door, source)
        return Shown(event_id=event_id, kind=kind, label=label(kind, detail), time=time, utc=utc, door=door or "",
                     where=where, areas=areas, who=self.who(subject, names),
                     text=sentence(kind, detail, names, self.areas), door_event=door_event(kind),
                     alarm=kind == "alarm.raised", facts=facts(detail, names) if with_facts else [])


def label(kind: str, detail: Mapping[str, Any]) -> str:
    if kind == "alarm.raised" and isinstance(detail.get("alarm"), str):
        return f"ALARM: {label(detail['alarm'], {})}"
    return LABELS.get(kind, kind.replace(".", ": ", 1).replace("_", " ").capitalize())


def _short(value: object) -> str:
    text = value if isinstance(value, str) else _plain(value)
    return text if len(text) <= TEXT_MAX else text[:TEXT_MAX - 1] + "…"


def _plain(value: object) -> str:
    """A JSON value as words: lists joined, nested objects as key: value."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def reason_text(value: object) -> str:
    try:
        # a reason added to the policy before its words here reads as itself, never as a broken page
        return REASONS.get(Reason(value), value.replace("_", " ")) if isinstance(value, str) else ""
    except ValueError:
        return _short(value)


def _factors(detail: Mapping[str, Any], key: str) -> str:
    found = detail.get(key)
    return " + ".join(FACTORS.get(f, _short(f)) for f in found) if isinstance(found, list) else ""


def sentence(kind: str, detail: Mapping[str, Any], names: Names, areas: Mapping[str, str]) -> str:
    """The specifics of one event in a line: why denied, which factors, who acknowledged what."""
    parts: list[str] = []
    if kind.startswith("access."):
        parts += [reason_text(detail.get("reason")), _factors(detail, "factors")]
        if failed := _factors(detail, "failed"):
            parts.append(f"failed: {failed}")
        if detail.get("direction") in ("in", "out"):
            parts.append(f"going {detail['direction']}")
        if detail.get("offline") is True:
            parts.append("decided offline by the controller")
        if (companion := _id(detail.get("companion"))) is not None:
            parts.append(f"with {names.people.get(companion, (f'person #{companion}',))[0]}")
    elif kind.startswith("alarm."):
        alarm = detail.get("alarm", detail.get("alarm_kind"))  # alarm.raised names it in its label already
        parts += [label(alarm, {}) if isinstance(alarm, str) and kind != "alarm.raised" else "",
                  _short(detail.get("comment", "")),
                  f"to {_short(detail['assigned_to'])}" if "assigned_to" in detail else ""]
    elif kind in DOOR_COMMANDS:
        area = detail.get("area")
        parts += [f"area {areas.get(area, _short(area))}" if isinstance(area, str) else "",
                  f"for {_short(detail['duration_s'])} s" if detail.get("duration_s") else "",
                  f"reason: {_short(detail['reason'])}" if detail.get("reason") else ""]
    elif kind == "door.held_open" and "limit_s" in detail:
        parts.append(f"open longer than {_short(detail['limit_s'])} s")
    else:
        parts += [f"{DETAIL_LABELS.get(k, k.replace('_', ' '))}: {_short(v)}" for k, v in detail.items()
                  if k != "state" and v is not None and not isinstance(v, dict | list)][:6]
    return _short(" · ".join(p for p in parts if p))


def facts(detail: Mapping[str, Any], names: Names) -> list[tuple[str, str]]:
    """Each detail field as (label, text) for the event page; an access-table snapshot (``state``) stays in
    the raw JSON."""
    out = []
    for key, value in detail.items():
        if key == "state":
            continue
        if key in ("reason", "bridge_reason"):
            text = reason_text(value) or _plain(value)
        elif key in ("factors", "failed"):
            text = _factors(detail, key)
        elif key == "companion" and (pid := _id(value)) is not None:
            text = names.people.get(pid, (f"person #{pid}",))[0]
        elif key in ("alarm", "alarm_kind") and isinstance(value, str):
            text = label(value, {})
        else:
            text = _plain(value)
        out.append((DETAIL_LABELS.get(key, key.replace("_", " ")), text))
    return out


def _object(text: str) -> dict[str, Any]:
    """A stored subject or detail; anything but a JSON object reads as empty."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def entries(session: Session, presenter: Presenter, rows: Iterable[AuditEntry], *,
            with_facts: bool = False) -> list[Shown]:
    """Audit log rows as shown, with one name lookup for all of them (``with_facts``: for the event page)."""
    parsed = [(row, _object(row.subject), _object(row.detail)) for row in rows]
    names = lookup(session, (subject for _, subject, _ in parsed))
    return [presenter.show(event_id=row.event_id, kind=row.kind, ts=row.ts_us, door=row.door, source=row.source,
                           subject=subject, detail=detail, names=names, with_facts=with_facts)
            for row, subject, detail in parsed]


def published(session_factory: Callable[[], Session], presenter: Presenter, batch: PublishedEvents) -> str:
    """A committed batch from the bridge as the stream sends it: each event as published plus ``shown``.
    Without a database the batch still goes out, its people as numbers."""
    try:
        with session_factory() as session:
            names = lookup(session, (e.subject for e in batch.events))
    except SQLAlchemyError as exc:
        log.warning("console: names for the live feed unavailable: %s", exc.__class__.__name__)
        names = Names(unavailable=True)
    out = batch.model_dump(mode="json")
    for event, dumped in zip(batch.events, out["events"], strict=True):
        dumped["shown"] = presenter.show(event_id=event.id, kind=event.kind, ts=event.ts, door=event.door,
                                         source=event.source, subject=event.subject, detail=event.detail,
                                         names=names).as_json()
    return json.dumps(out, separators=(",", ":"))
