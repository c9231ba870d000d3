"""Which readers, doors and areas belong to which controller, from the site file.

Every concern asks the same questions of the site's wiring; the lookups that a device's message depends on
refuse (``Rejected``) a key that is not wired where the message says, so a device cannot act on a door it
does not serve.
"""

from __future__ import annotations

from collections.abc import Iterable

from badge_bridge.config import ControllerConfig, InterlockConfig, ReaderConfig, SiteConfig
from badge_bridge.ingest.admission import Rejected


class Wiring:
    def __init__(self, config: SiteConfig) -> None:
        self.readers = {r.key: r for r in config.readers}
        self.controllers: dict[str, ControllerConfig] = {ctl.key: ctl for ctl in config.controllers}
        self.doors = frozenset(d.key for d in config.doors)
        self.door_controllers: dict[str, set[str]] = {}
        for r in config.readers:
            self.door_controllers.setdefault(r.door, set()).add(r.controller)
        self.area_doors: dict[str, set[str]] = {}
        for d in config.doors:
            for area in (d.area_in, d.area_out):
                if area:
                    self.area_doors.setdefault(area, set()).add(d.key)
        self.interlocks: dict[str, InterlockConfig] = {door: group for group in config.interlocks for door in group.doors}
        """Door -> its interlock (a mantrap), for the doors in one."""

    def known(self, controller: str) -> None:
        if controller not in self.controllers:
            raise Rejected("unknown_controller", f"controller {controller!r} is not in the site file")

    def door_of(self, controller: str, door: str) -> str:
        if door not in self.doors:
            raise Rejected("unknown_door", f"door {door!r} is not in the site file")
        if controller not in self.door_controllers.get(door, set()):
            raise Rejected("unknown_door", f"door {door!r} is not wired to controller {controller!r}")
        return door

    def by_controller(self, doors: Iterable[str]) -> dict[str, list[str]]:
        """Each controller serving any of ``doors``, with those of them it serves, both sorted: whom to tell."""
        mine: dict[str, list[str]] = {}
        for door in sorted(doors):
            for controller in self.door_controllers.get(door, ()):
                mine.setdefault(controller, []).append(door)
        return dict(sorted(mine.items()))

    def decides_alone(self, controller: str) -> bool:
        """A stock esp-rfid decides every card itself, from the user list the bridge syncs to it: each of its
        reports is the device's own decision, whether or not the bridge hears it online."""
        return self.controllers[controller].kind == "esp-rfid"

    def reader_of(self, controller: str, reader: str) -> ReaderConfig:
        config = self.readers.get(reader)
        if config is None or config.controller != controller:
            raise Rejected("unknown_reader", f"reader {reader!r} is not wired to controller {controller!r}")
        return config

    def doors_of(self, controller: str) -> list[str]:
        """The doors a controller has a reader at."""
        return [door for door, ctls in self.door_controllers.items() if controller in ctls]
