"""A simulated stock esp-rfid door controller (firmware 2.0, plain MQTT mode), for the demo and tests: it
speaks on the wire as badge_bridge/controllers/esp_rfid.py documents the firmware, so the bridge's esp-rfid
driver runs unchanged against it.

What it does: MQTT 3.1.1, every publication at QoS 0, its commands subscribed at QoS 2; a ``boot`` message at
every connect and a ``heartbeat`` every ``heartbeat_s`` (plain mode has no last will: the bridge knows it is
alive only from these); the user list the bridge syncs (``deletusers``, ``deletuid``, ``adduser``, each
acknowledged); ``present(uid)`` decides from that list as the firmware does and reports the access;
``opendoor`` is echoed as the firmware echoes it (user ``"MQTT"``). Commands naming another ``doorip`` are
dropped without a reply, as the device drops them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from badge_bridge.controllers.esp_rfid import ACCESS_ADMIN, ACCESS_GRANTED
from badge_bridge.topics import esp_rfid

log = logging.getLogger(__name__)

HEARTBEAT_S = 180.0
"""The firmware's heartbeat period (mqtt.esp)."""


class SimEspRfid:
    """One esp-rfid device at ``ip`` (its doorip) whose MQTT topic setting is ``topic``."""

    def __init__(self, topic: str, ip: str, host: str, port: int, *, username: str, password: str | None,
                 hostname: str | None = None, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.topics = esp_rfid(topic)
        self.ip, self.hostname, self.heartbeat_s = ip, hostname or topic, heartbeat_s
        self.users: dict[str, dict[str, Any]] = {}
        """The device's user files by uid, as ``adduser`` stored them."""
        self.commands: list[dict[str, Any]] = []
        """Every command addressed to this device, in order."""
        self.connected = threading.Event()
        self._booted = time.monotonic()
        self._stop = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"esp-rfid-{topic}",
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect_async(host, port)
        self.client.loop_start()
        self._beat = threading.Thread(target=self._heartbeats, name=f"esp-{topic}-heartbeat", daemon=True)
        self._beat.start()

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()

    # --- what the device says ------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        self.client.publish(self.topics.events, json.dumps(message, separators=(",", ":")), qos=0)

    def _about(self) -> dict[str, Any]:
        return {"time": int(time.time()), "ip": self.ip, "hostname": self.hostname}

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: Any,
                    _props: object = None) -> None:
        if reason.is_failure:
            log.warning("esp-rfid %s: the broker refused the connection: %s", self.hostname, reason)
            return
        client.subscribe(self.topics.commands, qos=2)
        self._send({"type": "boot", **self._about(), "uptime": "0"})  # the firmware sends the string "0"
        self.connected.set()

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self.connected.is_set():
                self._send({"type": "heartbeat", **self._about(), "uptime": int(time.monotonic() - self._booted)})

    def present(self, uid: str) -> bool:
        """A card at the reader: the device decides from its own user list (rfid.esp) and reports it; returns
        whether the door opened."""
        user = self.users.get(uid)
        now = int(time.time())
        if user is None:
            access, known, name = "Denied", "false", ""
        else:
            acctype, name = user.get("acctype"), str(user.get("user", ""))
            known = "true"
            if acctype not in (ACCESS_GRANTED, ACCESS_ADMIN):
                access = "Disabled"
            elif acctype == ACCESS_GRANTED and not user.get("validsince", 0) <= now <= user.get("validuntil", 0):
                access = "Expired"
            else:
                access = "Admin" if acctype == ACCESS_ADMIN else "Always"
        self._send({"cmd": "log", "uid": uid, "username": name, "access": access, "time": now,
                    "doorName": self.hostname, "type": "access", "isKnown": known, "hostname": self.hostname})
        return access in ("Always", "Admin")

    # --- what the device is told ---------------------------------------------------------------------

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            command = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(command, dict) or command.get("doorip") != self.ip:
            return  # not for this device: dropped without a reply
        self.commands.append(command)
        cmd, uid = command.get("cmd"), command.get("uid")
        if cmd == "deletusers":
            self.users.clear()
        elif cmd == "deletuid" and isinstance(uid, str):
            self.users.pop(uid, None)
        elif cmd == "adduser" and isinstance(uid, str):
            self.users[uid[:19]] = command
        elif cmd == "opendoor":
            self._send({"cmd": "log", "uid": " ", "username": "MQTT", "access": "Always", "time": int(time.time()),
                        "doorName": self.hostname, "type": "access", "isKnown": "true", "hostname": self.hostname})
            return
        else:
            return
        self._send({"type": cmd, "ip": self.ip, "hostname": self.hostname})
