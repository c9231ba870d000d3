"""The interface every controller driver implements, and what the bridge hands each one.

A driver is one controller of the site file, spoken to in its own protocol: what the controller reports
reaches the processor as contract messages, the processor's commands reach the controller in its own form
(``send``), and its offline list is kept current (``sync``). The bridge knows no protocol: it builds one
driver per controller through the registry (registry.py), by ``kind``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from badge_bridge.controllers import contract as c

if TYPE_CHECKING:
    from badge_bridge.config import ControllerConfig, SiteConfig
    from badge_bridge.controllers.feedback import BuzzerPatterns, LedPatterns
    from badge_bridge.controllers.link import MqttLink
    from badge_bridge.ingest import Processor
    from badge_bridge.keys import KeyStore
    from badge_bridge.snapshot import Snapshot

Command = c.Grant | c.Deny | c.Unlock | c.Lock | c.Lockdown
"""What the processor sends a controller."""


class DeviceError(Exception):
    """A controller that could not be reached, read or configured (the firmware tool's pushes); says which and
    why."""


@dataclass(frozen=True)
class Context:
    """What the bridge shares with every driver."""

    config: SiteConfig
    processor: Processor
    keys: KeyStore
    link: MqttLink
    """The bridge's broker connection, for drivers whose controllers speak MQTT."""
    feedback: Mapping[str, tuple[LedPatterns, BuzzerPatterns]] = field(default_factory=dict)
    """Per controller, what its readers show and sound for decisions where the bridge drives them itself (an
    OSDP reader keeps no patterns of its own): firmware.toml's."""


class Driver(ABC):
    """One controller. Built before the link connects (a driver registers its topics with the link then),
    started after."""

    kind: ClassVar[str]
    """The site file's ``controllers[].kind`` this driver serves."""

    def __init__(self, ctx: Context, controller: ControllerConfig) -> None:
        self.ctx = ctx
        self.controller = controller

    @classmethod
    def heard_on(cls, controller: ControllerConfig) -> str | None:
        """Where the bridge hears this controller, when not on the contract's controller topics (None: it
        is): anything on those topics under its key is then an impostor's."""
        return None

    def start(self) -> None:
        """Begin talking to the controller (the link is connecting by then); nothing by default, for a
        controller the link carries."""
        return None

    def stop(self) -> None:
        """Stop talking to it (the link is still up); nothing by default."""
        return None

    @abstractmethod
    def send(self, command: Command) -> None:
        """Carry out a command of the processor at the controller, as far as its protocol can."""

    def sync(self, snapshot: Snapshot) -> None:
        """Bring the controller's offline list up to date with ``snapshot`` (a list that has not changed is not
        sent again); nothing by default, for a controller that keeps none."""
        return None
