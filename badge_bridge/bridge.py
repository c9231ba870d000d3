"""The bridge daemon: wires the audit writer, the decision processor, the drivers, metrics and timers.

Start-up order matters: the writer first (it waits out a database that is away), then the snapshot, the
ids already in the log (so a replay after a restart is recognised) and the state that survives a restart
(lockdowns, unlocks, anti-passback, two-person waits, open alarms: ``ingest.persist``), then the drivers.
Stop is the reverse, and the writer flushes last, so nothing a driver accepted is left uncommitted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING

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
from badge_bridge.failover.lease import Fenced, Lease, Takeover
from badge_bridge.failover.shared_state import SharedStateListener
from badge_bridge.firmware.validate import osdp_feedback
from badge_bridge.ingest import RECENT_IDS, Processor, persist
from badge_bridge.ingest.console_auth import ConsoleAuthority
from badge_bridge.keys import KeyStore
from badge_bridge.metrics import BridgeCollector, serve
from badge_bridge.models import Alarm, AuditEntry
from badge_bridge.request_expiry import RequestExpiry
from badge_bridge.snapshot import Snapshot, load_snapshot
from badge_bridge.state_watch import StateWatch
from badge_bridge.visitor_watch import VisitorWatch

if TYPE_CHECKING:
    from badge_bridge.face_match import Gallery

log = logging.getLogger(__name__)

People = tuple[Snapshot, "Gallery | None", int]
"""People and credentials, the enrolled faces (None where no door checks faces), and the mark of the newest
admin change they include (``_admin_fingerprint``)."""

TICK_S = 0.1
"""Timers: held-open doors, timed relocks, and the correlator's windows (passage to alarm is measured in
hundreds of milliseconds)."""
RELOAD_S = 2.0
SEAL_EVERY_S = 3600.0
EXIT_FENCED = 75
"""Exit status of a bridge that lost its partition's lease (EX_TEMPFAIL: start it again, as a standby)."""


class Bridge:
    def __init__(self, config: SiteConfig, engine: Engine, keys: KeyStore, lease: Lease | None = None,
                 takeover: Takeover | None = None, stopping: threading.Event | None = None) -> None:
        """``config``: the site, or one partition's view of it (``SiteConfig.partition_view``). ``lease``: the
        partition's lease this bridge holds (PostgreSQL, several bridges per partition): every commit is
        fenced by it and every door command gated on it (failover/lease.py); ``takeover``: how it was taken,
        for the log; ``stopping``: set to stop (SIGTERM)."""
        self.config = config
        self.engine = engine
        self.keys = keys
        self.lease = lease
        self.takeover = takeover
        self.stopping = stopping or threading.Event()
        self._renewing_done = threading.Event()
        """Set by ``stop`` once the writer has flushed: the lease is renewed until then."""
        self.writer = AuditWriter(
            engine, config.site.instance, keys.signer(),
            batch_max=config.audit.batch_max, queue_max=config.audit.queue_max,
            fence=lease.fence if lease is not None else None, on_fenced=self._fenced,
        )
        self.state_watch = StateWatch(engine, self.writer, config.site.instance, config.audit.state_check_seconds,
                                      self.stopping, keys.trusted_public_keys())
        self.request_expiry = RequestExpiry(engine, self.writer, config.site.instance, self.stopping)
        self.visitor_watch = VisitorWatch(engine, self.writer, config.site.instance, self.stopping)
        self.processor: Processor | None = None
        self.shared_state: SharedStateListener | None = None
        """PostgreSQL: keeps the other partitions' facts current in memory (failover/shared_state.py)."""
        self.mqtt: MqttLink | None = None
        self.metrics_server: ThreadingHTTPServer | None = None
        self.publisher: Publisher | None = None
        self._admin_mark: int | None = None
        self._prepared: People | None = None
        """What ``prepare`` loaded, until ``start`` takes it up."""
        self._renewals: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self.drivers: dict[str, Driver] = {}
        """One per controller of the site file, by key (controllers/registry.py)."""
        self._doors_changed: set[str] = set()
        """Doors whose state changed since it was last published (``_door``, ``_publish_doors``)."""

    def _lifecycle(self, kind: str) -> Event:
        """Started or stopped; with a lease, by which holder and under which token (so the log tells which
        process of the partition was active when)."""
        now = datetime.now(UTC)
        detail: dict[str, object] = {"site": self.config.site.name}
        if self.lease is not None:
            detail.update(holder=self.lease.holder, token=self.lease.token)
        return Event(id=Event.new_id(kind), kind=kind, source=self.config.site.instance, ts=now, received_ts=now,
                     detail=detail)

    def _took_over(self, takeover: Takeover) -> Event:
        assert self.lease is not None
        now = datetime.now(UTC)
        expired = takeover.previous_expired_at.isoformat() if takeover.previous_expired_at else None
        return Event(id=Event.new_id(EventKind.BRIDGE_TOOK_OVER), kind=EventKind.BRIDGE_TOOK_OVER,
                     source=self.config.site.instance, ts=now, received_ts=now,
                     detail={"holder": self.lease.holder, "token": takeover.token,
                             "previous_holder": takeover.previous_holder, "previous_token": takeover.previous_token,
                             "previous_expired_at": expired})

    def _fenced(self, exc: Exception) -> None:
        """Another bridge holds the partition now: stop at once, with nothing more committed or commanded
        (the process exits; its supervisor starts it again as a standby)."""
        log.critical("%s; this bridge stops now", exc)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_FENCED)

    def _session_taken_over(self) -> None:
        """The broker handed our MQTT session to another client with our id (reason 142): another bridge of
        this partition took over (then the lease says so: fenced), or some other client reused the id (said
        loudly; not a reason to hand the doors over)."""
        if self.lease is not None:
            try:
                self.lease.renew()  # Fenced if a standby holds the partition now
            except Fenced as exc:
                self._fenced(exc)
                return
        # Still ours: a client that is not a bridge of this partition reused its client id (stolen credentials,
        # a misconfigured tool); the broker's ACL should bind client ids to accounts. We reconnect (gated).
        log.critical("another client took this bridge's MQTT session (client id of partition %r) while the lease is "
                     "still ours: a second bridge under this name, or another account using the client id",
                     self.config.site.instance)

    def _before_connect(self) -> None:
        """In paho's thread, before every (re)connection: a bridge that is not surely the active would take the
        session back from a standby that took over (and flush the commands paho kept for it), so it waits
        until the lease is surely its own; the renewals meanwhile fence it if another holds the partition."""
        if self.lease is None:
            return
        logged = False
        while not self.lease.may_command():
            if not logged:
                log.warning("partition %s: not reconnecting to the broker until the lease is surely ours",
                            self.config.site.instance)
                logged = True
            if self.stopping.wait(self.lease.settings.renew_s / 4):
                raise ConnectionAbortedError("stopping: no reconnection")  # paho gives up on an OSError

    # --- start and stop ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """What does not change hands, loaded ahead (a standby does it while it waits for the lease, so a
        takeover starts warm): people and credentials, the face gallery, the database pool. Nothing here
        commits, connects or commands; ``start`` reloads what an active may have changed meanwhile."""
        self._prepared = self._retry_until_stopped(self._load_people)
        self._retry_until_stopped(self._load_changes)  # warms the pool and the statements; start loads them anew

    def start(self) -> None:
        """Active from here on: ``prepare`` (unless done), then the writer, the lease renewals, what the
        previous active may have changed (ids in the log, state, open alarms, people), and the drivers."""
        began = time.monotonic()
        if self._prepared is None:
            self.prepare()
        self.writer.start()
        self.writer.submit(self._lifecycle(EventKind.BRIDGE_STARTED))
        if self.lease is not None:
            self._renewals = self.lease.keep(self._renewing_done, self._fenced)
            if self.takeover is not None and self.takeover.previous_holder is not None:
                self.writer.submit(self._took_over(self.takeover))
                log.warning("partition %s: bridge.took_over from %s (token %s, ours %d)", self.config.site.instance,
                            self.takeover.previous_holder, self.takeover.previous_token, self.takeover.token)
        self.publisher = Publisher.for_site(self.config, self.engine, self.keys,
                                            lambda event, effect: self.writer.submit(event, effect=effect))
        self.publisher.start()
        recent, alarms, state, (snapshot, gallery, self._admin_mark) = self._retry_until_stopped(self._load_changes)
        self._prepared = None
        console_key = self.keys.console_command_public()
        if console_key is None:
            log.error("no console command key (keys/console/command.pub): every console command will be refused")
        authority = ConsoleAuthority(console_key, self.engine, timedelta(seconds=self.config.ingest.console_max_age_s))
        processor = self.processor = Processor(self.config, self.writer, snapshot, self.keys.pin_pepper(),
                                               send=self._send, on_door=self._door, send_camera=self._request,
                                               console_authority=authority)  # now: its clock starts with it
        if gallery is not None:
            processor.set_gallery(gallery)
        processor.remember(recent)
        processor.restore_alarms(alarms)
        processor.restore_state(state)  # before any driver: the first card is decided with it
        self.mqtt = MqttLink(self.config, processor)
        self.mqtt.on_taken_over = self._session_taken_over
        self.mqtt.before_connect = self._before_connect
        if self.lease is not None:
            self.lease.session_intact = self.mqtt.connected.is_set  # connections open only while surely ours
        self.writer.on_commit = self.mqtt.publish_events
        self.drivers = registry.build(Context(self.config, processor, self.keys, self.mqtt, osdp_feedback(self.config)))
        self._listen_to_shared_state(processor)
        self.mqtt.start()
        for driver in self.drivers.values():
            driver.start()
        # No wait for the broker before these: paho keeps what is published at QoS 1 until it is connected, and
        # the messages the broker queued for us are decided as soon as they arrive.
        self._publish_syncs()
        processor.command_restored()
        for door in self.config.doors:
            self._door(door.key)
        collector = BridgeCollector(processor, self.writer, self.mqtt.connected.is_set,
                                    self.mqtt.oldest_unanswered_s)
        self.metrics_server = serve(collector, self.config.metrics.host, self.config.metrics.port)
        self._ticker = threading.Thread(target=self._tick_forever, name="ticker", daemon=True)
        self._ticker.start()
        threading.Thread(target=self._seal_forever, name="segment-sealer", daemon=True).start()
        self.state_watch.start()
        self.request_expiry.start()
        self.visitor_watch.start()
        self.mqtt.connected.wait(5)  # "started" says subscribed; the doors never waited for this (paho's thread)
        log.info("bridge %s started for site %r (%.0f ms)", self.config.site.instance, self.config.site.name,
                 (time.monotonic() - began) * 1000)

    def _listen_to_shared_state(self, processor: Processor) -> None:
        """On PostgreSQL, the other partitions' changes from now on, and what they committed since our load
        (the listener's first reload), before any card is decided."""
        if self.engine.dialect.name != "postgresql":
            return
        self.shared_state = SharedStateListener(self.engine, self.config.site.instance, processor.apply_shared,
                                                self.stopping, self.config.partitions())
        self.shared_state.start()
        if not self.shared_state.listening.wait(5):
            log.error("site state listener not connected yet: other partitions' changes reach us once it is")

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
        if self.lease is not None and self._renewals is not None:
            self._renewing_done.set()  # only now: a standby taking over mid-flush would fence the last commits
            self._renewals.join(5)
            self.lease.release()  # a standby takes over now, not lease_s later
        log.info("bridge stopped")

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

    def _load_people(self) -> People:
        with Session(self.engine) as session:
            return self._people(session)

    def _people(self, session: Session) -> People:
        mark = self._admin_fingerprint(session)
        return load_snapshot(session, self.config.visitors.escort_window_s), self._gallery(session), mark

    def _gallery(self, session: Session) -> Gallery | None:
        """The enrolled faces, decrypted into memory, where a door checks faces (enrollments are admin.*
        changes, so they reload with people and credentials); None elsewhere."""
        if all(door.face == "off" for door in self.config.doors):
            return None
        from badge_bridge.biometrics import load_gallery  # dlib loads only at sites that check faces

        gallery = load_gallery(session, self.keys.evidence_key())
        log.info("face gallery: %d encodings enrolled", len(gallery))
        return gallery

    def _load_changes(self) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]], People]:
        """What the previous active (or a console, an admin) may have changed since ``prepare``: the ids in
        this chain (so its redelivered messages are recognised), open alarms, the persisted state, and people
        and credentials if an admin change came since."""
        assert self._prepared is not None
        with Session(self.engine) as session:
            recent = list(session.scalars(select(AuditEntry.event_id).where(chain_ids(AuditEntry.chain_id, self.config.site.instance))
                                          .order_by(AuditEntry.id.desc()).limit(RECENT_IDS)))
            alarms = [(a.door, a.kind) for a in session.scalars(
                select(Alarm).where(Alarm.cleared_at.is_(None), Alarm.door.is_not(None)))]
            state = persist.load(session)
            people = self._prepared
            if self._admin_fingerprint(session) != people[2]:
                people = self._people(session)
        recent.reverse()
        return recent, alarms, state, people  # type: ignore[return-value]

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
                self._publish_doors()
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
            if self._admin_fingerprint(session) == self._admin_mark:
                return
            snapshot, gallery, mark = self._people(session)
        assert self.processor is not None
        self.processor.set_snapshot(snapshot)
        if gallery is not None:
            self.processor.set_gallery(gallery)
        self._admin_mark = mark
        log.info("people or credentials changed: decisions and controller lists updated")
        self.state_watch.wake()
        self.visitor_watch.wake()
        self._publish_syncs()

    # --- outbound ------------------------------------------------------------------------------------

    def _send(self, controller: str, command: Command) -> None:
        if self.lease is not None and not self.lease.may_command():
            log.error("command %s to %s not sent: this bridge's lease is not certain (a standby may hold the "
                      "partition)", command.id, controller)
            return
        self.drivers[controller].send(command)

    def _request(self, camera: str, request: c.EvidenceRequest | c.FaceRequest | c.PeopleRequest) -> None:
        if self.mqtt is not None:
            self.mqtt.request_evidence(camera, request)

    def _door(self, door: str) -> None:
        """A door's state changed (called by the processor, under its lock): published by the next tick."""
        self._doors_changed.add(door)

    def _publish_doors(self) -> None:
        """The changed doors' states, each once with its latest state: a busy door changes state a few times
        per passage, and each publication at QoS 1 costs the receiving thread a PUBACK to handle: a sixth of that
        thread's time in bench_mqtt's passages, published per change. Consoles see every change within a tick
        (``TICK_S``); the events themselves reach them on ``bridge/events``. Only the ticker calls this, so a
        door's states leave in the order they were read."""
        if self.mqtt is None or self.processor is None:
            return
        while self._doors_changed:
            door = self._doors_changed.pop()  # the processor only adds: what is seen here is there to pop
            self.mqtt.publish_door(self.processor.door_state(door))

    def _publish_syncs(self) -> None:
        """Each controller's offline list, when it changed (gated like a door command: an esp-rfid list is
        sent as commands)."""
        assert self.processor is not None
        if self.lease is not None and not self.lease.may_command():
            return
        for driver in self.drivers.values():
            driver.sync(self.processor.snapshot)
