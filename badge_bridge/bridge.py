"""The bridge daemon: wires the audit writer, the decision processor, the drivers, metrics and timers.

Start-up order matters: the writer first (it waits out a database that is away), then the snapshot, the
ids already in the log (so a replay after a restart is recognised) and the state that survives a restart
(lockdowns, unlocks, anti-passback, two-person waits, open alarms: ``ingest.persist``), then the drivers.
Stop is the reverse, and the writer flushes last, so nothing a driver accepted is left uncommitted.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge.audit.ownership import chain_ids
from badge_bridge.audit.publish import Publisher
from badge_bridge.audit.segments import SegmentError, seal
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.backoff import Backoff
from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.controllers import registry
from badge_bridge.controllers.driver import Command, Context, Driver
from badge_bridge.controllers.link import MqttLink
from badge_bridge.db import describe
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.firmware.validate import osdp_feedback
from badge_bridge.ingest import RECENT_IDS, Processor, persist
from badge_bridge.ingest.console_auth import ConsoleAuthority
from badge_bridge.keys import KeyStore
from badge_bridge.metrics import BridgeCollector, serve
from badge_bridge.models import Alarm, AuditEntry
from badge_bridge.snapshot import Snapshot, load_snapshot
from badge_bridge.state_watch import StateWatch

log = logging.getLogger(__name__)

TICK_S = 0.1
"""Timers: held-open doors, timed relocks, and the correlator's windows (passage to alarm is measured in
hundreds of milliseconds)."""
RELOAD_S = 2.0
SEAL_EVERY_S = 3600.0


class Bridge:
    def __init__(self, config: SiteConfig, engine: Engine, keys: KeyStore) -> None:
        self.config = config
        self.engine = engine
        self.keys = keys
        self.writer = AuditWriter(
            engine, config.site.instance, keys.signer(),
            batch_max=config.audit.batch_max, queue_max=config.audit.queue_max,
        )
        self.stopping = threading.Event()
        self.state_watch = StateWatch(engine, self.writer, config.site.instance, config.audit.state_check_seconds,
                                      self.stopping, keys.trusted_public_keys())
        self.processor: Processor | None = None
        self.mqtt: MqttLink | None = None
        self.metrics_server: ThreadingHTTPServer | None = None
        self.publisher: Publisher | None = None
        self._admin_mark: int | None = None
        self._ticker: threading.Thread | None = None
        self.drivers: dict[str, Driver] = {}
        """One per controller of the site file, by key (controllers/registry.py)."""

    def _lifecycle(self, kind: str) -> Event:
        now = datetime.now(UTC)
        return Event(id=Event.new_id(kind), kind=kind, source=self.config.site.instance, ts=now, received_ts=now,
                     detail={"site": self.config.site.name})

    # --- start and stop ------------------------------------------------------------------------------

    def start(self) -> None:
        self.writer.start()
        self.writer.submit(self._lifecycle(EventKind.BRIDGE_STARTED))
        self.publisher = Publisher.for_site(self.config, self.engine, self.keys,
                                            lambda event, effect: self.writer.submit(event, effect=effect))
        self.publisher.start()
        snapshot, recent, alarms, state = self._retry_until_stopped(self._load)
        console_key = self.keys.console_command_public()
        if console_key is None:
            log.error("no console command key (keys/console/command.pub): every console command will be refused")
        authority = ConsoleAuthority(console_key, self.engine, timedelta(seconds=self.config.ingest.console_max_age_s))
        processor = self.processor = Processor(self.config, self.writer, snapshot, self.keys.pin_pepper(),
                                               send=self._send, on_door=self._door, send_camera=self._request,
                                               console_authority=authority)
        processor.remember(recent)
        self._load_faces()
        processor.restore_alarms(alarms)
        processor.restore_state(state)  # before any driver: the first card is decided with it
        self.mqtt = MqttLink(self.config, processor)
        self.writer.on_commit = self.mqtt.publish_events
        self.drivers = registry.build(Context(self.config, processor, self.keys, self.mqtt, osdp_feedback(self.config)))
        self.mqtt.start()
        for driver in self.drivers.values():
            driver.start()
        collector = BridgeCollector(processor, self.writer, self.mqtt.connected.is_set,
                                    self.mqtt.oldest_unanswered_s)
        self.metrics_server = serve(collector, self.config.metrics.host, self.config.metrics.port)
        self._ticker = threading.Thread(target=self._tick_forever, name="ticker", daemon=True)
        self._ticker.start()
        threading.Thread(target=self._seal_forever, name="segment-sealer", daemon=True).start()
        self.state_watch.start()
        self.mqtt.connected.wait(5)
        self._publish_syncs()
        processor.command_restored()
        for door in self.config.doors:
            self._door(door.key)
        log.info("bridge %s started for site %r", self.config.site.instance, self.config.site.name)

    def stop(self) -> None:
        self.stopping.set()
        if self._ticker is not None:
            self._ticker.join(5)
        for driver in self.drivers.values():
            driver.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        if self.publisher is not None:
            self.publisher.stop()
        self.writer.submit(self._lifecycle(EventKind.BRIDGE_STOPPED))
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

    def _retry_until_stopped(self, step):
        backoff = Backoff(0.2, 10)
        while True:
            try:
                return step()
            except Exception as exc:  # the database is away: wait for it, the desk needs the bridge
                if self.stopping.is_set():
                    raise
                delay = backoff.next()
                log.error("cannot load the site from the database, retrying in %.1fs: %s", delay, describe(exc))
                time.sleep(delay)

    def _load(self) -> tuple[Snapshot, list[str], list[tuple[str, str]], list[tuple[str, str]]]:
        with Session(self.engine) as session:
            snapshot = load_snapshot(session)
            recent = list(session.scalars(select(AuditEntry.event_id).where(chain_ids(AuditEntry.chain_id, self.config.site.instance))
                                          .order_by(AuditEntry.id.desc()).limit(RECENT_IDS)))
            alarms = [(a.door, a.kind) for a in session.scalars(
                select(Alarm).where(Alarm.cleared_at.is_(None), Alarm.door.is_not(None)))]
            state = persist.load(session, self.config.site.instance)
            self._admin_mark = self._admin_fingerprint(session)
        recent.reverse()
        return snapshot, recent, alarms, state  # type: ignore[return-value]

    @staticmethod
    def _admin_fingerprint(session: Session) -> int:
        """Changes to people and credentials are audited as admin.* events: the newest one's id changes."""
        # A range rather than LIKE 'admin.%', so the kind index serves it: this runs every two seconds.
        return session.scalar(select(func.max(AuditEntry.id)).where(AuditEntry.kind >= "admin.",
                                                                     AuditEntry.kind < "admin/")) or 0

    # --- timers --------------------------------------------------------------------------------------

    def _tick_forever(self) -> None:
        last_reload = time.monotonic()
        while not self.stopping.wait(TICK_S):
            assert self.processor is not None
            try:
                self.processor.tick()
                if time.monotonic() - last_reload >= RELOAD_S:
                    last_reload = time.monotonic()
                    self._reload_if_changed()
            except Exception:
                log.exception("timer step failed; continuing")

    def _seal_forever(self) -> None:
        """Seal each finished UTC day (a signed Merkle root, see segments.py), hourly: a day is sealed within
        an hour of its end. Its own thread: sealing a busy day takes seconds, the door timers cannot wait."""
        while True:
            try:
                seal(self.engine, self.keys.signer())
            except SegmentError as exc:  # the chain does not verify: it is never signed
                log.error("sealing refused: %s", exc)
            except Exception:
                log.exception("sealing failed; will retry")
            if self.stopping.wait(SEAL_EVERY_S):
                return

    def _reload_if_changed(self) -> None:
        with Session(self.engine) as session:
            mark = self._admin_fingerprint(session)
            if mark == self._admin_mark:
                return
            snapshot = load_snapshot(session)
        assert self.processor is not None
        self.processor.set_snapshot(snapshot)
        self._load_faces()
        self._admin_mark = mark
        log.info("people or credentials changed: decisions and controller lists updated")
        self.state_watch.wake()
        self._publish_syncs()

    def _load_faces(self) -> None:
        """The enrolled faces, decrypted into memory, where a door checks faces (enrollments are admin.*
        changes, so they reload with people and credentials)."""
        assert self.processor is not None
        if not self.processor.checks_faces():
            return
        from badge_bridge.biometrics import load_gallery  # dlib loads only at sites that check faces

        with Session(self.engine) as session:
            gallery = load_gallery(session, self.keys.evidence_key())
        self.processor.set_gallery(gallery)
        log.info("face gallery: %d encodings enrolled", len(gallery))

    # --- outbound ------------------------------------------------------------------------------------

    def _send(self, controller: str, command: Command) -> None:
        self.drivers[controller].send(command)

    def _request(self, camera: str, request: c.EvidenceRequest | c.FaceRequest) -> None:
        if self.mqtt is not None:
            self.mqtt.request_evidence(camera, request)

    def _door(self, door: str) -> None:
        if self.mqtt is None or self.processor is None:
            return
        self.mqtt.publish_door(self.processor.door_state(door))

    def _publish_syncs(self) -> None:
        """Each controller's offline list, when it changed."""
        assert self.processor is not None
        for driver in self.drivers.values():
            driver.sync(self.processor.snapshot)
