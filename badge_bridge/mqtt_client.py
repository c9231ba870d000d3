"""Every MQTT client of the project is built here: paho-mqtt 2 on MQTT 5, with credentials, TLS, client id,
last will, reconnect backoff and failover along the site's brokers set in one place.

``site_client`` is a client of one of the site's own accounts (mqtt_accounts: the bridge, the console, a camera
worker, the firmware tool, a simulated controller): its username, its password from the keys folder (made by
`badge-bridge mqtt broker-config`), the site file's ``mqtt`` section for the broker and TLS (the CA file relative
to the site file). For the bridge, the site file's ``mqtt.username`` and ``mqtt.password`` and
``BADGE_BRIDGE_MQTT_PASSWORD`` (so the secret can stay out of the site file) override the keys folder.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from badge_bridge.config import SiteConfig
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_accounts import account_name
from badge_bridge.topics import BRIDGE

log = logging.getLogger(__name__)

PASSWORD_ENV = "BADGE_BRIDGE_MQTT_PASSWORD"
"""Overrides the bridge's password (``mqtt.password``, the keys folder), so the secret can stay out of files."""


class Will(NamedTuple):
    """What the broker publishes, retained at QoS 1, when the client vanishes without saying goodbye."""

    topic: str
    payload: str


class Failover:
    """Walks a list of brokers: the first connection goes to the first, every later attempt (after a failed
    connection or a lost one) to the next, round the list. paho reconnects to the host and port it was given
    (``Client.reconnect``), and refuses to change them while it is reconnecting (its ``host`` setter), so the
    turn is taken in ``on_pre_connect``, which paho calls in ``reconnect`` just before it opens the socket."""

    def __init__(self, endpoints: Sequence[tuple[str, int]]) -> None:
        if not endpoints:
            raise ValueError("no broker to connect to")
        self.endpoints = list(endpoints)
        self.attempts = 0

    @property
    def current(self) -> tuple[str, int]:
        """The broker of the last attempt (the first before any)."""
        return self.endpoints[max(self.attempts - 1, 0) % len(self.endpoints)]

    def __call__(self, client: mqtt.Client, _userdata: Any) -> None:
        host, port = self.endpoints[self.attempts % len(self.endpoints)]
        if self.attempts and len(self.endpoints) > 1:
            log.info("MQTT client %s: trying broker %s:%s", client._client_id.decode(errors="replace"), host, port)
        self.attempts += 1
        client._host, client._port = host, port  # the setters refuse while reconnecting


def build_client(client_id: str, *, username: str | None = None, password: str | None = None, tls: bool = False,
                 ca_file: str | Path | None = None, will: Will | None = None,
                 backoff: tuple[float, float] = (1, 120), manual_ack: bool = False,
                 brokers: Sequence[tuple[str, int]] | None = None) -> mqtt.Client:
    """A paho MQTT 5 client, not yet connected. ``tls`` checks the broker's certificate against ``ca_file``
    (the system's CAs without one); ``backoff`` is the first and the longest wait between reconnections;
    ``manual_ack``: the caller acknowledges each message itself (``client.ack``); ``brokers``: (host, port) of
    each broker to try in turn (``Failover``), whatever host and port ``connect`` is given."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=str(ca_file) if ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=True)
    client.reconnect_delay_set(min_delay=backoff[0], max_delay=backoff[1])  # type: ignore[arg-type]
    if brokers:
        client.on_pre_connect = Failover(brokers)
    return client



def credentials(config: SiteConfig, role: str, key: str | None = None) -> tuple[str, str | None]:
    """The username and password ``role`` (with its controller or camera ``key``) logs in with; the password
    None while the keys folder has none (the broker then refuses, and ``refused`` says what to run)."""
    username = account_name(config, role, key)
    password = KeyStore(config.keys_dir()).mqtt_password(username)
    if role == BRIDGE:
        password = os.environ.get(PASSWORD_ENV) or config.mqtt.password or password
    return username, password


def site_client(config: SiteConfig, client_id: str, *, role: str, key: str | None = None, will: Will | None = None,
                manual_ack: bool = False) -> mqtt.Client:
    """A client of the site's brokers (``mqtt.host``:``mqtt.port``, then ``mqtt.brokers``, in turn) on
    ``role``'s own account (see the module docstring); ``key`` names the controller or camera for those roles."""
    cfg = config.mqtt
    username, password = credentials(config, role, key)
    return build_client(client_id, username=username, password=password, tls=cfg.tls,
                        ca_file=config.path(cfg.ca_file) if cfg.ca_file else None, will=will,
                        backoff=(1, cfg.reconnect_max_s), manual_ack=manual_ack, brokers=cfg.endpoints())


def refused(config: SiteConfig, reason: object, role: str = BRIDGE, key: str | None = None) -> str:
    """Why the site's broker refused a connection, with the likely fix when it was the credentials."""
    cfg = config.mqtt
    username, password = credentials(config, role, key)
    text = f"MQTT broker {cfg.host}:{cfg.port} refused the connection of {username!r}: {reason}"
    if password is None:
        text += (f" ({username!r} has no password: run `badge-bridge mqtt broker-config` to make "
                 f"{KeyStore(config.keys_dir()).mqtt_password_file(username)}")
        text += f", or set {PASSWORD_ENV})" if role == BRIDGE else ")"
    return text


def no_delay(client: mqtt.Client) -> None:
    """Turn Nagle's algorithm off on the client's socket: paho leaves it on, and a small command waiting for
    the previous packet's acknowledgement costs tens of milliseconds at the door."""
    sock = client.socket()
    if sock is not None and hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
