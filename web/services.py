"""What the console's views share: the database, the console's own audit chain, and its link to the bridge.

The console never drives a door itself: unlock, lock and lockdown travel to the bridge as
``ConsoleCommand`` messages over MQTT, signed with the console command key, and the bridge checks and
audits them with the user. Changes the console makes
in the database (alarms, people, credentials, users) are audited on the console's own chain
``<instance>.console``, committed before the page answers.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from badge_bridge import console_signing
from badge_bridge.audit.writer import AuditWriter, Effect
from badge_bridge.clock import Clock, system_clock
from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_client import no_delay, refused, site_client
from badge_bridge.topics import CONSOLE, Topics
from web.present import Presenter, published

log = logging.getLogger(__name__)

CLIENT_QUEUE = 1000
"""Messages a slow live-feed client may fall behind before it is told to reload."""
STREAMS_PER_SESSION = 8
"""Open streams one login may hold (each holds a server thread for its life): a new one ends the oldest, which
is most likely a page already left (the server learns of a closed page only when it next writes to it)."""
EVICTED = ("", "")
"""Put on a stream's queue to end it."""


class Feed(queue.Queue[tuple[str, str]]):
    """One browser's stream: what is published, in order; ``ended`` once the hub let go of it."""

    ended = False


class AuditFailed(Exception):
    """The console's audit event could not be committed; the action must be reported as failed."""


class ConsoleAudit:
    """The console's audit chain: every action is an event carrying the user, committed before the
    page says it is done."""

    def __init__(self, engine: Engine, config: SiteConfig, keys: KeyStore) -> None:
        self.writer = AuditWriter(engine, f"{config.site.instance}.console", keys.signer())
        self.writer.start()

    def record(self, kind: str, user: str, *, door: str | None = None, subject: dict[str, object] | None = None,
               detail: dict[str, object] | None = None, effect: Effect | None = None) -> Event:
        """Audit an action by ``user`` (for a failed login, whatever name was typed: it goes in the subject,
        never in the source)."""
        now = datetime.now(UTC)
        event = Event(id=Event.new_id(kind), kind=kind, source="console", ts=now, received_ts=now,
                      door=door, subject={"user": user, **(subject or {})}, detail=detail or {})
        return self.commit(event, effect)

    def commit(self, event: Event, effect: Effect | None = None) -> Event:
        done = threading.Event()
        self.writer.submit(event, lambda _e, _d: done.set(), effect=effect)
        if not done.wait(10):
            raise AuditFailed(f"the audit log did not accept the action in time: {self.writer.stats.last_error}")
        return event

    def stop(self) -> None:
        self.writer.stop()


class LiveHub:
    """Fans the bridge's live messages out to every connected browser (one bounded queue each)."""

    def __init__(self) -> None:
        self._clients: set[Feed] = set()
        self._owners: dict[str, list[Feed]] = {}
        self._lock = threading.Lock()
        self.doors: dict[str, str] = {}
        """Door key -> the latest retained DoorState JSON, for pages that render the board."""

    @contextmanager
    def subscribe(self, owner: str = "") -> Iterator[Feed]:
        """A queue of everything published from now on. ``owner`` (a session) holds STREAMS_PER_SESSION at most:
        a new one ends its oldest, so one stolen cookie cannot take every server thread."""
        q = Feed(CLIENT_QUEUE)
        with self._lock:
            mine = self._owners.setdefault(owner, [])
            if owner and len(mine) >= STREAMS_PER_SESSION:
                self._end(mine.pop(0))
            mine.append(q)
            self._clients.add(q)
        try:
            yield q
        finally:
            with self._lock:
                self._clients.discard(q)
                if q in mine:
                    mine.remove(q)
                if not mine and self._owners.get(owner) is mine:
                    del self._owners[owner]

    def _end(self, q: Feed) -> None:
        """Let go of a stream (lock held) and wake it to end."""
        self._clients.discard(q)
        q.ended = True
        try:
            q.put_nowait(EVICTED)
        except queue.Full:
            pass  # it wakes at its next session check and sees ``ended``

    def publish(self, kind: str, data: str) -> None:
        with self._lock:
            clients = list(self._clients)
        for q in clients:
            try:
                q.put_nowait((kind, data))
            except queue.Full:  # a stalled browser: its stream ends (EventSource reconnects) rather than grow
                with self._lock:
                    self._end(q)

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)


class BridgeLink:
    """The console's MQTT client: the bridge's events and door states in, operators' commands out."""

    def __init__(self, config: SiteConfig, hub: LiveHub,
                 present: Callable[[c.PublishedEvents], str] = c.PublishedEvents.model_dump_json) -> None:
        """``present``: a committed batch as the stream sends it (the console's: web.present.published, with
        names and local time; by default as published)."""
        self.config = config
        self.hub = hub
        self.present = present
        self.topics = Topics(config.mqtt.topic_prefix)
        self.client = site_client(config, f"badge-bridge-console-{uuid.uuid4().hex[:8]}", role=CONSOLE)
        self.client.on_connect = self._on_connect
        self.subscriptions = {self.topics.bridge_events(): (0, self._events),
                              self.topics.door_state(): (1, self._door),
                              self.topics.bridge_status(): (1, self._bridge)}
        """Topic filter -> (QoS, what to do with a message on it)."""
        for topic_filter, (_, handle) in self.subscriptions.items():
            self.client.message_callback_add(topic_filter, self._receiver(handle))
        self.connected = threading.Event()
        self.client.on_disconnect = lambda *_: self.connected.clear()

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        self.client.connect_async(self.config.mqtt.host, self.config.mqtt.port, keepalive=self.config.mqtt.keepalive_s,
                                  properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        if reason.is_failure:
            log.error("console: %s", refused(self.config, reason, CONSOLE))
            return
        no_delay(client)
        client.subscribe([(topic_filter, qos) for topic_filter, (qos, _) in self.subscriptions.items()])
        self.connected.set()

    @staticmethod
    def _receiver(handle: Callable[[bytes | bytearray], None]) -> Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]:
        """The paho callback for one subscription: a message off the contract is logged and dropped."""

        def receive(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            try:
                handle(msg.payload)
            except ValidationError as exc:
                log.warning("console: ignored an off-contract message on %s: %s", msg.topic, exc.errors()[:1])

        return receive

    def _events(self, payload: bytes | bytearray) -> None:
        """Presented here, once per batch for every browser: one name lookup, not one per row per browser."""
        self.hub.publish("events", self.present(c.PublishedEvents.model_validate_json(payload)))

    def _door(self, payload: bytes | bytearray) -> None:
        state = c.DoorState.model_validate_json(payload)
        self.hub.doors[state.door] = state.model_dump_json()
        self.hub.publish("door", self.hub.doors[state.door])

    def _bridge(self, payload: bytes | bytearray) -> None:
        """One bridge instance's status (``bridge/status/<partition>/<instance>``, each with its role)."""
        if payload:  # an empty retained message clears an instance that is gone for good
            self.hub.publish("bridge", c.BridgeStatus.model_validate_json(payload).model_dump_json())

    def command(self, cmd: c.ConsoleCommand) -> None:
        """Send an operator's command to the bridge; raises when the broker is unreachable."""
        if not self.connected.is_set():
            raise ConnectionError("the console is not connected to the broker; the command was not sent")
        info = self.client.publish(self.topics.console_commands(), cmd.model_dump_json(), qos=1)
        info.wait_for_publish(5)
        if not info.is_published():
            raise ConnectionError("the broker did not acknowledge the command in time")


class Services:
    """Built once per app by the factory and kept in ``app.extensions["badge_bridge"]``."""

    def __init__(self, config: SiteConfig, engine: Engine, keys: KeyStore, *, mqtt_link: bool = True) -> None:
        self.config = config
        self.engine = engine
        self.keys = keys
        self.clock: Clock = system_clock
        """The time sessions are checked against; a test sets it instead of waiting hours."""
        self.audit = ConsoleAudit(engine, config, keys)
        self.hub = LiveHub()
        self.presenter = Presenter(config)
        self.link = BridgeLink(config, self.hub, functools.partial(published, self.session, self.presenter)) \
            if mqtt_link else None
        if self.link is not None:
            self.link.start()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @functools.cached_property
    def _command_key(self) -> Ed25519PrivateKey:
        """Read once, at the first command (rotating the key means restarting the console)."""
        return self.keys.console_command_key()

    def sign(self, cmd: c.ConsoleCommand) -> c.ConsoleCommand:
        """``cmd`` signed with the console command key, the one thing that makes the bridge obey it."""
        return console_signing.sign(cmd, self._command_key)

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()
        self.audit.stop()
