"""Every MQTT client of the project is built here: paho-mqtt 2 on MQTT 5, with credentials, TLS, client id,
last will and reconnect backoff set in one place.

``site_client`` is a client of the site's own account (bridge, console, camera workers, the firmware tool,
the demo): the site file's ``mqtt`` section, the password from ``BADGE_BRIDGE_MQTT_PASSWORD`` when set (so the
secret can stay out of the site file), the CA file relative to the site file. Simulated devices have their
own accounts and call ``build_client`` with them.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt

from badge_bridge.config import SiteConfig

PASSWORD_ENV = "BADGE_BRIDGE_MQTT_PASSWORD"
"""Overrides ``mqtt.password``, so the secret can stay out of the site file."""


class Will(NamedTuple):
    """What the broker publishes, retained at QoS 1, when the client vanishes without saying goodbye."""

    topic: str
    payload: str


def build_client(client_id: str, *, username: str | None = None, password: str | None = None, tls: bool = False,
                 ca_file: str | Path | None = None, will: Will | None = None,
                 backoff: tuple[float, float] = (1, 120), manual_ack: bool = False) -> mqtt.Client:
    """A paho MQTT 5 client, not yet connected. ``tls`` checks the broker's certificate against ``ca_file``
    (the system's CAs without one); ``backoff`` is the first and the longest wait between reconnections;
    ``manual_ack``: the caller acknowledges each message itself (``client.ack``)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=str(ca_file) if ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=True)
    client.reconnect_delay_set(min_delay=backoff[0], max_delay=backoff[1])  # type: ignore[arg-type]
    return client


def site_client(config: SiteConfig, client_id: str, *, will: Will | None = None,
                manual_ack: bool = False) -> mqtt.Client:
    """A client of the site's account (see the module docstring)."""
    cfg = config.mqtt
    return build_client(client_id, username=cfg.username or None, password=os.environ.get(PASSWORD_ENV) or cfg.password,
                        tls=cfg.tls, ca_file=config.path(cfg.ca_file) if cfg.ca_file else None, will=will,
                        backoff=(1, cfg.reconnect_max_s), manual_ack=manual_ack)


def refused(config: SiteConfig, reason: object) -> str:
    """Why the site's broker refused a connection, with the likely fix when it was the credentials."""
    cfg = config.mqtt
    text = f"MQTT broker {cfg.host}:{cfg.port} refused the connection: {reason}"
    if cfg.username and not (os.environ.get(PASSWORD_ENV) or cfg.password):
        text += f" (user {cfg.username!r} has no password: set {PASSWORD_ENV} or mqtt.password)"
    return text


def no_delay(client: mqtt.Client) -> None:
    """Turn Nagle's algorithm off on the client's socket: paho leaves it on, and a small command waiting for
    the previous packet's acknowledgement costs tens of milliseconds at the door."""
    sock = client.socket()
    if sock is not None and hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
