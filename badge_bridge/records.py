"""Events that carry a row of their own: alarms raised and cleared, and input refused into the dead letters.

Each returns the audited event and the effect that writes its operational row in the same transaction
(see ``AuditWriter.submit``), so an alarm or a dead letter exists exactly when its audit entry does. Ids
are derived from the cause, so a redelivered cause never raises a second alarm or a second dead letter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.engine import Connection

from badge_bridge.audit.writer import Effect
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import SECRET_KEYS, Event, storable
from badge_bridge.models import Alarm, DeadLetter

log = logging.getLogger(__name__)

PAYLOAD_KEEP = 4096
"""A dead letter keeps this much of the payload (secrets scrubbed) beside its full size and SHA-256: enough
for an operator to see what was sent, and a flood of huge messages cannot fill the disk."""


def alarm_raised(kind: str, *, door: str | None, source: str, cause: str, ts: datetime,
                 detail: dict[str, object] | None = None) -> tuple[Event, Effect]:
    event = Event(id=f"alarm:{kind}:{cause}"[:128], kind=EventKind.ALARM_RAISED, source=source, ts=ts, door=door,
                  detail={"alarm": kind, "cause": cause, **(detail or {})})
    log.warning("ALARM %s at %s (%s)", kind, door or source, cause)

    def effect(conn: Connection) -> None:
        conn.execute(insert(Alarm).values(event_id=event.id, kind=kind, door=door, source=source, raised_at=ts))

    return event, effect


def alarm_cleared(kind: str, *, door: str | None, source: str, cause: str, ts: datetime,
                  by_source: bool = False) -> tuple[Event, Effect]:
    """The condition ended. The alarm stays on the desk's queue until acknowledged. A door's alarms are
    matched by door (whoever raised them); ``by_source`` matches one device's own alarms."""
    event = Event(id=f"alarm-cleared:{kind}:{cause}"[:128], kind=EventKind.ALARM_CLEARED, source=source,
                  ts=ts, door=door, detail={"alarm": kind, "cause": cause})

    def effect(conn: Connection) -> None:
        match = (Alarm.kind == kind) & (Alarm.cleared_at.is_(None))
        match &= (Alarm.door == door) if door is not None and not by_source else (Alarm.source == source)
        conn.execute(update(Alarm).where(match).values(cleared_at=ts))

    return event, effect


def dead_letter(source: str, code: str, reason: str, payload: bytes, *, where: str, now: datetime) -> tuple[Event, Effect]:
    """Refused input: audited (so the log shows it arrived) and kept for the operator as a bounded excerpt,
    secret values (a PIN typed at a keypad) scrubbed before anything is stored."""
    digest = hashlib.sha256(payload).hexdigest()
    event_id = hashlib.sha256(where.encode("utf-8", "backslashreplace") + b"\0" + payload).hexdigest()[:40]
    kept = redact(payload[:PAYLOAD_KEEP * 4])[:PAYLOAD_KEEP]
    reason, where = storable(reason)[:500], storable(where)[:200]
    event = Event(id=f"dead:{event_id}", kind=EventKind.INPUT_REJECTED, source=_source_name(source), ts=now,
                  detail={"code": code, "reason": reason, "where": where, "size": len(payload), "sha256": digest})

    def effect(conn: Connection) -> None:
        conn.execute(insert(DeadLetter).values(received_at=now, source=where, reason=f"{code}: {reason}",
                                               payload=kept, payload_size=len(payload), payload_sha256=digest))

    return event, effect


def _source_name(source: str) -> str:
    """A source id the Event accepts, whatever a hostile sender put in a topic."""
    clean = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "_.:@-" else "_" for ch in source)[:100]
    return clean if clean and clean[0].isalnum() else f"x{clean}"[:100]


SECRET_FIELDS = SECRET_KEYS | {"pincode", "pin_hash", "configfile"}
_SECRET_TEXT = re.compile(
    rb"""(["']?)(%s)(["']?\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;&}\]]*)""" % b"|".join(
        re.escape(k.encode()) for k in sorted(SECRET_FIELDS, key=len, reverse=True)), re.IGNORECASE)
"""``"pin": "4711"``, ``pin=4711``, ``'pin':'4711`` (cut off), ``"<garbage>pincode":"4711"``, in any payload."""


def redact(payload: bytes) -> bytes:
    """The payload with every secret value replaced by "<redacted>": field by field when it is JSON (so an
    escaped key such as ``"p\\u0069n"`` is caught), then by pattern over the text, which also covers
    payloads that are not JSON, or are cut off, and must still never keep a PIN."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, (dict, list)) and _has_secret(value):
        payload = json.dumps(_masked(value)).encode()  # ASCII escapes: a lone surrogate cannot fail here
    return _SECRET_TEXT.sub(rb'\1\2\3"<redacted>"', payload)


def _has_secret(value: object) -> bool:
    if isinstance(value, dict):
        return any(str(k).lower() in SECRET_FIELDS or _has_secret(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_secret(v) for v in value)


def _masked(value: object) -> object:
    if isinstance(value, dict):
        return {k: "<redacted>" if str(k).lower() in SECRET_FIELDS else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value
