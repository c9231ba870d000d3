"""The site every fuzz run attacks: the example site with its own database, keys and broker, hall A turned
into an OSDP bus on a pty, and two enrolled people whose cards no fuzzed input carries.

One site file serves the bridge process (which reads TOML) and the in-process oracle, so both judge an input
against the same doors, readers and controllers.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.config import load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.demo import MANTRAP_READERS, OSDP_READERS  # hall A's bus, as in make demo: genuine libosdp readers
from badge_bridge.keys import KeyStore
from badge_bridge.site_sync import sync_site

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SITE = ROOT / "site.example.toml"
PROBE_PIN, VICTIM_PIN = "2468", "1357"


@dataclass(frozen=True)
class Cards:
    """The two enrolled cards. ``probe`` is presented only by the harness's known-good probes, ``victim`` only
    by the bus attacker (an insider who cloned it and knows its PIN): any other grant is one garbage caused."""

    probe: str
    victim: str

    @staticmethod
    def fresh() -> Cards:
        # ASCII for the probe: 16 random lower-case hex digits, which no fuzzed card guesses and an esp-rfid
        # device can hold (the probe may pass the NOC door, whose esp-rfid gets the card in its user list).
        # Wiegand 26 for the victim, what an OSDP reader sends as raw bits.
        victim = f"{secrets.randbelow(200) + 50}:{secrets.randbelow(60000) + 2000}"
        return Cards(probe=secrets.token_hex(8), victim=victim)


def write_site(directory: Path, db_url: str, *, broker_port: int = 1883, osdp_port: str = "/dev/null") -> Path:
    """``directory``/site.toml: the example site rewritten for one run (metrics on a free port)."""
    text = EXAMPLE_SITE.read_text()
    replacements = [
        ('url = "sqlite:///var/badge-bridge.db"', f'url = "{db_url}"'),
        ('dir = "var/keys"', f'dir = "{directory / "keys"}"'),
        ("port = 1883", f"port = {broker_port}\nkeepalive_s = 5\nreconnect_max_s = 1"),
        ('name = "Hall A controller"\nkind = "mqtt"', f'name = "Hall A bus"\nkind = "osdp"\nport = "{osdp_port}"'),
    ]
    for key, (address, _kind) in OSDP_READERS.items():
        replacements.append((f'key = "{key}"\n', f'key = "{key}"\nosdp_address = {address}\n'))
    replacements.append(('key = "hall-a-out"\n', 'key = "hall-a-out"\nkind = "keypad"\n'))
    for key in MANTRAP_READERS:  # the mantrap's outer door is not on the bus: on the lobby's controller, as in the demo
        replacements.append((f'key = "{key}"\ncontroller = "ctl-hall-a"', f'key = "{key}"\ncontroller = "ctl-lobby"'))
    for old, new in replacements:
        if old not in text:
            raise RuntimeError(f"site.example.toml changed: {old!r} not found")
        text = text.replace(old, new, 1)
    text = text.replace('url = "file:tests/data/', f'url = "file:{ROOT / "tests" / "data"}/')
    text += "\n[metrics]\nport = 0\n"
    path = directory / "site.toml"
    path.write_text(text)
    return path


def prepare(site_file: Path, cards: Cards) -> tuple[Engine, dict[int, str]]:
    """Migrate the database, create the keys (and one OSDP key per bus reader), load the site, enroll the
    probe (exempt from lockdowns, which fuzzed console commands order) and the victim. Returns an engine on
    the database and the two people's names by person id."""
    config = load_config(site_file)
    keys = KeyStore(config.keys_dir())
    keys.ensure()
    for reader in OSDP_READERS:
        if keys.osdp_key(reader) is None:
            keys.new_osdp_key(reader, replace=False)
    engine = make_engine(config.database_url(), must_exist=False)
    migrate(engine)
    levels = ["staff", "hall-a-engineers", "noc-24x7"]
    with Session(engine) as session, session.begin():
        sync_site(session, config)
        probe, _ = people.add_person(session, "fuzz", "probe", levels=levels, lockdown_exempt=True)
        people.add_credential(session, "fuzz", probe.id, "ascii", cards.probe, pepper=keys.pin_pepper(), pin=PROBE_PIN)
        victim, _ = people.add_person(session, "fuzz", "victim", levels=levels)
        people.add_credential(session, "fuzz", victim.id, "wiegand26", cards.victim, pepper=keys.pin_pepper(),
                              pin=VICTIM_PIN)
        enrolled = {probe.id: "probe", victim.id: "victim"}
    return engine, enrolled
