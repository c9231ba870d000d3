"""What a controller reports it runs, and pushing what it should run, per kind (docs/firmware.md).

Every kind is reduced to one flat mapping of field -> value (``reported`` and ``desired``), so diff, push and
the audit event speak the same field names whatever the wire looks like:

* ``mqtt``: our contract, extended here (not yet in ``badge_bridge/controllers/contract.py``)::

      controllers/<key>/config       device -> all, retained   ConfigReport: what it runs, and which set
      controllers/<key>/config/set   bridge -> device, QoS 1   ConfigSet: the desired settings, with an id

  The device applies a ConfigSet whole and publishes its new retained ConfigReport with ``applied`` = the
  set's id: that is the confirmation push waits for.
* ``esp-rfid``: the firmware's own ``getconf``/``updateconf`` commands on ``<topic>/cmd`` (mqtt.esp
  processMqttMessage at 88d2199e). ``updateconf`` *replaces* ``/config.json`` with its ``configfile`` and
  reboots, so push reads the whole file first (``getconf``), changes only the managed keys and sends the
  rest back as it was (Wi-Fi and MQTT credentials included: they are never shown, diffed or audited).
* ``osdp``: libosdp's control panel on the bus: PD ID and capabilities are read from the reader, the
  address and baud are the ones it answers on; push sends the idle LED as the permanent LED state, then
  COMSET when the address or the bus speed changes (OSDP has no command to read an LED state back, so the
  LED is always sent and never diffed).
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from badge_bridge.config import ControllerConfig, MqttSection, SiteConfig
from badge_bridge.controllers import esp_rfid
from badge_bridge.controllers.contract import Key, MessageId
from badge_bridge.controllers.feedback import BuzzerPatterns, LedPatterns
from badge_bridge.firmware.profiles import (
    EspRfidProfile,
    MqttProfile,
    OfflinePolicy,
    OsdpProfile,
    ReaderMode,
)
from badge_bridge.keys import KeyStore

Profile = MqttProfile | EspRfidProfile | OsdpProfile
Fields = dict[str, Any]
REPLY_TIMEOUT_S = 5.0


class DeviceError(Exception):
    """A device that could not be read or did not confirm a push; says which and why."""


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


def config_topics(prefix: str, key: str) -> tuple[str, str]:
    """(report topic, set topic) of controller ``key``."""
    return f"{prefix}/controllers/{key}/config", f"{prefix}/controllers/{key}/config/set"


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
        return esp_rfid._command("updateconf", esp_rfid._doorip(device), configfile=merged)
    except esp_rfid.EspRfidError as exc:
        raise DeviceError(f"esp-rfid {device}: {exc}") from None


# --- an MQTT connection for the CLI --------------------------------------------------------------------


class Link:
    """One MQTT connection to the site's broker that remembers every message on its subscriptions."""

    def __init__(self, section: MqttSection, *, client_id: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or f"badge-bridge-firmware-{secrets.token_hex(4)}")
        if section.username:
            self.client.username_pw_set(section.username, section.password)
        if section.tls:
            self.client.tls_set(ca_certs=section.ca_file)
        self.host, self.port = section.host, section.port
        self._seen: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client.on_message = self._on_message

    def __enter__(self) -> Self:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise DeviceError(f"MQTT broker {self.host}:{self.port}: {exc}") from None
        self.client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

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


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


# --- per kind: read and push ---------------------------------------------------------------------------


def mqtt_read(link: Link, prefix: str, key: str, timeout: float = 2.0) -> ConfigReport | None:
    """The controller's retained ConfigReport; None when it never published one."""
    report_topic, _ = config_topics(prefix, key)
    since = link.subscribe(report_topic)

    def parse(payload: bytes) -> ConfigReport | None:
        try:
            return ConfigReport.model_validate_json(payload)
        except ValidationError:
            return None

    return link.wait(report_topic, parse, since, timeout)


def mqtt_push(link: Link, prefix: str, ctl: MqttProfile, timeout: float = 10.0) -> ConfigReport:
    """Send the ConfigSet and wait for the device's report of having applied it."""
    report_topic, set_topic = config_topics(prefix, ctl.key)
    since = link.subscribe(report_topic)
    message = ConfigSet(id=f"fw-{secrets.token_hex(8)}", ts=datetime.now(UTC), config=mqtt_settings(ctl))
    link.publish(set_topic, message.model_dump_json().encode())

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
    topics = esp_rfid.topics(site_ctl.topic or site_ctl.key)
    since = link.subscribe(topics.events)
    link.publish(topics.commands, esp_rfid._command("getconf", esp_rfid._doorip(device)))

    def reply(payload: bytes) -> dict[str, Any] | None:
        msg = _json(payload)
        if isinstance(msg, dict) and msg.get("type") == "getconf" and msg.get("ip") == device \
                and isinstance(msg.get("configfile"), dict):
            return msg["configfile"]
        return None

    found = link.wait(topics.events, reply, since, timeout)
    if found is None:
        raise DeviceError(f"esp-rfid {site_ctl.key} ({device}): no getconf reply on {topics.events} within "
                          f"{timeout:g} s")
    return found


def esp_push(link: Link, site_ctl: ControllerConfig, ctl: EspRfidProfile, timeout: float = REPLY_TIMEOUT_S) -> None:
    """Read the device's config.json, send it back with the managed keys set, wait for the ``updateconf`` ack
    (after which the device reboots to apply it)."""
    device = site_ctl.device or ""
    topics = esp_rfid.topics(site_ctl.topic or site_ctl.key)
    payload = esp_update_payload(esp_read(link, site_ctl, timeout), esp_desired(ctl), device=device)
    since = link.subscribe(topics.events)
    link.publish(topics.commands, payload)

    def ack(raw: bytes) -> bool | None:
        msg = _json(raw)
        return True if isinstance(msg, dict) and msg.get("type") == "updateconf" and msg.get("ip") == device else None

    if link.wait(topics.events, ack, since, timeout) is None:
        raise DeviceError(f"esp-rfid {site_ctl.key} ({device}): no updateconf acknowledgement within {timeout:g} s")


# --- OSDP ----------------------------------------------------------------------------------------------

def osdp_desired(ctl: OsdpProfile) -> Fields:
    fields: Fields = {"baud": ctl.baud, "secure_channel": ctl.secure_channel}
    for reader in ctl.readers:
        fields[f"readers.{reader.key}.address"] = reader.address
    return fields


class OsdpBusSession:
    """A control panel on an OSDP bus for reading and pushing, at the address and speed the readers have now
    (the site file's). The bridge must not be driving the same port meanwhile: a serial port has one owner."""

    def __init__(self, site: SiteConfig, site_ctl: ControllerConfig, ctl: OsdpProfile, keys: KeyStore) -> None:
        from osdp import ControlPanel, LibFlag, LogLevel, PDInfo

        from badge_bridge.controllers.osdp import SerialChannel

        self.site_ctl, self.ctl = site_ctl, ctl
        self.addresses = {r.key: r.osdp_address for r in site.readers
                          if r.controller == site_ctl.key and r.osdp_address is not None}
        self.channel = SerialChannel(site_ctl.port or "", site_ctl.baud)
        if not self.channel.healthy:
            raise DeviceError(f"OSDP bus {site_ctl.key}: cannot open {site_ctl.port}: {self.channel.error}")
        flags = [] if ctl.install_mode else [LibFlag.EnforceSecure]
        infos = [PDInfo(address, self.channel, scbk=keys.osdp_key(key), name=key, flags=flags)
                 for key, address in self.addresses.items()]
        self.done: queue.Queue[tuple[int, dict[str, Any], int]] = queue.Queue()
        self.cp = ControlPanel(infos, log_level=LogLevel.Error,
                               command_completion_handler=lambda a, c, s: self.done.put((a, c, s)))
        self.cp.start()

    def close(self) -> None:
        self.cp.teardown()  # stops its thread too
        self.channel.close()

    def read(self, timeout: float = 8.0) -> tuple[Fields, dict[str, dict[str, Any]]]:
        """(reported fields, per reader what it says about itself: ID and capabilities)."""
        from osdp import Capability

        deadline = time.monotonic() + timeout
        fields: Fields = {"baud": None, "secure_channel": None}
        about: dict[str, dict[str, Any]] = {}
        secure = True
        for key, address in self.addresses.items():
            while not self.cp.is_online(address) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.cp.is_online(address):
                fields[f"readers.{key}.address"] = None
                about[key] = {"online": False}
                secure = False
                continue
            fields[f"readers.{key}.address"] = address
            fields["baud"] = self.site_ctl.baud
            secure = secure and self.cp.is_sc_active(address)
            ident = self.cp.get_pd_id(address)
            caps = {name: list(self.cp.check_capability(address, getattr(Capability, name)))
                    for name in ("LEDControl", "AudibleControl", "OutputControl", "Readers")}
            about[key] = {"online": True, "vendor_code": f"{ident.vendor_code:06x}", "model": ident.model,
                          "serial_number": ident.serial_number, "firmware_version": ident.firmware_version,
                          "capabilities": caps}
        fields["secure_channel"] = secure if about else None
        return fields, about

    def push(self, timeout: float = 8.0) -> None:
        """Idle LED to every managed reader, then COMSET where the address or the bus speed changes;
        each command must complete (libosdp's completion status Ok) in time."""
        from osdp import Command, CompletionStatus

        from badge_bridge.controllers.osdp import led_command

        sent: list[tuple[str, dict[str, object]]] = []
        for reader in self.ctl.readers:
            current = self.addresses[reader.key]
            if not self.cp.is_online(current):
                raise DeviceError(f"OSDP reader {reader.key} is not answering at address {current}")
            commands = [led_command(self.ctl.led.idle)]
            if reader.address != current or self.ctl.baud != self.site_ctl.baud:
                commands.append({"command": Command.Comset, "address": reader.address, "baud_rate": self.ctl.baud})
            for command in commands:
                if not self.cp.submit_command(current, command):
                    raise DeviceError(f"OSDP reader {reader.key}: libosdp refused to queue {command['command']}")
                sent.append((reader.key, command))
        deadline = time.monotonic() + timeout
        for _ in sent:
            try:
                _address, command, status = self.done.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DeviceError(f"OSDP bus {self.site_ctl.key}: not every command completed within "
                                  f"{timeout:g} s") from None
            if status != CompletionStatus.Ok:
                raise DeviceError(f"OSDP bus {self.site_ctl.key}: command {command.get('command')} failed "
                                  f"(status {status})")


@contextmanager
def osdp_session(site: SiteConfig, site_ctl: ControllerConfig, ctl: OsdpProfile, keys: KeyStore
                 ) -> Iterator[OsdpBusSession]:
    session = OsdpBusSession(site, site_ctl, ctl, keys)
    try:
        yield session
    finally:
        session.close()
