"""Who logs in to the site's broker, one account each: the names `badge-bridge mqtt broker-config` writes into
the broker's password file and ACL, and the names ``mqtt_client.site_client`` logs in with.

* the bridge: one account per partition, named after it (the default partition is the site's ``instance``,
  ``bridge-1``), or the site file's ``mqtt.username`` for them all when it names one;
* the console (and ``make demo``'s lobby watcher): ``console``;
* the firmware tool: ``firmware``;
* a controller on the contract or an esp-rfid device: its controller key (an esp-rfid device's key is also its
  MQTT user and hostname, docs/mqtt.md);
* a camera worker: ``camera@<camera key>``; ``@`` is not allowed in a key, so it never names a controller.
"""

from __future__ import annotations

from dataclasses import dataclass

from badge_bridge.config import ConfigError, SiteConfig
from badge_bridge.topics import BRIDGE, CAMERA, CONSOLE, CONTROLLER, ESP_RFID, FIRMWARE

CONSOLE_ACCOUNT, FIRMWARE_ACCOUNT = "console", "firmware"
CAMERA_PREFIX = "camera@"


@dataclass(frozen=True)
class Account:
    """One broker account: its username, the role it plays in topics.tree(), and for a device its key."""

    name: str
    role: str
    key: str | None = None


def account_name(config: SiteConfig, role: str, key: str | None = None) -> str:
    """The username ``role`` (with ``key`` for a controller, esp-rfid device or camera) logs in with."""
    if role == BRIDGE:
        return config.mqtt.username or config.site.instance
    if role == CONSOLE:
        return CONSOLE_ACCOUNT
    if role == FIRMWARE:
        return FIRMWARE_ACCOUNT
    if key is None:
        raise ValueError(f"the {role} account needs its key")
    if role in (CONTROLLER, ESP_RFID):
        return key
    if role == CAMERA:
        return CAMERA_PREFIX + key
    raise ValueError(f"role {role!r} has no broker account")


def accounts(config: SiteConfig) -> list[Account]:
    """Every account of the site, in the order the password file and the ACL list them. Two roles that would
    share a name (a controller keyed ``console``, say) are a configuration error, never one account."""
    bridges = sorted({account_name(config.partition_view(p), BRIDGE) for p in config.partitions()})
    out = [*(Account(name, BRIDGE) for name in bridges), Account(CONSOLE_ACCOUNT, CONSOLE),
           Account(FIRMWARE_ACCOUNT, FIRMWARE)]
    for ctl in config.controllers:
        role = {"mqtt": CONTROLLER, "esp-rfid": ESP_RFID}.get(ctl.kind)
        if role is not None:
            out.append(Account(account_name(config, role, ctl.key), role, ctl.key))
    out += [Account(account_name(config, CAMERA, cam.key), CAMERA, cam.key) for cam in config.cameras]
    seen: dict[str, Account] = {}
    for account in out:
        if account.name in seen:
            other = seen[account.name]
            raise ConfigError(f"broker account {account.name!r} would serve both the {other.role} and the "
                             f"{account.role}: rename the controller or the site's instance")
        seen[account.name] = account
    return out
