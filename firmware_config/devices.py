"""What a controller reports it runs, and pushing what it should run, per kind (docs/firmware.md).

Every kind is reduced to one flat mapping of field -> value (``reported`` and ``desired``), so diff, push and
the audit event speak the same field names whatever the wire looks like:

* ``mqtt``: our contract, extended here (not yet in ``badge_bridge/controllers/contract.py``; the topics are
  in ``badge_bridge/topics.py``)::

      controllers/<key>/config       device -> all, retained   ConfigReport: what it runs, and which set
      controllers/<key>/config/set   bridge -> device, QoS 1   ConfigSet: the desired settings, with an id

  The device applies a ConfigSet whole and publishes its new retained ConfigReport with ``applied`` = the
  set's id: that is the confirmation push waits for.
* ``esp-rfid``: the firmware's own ``getconf``/``updateconf`` commands on ``<topic>/cmd`` (mqtt.esp
  processMqttMessage at 88d2199e), spelled by the esp-rfid driver (``esp_rfid.command``, ``esp_rfid.reply``).
  ``updateconf`` *replaces* ``/config.json`` with its ``configfile`` and reboots, so push reads the whole file
  first (``getconf``), changes only the managed keys and sends the rest back as it was (Wi-Fi and MQTT
  credentials included: they are never shown, diffed or audited).
* ``osdp``: the OSDP driver's ``BusSetup``, a libosdp control panel on the bus: PD ID and capabilities are
  read from the reader, the address and baud are the ones it answers on; push sends the idle LED as the
  permanent LED state, then COMSET when the address or the bus speed changes (OSDP has no command to read an
  LED state back, so the LED is always sent and never diffed).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, Self

import paho.mqtt.client as mqtt
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from badge_bridge.config import ControllerConfig, SiteConfig
from badge_bridge.controllers import esp_rfid
from badge_bridge.controllers.contract import Key, MessageId
from badge_bridge.controllers.driver import DeviceError as DeviceError
from badge_bridge.controllers.feedback import BuzzerPatterns, LedPatterns
from badge_bridge.controllers.osdp import BusSetup, comset_command, led_command
from badge_bridge.firmware.profiles import (
    EspRfidProfile,
    MqttProfile,
    OfflinePolicy,
    OsdpProfile,
    ReaderMode,
)
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_client import refused, site_client
from badge_bridge.topics import FIRMWARE, Topics
from badge_bridge.topics import esp_rfid as esp_topics

Profile = MqttProfile | EspRfidProfile | OsdpProfile
Fields = dict[str, Any]
REPLY_TIMEOUT_S = 5.0


# --- the MQTT contract's configuration messages --------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ControllerSettings(_Strict):
    """The settings a contract controller runs; the same in a ConfigSet and in its ConfigReport."""

    open_time_s: float = Field(gt=0, le=600)
    held_open_limit_s: float = Field(gt=0, le=3600)
    reader_mode: ReaderMode
    readers: dict[Key, ReaderMode] = {}
    """Readers whose mode differs from ``reader_mode``."""
    offline_policy: OfflinePolicy
    facility_code: int | None = Field(None, ge=0, le=65_535)
    led: LedPatterns
    buzzer: BuzzerPatterns


class ConfigSet(_Strict):
    v: Literal[1] = 1
    id: MessageId
    ts: AwareDatetime
    type: Literal["config_set"] = "config_set"
    config: ControllerSettings


class ConfigReport(_Strict):
    """Retained. ``applied`` is the id of the ConfigSet the device last applied (None: set locally)."""

    v: Literal[1] = 1
    ts: AwareDatetime
    applied: MessageId | None = None
    config: ControllerSettings


def mqtt_settings(ctl: MqttProfile) -> ControllerSettings:
    return ControllerSettings(
        open_time_s=float(ctl.open_time_s), held_open_limit_s=float(ctl.held_open_limit_s),
        reader_mode=ctl.reader_mode,
        readers={r.key: r.reader_mode for r in ctl.readers if r.reader_mode is not None},
        offline_policy=ctl.offline_policy, facility_code=ctl.facility_code, led=ctl.led, buzzer=ctl.buzzer)


def flatten(value: Mapping[str, Any], prefix: str = "") -> Fields:
    """Nested mappings as dotted keys, so a diff names the exact field (``led.denied.repeat``)."""
    out: Fields = {}
    for key, inner in value.items():
        name = f"{prefix}{key}"
        if isinstance(inner, Mapping) and inner:
            out.update(flatten(inner, f"{name}."))
        else:
            out[name] = inner
    return out


def diff(reported: Fields | None, desired: Fields) -> dict[str, tuple[Any, Any]]:
    """field -> (reported, desired) for every field that differs; all of them when nothing was reported."""
    reported = reported or {}
    return {k: (reported.get(k), v) for k, v in sorted(desired.items()) if reported.get(k) != v}


# --- esp-rfid's config.json ----------------------------------------------------------------------------

ALL_HOURS, NO_HOURS = "1" * 24, "0" * 24


def esp_desired(ctl: EspRfidProfile) -> Fields:
    """The managed keys of esp-rfid's ``config.json`` (as the web UI's savehardware/savegeneral write them).

    ``hardware.rtime`` is the relay's activate time in ms; ``ltype`` 0 is a momentary lock (the bridge's
    ``opendoor`` toggles a continuous one); ``maxOpenDoorTime`` is in whole seconds (door.esp's held-open
    check); ``pincoderequested`` stays off because a PIN cannot be synced; ``general.openinghours`` is seven
    strings of 24 flags, all closed for ``locked`` (then only admin cards open).
    """
    fields: Fields = {
        "hardware.rtime": round(ctl.open_time_s * 1000),
        "hardware.ltype": 0,
        "hardware.maxOpenDoorTime": max(1, round(ctl.held_open_limit_s)),
        "hardware.pincoderequested": False,
        "general.openinghours": [NO_HOURS if ctl.reader_mode == "locked" else ALL_HOURS] * 7,
    }
    if ctl.relay_type is not None:
        fields["hardware.rtype"] = ctl.relay_type
    if ctl.door_status_pin is not None:
        fields["hardware.doorstatpin"] = ctl.door_status_pin
    return fields


def esp_reported(configfile: Mapping[str, Any], desired: Fields) -> Fields:
    """The managed keys of a device's ``config.json`` (nothing else: it holds passwords)."""
    out: Fields = {}
    for name in desired:
        section, key = name.split(".", 1)
        inner = configfile.get(section)
        out[name] = inner.get(key) if isinstance(inner, Mapping) else None
    return out


def esp_update_payload(configfile: Mapping[str, Any], desired: Fields, *, device: str) -> bytes:
    """The ``updateconf`` command: the device's whole ``config.json`` with the managed keys replaced."""
    merged = json.loads(json.dumps(configfile))
    for name, value in desired.items():
        section, key = name.split(".", 1)
        if not isinstance(merged.get(section), dict):
            merged[section] = {}
        merged[section][key] = value
    try:
        return esp_rfid.command("updateconf", device=device, configfile=merged)
    except esp_rfid.EspRfidError as exc:
        raise DeviceError(f"esp-rfid {device}: {exc}") from None


# --- an MQTT connection for the CLI --------------------------------------------------------------------


class Link:
    """One MQTT connection to the site's broker, on the site's account (``mqtt_client.site_client``), that
    remembers every message on its subscriptions."""

    def __init__(self, config: SiteConfig, *, client_id: str | None = None) -> None:
        self.config = config
        self.topics = Topics(config.mqtt.topic_prefix)
        self.client = site_client(config, client_id or f"badge-bridge-firmware-{secrets.token_hex(4)}", role=FIRMWARE)
        self.host, self.port = config.mqtt.host, config.mqtt.port
        self._seen: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._answered = threading.Event()
        self._refusal: mqtt.ReasonCode | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def __enter__(self) -> Self:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise DeviceError(f"MQTT broker {self.host}:{self.port}: {exc}") from None
        self.client.loop_start()
        if not self._answered.wait(REPLY_TIMEOUT_S) or self._refusal is not None:
            self.__exit__()
            raise DeviceError(refused(self.config, self._refusal, FIRMWARE) if self._refusal is not None else
                              f"MQTT broker {self.host}:{self.port} did not answer the connection within "
                              f"{REPLY_TIMEOUT_S:g} s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        if reason.is_failure and not self._answered.is_set():
            self._refusal = reason
        self._answered.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._seen.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def subscribe(self, topic: str) -> int:
        """Subscribe (QoS 1) and wait for the broker's acknowledgement; returns where new messages start."""
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        with self._cond:
            start = len(self._seen)
        self.client.subscribe(topic, qos=1)
        if not done.wait(REPLY_TIMEOUT_S):
            raise DeviceError(f"MQTT broker {self.host}:{self.port} did not acknowledge the subscription to {topic}")
        return start

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(REPLY_TIMEOUT_S)
        if not info.is_published():
            raise DeviceError(f"MQTT broker {self.host}:{self.port} did not take the message for {topic}")

    def wait(self, topic: str, match: Callable[[bytes], Any], since: int, timeout: float = REPLY_TIMEOUT_S) -> Any:
        """The first non-None ``match(payload)`` of a message on ``topic`` from index ``since``, or None."""
        deadline = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                for t, payload in self._seen[checked:]:
                    if t == topic:
                        found = match(payload)
                        if found is not None:
                            return found
                checked = len(self._seen)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)


# --- per kind: read and push ---------------------------------------------------------------------------


def mqtt_read(link: Link, key: str, timeout: float = 2.0) -> ConfigReport | None:
    """The controller's retained ConfigReport; None when it never published one."""
    report_topic = link.topics.controller_config(key)
    since = link.subscribe(report_topic)

    def parse(payload: bytes) -> ConfigReport | None:
        try:
            return ConfigReport.model_validate_json(payload)
        except ValidationError:
            return None

    return link.wait(report_topic, parse, since, timeout)


def mqtt_push(link: Link, ctl: MqttProfile, timeout: float = 10.0) -> ConfigReport:
    """Send the ConfigSet and wait for the device's report of having applied it."""
    report_topic = link.topics.controller_config(ctl.key)
    since = link.subscribe(report_topic)
    message = ConfigSet(id=f"fw-{secrets.token_hex(8)}", ts=datetime.now(UTC), config=mqtt_settings(ctl))
    link.publish(link.topics.controller_config_set(ctl.key), message.model_dump_json().encode())

    def applied(payload: bytes) -> ConfigReport | None:
        try:
            report = ConfigReport.model_validate_json(payload)
        except ValidationError:
            return None
        return report if report.applied == message.id else None

    report = link.wait(report_topic, applied, since, timeout)
    if report is None:
        raise DeviceError(f"controller {ctl.key}: no report of applying config {message.id} within {timeout:g} s")
    return report


def esp_read(link: Link, site_ctl: ControllerConfig, timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
    """The device's whole ``config.json``, from its ``getconf`` reply."""
    device = site_ctl.device or ""
    topics = esp_topics(site_ctl.topic or site_ctl.key)
    since = link.subscribe(topics.events)
    link.publish(topics.commands, esp_rfid.command("getconf", device=device))

    def configfile(payload: bytes) -> dict[str, Any] | None:
        msg = esp_rfid.reply(payload, "getconf", device=device)
        return msg["configfile"] if msg is not None and isinstance(msg.get("configfile"), dict) else None

    found = link.wait(topics.events, configfile, since, timeout)
    if found is None:
        raise DeviceError(f"esp-rfid {site_ctl.key} ({device}): no getconf reply on {topics.events} within "
                          f"{timeout:g} s")
    return found


def esp_push(link: Link, site_ctl: ControllerConfig, ctl: EspRfidProfile, timeout: float = REPLY_TIMEOUT_S) -> None:
    """Read the device's config.json, send it back with the managed keys set, wait for the ``updateconf`` ack
    (after which the device reboots to apply it)."""
    device = site_ctl.device or ""
    topics = esp_topics(site_ctl.topic or site_ctl.key)
    payload = esp_update_payload(esp_read(link, site_ctl, timeout), esp_desired(ctl), device=device)
    since = link.subscribe(topics.events)
    link.publish(topics.commands, payload)
    if link.wait(topics.events, lambda raw: esp_rfid.reply(raw, "updateconf", device=device), since, timeout) is None:
        raise DeviceError(f"esp-rfid {site_ctl.key} ({device}): no updateconf acknowledgement within {timeout:g} s")


# --- OSDP ----------------------------------------------------------------------------------------------

def osdp_desired(ctl: OsdpProfile) -> Fields:
    fields: Fields = {"baud": ctl.baud, "secure_channel": ctl.secure_channel}
    for reader in ctl.readers:
        fields[f"readers.{reader.key}.address"] = reader.address
    return fields


class OsdpBusSession:
    """An OSDP bus read and pushed through the OSDP driver's ``BusSetup``, in this tool's fields, at the
    addresses and speed the readers have now (the site file's)."""

    def __init__(self, site: SiteConfig, site_ctl: ControllerConfig, ctl: OsdpProfile, keys: KeyStore) -> None:
        self.site_ctl, self.ctl = site_ctl, ctl
        self.bus = BusSetup(site, site_ctl, keys, enforce_secure=not ctl.install_mode)

    def close(self) -> None:
        self.bus.close()

    def read(self, timeout: float = 8.0) -> tuple[Fields, dict[str, dict[str, Any]]]:
        """(reported fields, per reader what it says about itself: ID and capabilities)."""
        fields: Fields = {"baud": None, "secure_channel": None}
        about: dict[str, dict[str, Any]] = {}
        secure = True
        for key, info in self.bus.identify(timeout).items():
            online = bool(info["online"])
            fields[f"readers.{key}.address"] = self.bus.addresses[key] if online else None
            if online:
                fields["baud"] = self.site_ctl.baud
            secure = secure and bool(info.get("secure"))
            about[key] = {name: value for name, value in info.items() if name != "secure"}
        fields["secure_channel"] = secure if about else None
        return fields, about

    def push(self, timeout: float = 8.0) -> None:
        """Idle LED to every managed reader, then COMSET where the address or the bus speed changes;
        each command must complete in time."""
        commands: dict[str, list[dict[str, object]]] = {}
        for reader in self.ctl.readers:
            commands[reader.key] = [led_command(self.ctl.led.idle)]
            if reader.address != self.bus.addresses[reader.key] or self.ctl.baud != self.site_ctl.baud:
                commands[reader.key].append(comset_command(reader.address, self.ctl.baud))
        self.bus.push(commands, timeout)


@contextmanager
def osdp_session(site: SiteConfig, site_ctl: ControllerConfig, ctl: OsdpProfile, keys: KeyStore
                 ) -> Iterator[OsdpBusSession]:
    session = OsdpBusSession(site, site_ctl, ctl, keys)
    try:
        yield session
    finally:
        session.close()
