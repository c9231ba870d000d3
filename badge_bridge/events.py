"""The normalized Event every part of the system speaks, and the canonical forms that get hashed.

An event is an immutable fact. Its ``id`` is unique and, for device events, derived from the device and
the device's own sequence or message id, so a redelivered message carries the same id and the audit log
can refuse it as a duplicate.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}\Z")
KIND_RE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+\Z")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\Z")
"""Anchored with ``\\Z``, not ``$``: ``$`` also matches before a final newline ("door\\n" would enter the log)."""
SECRET_KEYS = frozenset({"pin", "pin_code", "password", "template", "face_encoding", "encoding", "biometric_template"})
"""Keys that would put a secret or a biometric template into the log; an event carrying one is refused."""

_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""NUL (PostgreSQL refuses it in text), other control characters, and lone surrogates (UTF-8 cannot encode
them, so neither the hash nor either database can take them)."""
_SUSPECT_JSON = re.compile(r"[\x7f\ud800-\udfff]|\\u00[01]")
"""What an unstorable character looks like once JSON-encoded (json escapes C0 controls as \\u00XX)."""


class InvalidEvent(ValueError):
    """An event that must not enter the log; the message says which field and why."""


def canonical_json(value: Mapping[str, Any]) -> str:
    """Sorted keys, no spaces, UTF-8: the same value always gives the same text."""
    return _canonical(value)


def storable(text: str) -> str:
    """``text`` with every unstorable character written out as a visible escape (``\\u0000``, ``\\ud800``):
    what a device sent stays readable for the operator, and no value from outside can make a commit fail."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def storable_value(value: Any) -> Any:
    """A JSON-like value (keys and strings at any depth) made storable with ``storable``."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, Mapping):
        return {storable(str(k)): storable_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable_value(v) for v in value]
    return value


def to_us(ts: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, unlike float timestamps)."""
    if ts.tzinfo is None:
        raise InvalidEvent("timestamp has no time zone; device times must be UTC")
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def _check_no_secrets(where: str, value: Mapping[str, Any]) -> None:
    for key, inner in value.items():
        if key.lower() in SECRET_KEYS:
            raise InvalidEvent(f"{where}.{key}: secrets and biometric templates are never logged")
        if isinstance(inner, Mapping):
            _check_no_secrets(f"{where}.{key}", inner)


@dataclass(frozen=True, slots=True)
class Event:
    """One fact: who (subject) did what (kind) where (door, source) and when (ts, device time, UTC)."""

    id: str
    kind: str
    source: str
    ts: datetime
    door: str | None = None
    subject: Mapping[str, Any] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)
    received_ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    subject_json: str = field(init=False, repr=False, compare=False)
    detail_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not ID_RE.match(self.id):
            raise InvalidEvent(f"id {self.id[:80]!r}: expected 1-128 letters, digits or _.:/@+-")
        if not KIND_RE.match(self.kind):
            raise InvalidEvent(f"kind {self.kind[:80]!r}: expected a dotted lowercase name like 'access.granted'")
        if not NAME_RE.match(self.source):
            raise InvalidEvent(f"source {self.source[:80]!r}: expected a controller, camera or console id")
        if self.door is not None and not NAME_RE.match(self.door):
            raise InvalidEvent(f"door {self.door[:80]!r}: expected a door key")
        to_us(self.ts)
        to_us(self.received_ts)
        _check_no_secrets("subject", self.subject)
        _check_no_secrets("detail", self.detail)
        for name in ("subject", "detail"):
            value = getattr(self, name)
            if type(value) is dict and not value:  # most door events: skip the encoder
                object.__setattr__(self, f"{name}_json", "{}")
                continue
            try:
                text = canonical_json(value)
                if _SUSPECT_JSON.search(text):  # rare: only then pay for a walk over the value
                    clean = storable_value(value)
                    object.__setattr__(self, name, clean)
                    text = canonical_json(clean)
                object.__setattr__(self, f"{name}_json", text)
            except (TypeError, ValueError, RecursionError) as exc:
                raise InvalidEvent(f"{name}: not representable as JSON ({type(exc).__name__})") from None

    @staticmethod
    def new_id(prefix: str) -> str:
        """An id for an event the bridge itself originates (console actions, alarms)."""
        return f"{prefix}:{uuid.uuid4().hex}"

    def record(self, chain_id: str) -> tuple[str, str, int, int, str, str, str, str, str]:
        """The hashed fields of this event in log order (see audit.entry_body)."""
        return (
            chain_id,
            self.id,
            to_us(self.ts),
            to_us(self.received_ts),
            self.source,
            self.door or "",
            self.kind,
            self.subject_json,
            self.detail_json,
        )
