"""One bridge process's retained status on ``bridge/status/<partition>/<instance>``, with its last will.

The bridge's main connection cannot carry it: its client id is the partition's (``badge-bridge-<partition>``),
so a standby does not hold it, and its last will would speak for whichever process holds it next. Each
bridge process, active or standby, has this small connection of its own (client id
``badge-bridge-status-<partition>-<instance>``). A controller decides alone only when no instance of its
partition says ``online`` (docs/mqtt.md, "Bridge status"); the console shows every instance.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Literal

import paho.mqtt.client as mqtt

from badge_bridge.config import ConfigError, SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.mqtt_client import Will, refused, site_client
from badge_bridge.topics import BRIDGE, Topics

log = logging.getLogger(__name__)

Role = Literal["active", "standby"]


class InstanceStatus:
    """``start()`` (as a standby), ``set_role("active")`` once the partition is this process's, ``stop()``
    (retained offline, then a clean disconnect: no last will needed)."""

    def __init__(self, config: SiteConfig, partition: str, instance: str) -> None:
        if not instance or any(ch in instance for ch in "/+#\0"):
            raise ConfigError(f"bridge instance name {instance!r}: it is a topic level, so no / + # or NUL")
        self.partition, self.instance = partition, instance
        self.topic = Topics(config.mqtt.topic_prefix).bridge_status(partition, instance)
        self.role: Role = "standby"
        self.config = config
        will = c.BridgeStatus(online=False, instance=instance, partition=partition)  # no role, no time: sent later
        self.client = site_client(config, f"badge-bridge-status-{partition}-{instance}", role=BRIDGE,
                                  will=Will(self.topic, will.model_dump_json(exclude_none=True)))
        self.client.on_connect = self._on_connect
        self.connected = threading.Event()
        self.client.on_disconnect = lambda *_: self.connected.clear()

    def _status(self, online: bool, role: Role | None) -> str:
        return c.BridgeStatus(online=online, instance=self.instance, partition=self.partition, role=role,
                              ts=datetime.now(UTC)).model_dump_json(exclude_none=True)

    def start(self, role: Role = "standby") -> None:
        self.role = role
        self.client.connect_async(self.config.mqtt.host, self.config.mqtt.port, keepalive=self.config.mqtt.keepalive_s)
        self.client.loop_start()

    def set_role(self, role: Role) -> None:
        """Announce the new role now (and on every reconnection)."""
        self.role = role
        self.client.publish(self.topic, self._status(True, role), qos=1, retain=True)

    def stop(self) -> None:
        if self.connected.is_set():
            self.client.publish(self.topic, self._status(False, None), qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        if reason.is_failure:
            log.error("bridge status: %s", refused(self.config, reason))
            return
        # Not from this callback: paho holds its callback lock here and a publish may need it again while
        # another thread publishes (set_role) holding paho's message lock: the two would wait for ever.
        threading.Thread(target=self._announce, name="bridge-status", daemon=True).start()

    def _announce(self) -> None:
        self.client.publish(self.topic, self._status(True, self.role), qos=1, retain=True)
        self.connected.set()
