"""Plain paho clients for the tests, each logged in on an account of the test's broker (``Broker.login``)."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from badge_bridge.sim.broker import Broker


class Client:
    """A plain MQTT client on ``account`` collecting what arrives, each publish waited for. ``account`` None:
    anonymous; ``tls_ca``: over the broker's TLS listener, checked against that CA."""

    def __init__(self, broker: Broker, account: str | None, *, protocol: int = mqtt.MQTTv5, client_id: str = "",
                 will: tuple[str, str] | None = None, tls_ca: Path | None = None, password: str | None = None,
                 **connect: Any) -> None:
        self.received: list[tuple[str, bytes, int]] = []
        self.disconnects = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if account:
            self.client.username_pw_set(account, password if password is not None else broker.passwords[account])
        if will:
            self.client.will_set(*will, qos=2, retain=True)
        port = broker.port
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
            assert broker.tls_port is not None
            port = broker.tls_port
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload, m.qos))
        self.client.on_disconnect = self._gone
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port, **connect)
        self.client.loop_start()
        assert self.answered.wait(5), "the broker did not answer the connection"

    def _on_connect(self, _c: object, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object = None) -> None:
        self.reason = reason
        if not reason.is_failure:
            self.connected.set()
        self.answered.set()

    def _gone(self, *_a: object) -> None:
        self.disconnects += 1

    def subscribe(self, topic: str, qos: int = 1) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.received if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
