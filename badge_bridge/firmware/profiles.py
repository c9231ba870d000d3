"""What a controller should run, per kind of controller: the profiles of ``firmware.toml`` (docs/firmware.md).

The pydantic models are the profiles; the JSON Schemas in ``schemas/`` next to this file are generated
from them (``python -m badge_bridge.firmware.profiles``) and a test keeps the two equal. The schema says
what a value can be; whether it is *safe* (an open time a door may stay unlocked, a mode that locks
everyone out) is ``validate.py``'s business, so that a refusal can say why.

Three kinds, matching ``ControllerConfig.kind`` of the site file:

* ``mqtt``: an IP door controller speaking our contract; takes every setting here.
* ``esp-rfid``: a stock esp-rfid; only what its ``config.json`` has (``hardware.rtime``, ``ltype``,
  ``rtype``, ``maxOpenDoorTime``, ``doorstatpin``, ``pincoderequested``, ``general.openinghours``). It
  always decides from its own user list, has no LED or buzzer patterns and no keypad-only mode.
* ``osdp``: an RS-485 bus of OSDP readers; per reader its address, per bus the baud rate and the secure
  channel; LED and buzzer patterns (badge_bridge/controllers/feedback.py) are sent as OSDP LED/BUZ commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from badge_bridge.controllers.feedback import BuzzerPatterns, LedPatterns

KEY = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
ReaderMode = Literal["card", "card+pin", "pin", "locked", "unlocked"]
OfflinePolicy = Literal["deny_all", "cached_list", "facility_code"]
Baud = Literal[9600, 19200, 38400, 57600, 115200, 230400]
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SUFFIX = ".schema.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReaderSettings(_Model):
    """A reader of the controller; unset fields take the controller's."""

    key: KEY
    reader_mode: ReaderMode | None = None


class OsdpReaderSettings(ReaderSettings):
    address: int = Field(ge=0, le=126)
    """The address the reader should have. Differs from the site file's ``osdp_address`` only when it is
    being changed: then ``from_address`` says where the reader answers now."""
    from_address: int | None = Field(None, ge=0, le=126)
    """Set for a deliberate address change: the address the reader has now (the site file's)."""


class _Controller(_Model):
    key: KEY
    open_time_s: float = Field(5.0, gt=0, le=600)
    """How long a grant releases the strike."""
    held_open_limit_s: float = Field(30.0, gt=0, le=3600)
    """How long the door may stand open after a grant before it is a held-open alarm."""
    reader_mode: ReaderMode = "card"
    offline_policy: OfflinePolicy = "cached_list"
    """What the controller does while the bridge is unreachable."""
    allow_unlocked: bool = False
    """Required for reader mode ``unlocked`` on a door into a critical area (anti-passback set)."""


class MqttProfile(_Controller):
    """An IP door controller on our MQTT contract (docs/mqtt.md)."""

    profile: Literal["mqtt"]
    facility_code: int | None = Field(None, ge=0, le=65_535)
    """For ``offline_policy = "facility_code"``: offline, any card of this facility opens."""
    led: LedPatterns = LedPatterns()
    buzzer: BuzzerPatterns = BuzzerPatterns()
    readers: list[ReaderSettings] = []


class EspRfidProfile(_Controller):
    """A stock esp-rfid: what its ``config.json`` can express (see devices.esp_config)."""

    profile: Literal["esp-rfid"]
    reader_mode: Literal["card", "locked"] = "card"
    """esp-rfid has no PIN-only mode, and card+PIN would need PINs the bridge cannot sync (it keeps only
    keyed hashes): every card would be refused. ``locked``: no opening hours, only admin cards open."""
    offline_policy: Literal["cached_list"] = "cached_list"
    """The device always decides from its own user list."""
    relay_type: Literal[0, 1] | None = None
    """``hardware.rtype``: the relay pin's idle level (None: leave as the device has it)."""
    door_status_pin: int | None = Field(None, ge=0, le=255)
    """``hardware.doorstatpin`` (255: none); None: leave as the device has it."""
    readers: list[ReaderSettings] = []


class OsdpProfile(_Controller):
    """An RS-485 OSDP bus: the baud rate and secure channel of the bus, an address per reader."""

    profile: Literal["osdp"]
    baud: Baud = 115200
    secure_channel: bool = True
    install_mode: bool = False
    """Allows ``secure_channel = false`` (a bench, a reader being installed); never in operation."""
    offline_policy: Literal["deny_all"] = "deny_all"
    """An OSDP reader never decides: with the bridge away nothing opens but the exit buttons."""
    led: LedPatterns = LedPatterns()
    buzzer: BuzzerPatterns = BuzzerPatterns()
    readers: list[OsdpReaderSettings] = []


Profile = Annotated[MqttProfile | EspRfidProfile | OsdpProfile, Field(discriminator="profile")]
profile_adapter = TypeAdapter(Profile)
PROFILES: dict[str, type[_Controller]] = {"mqtt": MqttProfile, "esp-rfid": EspRfidProfile, "osdp": OsdpProfile}


class FirmwareFile(_Model):
    """A whole ``firmware.toml``: defaults per profile, then one entry per controller."""

    defaults: dict[Literal["mqtt", "esp-rfid", "osdp"], dict[str, Any]] = {}
    controllers: list[Profile] = []


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each profile and of the whole file, by file stem."""
    models: dict[str, Any] = {**PROFILES, "firmware-file": FirmwareFile}
    return {name: {"$schema": "https://json-schema.org/draft/2020-12/schema",
                   "$id": f"badge-bridge/firmware/{name}.schema.json", **model.model_json_schema()}
            for name, model in models.items()}


def render_schemas() -> dict[str, str]:
    """File name -> text, sorted keys and a trailing newline, so a regeneration is a stable diff."""
    return {f"{name}{SUFFIX}": json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            for name, schema in json_schemas().items()}


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(render_schemas().items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(written)
