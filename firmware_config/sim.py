"""Simulated configurable devices for the tests: a contract controller that obeys ``config/set`` and an
esp-rfid that answers ``getconf``/``updateconf`` as its firmware does (mqtt.esp at 88d2199e)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from badge_bridge.mqtt_client import build_client
from badge_bridge.topics import Topics
from badge_bridge.topics import esp_rfid as esp_topics
from firmware_config.devices import ConfigReport, ConfigSet, ControllerSettings

Login = tuple[str, str] | None
"""The device's broker account (username, password); None: anonymous, on an open broker."""


class _Client:
    def __init__(self, port: int, client_id: str, topic: str, login: Login = None) -> None:
        self.topic = topic
        self.ready = threading.Event()
        username, password = login or (None, None)
        self.client = build_client(client_id, username=username, password=password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.ready.set()
        self.client.on_message = lambda c, u, msg: self.handle(bytes(msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.ready.wait(5):
            raise RuntimeError(f"{client_id}: not subscribed to {topic} within 5 s")

    def _on_connect(self, *args: Any) -> None:
        self.connected()
        self.client.subscribe(self.topic, qos=1)

    def connected(self) -> None:
        """Called on every connect, before subscribing."""

    def handle(self, payload: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class SimConfigController(_Client):
    """A contract controller's configuration side: publishes its settings retained on connect and after
    applying a ConfigSet (with ``applied`` = the set's id). Invalid sets are ignored, as a device would."""

    def __init__(self, port: int, key: str, settings: ControllerSettings, *, prefix: str = "badge-bridge/v1",
                 login: Login = None) -> None:
        self.key = key
        self.settings = settings
        self.applied: list[ConfigSet] = []
        topics = Topics(prefix)
        self.report_topic = topics.controller_config(key)
        super().__init__(port, f"sim-config-{key}", topics.controller_config_set(key), login)

    def connected(self) -> None:
        self._report(None)

    def handle(self, payload: bytes) -> None:
        try:
            message = ConfigSet.model_validate_json(payload)
        except ValidationError:
            return
        self.settings = message.config
        self.applied.append(message)
        self._report(message.id)

    def _report(self, applied: str | None) -> None:
        report = ConfigReport(ts=datetime.now(UTC), applied=applied, config=self.settings)
        self.client.publish(self.report_topic, report.model_dump_json().encode(), qos=1, retain=True)


class SimEspRfid(_Client):
    """esp-rfid's configuration commands: ``getconf`` publishes ``{"type":"getconf","ip","hostname",
    "configfile"}`` on ``<topic>/send``; ``updateconf`` replaces the file with ``configfile`` and acks
    ``{"type":"updateconf","ip","hostname"}``. Commands naming another ``doorip`` are dropped."""

    def __init__(self, port: int, topic: str, ip: str, configfile: dict[str, Any], hostname: str = "esp-sim", *,
                 login: Login = None) -> None:
        self.ip, self.hostname, self.configfile = ip, hostname, configfile
        self.received: list[dict[str, Any]] = []
        topics = esp_topics(topic)
        self.send_topic = topics.events
        super().__init__(port, f"sim-esp-{hostname}", topics.commands, login)

    def handle(self, payload: bytes) -> None:
        msg = json.loads(payload)
        if not isinstance(msg, dict) or msg.get("doorip") != self.ip:
            return
        self.received.append(msg)
        reply: dict[str, Any] = {"type": msg.get("cmd"), "ip": self.ip, "hostname": self.hostname}
        if msg.get("cmd") == "getconf":
            reply["configfile"] = self.configfile
        elif msg.get("cmd") == "updateconf":
            self.configfile = msg["configfile"]
        else:
            return
        self.client.publish(self.send_topic, json.dumps(reply).encode(), qos=0)
