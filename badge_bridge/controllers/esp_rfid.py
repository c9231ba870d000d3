"""Stock esp-rfid door controllers (github.com/esprfid/esp-rfid) over MQTT, without reflashing them.

Translation between esp-rfid's own JSON and the contract models (``contract.py``) in pure functions, no
I/O; ``EspRfidDriver`` at the end applies them over the bridge's MQTT link (link.py). Written against the
firmware source, not its README, where the two differ: ``src/mqtt.esp`` at commit 6cf70f2a (VERSION "2.0.0"
in ``src/main.cpp``) and 88d2199e; ``src/rfid.esp`` at 62b1cd79 and ac787615; ``src/door.esp``,
``src/log.esp`` at 88d2199e; ``src/doorbell.esp`` at 83b8eb8c; the tamper flag and Home Assistant mode against
the ``dev`` branch at 56c0fb9 (2024-03, still VERSION "2.0.0", the newest).
Firmware 1.x (``/sync`` and ``/accesslist`` topics, ``getuser``/``listusr``) is not supported.

Topics (``<topic>`` is the base topic set in the device's web UI, used verbatim: the firmware appends
``"/send"`` to it, so a leading or trailing slash is part of every topic; ``topics.esp_rfid`` spells them)::

    <topic>/send   device -> bridge  every JSON message below (QoS 0, not retained)
    <topic>/tag    device -> bridge  access reports in Home Assistant mode (QoS 0, not retained)
    <topic>/avty   device -> bridge  Home Assistant mode: "online" at connect, "offline" as its last will
                                     (both retained)
    <topic>/cmd    bridge -> device  commands; the device subscribes at QoS 2 (mqtt.esp onMqttConnect)

Every publication is QoS 0: the broker must queue QoS 0 messages for the bridge's persistent session
(Mosquitto ``queue_qos0_messages true``) or whatever the device reports while the bridge is away is lost;
docs/mqtt.md gives the broker configuration and the ACL. The README asks for one base topic shared by all
devices, told apart by ``doorip``; the bridge needs one base topic per device (or the firmware's
auto-topic option), because it knows the sender only by topic.

Home Assistant mode ("mqttha", dev mqtt.esp:265-333) works: access reports go to ``<topic>/tag``, the same
JSON without ``type``, ``isKnown`` and ``hostname`` (``access`` alone says granted or refused; ``Denied`` is
the unknown card), and ``avty`` carries the device's online state with a real last will, which plain mode
lacks. Boot, heartbeat and the log events stay on ``<topic>/send``. The bare ``ON``/``OFF`` states on
``<topic>/io/*`` (door, tamper, doorbell, locks) carry no time and are repeated at every connect, so they are
not read: door contact and tamper come from the log events in both modes, which need "send events over
MQTT" on.

Messages the device sends on ``<topic>/send`` and what ``parse`` makes of them:

* access (``mqttPublishAccess``)::

    {"cmd":"log", "uid":"04a1b2c3", "pincode":"", "username":"Ann", "access":"Always", "time":1718000000,
     "doorName":"noc", "type":"access", "isKnown":"true", "hostname":"esp-noc"}

  ``cmd`` only when "send events over MQTT" is on; ``pincode`` only in firmware that has it (it is the PIN
  typed on the keypad, in clear). ``isKnown`` is the *string* ``"true"``/``"false"``; ``time`` is integer
  epoch seconds. ``access`` is ``Always`` or ``Admin`` (door opened), ``Disabled``, ``Expired``,
  ``Wrong pin code`` (known card, refused), ``Denied`` with ``isKnown`` ``"false"`` (unknown card). With
  several relays a grant carries arrays instead: ``"access":["Always","Disabled"]`` and
  ``"doorName":[...]``, one entry per relay. -> ``CredentialPresented`` with ``offline`` set (the device
  decided from its own user list; the bridge records it and never actuates): ``granted`` from ``access``
  (from the first relay's entry for an array: the bridge's door is the device's first relay), reason
  ``"esp-rfid:<access>"``, card ``Card(format="ascii", number=<uid in lower case>)``. The uid is the
  reader's bytes in lower-case hex (MFRC522, PN532, RDM6300) or the Wiegand code in decimal or hex (a
  device setting), or the PIN itself in PIN-only mode; enrol cards in the same form. The PIN is never
  put in the model nor in the message id.

  The opendoor/open/close commands and the exit button also publish an access message, with uid ``" "``
  and username ``"MQTT"`` or ``"Button"`` (mqtt.esp processMqttMessage, main.cpp loop): ``"MQTT"`` is the
  echo of a command the bridge sent and is dropped (``[]``); ``"Button"`` -> ``RequestToExit``.

  Firmware with user roles (rfid.esp at 62b1cd79) reports the *role name* as ``access`` for a grant and
  for a refusal outside the role's hours alike (``"Standard"`` both times), so that message does not say
  whether the door opened: any ``access`` value other than the ones above is refused with
  ``EspRfidError`` rather than guessed.

* heartbeat: ``{"type":"heartbeat","time":1718000000,"uptime":3600,"ip":"10.0.0.7","hostname":"esp-noc"}``
  -> ``Heartbeat``.
* boot, on every MQTT connect: ``{"type":"boot","time":1718000000,"uptime":"0","ip":...,"hostname":...}``
  (``uptime`` is the *string* ``"0"``) -> ``ControllerStatus(online=True)`` and ``Heartbeat(uptime_s=0)``.
  In this mode there is no last will: the device going away shows only as missing heartbeats.
* log events, only with "send events over MQTT" on (log.esp writeEvent), which is needed for the door
  contact: ``{"type":"INFO","src":"door","desc":"Door Open","data":"","time":...,"cmd":"event",
  "hostname":...}``. ``src`` ``door`` with ``Door Open``/``Door Closed`` -> ``DoorContact``. Every other
  ``src`` ``tamper`` -> ``Tamper(state="active")`` at the device's reader, an alarm: esp-rfid's tamper is not
  an enclosure switch but its own door watch (dev door.esp doorStatus): "Door was tampered!" (the contact
  opened while the relay was off: forced; id ``esp-tamper-forced-``) and "Door wasn't closed within max
  open time!" (held open; ``esp-tamper-held-``); any other wording of a tamper event is a tamper too. The
  firmware resets its flag when the door next closes (door.esp:13-20) and says so only on the Home
  Assistant ``io/tamper`` topic, so a "Door Closed" parsed with ``tampered=True`` (the caller follows the
  flag from what ``parse`` returned) also yields ``Tamper(state="cleared")``. The bridge raises
  door.forced and door.held_open itself from the ``DoorContact`` reports as well; the device's report
  stands when a contact report was lost (QoS 0). Keep the device's open time equal to the door's
  ``open_time_s`` so both agree on what is forced. Every other event -> ``[]``: ``doorbell`` (no contract
  model), ``rfid`` "Unknown rfid tag is scanned" (the access message reports the same read), ``wifi``,
  ``mqtt``, ``sys``, ``updt``, ``websrv``.
* acknowledgements ``{"type":"<cmd>","ip":...,"hostname":...}`` for deletusers, deletuid, adduser,
  deletlog and updateconf, the getconf reply (``"type":"getconf"``, whose ``configfile`` holds the Wi-Fi
  and MQTT passwords) and the user files a ``getuserlist`` publishes (no ``type``) -> ``[]``.
* anything else, malformed JSON, a wrong type or a missing field -> ``EspRfidError``, and nothing else:
  its reason is printable and storable, quotes values shortened, and never the PIN. The firmware's
  ArduinoJson sends flat objects of C strings, so nesting deeper than ``MAX_DEPTH``, a NUL or a lone
  surrogate escape (``"\ud800"``, not storable as UTF-8) is refused before anything reads the message.
  A ``uid`` is ASCII hex or decimal digits exactly as the firmware prints them; a blank uid is the single
  space of the ``MQTT``/``Button`` echoes.

Message ids: esp-rfid sends none, so the id is ``esp-<kind>-`` and 20 hex digits of the SHA-256 of the
controller key and the canonical JSON (sorted keys), without ``pincode``: a redelivered or replayed
message keeps its id. A device without a clock (see below) restarts its time near 0 on every boot, so
one read repeated at the same second of uptime after a reboot would repeat an id; the two-second reader
cooldown makes that unlikely, not impossible.

Times: ``time`` is integer epoch seconds (``time_t``), UTC in 2.x. Below 10^9 the device has no clock yet
(no NTP since boot; it counts from 0) and ``received`` is used instead. Fractions, negatives, times
before 2018, times more than a day after ``received`` and times that look like milliseconds are refused.

Commands the device accepts on ``<topic>/cmd`` (mqtt.esp onMqttMessage and processMqttMessage): a JSON
object whose ``doorip`` string equals the device's own IP address exactly as ``WiFi.localIP().toString()``
prints it (``"10.0.0.7"``); anything else, including a hostname, is dropped without a reply. ``cmd``,
``doorip``, ``uid`` and ``user`` must be JSON strings (the firmware copies them with ``strlcpy``; a
number there is a null pointer). ``cmd`` is one of ``opendoor`` (every relay, for the device's own
activate time), ``open``/``close`` with ``door`` (relay index), ``getuserlist``, ``deletusers`` (sic),
``deletuid`` (sic; not ``deleteuid``) with ``uid``, ``adduser``, ``deletlog``, ``getconf``,
``updateconf`` with ``configfile``. ``adduser`` stores the whole message as the user's file ``/P/<uid>``;
the fields read from it are ``user``, ``acctype`` (0 disabled, 1 always, 99 admin: ignores validity and
hours and turns Wi-Fi on), ``acctype2``..``acctype4`` (other relays), ``validsince``/``validuntil``
(epoch seconds in an ``unsigned long``, 32 bits on the ESP8266; a missing ``validuntil`` is 0, i.e.
expired) and ``pincode``. ``uid`` is copied into a 20-byte buffer, so at most 19 characters survive.

``encode``: ``Grant`` and ``Unlock`` -> ``opendoor``. The device opens for its own configured time
(``open_time_s`` and ``duration_s`` are not carried) and pulses every relay; it has no "hold unlocked",
so an ``Unlock`` without a duration is a single release too. The lock must be in momentary mode: in
continuous mode ``opendoor`` toggles the relay and could leave the door unlocked. ``Deny``, ``Lock`` and
``Lockdown`` -> ``None``: the device decides and relocks on its own and has no command to refuse or to
lock down. A lockdown of an esp-rfid door means syncing a user list without the people it excludes.

``sync_payloads``: ``deletusers`` then one ``adduser`` per user, or, given the list last synced,
``deletuid`` for the users that left and ``adduser`` (which overwrites) for new or changed ones. A PIN
cannot be synced (the bridge keeps only keyed hashes), so the keypad's "PIN after card" option must be
off: with it on, a user file without ``pincode`` is refused at the door (fail closed). Anyone who can
publish on ``<topic>/cmd`` can add a card or open the door: restrict it with broker ACLs.

README versus source:

* boot ``uptime`` is the string ``"0"`` (mqtt.esp:130), not the number the README shows.
* The README's ``adduser`` example sends ``acctype``/``validsince``/``validuntil`` as strings; its own
  ``getuserlist`` example, the web UI's user files and the 2.0 relay check (``json["acctype2"] ==
  ACCESS_GRANTED``, a typed comparison) use numbers, so numbers are sent.
* The README's ``getuserlist`` reply has ``"command":"userfile"``; the firmware publishes each stored
  file as it is (mqtt.esp getUserList, 412-437), which for a user added over MQTT is the ``adduser``
  command itself, ``cmd`` and ``doorip`` included. The ``list`` array it builds is never sent.
* ``access`` can also be ``Wrong pin code``, the role name (roles firmware), ``MQTT``/``Button``
  echoes, and the message carries ``pincode`` (mqtt.esp:325); none of this is in the README.
* The README's "unknown tag" event has ``"data":""``; the firmware sends ``"<uid> <reader type>"``.
* The README's "Tamper status" is the door-contact logic described above, and its ``reboot`` command
  (README-MQTT at 0a99e12) is not handled by ``processMqttMessage``; ``open``, ``close`` and
  ``deletlog`` are handled but not documented.
* README-ADDON's ``/sync`` and ``/accesslist`` topics and ``getuser``/``listusr`` commands are 1.x only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from badge_bridge import topics
from badge_bridge.controllers.contract import (
    MAX_PAYLOAD,
    Card,
    ControllerStatus,
    CredentialPresented,
    Deny,
    DoorContact,
    Grant,
    Heartbeat,
    Lock,
    Lockdown,
    OfflineDecision,
    RequestToExit,
    Tamper,
    Unlock,
)
from badge_bridge.controllers.driver import Command, Context, Driver
from badge_bridge.sync import controller_doors, offline_listed

if TYPE_CHECKING:
    from badge_bridge.config import ControllerConfig, SiteConfig
    from badge_bridge.controllers.link import Ack
    from badge_bridge.snapshot import Snapshot

log = logging.getLogger(__name__)

Parsed = CredentialPresented | DoorContact | RequestToExit | Tamper | Heartbeat | ControllerStatus
"""What ``parse`` returns."""
Channel = topics.EspChannel
"""The topic a message came on, by its last level (``topics.EspTopics.inbound``)."""

ACCESS_DISABLED, ACCESS_GRANTED, ACCESS_ADMIN = 0, 1, 99
"""``acctype`` values (magicnumbers.h)."""

GRANTED = frozenset({"Always", "Admin"})
REFUSED = frozenset({"Disabled", "Expired", "Wrong pin code", "Denied"})
RELAY_VALUES = frozenset({"Always", "Admin", "Disabled"})
"""What each entry of a multi-relay ``access`` array can be (mqtt.esp mqttPublishAccess)."""
ECHO_USERS = frozenset({"MQTT"})
EXIT_USERS = frozenset({"Button"})

ACKS = frozenset({"deletusers", "deletuid", "adduser", "deletlog", "updateconf", "getconf"})
EVENT_LEVELS = frozenset({"INFO", "WARN", "ERRO"})
DOOR_STATES = {"Door Open": "opened", "Door Closed": "closed"}
TAMPERS = {"Door was tampered!": "tamper-forced", "Door wasn't closed within max open time!": "tamper-held"}
"""door.esp's two tamper events, by the id prefix that tells them apart in the log."""
AVAILABILITY = {b"online": True, b"offline": False}

NO_CLOCK_BELOW = 1_000_000_000
"""Epoch seconds below this (2001-09-09) mean the device has not set its clock since boot."""
EARLIEST = int(datetime(2018, 1, 1, tzinfo=UTC).timestamp())
"""No esp-rfid sent these messages before 2018; an earlier time is a wrong clock."""
MILLISECONDS_FROM = 100_000_000_000
MAX_AHEAD = timedelta(days=1)
UINT32_MAX = 2**32 - 1
"""``validuntil`` is an ``unsigned long``: 32 bits on the ESP8266 (2106-02-07); larger reads as 0."""
UID_RE = re.compile(r"[0-9a-fA-F]{1,64}")
SYNC_UID_RE = re.compile(r"[0-9a-f]{1,19}")
"""Both used with fullmatch: ``$`` would let a final newline through (and ``\\d`` would take other scripts'
digits)."""
BLANK_UID = " "
"""The uid of the opendoor/open/close echoes and the exit button (mqtt.esp processMqttMessage, main.cpp)."""
MAX_DEPTH = 16
"""Nesting the bridge reads at most; the firmware's deepest message (the getconf reply) has 4 levels."""
MAX_COMMAND = 2047
"""The firmware copies a command into a 2048-byte buffer with its terminating NUL (mqtt.esp:1, 474)."""
MAX_NAME = 63


class EspRfidError(ValueError):
    """A message from or for an esp-rfid that cannot be translated; says which field and what was expected."""


@dataclass(frozen=True, slots=True)
class EspUser:
    """One user file on the device, as ``adduser`` writes it."""

    uid: str
    """Exactly as the device spells the card (lower-case hex or decimal, at most 19 characters)."""
    name: str
    acctype: int = ACCESS_GRANTED
    valid_since: datetime | None = None
    """None: valid from the start (``validsince`` 0)."""
    valid_until: datetime | None = None
    """None: no end (``validuntil`` 4294967295, the largest the device can hold)."""

    def __post_init__(self) -> None:
        if not isinstance(self.uid, str) or not SYNC_UID_RE.fullmatch(self.uid):
            raise EspRfidError(f"user uid {self.uid!r}: expected 1-19 lower-case hex or decimal digits, as the "
                               f"device reports the card (its command buffer keeps 19 characters)")
        if (not isinstance(self.name, str) or not 1 <= len(self.name) <= MAX_NAME
                or any(ord(ch) < 32 or ord(ch) == 127 for ch in self.name)):
            raise EspRfidError(f"user {self.uid}: name {self.name!r}: expected 1-{MAX_NAME} characters, no "
                               f"control characters")
        if isinstance(self.acctype, bool) or self.acctype not in (ACCESS_DISABLED, ACCESS_GRANTED, ACCESS_ADMIN):
            raise EspRfidError(f"user {self.uid}: acctype {self.acctype!r}: expected 0 (disabled), 1 (always) "
                               f"or 99 (admin)")
        since, until = _valid_since(self), _valid_until(self)
        if since > until:
            raise EspRfidError(f"user {self.uid}: valid_since is after valid_until")


# --- device -> bridge --------------------------------------------------------------------------------


def parse(payload: bytes, *, controller: str, door: str, reader: str, received: datetime,
          hostname: str | None = None, channel: Channel = "send", tampered: bool = False) -> list[Parsed]:
    """Translate one message from the device's ``channel`` topic; ``[]`` for messages that carry nothing for
    the bridge. Raises ``EspRfidError`` for anything it cannot translate, and nothing else.

    ``door`` and ``reader`` are the bridge's keys for the device's (first) relay and its reader;
    ``received`` (timezone-aware) stands in for the device's time when it has no clock. With
    ``hostname``, a message naming another device is refused (two devices sharing one base topic).
    ``tampered``: the device's tamper flag as the caller follows it (set by a ``Tamper`` "active" this
    returned, reset by a "cleared"), so the door closing clears it as the firmware does.
    """
    if received.tzinfo is None or received.utcoffset() is None:
        raise ValueError("received must be timezone-aware")
    if channel == "avty":
        return _availability(payload)
    msg = _load(payload)
    if channel == "tag":
        return _access(msg, controller, door, reader, received, home_assistant=True)
    if "type" not in msg:
        if msg.get("cmd") == "adduser" or msg.get("command") == "userfile":
            return []  # a user file, published by getuserlist
        keys = ", ".join(_show(k) for k in sorted(msg)[:8]) + (", ..." if len(msg) > 8 else "")
        raise EspRfidError(f"no 'type' field (keys: {keys or 'none'}) on /send: not an esp-rfid 2.x message "
                           f"(Home Assistant mode sends access reports on /tag)")
    kind = msg["type"]
    if not isinstance(kind, str):
        raise EspRfidError(f"type: expected a string, got {_kind(kind)}")
    if kind in ACKS:
        return []  # before anything can fail: a getconf reply carries the device's passwords
    if hostname is not None and "hostname" in msg and msg["hostname"] != hostname:
        raise EspRfidError(f"hostname {_show(msg['hostname'])}: this topic belongs to esp-rfid {hostname!r}; "
                           f"give each device its own base topic")
    if kind == "access":
        return _access(msg, controller, door, reader, received, home_assistant=False)
    if kind == "heartbeat":
        ts = _time(msg, received)
        return [Heartbeat(id=_id("hb", controller, msg), ts=ts, type="heartbeat", uptime_s=_uptime(msg))]
    if kind == "boot":
        ts = _time(msg, received)
        return [ControllerStatus(online=True, ts=ts),
                Heartbeat(id=_id("boot", controller, msg), ts=ts, type="heartbeat", uptime_s=_uptime(msg))]
    if kind in EVENT_LEVELS:
        return _event(msg, controller, door, reader, received, tampered)
    raise EspRfidError(f"type {_show(kind)}: expected access, heartbeat, boot, an event (INFO, WARN, ERRO) or "
                       f"a command acknowledgement ({', '.join(sorted(ACKS))})")


def _availability(payload: bytes) -> list[Parsed]:
    if not payload:
        return []  # an empty retained message deletes the retained state
    if payload not in AVAILABILITY:
        raise EspRfidError(f"availability {_show(payload)}: expected online or offline (Home Assistant mode)")
    return [ControllerStatus(online=AVAILABILITY[payload])]


def _load(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise EspRfidError(f"payload of {len(payload)} bytes: more than the {MAX_PAYLOAD} accepted")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EspRfidError(f"payload is not UTF-8 (byte {exc.start})") from None

    def constant(name: str) -> float:
        raise EspRfidError(f"payload contains {name}, which is not JSON")

    try:
        msg = json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise EspRfidError(f"payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except EspRfidError:  # from constant(), a ValueError too
        raise
    except RecursionError:
        raise EspRfidError(f"payload is nested too deep to read (the bridge reads {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise EspRfidError(f"payload has a number of too many digits: {str(exc)[:80]}") from None
    if not isinstance(msg, dict):
        raise EspRfidError(f"expected a JSON object, got {_kind(msg)}")
    _check_values(msg)
    return msg


def _check_values(msg: dict[str, Any]) -> None:
    """Refuse what ArduinoJson never sends: deep nesting, NUL in a string (they are C strings), and lone
    surrogate escapes, which no UTF-8 can hold (so neither a log line nor a database could take them)."""
    stack: list[tuple[Any, int]] = [(msg, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EspRfidError(f"payload is nested deeper than {MAX_DEPTH} levels; esp-rfid sends flat objects")
        items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
        for key, item in items:
            for text in (key, item):
                if isinstance(text, str):
                    _check_text(text)
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EspRfidError(f"payload has a lone surrogate escape ({_show(exc.object[exc.start])}), which is not "
                           f"text: no esp-rfid sends it") from None
    if "\0" in text:
        raise EspRfidError("payload has a NUL character in a string: esp-rfid's strings are C strings")


def _access(msg: dict[str, Any], controller: str, door: str, reader: str, received: datetime, *,
            home_assistant: bool) -> list[Parsed]:
    """An access report; Home Assistant mode's (on /tag) has no ``isKnown``: ``access`` says it all."""
    known = None
    if not home_assistant:
        known = _string(msg, "isKnown")
        if known not in ("true", "false"):
            raise EspRfidError(f"isKnown {_show(known)}: expected the string \"true\" or \"false\"")
    username = _string(msg, "username")
    uid = _string(msg, "uid")
    ts = _time(msg, received)
    if uid == BLANK_UID:
        if username in ECHO_USERS:
            return []  # the device echoing an opendoor/open/close command: the bridge sent it and audited it
        if username in EXIT_USERS:
            return [RequestToExit(id=_id("rex", controller, msg), ts=ts, type="rex", door=door)]
        raise EspRfidError(f"uid is blank for username {_show(username)}: only the MQTT and Button echoes have "
                           f"no card")
    if not UID_RE.fullmatch(uid):
        raise EspRfidError(f"uid {_show(uid)}: expected the hex or decimal card number esp-rfid reports (1-64 "
                           f"ASCII digits, nothing around them)")
    number = uid.lower()
    granted, value = _decision(msg.get("access"), known)
    return [CredentialPresented(id=_id("acc", controller, msg), ts=ts, type="credential", reader=reader,
                                card=Card(format="ascii", number=number),
                                offline=OfflineDecision(granted=granted, reason=f"esp-rfid:{value}"[:64]))]


def _decision(access: Any, known: str | None) -> tuple[bool, str]:
    """Whether the device opened the door, and its ``access`` value as text."""
    if isinstance(access, list):
        if not access or not all(isinstance(a, str) and a in RELAY_VALUES for a in access):
            raise EspRfidError(f"access {_show(access)}: expected one of {', '.join(sorted(RELAY_VALUES))} per "
                               f"relay")
        granted, value = access[0] in GRANTED, "/".join(access)
    elif isinstance(access, str):
        if access in GRANTED:
            granted = True
        elif access in REFUSED:
            granted = False
        else:
            raise EspRfidError(
                f"access {_show(access)}: expected {', '.join(sorted(GRANTED | REFUSED))}; firmware with user roles "
                f"sends the role name, which does not say whether the door opened, so it is not guessed")
        value = access
    else:
        raise EspRfidError(f"access: expected a string (or an array of strings, one per relay), got {_kind(access)}")
    if known == "false" and granted:
        raise EspRfidError(f"access {value!r} with isKnown \"false\": the device grants only cards it knows")
    return granted, value


def _event(msg: dict[str, Any], controller: str, door: str, reader: str, received: datetime,
           tampered: bool) -> list[Parsed]:
    src, desc = _string(msg, "src"), _string(msg, "desc")
    if src == "tamper":
        return [Tamper(id=_id(TAMPERS.get(desc, "tamper"), controller, msg), ts=_time(msg, received), type="tamper",
                       state="active", reader=reader)]
    if src != "door":
        return []  # doorbell, rfid, wifi, mqtt, sys, updt, websrv: see the module docstring
    state = DOOR_STATES.get(desc)
    if state is None:
        raise EspRfidError(f"door event desc {_show(desc)}: expected {' or '.join(DOOR_STATES)}")
    ts = _time(msg, received)
    out: list[Parsed] = [DoorContact(id=_id("door", controller, msg), ts=ts, type="door", door=door,
                                     state=state)]  # type: ignore[arg-type]
    if state == "closed" and tampered:  # door.esp:13-20: closing resets the firmware's tamper flag
        out.append(Tamper(id=_id("tamper-cleared", controller, msg), ts=ts, type="tamper", state="cleared",
                          reader=reader))
    return out


def _string(msg: dict[str, Any], key: str) -> str:
    if key not in msg:
        raise EspRfidError(f"{key}: missing from the {msg.get('type', 'message')!r} message")
    value = msg[key]
    if not isinstance(value, str):
        raise EspRfidError(f"{key}: expected a string, got {_kind(value)}")
    return value


def _time(msg: dict[str, Any], received: datetime) -> datetime:
    if "time" not in msg:
        raise EspRfidError(f"time: missing from the {msg.get('type')!r} message")
    t = msg["time"]
    if isinstance(t, bool) or not isinstance(t, int):
        raise EspRfidError(f"time {_show(t)}: expected whole epoch seconds (a JSON integer)")
    if t < 0:
        raise EspRfidError(f"time {t}: negative")
    if t < NO_CLOCK_BELOW:
        return received  # seconds since boot: the device has no clock yet
    if t >= MILLISECONDS_FROM:
        raise EspRfidError(f"time {_show(t)}: looks like milliseconds; esp-rfid sends epoch seconds")
    if t < EARLIEST:
        raise EspRfidError(f"time {t} ({_iso(t)}) is before 2018: the device's clock is wrong (check its NTP "
                           f"settings)")
    ts = datetime.fromtimestamp(t, UTC)
    if ts > received + MAX_AHEAD:
        raise EspRfidError(f"time {t} ({ts.isoformat()}) is more than {MAX_AHEAD} after it was received "
                           f"({received.isoformat()}): the device's clock is wrong")
    return ts


def _uptime(msg: dict[str, Any]) -> float:
    if "uptime" not in msg:
        raise EspRfidError(f"uptime: missing from the {msg.get('type')!r} message")
    value = msg["uptime"]
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)  # boot sends the string "0"
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT32_MAX:
        # uptimeSeconds is an unsigned long (main.cpp): 32 bits
        raise EspRfidError(f"uptime {_show(value)}: expected whole seconds, 0 to {UINT32_MAX}")
    return float(value)


def _id(kind: str, controller: str, msg: dict[str, Any]) -> str:
    """The same for the same message from the same controller; the typed PIN is left out (an id is logged,
    and a short hash over a few digits would give the PIN away)."""
    content = {k: v for k, v in msg.items() if k != "pincode"}
    canonical = json.dumps({"controller": controller, "message": content}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return f"esp-{kind}-{hashlib.sha256(canonical.encode()).hexdigest()[:20]}"


def _show(value: Any, limit: int = 40) -> str:
    """A value quoted for a reason: its repr (escapes control characters), shortened."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


# --- bridge -> device --------------------------------------------------------------------------------


def encode(command: Grant | Deny | Unlock | Lock | Lockdown, *, device: str) -> bytes | None:
    """The payload for ``<topic>/cmd``, or None when the firmware has no such command.

    ``device`` is the device's IP address, which the firmware compares with its own (``doorip``).
    """
    ip = _doorip(device)
    if isinstance(command, Grant | Unlock):
        return _command("opendoor", ip)
    if isinstance(command, Deny | Lock | Lockdown):
        return None
    raise EspRfidError(f"cannot encode {type(command).__name__} for esp-rfid")


def sync_payloads(users: Sequence[EspUser], *, device: str,
                  previous: Sequence[EspUser] | None = None) -> list[bytes]:
    """The commands, in order, that make the device's user list equal ``users``.

    Without ``previous``: delete every user, then add each. With ``previous`` (the list the device is
    known to hold, e.g. the last one synced since its last boot): delete the users that left and (re)add
    the new or changed ones, so the others keep working throughout.
    """
    ip = _doorip(device)
    wanted = _by_uid(users, "users")
    adds = {uid: _command("adduser", ip, **_user_fields(user)) for uid, user in sorted(wanted.items())}
    if previous is None:
        return [_command("deletusers", ip), *adds.values()]
    before = _by_uid(previous, "previous")
    held = {uid: _command("adduser", ip, **_user_fields(user)) for uid, user in before.items()}
    gone = [_command("deletuid", ip, uid=uid) for uid in sorted(before.keys() - wanted.keys())]
    return gone + [payload for uid, payload in adds.items() if held.get(uid) != payload]


def users_version(users: Sequence[EspUser]) -> str:
    """A digest of a user list as the device would store it: equal lists, equal versions."""
    fields = [_user_fields(user) for _, user in sorted(_by_uid(users, "users").items())]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _by_uid(users: Sequence[EspUser], what: str) -> dict[str, EspUser]:
    out: dict[str, EspUser] = {}
    for user in users:
        if not isinstance(user, EspUser):
            raise EspRfidError(f"{what}: expected EspUser, got {type(user).__name__}")
        if user.uid in out:
            raise EspRfidError(f"{what}: uid {user.uid} appears twice; the device keeps one file per card")
        out[user.uid] = user
    return out


def _user_fields(user: EspUser) -> dict[str, Any]:
    return {"uid": user.uid, "user": user.name, "acctype": user.acctype,
            "validsince": _valid_since(user), "validuntil": _valid_until(user)}


def _valid_since(user: EspUser) -> int:
    if user.valid_since is None:
        return 0
    return _epoch(user, "valid_since", user.valid_since, math.ceil)  # round towards less access


def _valid_until(user: EspUser) -> int:
    if user.valid_until is None:
        return UINT32_MAX
    return _epoch(user, "valid_until", user.valid_until, math.floor)


def _epoch(user: EspUser, name: str, value: datetime, rounding: Any) -> int:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise EspRfidError(f"user {user.uid}: {name} {value!r}: expected a timezone-aware datetime")
    t = int(rounding(value.timestamp()))
    if not 0 <= t <= UINT32_MAX:
        raise EspRfidError(f"user {user.uid}: {name} {value.isoformat()}: the device holds 1970-01-01 to "
                           f"2106-02-07 (32-bit epoch seconds)")
    return t


def _doorip(device: str) -> str:
    try:
        ip = ipaddress.IPv4Address(device)
    except (ipaddress.AddressValueError, ValueError):
        ip = None
    if ip is None or str(ip) != device:
        raise EspRfidError(f"device {device!r}: esp-rfid obeys only commands whose doorip is its own IPv4 address "
                           f"as it prints it (e.g. \"10.0.0.7\"), not its hostname; give the device a fixed "
                           f"address")
    return device


def _command(cmd: str, ip: str, **fields: Any) -> bytes:
    # Raw UTF-8, not \u escapes: ArduinoJson may keep an escape as the literal text.
    body = json.dumps({"cmd": cmd, "doorip": ip, **fields}, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_COMMAND:
        raise EspRfidError(f"{cmd} command of {len(body)} bytes: the device takes at most {MAX_COMMAND}")
    return body


def command(cmd: str, *, device: str, **fields: Any) -> bytes:
    """Any command for ``<topic>/cmd``, as the firmware reads it, for the device at ``device`` (its doorip)."""
    return _command(cmd, _doorip(device), **fields)


def reply(payload: bytes, cmd: str, *, device: str) -> dict[str, Any] | None:
    """The device's answer to ``cmd`` on ``<topic>/send`` (``{"type": cmd, "ip": device, ...}``: the
    acknowledgement, or the getconf reply with its ``configfile``), None for any other message."""
    try:
        msg = json.loads(payload)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) and msg.get("type") == cmd and msg.get("ip") == device else None


# --- the bridge's user list for a device -------------------------------------------------------------


def esp_users(config: SiteConfig, snapshot: Snapshot, controller: str) -> list[EspUser]:
    """An esp-rfid device's user list: its own firmware decides, from plain card uids and validity only (no
    schedules, no PINs), so only ``ascii`` credentials with a level for its door are listed; the bridge
    re-checks every decision it reports (see ingest)."""
    doors = controller_doors(config, controller)
    users = []
    for (fmt, number), record in sorted(snapshot.credentials.items()):
        view = record.view
        if fmt != "ascii" or not offline_listed(view) or not doors & view.standing_doors().keys():
            continue
        try:
            users.append(EspUser(uid=number.lower(), name=f"credential {view.id}", valid_since=view.valid_from,
                                 valid_until=view.valid_until))
        except EspRfidError as exc:  # one credential the device cannot hold must not stop the others, or the bridge
            log.warning("esp-rfid controller %s cannot hold credential %s, left out: %s", controller, view.id, exc)
    return users


# --- the driver --------------------------------------------------------------------------------------


class EspRfidDriver(Driver):
    """One device over the bridge's MQTT link: its topics read and translated, commands and the user list
    written to ``<topic>/cmd``."""

    kind = "esp-rfid"

    def __init__(self, ctx: Context, controller: ControllerConfig) -> None:
        super().__init__(ctx, controller)
        self.topics = topics.esp_rfid(controller.topic or controller.key)
        self.reader = {r.controller: r for r in ctx.config.readers}.get(controller.key)
        self.tampered = False
        """The device's own tamper flag is up (see ``parse``)."""
        self._synced: str | None = None
        """The version of the user list last sent (``users_version``)."""
        for topic, channel in self.topics.inbound().items():
            # The retained availability is not delivered through a shared subscription, like the status topics.
            ctx.link.route(topic, partial(self._receive, channel), sender=controller.key)

    @classmethod
    def heard_on(cls, controller: ControllerConfig) -> str:
        return (f"an esp-rfid device: the bridge reads it only on its own topics "
                f"({topics.esp_rfid(controller.topic or controller.key).events})")

    def _receive(self, channel: Channel, topic: str, payload: bytes, ack: Ack | None) -> None:
        key, processor = self.controller.key, self.ctx.processor
        if self.reader is None:
            processor.reject(key, "unknown_reader", f"esp-rfid controller {key!r} has no reader in the site file",
                             payload, where=topic, ack=ack)
            return
        try:
            messages = parse(payload, controller=key, door=self.reader.door, reader=self.reader.key,
                             received=datetime.now(UTC), channel=channel, tampered=self.tampered)
        except EspRfidError as exc:
            processor.reject(key, "invalid_message", str(exc), payload, where=topic, ack=ack)
            return
        if not messages and ack:
            ack()
        for i, message in enumerate(messages):
            last_ack = ack if i == len(messages) - 1 else None
            if isinstance(message, Tamper):
                self.tampered = message.state == "active"
            if isinstance(message, ControllerStatus):
                processor.controller_status(key, message, payload, topic, last_ack)
            else:
                processor.controller_event(key, message, payload, topic, last_ack)

    def send(self, command: Command) -> None:
        payload = encode(command, device=self.controller.device or "")
        if payload is not None:
            self.ctx.link.publish(self.topics.commands, payload)

    def sync(self, snapshot: Snapshot) -> None:
        users = esp_users(self.ctx.config, snapshot, self.controller.key)
        version = users_version(users)
        if version == self._synced:
            return
        for payload in sync_payloads(users, device=self.controller.device or ""):
            self.ctx.link.publish(self.topics.commands, payload)
        self._synced = version
