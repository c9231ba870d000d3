"""The bridge daemon: owns the audit writer and, as they land, the device drivers and the decision loop."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime

from sqlalchemy import Engine

from badge_bridge.audit import AuditWriter
from badge_bridge.config import SiteConfig
from badge_bridge.events import Event
from badge_bridge.keys import Signer

log = logging.getLogger(__name__)


class Bridge:
    def __init__(self, config: SiteConfig, engine: Engine, signer: Signer) -> None:
        self.config = config
        self.writer = AuditWriter(
            engine, config.site.instance, signer,
            batch_max=config.audit.batch_max, queue_max=config.audit.queue_max,
            checkpoint_every=config.audit.checkpoint_every, checkpoint_seconds=config.audit.checkpoint_seconds,
        )
        self.stopping = threading.Event()

    def _lifecycle(self, kind: str) -> Event:
        now = datetime.now(UTC)
        return Event(id=Event.new_id(kind), kind=kind, source=self.config.site.instance, ts=now, received_ts=now,
                     detail={"site": self.config.site.name})

    def start(self) -> None:
        self.writer.start()
        self.writer.submit(self._lifecycle("bridge.started"))
        log.info("bridge %s started for site %r", self.config.site.instance, self.config.site.name)

    def stop(self) -> None:
        self.writer.submit(self._lifecycle("bridge.stopped"))
        if not self.writer.stop(timeout=30):
            log.error("stopped with events not yet committed: %s", self.writer.stats.last_error)
        log.info("bridge stopped")

    def run_forever(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.start()
        try:
            self.stopping.wait()
        finally:
            self.stop()
