"""The MQTT topic tree: every topic anything of the site publishes or subscribes to is spelled here, and only
here (docs/mqtt.md describes each).

``tree()`` enumerates the patterns with who publishes and who subscribes to each, so the broker's ACL can
be generated from it; ``Topics`` builds the contract's topics under a site's prefix, ``esp_rfid`` an esp-rfid
device's under its base topic. Who is named by role (each logs in on its own account, mqtt_accounts, and
`badge-bridge mqtt broker-config` writes the broker's ACL from ``tree(role)``):

* ``bridge``: the bridge;
* ``console``: the web console, and ``make demo``'s lobby watcher;
* ``controller``: a controller on the contract, only under its own key (its username);
* ``esp-rfid``: a stock esp-rfid device, only under its own base topic (its username is its key);
* ``camera``: a camera worker, only under its own key;
* ``firmware``: ``badge-bridge firmware diff | push``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

ANY = "+"
"""The single-level wildcard: ``Topics.controller_events(ANY)`` is the filter for every controller's events."""

BRIDGE, CONSOLE, CONTROLLER, ESP_RFID, CAMERA, FIRMWARE = (
    "bridge", "console", "controller", "esp-rfid", "camera", "firmware")
ROLES = (BRIDGE, CONSOLE, CONTROLLER, ESP_RFID, CAMERA, FIRMWARE)


@dataclass(frozen=True)
class Topic:
    """One pattern of the tree and who uses it."""

    pattern: str
    """The topic with its variable levels in braces: ``{prefix}`` (the site's ``mqtt.topic_prefix``),
    ``{controller}``, ``{camera}``, ``{door}``, ``{partition}`` (site file keys), ``{instance}`` (a bridge
    process's name among its partition's), ``{base}`` (an esp-rfid device's base topic)
    and ``{hostname}`` (its hostname). A ``#`` at the end stands for whatever the device puts below."""
    publishers: tuple[str, ...]
    subscribers: tuple[str, ...]
    qos: int
    retained: bool
    message: str
    """What it carries: a contract model (docs/schemas/) or the device's own format."""

    def at(self, prefix: str = "", **levels: str) -> str:
        """The topic (or, with ``ANY`` for a level, the filter) for these levels."""
        return self.pattern.format(prefix=prefix, **levels)


def _topic(pattern: str, publishers: tuple[str, ...], subscribers: tuple[str, ...], message: str, *,
           qos: int = 1, retained: bool = False) -> Topic:
    return Topic(pattern, publishers, subscribers, qos, retained, message)


CONTROLLER_EVENTS = _topic("{prefix}/controllers/{controller}/events", (CONTROLLER,), (BRIDGE,), "ControllerEvent")
CONTROLLER_STATUS = _topic("{prefix}/controllers/{controller}/status", (CONTROLLER,), (BRIDGE,), "ControllerStatus",
                           retained=True)
CONTROLLER_COMMANDS = _topic("{prefix}/controllers/{controller}/commands", (BRIDGE,), (CONTROLLER,), "Command")
CONTROLLER_SYNC = _topic("{prefix}/controllers/{controller}/sync", (BRIDGE,), (CONTROLLER,), "CredentialSync",
                         retained=True)
CONTROLLER_CONFIG = _topic("{prefix}/controllers/{controller}/config", (CONTROLLER,), (FIRMWARE,), "ConfigReport",
                           retained=True)
CONTROLLER_CONFIG_SET = _topic("{prefix}/controllers/{controller}/config/set", (FIRMWARE,), (CONTROLLER,),
                               "ConfigSet")
CONTROLLER_RECEIPTS = _topic("{prefix}/controllers/{controller}/receipts", (BRIDGE,), (CONTROLLER,), "Receipt")
BRIDGE_STATUS = _topic("{prefix}/bridge/status/{partition}/{instance}", (BRIDGE,), (CONSOLE, CONTROLLER),
                       "BridgeStatus", retained=True)
BRIDGE_EVENTS = _topic("{prefix}/bridge/events", (BRIDGE,), (CONSOLE,), "PublishedEvents", qos=0)
DOOR_STATE = _topic("{prefix}/bridge/doors/{door}", (BRIDGE,), (CONSOLE,), "DoorState", retained=True)
CONSOLE_COMMANDS = _topic("{prefix}/console/commands", (CONSOLE,), (BRIDGE,), "ConsoleCommand")
CAMERA_EVENTS = _topic("{prefix}/cameras/{camera}/events", (CAMERA,), (BRIDGE,), "CameraEvent")
CAMERA_STATUS = _topic("{prefix}/cameras/{camera}/status", (CAMERA,), (BRIDGE,), "CameraStatus", retained=True)
CAMERA_REQUESTS = _topic("{prefix}/cameras/{camera}/requests", (BRIDGE,), (CAMERA,), "EvidenceRequest, FaceRequest, PeopleRequest")
ESP_SEND = _topic("{base}/send", (ESP_RFID,), (BRIDGE, FIRMWARE), "esp-rfid JSON (controllers/esp_rfid.py)", qos=0)
ESP_TAG = _topic("{base}/tag", (ESP_RFID,), (BRIDGE,), "esp-rfid access reports, Home Assistant mode", qos=0)
ESP_AVAILABILITY = _topic("{base}/avty", (ESP_RFID,), (BRIDGE,), "online or offline, Home Assistant mode",
                          qos=0, retained=True)
ESP_COMMANDS = _topic("{base}/cmd", (BRIDGE, FIRMWARE), (ESP_RFID,), "esp-rfid commands (controllers/esp_rfid.py)")
ESP_IO = _topic("{base}/io/#", (ESP_RFID,), (), "Home Assistant mode's ON/OFF states, which nobody here reads",
                qos=0, retained=True)
ESP_DISCOVERY = _topic("homeassistant/+/{hostname}/#", (ESP_RFID,), (),
                       "Home Assistant mode's discovery messages, which nobody here reads", qos=0, retained=True)

TREE = (CONTROLLER_EVENTS, CONTROLLER_STATUS, CONTROLLER_COMMANDS, CONTROLLER_SYNC, CONTROLLER_RECEIPTS,
        CONTROLLER_CONFIG, CONTROLLER_CONFIG_SET, BRIDGE_STATUS, BRIDGE_EVENTS, DOOR_STATE, CONSOLE_COMMANDS, CAMERA_EVENTS,
        CAMERA_STATUS, CAMERA_REQUESTS, ESP_SEND, ESP_TAG, ESP_AVAILABILITY, ESP_COMMANDS, ESP_IO, ESP_DISCOVERY)


def tree(role: str | None = None) -> tuple[Topic, ...]:
    """Every topic pattern of a site, or those ``role`` publishes or subscribes to, in the order of
    docs/mqtt.md. A role may use a pattern only for its own key (``{controller}``, ``{camera}``, ``{base}``),
    except the bridge and the firmware tool, which use every controller's and camera's."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return tuple(t for t in TREE if role is None or role in t.publishers or role in t.subscribers)


class Topics:
    """The contract's topics under one site's prefix; a key left out is ``ANY``, for a subscription."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")

    def _at(self, topic: Topic, **levels: str) -> str:
        return topic.at(self.prefix, **levels)

    def controller_events(self, controller: str = ANY) -> str:
        return self._at(CONTROLLER_EVENTS, controller=controller)

    def controller_status(self, controller: str = ANY) -> str:
        return self._at(CONTROLLER_STATUS, controller=controller)

    def controller_commands(self, controller: str) -> str:
        return self._at(CONTROLLER_COMMANDS, controller=controller)

    def controller_sync(self, controller: str) -> str:
        return self._at(CONTROLLER_SYNC, controller=controller)

    def controller_config(self, controller: str) -> str:
        return self._at(CONTROLLER_CONFIG, controller=controller)

    def controller_config_set(self, controller: str) -> str:
        return self._at(CONTROLLER_CONFIG_SET, controller=controller)

    def controller_receipts(self, controller: str) -> str:
        return self._at(CONTROLLER_RECEIPTS, controller=controller)

    def bridge_status(self, partition: str = ANY, instance: str = ANY) -> str:
        """One bridge process's retained status (and last will); ``ANY`` levels for a subscription."""
        return self._at(BRIDGE_STATUS, partition=partition, instance=instance)

    def bridge_status_of(self, topic: str) -> tuple[str, str] | None:
        """The (partition, instance) a bridge status topic names, None for any other topic."""
        parts = topic.removeprefix(f"{self.prefix}/").split("/")
        return (parts[2], parts[3]) if len(parts) == 4 and parts[:2] == ["bridge", "status"] else None

    def bridge_events(self) -> str:
        return self._at(BRIDGE_EVENTS)

    def door_state(self, door: str = ANY) -> str:
        return self._at(DOOR_STATE, door=door)

    def console_commands(self) -> str:
        return self._at(CONSOLE_COMMANDS)

    def camera_events(self, camera: str = ANY) -> str:
        return self._at(CAMERA_EVENTS, camera=camera)

    def camera_status(self, camera: str = ANY) -> str:
        return self._at(CAMERA_STATUS, camera=camera)

    def camera_requests(self, camera: str) -> str:
        return self._at(CAMERA_REQUESTS, camera=camera)

    def key_of(self, topic: str, *, under: tuple[str, ...] = ("controllers", "cameras")) -> str | None:
        """The controller or camera a topic names (``<prefix>/controllers/<key>/<leaf>``, the same under
        ``cameras``), None for any other topic."""
        parts = topic.removeprefix(f"{self.prefix}/").split("/")
        return parts[1] if len(parts) == 3 and parts[0] in under else None

    def controller_of(self, topic: str) -> str | None:
        """The controller a topic ``<prefix>/controllers/<key>/<leaf>`` names, None for any other topic."""
        return self.key_of(topic, under=("controllers",))


EspChannel = Literal["send", "tag", "avty"]
"""The topic an esp-rfid message came on, by its last level."""


class EspTopics(NamedTuple):
    """An esp-rfid device's topics, spelled as its firmware builds them (``base + "/send"``)."""

    events: str
    """``<base>/send``: everything the device publishes but Home Assistant mode's access reports."""
    tag: str
    """``<base>/tag``: access reports in Home Assistant mode."""
    availability: str
    """``<base>/avty``: Home Assistant mode's retained online state and last will."""
    commands: str
    """``<base>/cmd``: where the device listens for commands."""

    def inbound(self) -> dict[str, EspChannel]:
        """The topics to subscribe to, each with the channel it is read as."""
        return {self.events: "send", self.tag: "tag", self.availability: "avty"}


def esp_rfid(base: str) -> EspTopics:
    """The topics of the esp-rfid device whose MQTT topic setting is ``base`` (used verbatim: a leading or
    trailing slash is part of every topic)."""
    if not isinstance(base, str) or not base or len(base) > 200 or any(ch in base for ch in "+#\0"):
        raise ValueError(f"esp-rfid base topic {base!r}: expected the device's MQTT topic setting, "
                         f"1-200 characters without + # or NUL")
    return EspTopics(events=ESP_SEND.at(base=base), tag=ESP_TAG.at(base=base),
                     availability=ESP_AVAILABILITY.at(base=base), commands=ESP_COMMANDS.at(base=base))
