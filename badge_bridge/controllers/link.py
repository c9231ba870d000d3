"""The bridge's MQTT connection: the contract's topics in and out (docs/mqtt.md), and the broker for the drivers
whose controllers speak MQTT.

Delivery: a persistent session (clean start off, a session expiry) so messages published while the bridge
was down are queued by the broker and arrive when it returns; manual acknowledgement, sent only once the
message's events are committed to the audit log, so a crash before commit means a redelivery, never a
loss; paho reconnects with backoff and the subscriptions are renewed on every connect.

Routing: each topic filter has its handler, registered with paho (``message_callback_add``): the contract's
controller, camera and console topics here, a driver's own topics by the driver (``route``). A message on no
filter (a subscription an older site file left in the persistent session) is ``unknown_topic``. Whatever a
handler does, the message ends processed or dead-lettered, and acknowledged either way, exactly once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.controllers.receipts import Receipts
from badge_bridge.controllers.registry import heard_elsewhere
from badge_bridge.events import Event
from badge_bridge.ingest import Processor, describe_validation
from badge_bridge.mqtt_client import no_delay, refused, site_client
from badge_bridge.topics import ANY, BRIDGE, Topics

log = logging.getLogger(__name__)

RECEIVE_MAXIMUM = 20_000
"""How many unacknowledged messages the broker may have in flight to us. Acks wait for a commit, so the
window must be well above the writer's batch size: with a window of one batch, reading stops while that
batch commits, and reading and committing take turns instead of overlapping."""

SESSION_TAKEN_OVER = 142
"""MQTT 5 DISCONNECT reason: another connection took this client id's session."""

Ack = Callable[[], None]
Handler = Callable[[str, bytes, Ack | None], None]
"""(topic, payload, ack) of one message; ``ack`` is None for a message at QoS 0."""
ContractHandler = Callable[[str, str, bytes, Ack | None], None]
"""(sender's key, topic, payload, ack)."""


class MqttLink:
    """The bridge's one broker connection (client id ``mqtt.client_id``), shared by the drivers that need it."""

    def __init__(self, config: SiteConfig, processor: Processor) -> None:
        self.config = config
        self.processor = processor
        self.topics = Topics(config.mqtt.topic_prefix)
        # No last will here: the session is the partition's, whose holder changes; each bridge process has
        # its own status connection (instance_status.py).
        client_id = config.mqtt.client_id or "badge-bridge"
        if config.mqtt.client_id is None or config.partitioned:  # one session per partition, never shared
            client_id = f"{client_id}-{config.site.instance}"
        self.client = site_client(config, client_id, role=BRIDGE,
                                  manual_ack=True)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._receiver(self._unknown)
        self.client.on_pre_connect = self._pre_connect(self.client.on_pre_connect)
        self.connected = threading.Event()
        self.receipts = Receipts()
        """End-to-end receipts to the controllers on the contract (their drivers register)."""
        self.before_connect: Callable[[], None] = lambda: None
        """Called in paho's thread before every (re)connection; may wait, or raise OSError to skip the attempt
        (the bridge: until its partition's lease is surely its own)."""
        self.on_taken_over: Callable[[], None] = lambda: None
        """The broker gave our session to another client with our id (reason 142: another bridge of the partition)."""
        self.unanswered: dict[int, float] = {}
        """Message id -> ``time.monotonic()`` of arrival, for messages not yet acknowledged (health)."""
        self.routes: dict[str, Handler] = {}
        """Topic filter -> its handler."""
        self.senders: dict[str, str] = {}
        """Topic -> the controller that publishes on it, for topics that do not name it (esp-rfid's)."""
        self.heard_elsewhere = heard_elsewhere(config)
        """Controllers that do not speak the contract: a message on their contract topics is an impostor's."""
        t = self.topics
        # A partition hears only its own devices (another partition's are not unknown, just not ours); a site
        # of one partition hears every key, so a device missing from the site file is dead-lettered.
        controllers = [ctl.key for ctl in config.controllers] if config.partitioned else [ANY]
        cameras = [cam.key for cam in config.cameras] if config.partitioned else [ANY]
        for key in controllers:
            self.route(t.controller_events(key), self._contract(self._controller_event))
            self.route(t.controller_status(key), self._contract(self._controller_status))
        for key in cameras:
            self.route(t.camera_events(key), self._contract(self._camera_event))
            self.route(t.camera_status(key), self._contract(self._camera_status))
        self.route(t.console_commands(), self._contract(self._console_command))

    def _pre_connect(self, rotate: Callable[[mqtt.Client, Any], None] | None) -> Callable[[mqtt.Client, Any], None]:
        """Before each (re)connection: the bridge's gate first (the lease), then the turn to the next broker of
        ``mqtt.brokers`` (mqtt_client.Failover), which paho's one pre-connect callback also serves."""

        def pre_connect(client: mqtt.Client, userdata: Any) -> None:
            self.before_connect()
            if rotate is not None:
                rotate(client, userdata)

        return pre_connect

    def route(self, topic_filter: str, handler: Handler, *, sender: str | None = None) -> None:
        """Hand the messages on ``topic_filter`` to ``handler`` (register before ``start``). ``sender``: the
        controller that publishes on it, for a topic that does not name it."""
        self.routes[topic_filter] = handler
        if sender is not None:
            self.senders[topic_filter] = sender
        self.client.message_callback_add(topic_filter, self._receiver(handler))

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.mqtt.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(self.config.mqtt.host, self.config.mqtt.port, keepalive=self.config.mqtt.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()
        self.receipts.start()

    def stop(self) -> None:
        self.receipts.stop()
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object, reason: mqtt.ReasonCode,
                    _props: object) -> None:
        if reason.is_failure:
            log.error("%s", refused(self.config, reason))
            return
        no_delay(client)
        client.subscribe([(f, 1) for f in self.routes])
        self.connected.set()
        log.info("MQTT connected to %s:%s (session %s)", self.config.mqtt.host, self.config.mqtt.port,
                 "resumed" if getattr(_flags, "session_present", False) else "new")

    def _on_disconnect(self, _c: mqtt.Client, _ud: object, _flags: object, reason: mqtt.ReasonCode,
                       _props: object) -> None:
        self.connected.clear()
        if reason == SESSION_TAKEN_OVER:
            self.on_taken_over()
        self.unanswered.clear()  # the broker redelivers them on the resumed session
        self.processor.link_lost()
        log.warning("MQTT disconnected (%s); reconnecting", reason)

    def oldest_unanswered_s(self) -> float:
        """Age of the oldest message still waiting for its acknowledgement (0 when none waits)."""
        oldest = min(list(self.unanswered.values()), default=None)  # list(): a snapshot, other threads write
        return 0.0 if oldest is None else time.monotonic() - oldest

    # --- inbound -------------------------------------------------------------------------------------

    def _receiver(self, handler: Handler) -> Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]:
        """The paho callback that hands a message to ``handler``."""

        def receive(client: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
            ack = self._ack_once(client, msg.mid, msg.qos) if msg.qos > 0 else None
            self._deliver(handler, msg.topic, bytes(msg.payload), ack)  # UTF-8: the broker refuses a topic that is not

        return receive

    def deliver(self, topic: str, payload: bytes, ack: Ack | None) -> None:
        """Process a message as if it had arrived on ``topic``, routed as paho routes it (the fuzz oracle's
        way in, without a broker)."""
        handler = next((h for f, h in self.routes.items() if mqtt.topic_matches_sub(f, topic)), self._unknown)
        self._deliver(handler, topic, payload, ack)

    def _deliver(self, handler: Handler, topic: str, payload: bytes, ack: Ack | None) -> None:
        """Every message ends processed, or dead-lettered: then acknowledged either way, exactly once."""
        try:
            if len(payload) > c.MAX_PAYLOAD:
                self.processor.reject(self._sender(topic), "oversized", f"{len(payload)} bytes, the limit is "
                                      f"{c.MAX_PAYLOAD}", payload, where=topic, ack=ack)
            else:
                handler(topic, payload, ack)
        except Exception as exc:  # a bug in a parser or handler: dead-letter the message, never leave it unacked
            self._internal_error(topic, payload, ack, exc)

    def _internal_error(self, topic: str, payload: bytes, ack: Ack | None, exc: Exception) -> None:
        log.exception("processing a message on %s failed", topic)
        self.processor.reject(self._sender(topic), "internal_error",
                              f"the bridge failed on this message ({type(exc).__name__}); see its log",
                              payload, where=topic, ack=ack)

    def _ack_once(self, client: mqtt.Client, mid: int, qos: int) -> Ack:
        """The message's acknowledgement; a second call (a handler that failed after acknowledging) is a
        no-op, since the broker may already have reused the id for another message."""
        self.unanswered[mid] = time.monotonic()
        done = [False]

        def ack() -> None:
            if not done[0]:
                done[0] = True
                self.unanswered.pop(mid, None)
                client.ack(mid, qos)

        return ack

    def _sender(self, topic: str) -> str:
        """Who sent a message, from its topic: an esp-rfid device, a controller's or camera's key, else the console."""
        return self.senders.get(topic) or self.topics.key_of(topic) or "console"

    def _impostor(self, topic: str, payload: bytes, ack: Ack | None) -> bool:
        """A message on the contract's topics of a controller that does not speak the contract: dead-lettered."""
        key = self.topics.controller_of(topic)
        if key not in self.heard_elsewhere:
            return False
        self.processor.reject(key, "unknown_topic", f"{key} is {self.heard_elsewhere[key]}, never on the contract's "
                              f"topics", payload, where=topic, ack=ack)
        return True

    def _unknown(self, topic: str, payload: bytes, ack: Ack | None) -> None:
        if not self._impostor(topic, payload, ack):
            self.processor.reject(self._sender(topic), "unknown_topic", f"nothing is expected on {topic}", payload,
                                  where=topic, ack=ack)

    def _contract(self, handle: ContractHandler) -> Handler:
        """A handler of contract messages: a payload off the contract is a dead letter that says why."""

        def route(topic: str, payload: bytes, ack: Ack | None) -> None:
            sender = self._sender(topic)
            try:
                handle(sender, topic, payload, ack)
            except ValidationError as exc:
                code = "malformed_json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "invalid_message"
                self.processor.reject(sender, code, describe_validation(exc), payload, where=topic, ack=ack)

        return route

    def _controller_event(self, sender: str, topic: str, payload: bytes, ack: Ack | None) -> None:
        if not self._impostor(topic, payload, ack):
            msg = c.controller_event.validate_json(payload)
            if msg.type != "heartbeat":  # a controller keeps every event but heartbeats until their receipt
                ack = self.receipts.track(sender, msg.id, ack)
            try:
                self.processor.controller_event(sender, msg, payload, topic, ack)
            except Exception as exc:  # dead-lettered with the tracked ack: it is receipted, never tracked for ever
                self._internal_error(topic, payload, ack, exc)

    def _controller_status(self, sender: str, topic: str, payload: bytes, ack: Ack | None) -> None:
        if self._impostor(topic, payload, ack):
            return
        if payload:  # an empty retained message is a deletion
            self.processor.controller_status(sender, c.ControllerStatus.model_validate_json(payload), payload, topic,
                                             ack)
        elif ack:
            ack()

    def _camera_event(self, sender: str, topic: str, payload: bytes, ack: Ack | None) -> None:
        self.processor.camera_event(sender, c.camera_event.validate_json(payload), payload, topic, ack)

    def _camera_status(self, sender: str, topic: str, payload: bytes, ack: Ack | None) -> None:
        if payload:
            self.processor.camera_status(sender, c.CameraStatus.model_validate_json(payload), payload, topic, ack)
        elif ack:
            ack()

    def _console_command(self, _sender: str, topic: str, payload: bytes, ack: Ack | None) -> None:
        self.processor.console_command(c.ConsoleCommand.model_validate_json(payload), payload, topic, ack)

    # --- outbound ------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        """At QoS 1: paho keeps it until the broker has it, across a reconnection."""
        self.client.publish(topic, payload, qos=1, retain=retain)

    def request_evidence(self, camera: str, request: c.EvidenceRequest | c.FaceRequest | c.PeopleRequest) -> None:
        self.publish(self.topics.camera_requests(camera), request.model_dump_json())

    def publish_door(self, state: c.DoorState) -> None:
        """A door's state, retained, so a console that connects has the board at once."""
        self.publish(self.topics.door_state(state.door), state.model_dump_json(), retain=True)

    def publish_events(self, events: list[Event]) -> None:
        """One committed batch as ``PublishedEvents``, built from each event's canonical JSON as it stands
        (running it through the model again would double the cost of every event). QoS 0: the live feed is
        a convenience for consoles, which read history from the database."""
        items = ",".join(
            f'{{"v":1,"id":{json.dumps(e.id)},"ts":"{e.ts.isoformat()}","kind":"{e.kind}",'
            f'"source":{json.dumps(e.source)},"door":{json.dumps(e.door)},"subject":{e.subject_json},'
            f'"detail":{e.detail_json}}}' for e in events)
        payload = f'{{"v":1,"chain":{json.dumps(self.config.site.instance)},"events":[{items}]}}'
        self.client.publish(self.topics.bridge_events(), payload, qos=0)
