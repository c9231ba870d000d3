"""The MQTT driver: paho-mqtt 2 on MQTT 5, the contract's topics in and out (see docs/mqtt.md).

Delivery: a persistent session (clean start off, a session expiry) so messages published while the bridge
was down are queued by the broker and arrive when it returns; manual acknowledgement, sent only once the
message's events are committed to the audit log, so a crash before commit means a redelivery, never a
loss; paho reconnects with backoff and the subscriptions are renewed on every connect.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from badge_bridge.config import ControllerConfig, SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.controllers import esp_rfid
from badge_bridge.events import Event
from badge_bridge.ingest import Processor, describe_validation

log = logging.getLogger(__name__)

PASSWORD_ENV = "BADGE_BRIDGE_MQTT_PASSWORD"
"""Overrides ``mqtt.password``, so the secret can stay out of the site file."""
RECEIVE_MAXIMUM = 20_000
"""How many unacknowledged messages the broker may have in flight to us. Acks wait for a commit, so the
window must be well above the writer's batch size: with a window of one batch, reading stops while that
batch commits, and reading and committing take turns instead of overlapping."""


def make_client(config: SiteConfig, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A paho MQTT 5 client with the site's credentials, TLS and reconnect backoff (bridge and console)."""
    cfg = config.mqtt
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if cfg.username:
        client.username_pw_set(cfg.username, os.environ.get(PASSWORD_ENV) or cfg.password)
    if cfg.tls:
        client.tls_set(ca_certs=str(config.path(cfg.ca_file)) if cfg.ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=cfg.reconnect_max_s)
    return client


class MqttDriver:
    def __init__(self, config: SiteConfig, processor: Processor) -> None:
        self.config = config
        self.processor = processor
        self.prefix = config.mqtt.topic_prefix.rstrip("/")
        self.client = make_client(config, config.mqtt.client_id or f"badge-bridge-{config.site.instance}",
                                  manual_ack=True)
        self.client.will_set(f"{self.prefix}/bridge/status", self._status(False), qos=1, retain=True)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.unanswered: dict[int, float] = {}
        """Message id -> ``time.monotonic()`` of arrival, for messages not yet acknowledged (health)."""
        self.esp = {ctl.key: ctl for ctl in config.controllers if ctl.kind == "esp-rfid"}
        self.esp_by_topic = {topic: (ctl, channel) for ctl in self.esp.values()
                             for topic, channel in esp_rfid.topics(ctl.topic or ctl.key).inbound().items()}
        self.esp_tampered: set[str] = set()
        """esp-rfid devices whose own tamper flag is up (see ``esp_rfid.parse``)."""
        self.reader_of = {r.controller: r for r in config.readers}
        self.heard_elsewhere = {key: f"an esp-rfid device: the bridge reads it only on its own topics "
                                     f"({esp_rfid.topics(ctl.topic or key).events})" for key, ctl in self.esp.items()}
        self.heard_elsewhere |= {ctl.key: f"an OSDP bus: the bridge hears its readers only on {ctl.port}"
                                 for ctl in config.controllers if ctl.kind == "osdp"}
        """Controllers that do not speak the contract: a message on their contract topics is an impostor's."""

    def _status(self, online: bool) -> str:
        return c.BridgeStatus(online=online, instance=self.config.site.instance,
                              ts=datetime.now(UTC)).model_dump_json(exclude_none=True)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.mqtt.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(self.config.mqtt.host, self.config.mqtt.port, keepalive=self.config.mqtt.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        if self.connected.is_set():
            self.client.publish(f"{self.prefix}/bridge/status", self._status(False), qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object, reason: mqtt.ReasonCode,
                    _props: object) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s:%s refused the connection: %s", self.config.mqtt.host, self.config.mqtt.port, reason)
            return
        no_delay(client)
        group = self.config.mqtt.shared_group
        shared = f"$share/{group}/" if group else ""
        topics = [(f"{shared}{self.prefix}/controllers/+/events", 1), (f"{self.prefix}/controllers/+/status", 1),
                  (f"{shared}{self.prefix}/console/commands", 1), (f"{shared}{self.prefix}/cameras/+/events", 1),
                  (f"{self.prefix}/cameras/+/status", 1)]
        # The retained availability is not delivered through a shared subscription, like the status topics.
        topics += [(t if channel == "avty" else f"{shared}{t}", 1) for t, (_, channel) in self.esp_by_topic.items()]
        client.subscribe(topics)
        client.publish(f"{self.prefix}/bridge/status", self._status(True), qos=1, retain=True)
        self.connected.set()
        log.info("MQTT connected to %s:%s (session %s)", self.config.mqtt.host, self.config.mqtt.port,
                 "resumed" if getattr(_flags, "session_present", False) else "new")

    def _on_disconnect(self, _c: mqtt.Client, _ud: object, _flags: object, reason: mqtt.ReasonCode,
                       _props: object) -> None:
        self.connected.clear()
        self.unanswered.clear()  # the broker redelivers them on the resumed session
        self.processor.link_lost()
        log.warning("MQTT disconnected (%s); reconnecting", reason)

    def oldest_unanswered_s(self) -> float:
        """Age of the oldest message still waiting for its acknowledgement (0 when none waits)."""
        oldest = min(list(self.unanswered.values()), default=None)  # list(): a snapshot, other threads write
        return 0.0 if oldest is None else time.monotonic() - oldest

    # --- inbound -------------------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        """Every message ends processed, or dead-lettered: then acknowledged either way, exactly once."""
        ack: Callable[[], None] | None = None
        if msg.qos > 0:
            ack = self._ack_once(client, msg.mid, msg.qos)
        topic = msg.topic  # UTF-8: the broker refuses a publish whose topic is not
        try:
            self._route(topic, msg.payload, ack)
        except Exception as exc:  # a bug in a parser or handler: dead-letter the message, never leave it unacked
            log.exception("processing a message on %s failed", topic)
            self.processor.reject(self._source(topic), "internal_error",
                                  f"the bridge failed on this message ({type(exc).__name__}); see its log",
                                  msg.payload, where=topic, ack=ack)

    def _ack_once(self, client: mqtt.Client, mid: int, qos: int) -> Callable[[], None]:
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

    def _source(self, topic: str) -> str:
        """Who sent a message, from its topic: an esp-rfid device, a controller's or camera's key, else the console."""
        esp = self.esp_by_topic.get(topic)
        if esp is not None:
            return esp[0].key
        parts = topic.removeprefix(f"{self.prefix}/").split("/")
        return parts[1] if len(parts) == 3 and parts[0] in ("controllers", "cameras") else "console"

    def _route(self, topic: str, payload: bytes, ack: Callable[[], None] | None) -> None:
        p = self.processor
        rest = topic.removeprefix(f"{self.prefix}/")
        parts = rest.split("/")
        source = self._source(topic)
        if len(payload) > c.MAX_PAYLOAD:
            p.reject(source, "oversized", f"{len(payload)} bytes, the limit is {c.MAX_PAYLOAD}", payload,
                     where=topic, ack=ack)
            return
        if topic in self.esp_by_topic:
            self._esp(*self.esp_by_topic[topic], topic, payload, ack)
            return
        if parts[0] == "controllers" and source in self.heard_elsewhere:
            p.reject(source, "unknown_topic", f"{source} is {self.heard_elsewhere[source]}, never on the contract's "
                     f"topics", payload, where=topic, ack=ack)
            return
        try:
            if len(parts) == 3 and parts[0] == "controllers" and parts[2] == "events":
                p.controller_event(source, c.controller_event.validate_json(payload), payload, topic, ack)
            elif len(parts) == 3 and parts[0] == "controllers" and parts[2] == "status":
                if payload:  # an empty retained message is a deletion
                    p.controller_status(source, c.ControllerStatus.model_validate_json(payload), payload, topic, ack)
                elif ack:
                    ack()
            elif len(parts) == 3 and parts[0] == "cameras" and parts[2] == "events":
                p.camera_event(source, c.camera_event.validate_json(payload), payload, topic, ack)
            elif len(parts) == 3 and parts[0] == "cameras" and parts[2] == "status":
                if payload:
                    p.camera_status(source, c.CameraStatus.model_validate_json(payload), payload, topic, ack)
                elif ack:
                    ack()
            elif rest == "console/commands":
                p.console_command(c.ConsoleCommand.model_validate_json(payload), payload, topic, ack)
            else:
                p.reject(source, "unknown_topic", f"nothing is expected on {topic}", payload, where=topic, ack=ack)
        except ValidationError as exc:
            code = "malformed_json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "invalid_message"
            p.reject(source, code, describe_validation(exc), payload, where=topic, ack=ack)

    def _esp(self, ctl: ControllerConfig, channel: esp_rfid.Channel, topic: str, payload: bytes,
             ack: Callable[[], None] | None) -> None:
        key = ctl.key
        reader = self.reader_of.get(key)
        if reader is None:
            self.processor.reject(key, "unknown_reader", f"esp-rfid controller {key!r} has no reader in the site file",
                                  payload, where=topic, ack=ack)
            return
        try:
            messages = esp_rfid.parse(payload, controller=key, door=reader.door, reader=reader.key,
                                      received=datetime.now(UTC), channel=channel, tampered=key in self.esp_tampered)
        except esp_rfid.EspRfidError as exc:
            self.processor.reject(key, "invalid_message", str(exc), payload, where=topic, ack=ack)
            return
        if not messages and ack:
            ack()
        for i, message in enumerate(messages):
            last_ack = ack if i == len(messages) - 1 else None
            if isinstance(message, c.Tamper) and message.state == "active":
                self.esp_tampered.add(key)
            elif isinstance(message, c.Tamper):
                self.esp_tampered.discard(key)
            if isinstance(message, c.ControllerStatus):
                self.processor.controller_status(key, message, payload, topic, last_ack)
            else:
                self.processor.controller_event(key, message, payload, topic, last_ack)

    # --- outbound ------------------------------------------------------------------------------------

    def send(self, controller: str, command: c.Grant | c.Deny | c.Unlock | c.Lock | c.Lockdown) -> None:
        esp = self.esp.get(controller)
        if esp is None:
            self.client.publish(f"{self.prefix}/controllers/{controller}/commands", command.model_dump_json(), qos=1)
            return
        payload = esp_rfid.encode(command, device=esp.device or "")
        if payload is not None:
            self.client.publish(esp_rfid.topics(esp.topic or esp.key).commands, payload, qos=1)

    def request_evidence(self, camera: str, request: c.EvidenceRequest | c.FaceRequest) -> None:
        self.client.publish(f"{self.prefix}/cameras/{camera}/requests", request.model_dump_json(), qos=1)

    def publish_events(self, events: list[Event]) -> None:
        """One committed batch as ``PublishedEvents``, built from each event's canonical JSON as it stands
        (running it through the model again would double the cost of every event). QoS 0: the live feed is
        a convenience for consoles, which read history from the database."""
        items = ",".join(
            f'{{"v":1,"id":{json.dumps(e.id)},"ts":"{e.ts.isoformat()}","kind":"{e.kind}",'
            f'"source":{json.dumps(e.source)},"door":{json.dumps(e.door)},"subject":{e.subject_json},'
            f'"detail":{e.detail_json}}}' for e in events)
        payload = f'{{"v":1,"chain":{json.dumps(self.config.site.instance)},"events":[{items}]}}'
        self.client.publish(f"{self.prefix}/bridge/events", payload, qos=0)

    def publish_retained(self, subtopic: str, payload: str) -> None:
        self.client.publish(f"{self.prefix}/{subtopic}", payload, qos=1, retain=True)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)


def no_delay(client: mqtt.Client) -> None:
    """Turn Nagle's algorithm off on the client's socket: paho leaves it on, and a small command waiting for
    the previous packet's acknowledgement costs tens of milliseconds at the door."""
    sock = client.socket()
    if sock is not None and hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
