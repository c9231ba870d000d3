"""A controller's outbox (docs/mqtt.md, "Receipts"): every event but heartbeats is kept, with its exact bytes,
until the bridge's receipt names it, and handed back for publishing again after a reconnection (all of it)
or after a timeout. The timeout is a safety net, not the main path (a broker that dies drops the connection
first), so it must not feed a backlog: it waits until the controller's own publishes are all acknowledged
by the broker and no receipt has come for ``timeout_s`` (a bridge that receipts is draining its queue, and
what it has not reached yet is queued, not lost), and each event's timeout doubles with every retry, up to
``MAX_TIMEOUT_S``. Publishing everything again every timeout
while the bridge works through a backlog would bury it in retransmissions.

Bounded, as a controller's memory is: when full, the oldest event goes, counted in ``dropped`` (a real
controller raises a fault and keeps deciding at its doors).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

log = logging.getLogger(__name__)

MAX_TIMEOUT_S = 60.0


class Outbox:
    def __init__(self, limit: int = 10_000, timeout_s: float = 5.0) -> None:
        self.limit = limit
        self.timeout_s = timeout_s
        self.dropped = 0
        self.republished = 0
        self._events: OrderedDict[str, tuple[str, float, float]] = OrderedDict()
        """Message id -> (payload, when to publish it again, its next timeout), times of ``time.monotonic()``."""
        self._quiet_since = time.monotonic()
        """The last receipt, or the last moment the controller's own publishes were not all acknowledged."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    def keep(self, message_id: str, payload: str) -> None:
        with self._lock:
            self._events[message_id] = (payload, time.monotonic() + self.timeout_s, self.timeout_s)
            while len(self._events) > self.limit:
                lost, _ = self._events.popitem(last=False)
                self.dropped += 1
                log.error("outbox full (%d events): %s dropped before its receipt", self.limit, lost)

    def receipted(self, ids: Iterable[str]) -> int:
        """Forget the events a receipt names; returns how many were still kept."""
        with self._lock:
            self._quiet_since = time.monotonic()
            return sum(self._events.pop(i, None) is not None for i in ids)

    def due(self, everything: bool = False, busy: bool = False) -> list[str]:
        """Payloads to publish again, oldest first: every one after a reconnection (``everything``), else
        those past their timeout once all is quiet for ``timeout_s``: no receipt, and the controller's own
        publishes all acknowledged by the broker (not ``busy``)."""
        now = time.monotonic()
        with self._lock:
            if busy:
                self._quiet_since = now
            if not everything and now - self._quiet_since < self.timeout_s:
                return []
            due = [(i, payload, timeout) for i, (payload, at, timeout) in self._events.items()
                   if everything or now >= at]
            for message_id, payload, timeout in due:
                backoff = min(timeout * 2, MAX_TIMEOUT_S)
                self._events[message_id] = (payload, now + timeout, backoff)
            self.republished += len(due)
            return [payload for _, payload, _ in due]

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._events)
