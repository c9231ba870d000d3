"""Load a site's ``firmware.toml`` and check it: against the profiles' schema, against the site file, and
against the safety rules (docs/firmware.md). Every problem is one line naming the file and the field, e.g.::

    firmware.toml: controllers[2].open_time_s: 120 is above the safe maximum of 30 s (...)

A file with any problem is refused whole: nothing of it is pushed.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from badge_bridge.config import ConfigError, SiteConfig
from badge_bridge.controllers.feedback import BuzzerPatterns, LedPatterns
from badge_bridge.firmware.profiles import EspRfidProfile, FirmwareFile, MqttProfile, OsdpProfile

Profile = MqttProfile | EspRfidProfile | OsdpProfile
DEFAULT_NAME = "firmware.toml"
OPEN_TIME_MIN_S, OPEN_TIME_MAX_S = 1.0, 30.0
log = logging.getLogger(__name__)


class FirmwareError(ConfigError):
    """A firmware file that must not be pushed; the message lists every problem, one per line."""


@dataclass(frozen=True)
class Firmware:
    """A validated firmware file: the controllers' desired settings, defaults applied."""

    path: Path
    controllers: list[Profile]

    def controller(self, key: str) -> Profile:
        for ctl in self.controllers:
            if ctl.key == key:
                return ctl
        raise FirmwareError(f"{self.path}: no controller {key!r} (known: "
                            f"{', '.join(c.key for c in self.controllers) or 'none'})")


def default_path(site: SiteConfig) -> Path:
    """``firmware.toml`` next to the site file."""
    return site.base_dir / DEFAULT_NAME


def load_firmware(path: str | Path, site: SiteConfig) -> Firmware:
    """Load, apply the per-profile defaults, validate; raise FirmwareError listing every problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FirmwareError(f"{path}: no such firmware file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FirmwareError(f"{path}: cannot read the firmware file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FirmwareError(f"{path}: not valid TOML: {exc}") from None
    defaults = raw.get("defaults", {}) if isinstance(raw.get("defaults", {}), dict) else {}
    merged = dict(raw)
    if isinstance(raw.get("controllers"), list):
        merged["controllers"] = [{**_defaults(defaults, c.get("profile")), **c} if isinstance(c, dict) else c
                                 for c in raw["controllers"]]
    try:
        parsed = FirmwareFile.model_validate(merged)
    except ValidationError as exc:
        raise FirmwareError("\n".join(f"{path}: {_loc(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                                      for err in exc.errors())) from None
    errors = check(parsed.controllers, site)
    if errors:
        raise FirmwareError("\n".join(f"{path}: {e}" for e in errors))
    return Firmware(path, list(parsed.controllers))


def osdp_feedback(site: SiteConfig) -> dict[str, tuple[LedPatterns, BuzzerPatterns]]:
    """Per OSDP bus of the site, the LED and buzzer patterns its readers show for decisions, from the
    firmware file next to the site file. An OSDP reader keeps no patterns of its own: the bridge sends them
    with every decision, so it reads them at start. A file that does not validate is logged and the
    profiles' defaults are used: a typo in an LED colour must not keep the doors from working."""
    path = default_path(site)
    profiles: dict[str, OsdpProfile] = {}
    if path.is_file():
        try:
            profiles = {c.key: c for c in load_firmware(path, site).controllers if isinstance(c, OsdpProfile)}
        except FirmwareError as exc:
            log.error("OSDP readers use the default LED and buzzer patterns; the firmware file is refused:\n%s", exc)
    defaults = (LedPatterns(), BuzzerPatterns())
    return {c.key: (p.led, p.buzzer) if (p := profiles.get(c.key)) else defaults
            for c in site.controllers if c.kind == "osdp"}


def _defaults(defaults: dict[str, Any], profile: Any) -> dict[str, Any]:
    """A profile's defaults; a malformed ``[defaults]`` is left to the schema check to report."""
    found = defaults.get(profile) if isinstance(profile, str) else None
    return found if isinstance(found, dict) else {}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("mqtt", "esp-rfid", "osdp") or not out.endswith("]"):
            out += f".{part}" if out else str(part)  # the discriminator pydantic puts in the path is dropped
    return out or "(top level)"


def check(controllers: list[Profile], site: SiteConfig) -> list[str]:
    """Every problem of the desired settings against the site file and the safety rules, as field paths."""
    errors: list[str] = []
    kinds = {c.key: c for c in site.controllers}
    site_readers = {r.key: r for r in site.readers}
    seen: set[str] = set()
    for i, ctl in enumerate(controllers):
        at = f"controllers[{i}]"
        if ctl.key in seen:
            errors.append(f"{at}.key: controller {ctl.key!r} is listed twice")
        seen.add(ctl.key)
        site_ctl = kinds.get(ctl.key)
        if site_ctl is None:
            errors.append(f"{at}.key: unknown controller {ctl.key!r} (the site file has: "
                          f"{', '.join(sorted(kinds)) or 'none'})")
            continue
        if site_ctl.kind != ctl.profile:
            errors.append(f"{at}.profile: {ctl.profile!r}, but the site file makes {ctl.key!r} a "
                          f"{site_ctl.kind!r} controller")
        errors.extend(_timing(at, ctl))
        if ctl.offline_policy == "facility_code" and getattr(ctl, "facility_code", None) is None:
            errors.append(f"{at}.facility_code: offline_policy 'facility_code' needs the facility code")
        for j, reader in enumerate(ctl.readers):
            site_reader = site_readers.get(reader.key)
            if site_reader is None or site_reader.controller != ctl.key:
                mine = sorted(r.key for r in site.readers if r.controller == ctl.key)
                errors.append(f"{at}.readers[{j}].key: {reader.key!r} is not a reader of {ctl.key!r} in the site "
                              f"file (its readers: {', '.join(mine) or 'none'})")
        if isinstance(ctl, OsdpProfile):
            errors.extend(_osdp(at, ctl, site))
    errors.extend(_doors(controllers, site))
    return errors


def _timing(at: str, ctl: Profile) -> list[str]:
    errors = []
    if ctl.open_time_s > OPEN_TIME_MAX_S:
        errors.append(f"{at}.open_time_s: {ctl.open_time_s:g} is above the safe maximum of {OPEN_TIME_MAX_S:g} s "
                      "(a door left unlocked that long lets anyone walk in behind a badge holder)")
    elif ctl.open_time_s < OPEN_TIME_MIN_S:
        errors.append(f"{at}.open_time_s: {ctl.open_time_s:g} is below the safe minimum of {OPEN_TIME_MIN_S:g} s "
                      "(the strike relocks before anyone can pull the door, and people start forcing it)")
    if ctl.held_open_limit_s < ctl.open_time_s:
        errors.append(f"{at}.held_open_limit_s: {ctl.held_open_limit_s:g} s is shorter than open_time_s "
                      f"({ctl.open_time_s:g} s): every normal passage would raise a held-open alarm")
    return errors


def _osdp(at: str, ctl: OsdpProfile, site: SiteConfig) -> list[str]:
    errors = []
    if not ctl.secure_channel and not ctl.install_mode:
        errors.append(f"{at}.secure_channel: false outside install_mode: card numbers and PINs would cross the bus "
                      "in clear and anyone on the wire could open the door (set install_mode = true on a bench)")
    site_addresses = {r.key: r.osdp_address for r in site.readers if r.controller == ctl.key}
    managed = {r.key for r in ctl.readers}
    taken: dict[int, str] = {addr: key for key, addr in site_addresses.items()
                             if key not in managed and addr is not None}
    for j, reader in enumerate(ctl.readers):
        current = site_addresses.get(reader.key)
        if current is None:
            continue  # not a reader of this bus: reported above
        if reader.address != current and reader.from_address != current:
            errors.append(f"{at}.readers[{j}].address: {reader.address}, but the site file has {reader.key!r} at "
                          f"{current}; to change it deliberately set from_address = {current}")
        if reader.from_address is not None and reader.from_address != current:
            errors.append(f"{at}.readers[{j}].from_address: {reader.from_address}, but the site file has "
                          f"{reader.key!r} at {current}")
        other = taken.get(reader.address)
        if other is not None:
            errors.append(f"{at}.readers[{j}].address: {reader.address} is also {other!r}'s on bus {ctl.key!r}")
        taken[reader.address] = reader.key
    return errors


def _doors(controllers: list[Profile], site: SiteConfig) -> list[str]:
    """Rules over a whole door, whose readers may sit on several controllers."""
    by_key = {c.key: (i, c) for i, c in enumerate(controllers)}
    areas = {a.key: a for a in site.areas}
    osdp_buses = {c.key for c in site.controllers if c.kind == "osdp"}
    errors = []
    for door in site.doors:
        readers = [r for r in site.readers if r.door == door.key]
        modes: list[tuple[Any, str, str, bool]] = []  # site reader, mode, field path, allow_unlocked
        for r in readers:
            if r.controller not in by_key:
                continue
            i, ctl = by_key[r.controller]
            override = next(((j, s) for j, s in enumerate(ctl.readers) if s.key == r.key), None)
            if override is not None and override[1].reader_mode is not None:
                modes.append((r, override[1].reader_mode, f"controllers[{i}].readers[{override[0]}].reader_mode",
                              ctl.allow_unlocked))
            else:
                modes.append((r, ctl.reader_mode, f"controllers[{i}].reader_mode", ctl.allow_unlocked))
        if not modes:
            continue
        all_locked = len(modes) == len(readers) and all(m == "locked" for _, m, _, _ in modes)
        if (all_locked and all(by_key[r.controller][1].offline_policy == "deny_all" for r in readers)
                and not any(r.controller in osdp_buses and r.rex_input is not None for r in readers)):
            errors.append(f"{modes[0][2]}: 'locked' on every reader of door {door.key!r}, with offline_policy "
                          "'deny_all' and no exit reader or request-to-exit button: this locks everyone out, "
                          "including whoever is inside")
        area = areas.get(door.area_in or "")
        critical = (area is not None and area.anti_passback != "none") or door.two_person or door.factors != ["card"]
        for _r, mode, where, allowed in modes:
            if mode == "unlocked" and critical and not allowed:
                errors.append(f"{where}: 'unlocked' on door {door.key!r} into a critical area (anti-passback, "
                              "two-person rule or more than a card): anyone could walk in unrecorded; set "
                              "allow_unlocked = true on the controller if that is really meant")
    return errors
