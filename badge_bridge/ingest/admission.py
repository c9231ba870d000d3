"""Whether a message may be processed at all: refused input is named by a code, and a message must be
recent, not from the future and not a replay.

Checked before anything a message says is believed, for every sender alike (controllers, cameras, the
console); the refusal itself is audited as a dead letter by the processor.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import datetime, timedelta

from pydantic import ValidationError

from badge_bridge.controllers import contract as c

RECENT_IDS = 200_000
"""Message ids kept for the replay guard (and preloaded from the log at start)."""
DIGEST_BYTES = 8
"""A short digest of each recent message's bytes tells a controller's retransmission from a forgery."""


def digest(payload: bytes) -> bytes:
    """What the replay guard keeps of a message's bytes."""
    return hashlib.blake2b(payload, digest_size=DIGEST_BYTES).digest()


class Rejected(Exception):
    """Input that cannot be processed: ``code`` for metrics, the message for the operator."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def describe_validation(exc: ValidationError) -> str:
    """'reader: String should match pattern ...; card.bits: ...' rather than pydantic's multi-line text."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in c.EVENT_TYPES)) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class Retransmitted(Exception):
    """A controller sent a message again, byte for byte, because its receipt did not come (docs/mqtt.md,
    "Receipts"): not decided again, not a dead letter; its receipt is sent again."""


class Admission:
    """The time window and the replay guard, over the ids of the last ``RECENT_IDS`` messages, each with a
    digest of its bytes when this process received it (None for ids loaded from the log)."""

    def __init__(self, max_future: timedelta, max_age: timedelta) -> None:
        self.max_future = max_future
        self.max_age = max_age
        self.recent: OrderedDict[str, bytes | None] = OrderedDict()

    def remember(self, event_ids: list[str]) -> None:
        """Ids already in the log (loaded at start), so a replay after a restart is recognised."""
        for eid in event_ids:
            self._seen(eid, None)

    def check(self, sender: str, msg: c.Message, now: datetime, payload_digest: bytes | None = None) -> None:
        """Not from the future, not older than any sender keeps events, not seen before. With
        ``payload_digest`` (a controller's message, which it retransmits until its receipt), a repeated id
        with the same bytes raises ``Retransmitted``, before the time window (a retransmission may come late);
        so does one whose first copy is in the log from before this process started, which kept no digest:
        it is not decided again either way."""
        eid = f"{sender}:{msg.id}"
        if payload_digest is not None and eid in self.recent and self.recent[eid] in (payload_digest, None):
            raise Retransmitted(eid)
        if msg.ts > now + self.max_future:
            raise Rejected("future_time", f"time {msg.ts.isoformat()} is more than {self.max_future} ahead of the "
                                          f"bridge's clock ({now.isoformat()}): check the sender's clock")
        if msg.ts < now - self.max_age:
            raise Rejected("too_old", f"time {msg.ts.isoformat()} is older than the offline window "
                                      f"(ingest.offline_window_s = {self.max_age.total_seconds():.0f} s): "
                                      f"check the sender's clock")
        if self._seen(eid, payload_digest):
            raise Rejected("replayed_id", f"message id {msg.id!r} was already received from {sender}"
                           + (" with other content" if payload_digest is not None else ""))

    def _seen(self, event_id: str, payload_digest: bytes | None) -> bool:
        if event_id in self.recent:
            return True
        self.recent[event_id] = payload_digest
        if len(self.recent) > RECENT_IDS:
            self.recent.popitem(last=False)
        return False
