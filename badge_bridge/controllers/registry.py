"""Which driver runs a controller of each ``kind`` (the site file's ``controllers[].kind``)."""

from __future__ import annotations

from badge_bridge.config import SiteConfig
from badge_bridge.controllers.driver import Context, Driver
from badge_bridge.controllers.esp_rfid import EspRfidDriver
from badge_bridge.controllers.mqtt import ContractController
from badge_bridge.controllers.osdp import OsdpBus

DRIVERS: dict[str, type[Driver]] = {driver.kind: driver for driver in (ContractController, EspRfidDriver, OsdpBus)}


def build(ctx: Context) -> dict[str, Driver]:
    """A driver for each controller of the site, by key, in the site file's order."""
    return {ctl.key: DRIVERS[ctl.kind](ctx, ctl) for ctl in ctx.config.controllers}


def heard_elsewhere(config: SiteConfig) -> dict[str, str]:
    """The controllers that do not speak the contract, each with where the bridge hears it instead."""
    return {ctl.key: where for ctl in config.controllers if (where := DRIVERS[ctl.kind].heard_on(ctl)) is not None}
