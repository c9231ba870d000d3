"""End-to-end receipts to controllers (docs/mqtt.md, "Receipts"): once every event a controller's message
caused is committed to the audit log, its id goes back to the controller, which may then forget the event.

The moment is the message's acknowledgement (the processor calls it after the commit of the message's last
event, or at once for a message that caused none, a retransmission among them), so ``track`` wraps it. A
retransmission that arrives while the first copy is still being committed must not be receipted before that
commit: the receipt goes when the last copy of an id in processing is acknowledged. Ids wait in a buffer
that one thread drains, so one commit of many events makes one receipt per controller, not one per event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from badge_bridge.controllers.contract import RECEIPT_MAX_IDS

log = logging.getLogger(__name__)

Ack = Callable[[], None]
SendReceipt = Callable[[list[str]], None]
"""Publishes one receipt of these message ids (at most ``RECEIPT_MAX_IDS``) to its controller."""
COALESCE_S = 0.02
"""How long the sender waits after the first receipt is due, gathering the others of the same commits."""


class Receipts:
    def __init__(self) -> None:
        self._senders: dict[str, SendReceipt] = {}
        self._processing: dict[tuple[str, str], int] = {}
        """(controller, message id) -> copies of it received and not yet acknowledged."""
        self._due: dict[str, list[str]] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def register(self, controller: str, send: SendReceipt) -> None:
        """Receipt ``controller``'s events through ``send`` (its driver seals them with its key)."""
        self._senders[controller] = send

    def track(self, controller: str, message_id: str, ack: Ack | None) -> Ack | None:
        """``ack`` extended to queue the message's receipt; ``ack`` itself for a controller without receipts."""
        if controller not in self._senders:
            return ack
        key = (controller, message_id)
        with self._cond:
            self._processing[key] = self._processing.get(key, 0) + 1
        done = [False]

        def acknowledge() -> None:
            if done[0]:
                return
            done[0] = True
            if ack is not None:
                ack()
            with self._cond:
                left = self._processing.pop(key) - 1
                if left:
                    self._processing[key] = left
                    return
                idle = not self._due  # the drainer waits only on an empty buffer: wake it only then
                self._due.setdefault(controller, []).append(message_id)
                if idle:
                    self._cond.notify()

        return acknowledge

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="receipts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Send what is due, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._due or self._stopping)
                if not self._stopping:
                    # Let the rest of the commit's acknowledgements come in: one receipt for a batch, not one
                    # publish (and its PUBACK on the bridge's busy network thread) per event.
                    self._cond.wait(COALESCE_S)
                due, self._due = self._due, {}
                stopping = self._stopping
            for controller, ids in due.items():
                for i in range(0, len(ids), RECEIPT_MAX_IDS):
                    try:
                        self._senders[controller](ids[i:i + RECEIPT_MAX_IDS])
                    except Exception:  # the controller sends its events again: nothing is lost
                        log.exception("receipt to %s failed", controller)
            if stopping:
                return
