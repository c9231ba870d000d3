"""Events that carry a row of their own: alarms raised and cleared, and input refused into the dead letters.

Each returns the audited event and the effect that writes its operational row in the same transaction
(see ``AuditWriter.submit``), so an alarm or a dead letter exists exactly when its audit entry does. Ids
are derived from the cause, so a redelivered cause never raises a second alarm or a second dead letter.
"""

from __future__ import annotations

import hashlib
import logging
import json
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.engine import Connection

from badge_bridge.audit import Effect
from badge_bridge.events import SECRET_KEYS, Event
from badge_bridge.models import Alarm, DeadLetter

log = logging.getLogger(__name__)

PAYLOAD_KEEP = 1024 * 1024
"""A dead letter keeps the payload whole up to this size (the broker's own packet limit)."""


def alarm_raised(kind: str, *, door: str | None, source: str, cause: str, ts: datetime,
                 detail: dict[str, object] | None = None) -> tuple[Event, Effect]:
    event = Event(id=f"alarm:{kind}:{cause}"[:128], kind="alarm.raised", source=source, ts=ts, door=door,
                  detail={"alarm": kind, "cause": cause, **(detail or {})})
    log.warning("ALARM %s at %s (%s)", kind, door or source, cause)

    def effect(conn: Connection) -> None:
        conn.execute(insert(Alarm).values(event_id=event.id, kind=kind, door=door, source=source, raised_at=ts))

    return event, effect


def alarm_cleared(kind: str, *, door: str | None, source: str, cause: str, ts: datetime,
                  by_source: bool = False) -> tuple[Event, Effect]:
    """The condition ended. The alarm stays on the desk's queue until acknowledged. A door's alarms are
    matched by door (whoever raised them); ``by_source`` matches one device's own alarms."""
    event = Event(id=f"alarm-cleared:{kind}:{cause}"[:128], kind="alarm.cleared", source=source, ts=ts, door=door,
                  detail={"alarm": kind, "cause": cause})

    def effect(conn: Connection) -> None:
        match = (Alarm.kind == kind) & (Alarm.cleared_at.is_(None))
        match &= (Alarm.door == door) if door is not None and not by_source else (Alarm.source == source)
        conn.execute(update(Alarm).where(match).values(cleared_at=ts))

    return event, effect


def dead_letter(source: str, code: str, reason: str, payload: bytes, *, where: str, now: datetime) -> tuple[Event, Effect]:
    """Refused input: audited (so the log shows it arrived) and kept whole for the operator, but for the
    values of secret fields (a PIN typed at a keypad), which are masked before anything is stored."""
    digest = hashlib.sha256(where.encode() + b"\0" + payload).hexdigest()[:40]
    payload = redact(payload)
    event = Event(id=f"dead:{digest}", kind="input.rejected", source=_source_name(source), ts=now,
                  detail={"code": code, "reason": reason[:500], "where": where[:200], "size": len(payload)})

    def effect(conn: Connection) -> None:
        conn.execute(insert(DeadLetter).values(received_at=now, source=f"{where}"[:200], reason=f"{code}: {reason}",
                                               payload=payload[:PAYLOAD_KEEP]))

    return event, effect


def _source_name(source: str) -> str:
    """A source id the Event accepts, whatever a hostile sender put in a topic."""
    clean = "".join(ch if ch.isalnum() or ch in "_.:@-" else "_" for ch in source)[:100]
    return clean if clean and clean[0].isalnum() else f"x{clean}"[:100]


SECRET_FIELDS = SECRET_KEYS | {"pincode", "pin_hash", "configfile"}


def redact(payload: bytes) -> bytes:
    """The payload with secret values replaced by "<redacted>" when it is a JSON object; else unchanged
    (text that is not JSON cannot be told apart from a secret, and the operator needs to see it)."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return payload
    if not isinstance(value, dict) or not _has_secret(value):
        return payload
    return json.dumps(_masked(value), ensure_ascii=False).encode()


def _has_secret(value: object) -> bool:
    if isinstance(value, dict):
        return any(k.lower() in SECRET_FIELDS or _has_secret(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_secret(v) for v in value)


def _masked(value: object) -> object:
    if isinstance(value, dict):
        return {k: "<redacted>" if k.lower() in SECRET_FIELDS else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value
