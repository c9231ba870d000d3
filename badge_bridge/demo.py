"""`make demo`: the whole thing on embedded defaults: the demo site's database from the example site file,
a Mosquitto of its own on a free port, configured by `badge-bridge mqtt broker-config` (every client on its own
account, no anonymous ones), the bridge, and simulated controllers with people walking through.

Idempotent: a second run keeps the people and credentials it made the first time, and gives the console
admin a fresh password (only a hash is stored, so the old one cannot be printed again).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import click
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import db, logs, people
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.bridge import Bridge
from badge_bridge.config import MQTT_PORT_ENV, SiteConfig, load_config
from badge_bridge.controllers import contract as c
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import ConsoleUser, Person
from badge_bridge.mqtt_accounts import CONSOLE_ACCOUNT
from badge_bridge.mqtt_client import site_client
from badge_bridge.sim.broker import Broker, for_site
from badge_bridge.sim.controller import SimController, controllers_from_site, run_demo_traffic
from badge_bridge.sim.osdp_reader import PtyBus, ReaderKind, SimReader
from badge_bridge.site_sync import sync_site
from badge_bridge.topics import CONSOLE, Topics

ACTOR = "demo"
DEMO_PEOPLE = [
    # name, levels, card (wiegand26 FC:CARD), PIN
    ("Ada Lovelace", ["staff", "hall-a-engineers"], "12:1001", "4711"),
    ("Grace Hopper", ["staff", "hall-a-engineers", "noc-24x7"], "12:1002", "2025"),
    ("Alan Turing", ["staff", "noc-24x7"], "12:1003", None),
    ("Katherine Johnson", ["staff"], "12:1004", None),
    ("Contractor Bob", ["staff"], "12:1005", None),
]


def seed(writer: AuditWriter, pepper: bytes) -> None:
    """Demo people with cards, PINs and levels; one credential that expired yesterday (each change committed
    with its audit entry, badge_bridge.audited)."""
    with Session(writer.engine) as session:
        if session.scalar(select(Person.id).limit(1)) is not None:
            return
    for name, levels, card, pin in DEMO_PEOPLE:
        person, _ = commit_change(writer, ACTOR, lambda s: people.add_person(s, ACTOR, name, levels=levels))  # noqa: B023
        until = datetime.now(UTC) - timedelta(days=1) if name == "Contractor Bob" else None
        commit_change(writer, ACTOR, lambda s: people.add_credential(
            s, ACTOR, person.id, "wiegand26", card, pepper=pepper, pin=pin,  # noqa: B023
            biometric_ref=name.split()[0].lower(), valid_until=until))  # noqa: B023


DEMO_USERS = ("admin", "supervisor", "guard", "auditor")
"""One console login per role, named after it."""


def reset_logins(writer: AuditWriter) -> dict[str, str]:
    """Fresh passwords for the demo's console users (only hashes are stored, so old ones cannot be shown)."""
    passwords = {}
    for role in DEMO_USERS:
        password = passwords[role] = secrets.token_urlsafe(12)

        def login(session: Session) -> tuple[object, Event]:
            user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == role))  # noqa: B023
            if user is None:
                return people.add_user(session, ACTOR, role, role, password)  # noqa: B023
            return people.reset_password(session, ACTOR, user.id, password)  # noqa: B023

        commit_change(writer, ACTOR, login)
    return passwords


def build(config: SiteConfig) -> tuple[Engine, KeyStore, dict[str, str]]:
    """The demo database, keys and people; returns the console logins' fresh passwords."""
    keys = KeyStore(config.keys_dir())
    keys.ensure()
    db_path = db.sqlite_path(config.database_url())
    if db_path is not None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(config.database_url(), must_exist=False)
    db.migrate(engine)
    writer = AuditWriter(engine, f"{config.site.instance}.demo", keys.signer())
    writer.start()
    commit_change(writer, ACTOR, lambda session: (None, sync_site(session, config, ACTOR)))
    seed(writer, keys.pin_pepper())
    passwords = reset_logins(writer)
    writer.stop()
    return engine, keys, passwords


@click.command()
@click.option("-c", "--config", "config_path", default="site.example.toml", show_default=True)
@click.option("--seconds", type=float, default=None, help="Stop by itself after this long (default: Ctrl-C).")
def main(config_path: str, seconds: float | None) -> None:
    """Build the demo site, start a broker of its own, the bridge, and simulated controllers with people
    walking through the doors."""
    logs.setup("text", logging.INFO)
    logging.getLogger("badge_bridge.ingest").setLevel(logging.DEBUG)  # show every decision
    config = load_config(config_path)
    engine, keys, passwords = build(config)
    broker = for_site(config.path("var/demo-mosquitto"), config)
    broker.start()
    bus = PtyBus(len(OSDP_READERS))
    config = config.model_copy(update={
        "mqtt": config.mqtt.model_copy(update={"host": "127.0.0.1", "port": broker.port}),
        "metrics": config.metrics.model_copy(update={"port": 0}),
    })
    config = on_osdp_bus(config, bus.cp_path)
    readers = [SimReader(address, bus, keys.osdp_key(key) or keys.new_osdp_key(key, replace=False), kind=kind)
               for key, (address, kind) in OSDP_READERS.items()]
    bridge = Bridge(config, engine, keys)
    sims: dict[str, SimController] = {}
    processes: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    try:
        bridge.start()
        sims = controllers_from_site(config, keys)
        for target, args in ((run_demo_traffic, (sims, DEMO_PEOPLE, stop)), (_osdp_traffic, (readers, stop))):
            threading.Thread(target=target, args=args, daemon=True).start()
        processes.append(_start_cli(config_path, broker.port, "cameras"))
        threading.Thread(target=_badge_when_seen, args=(config, sims, stop), daemon=True).start()
        processes.append(_start_cli(config_path, broker.port, "console"))
        _banner(config, engine, keys, passwords, broker, bridge)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait(seconds)
        stop.set()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(15)
        for sim in sims.values():
            sim.close()
        bridge.stop()
        for reader in readers:
            reader.stop()
        bus.close()
        broker.stop()
        click.echo("demo stopped; `badge-bridge -c site.example.toml audit verify` checks what it logged")


OSDP_READERS: dict[str, tuple[int, ReaderKind]] = {"hall-a-in": (1, "keypad"), "hall-a-out": (2, "keypad"), "cage-7-in": (3, "biometric")}
"""In the demo, hall A's controller is an OSDP bus of simulated readers (libosdp PDs on a pty bus)."""


def on_osdp_bus(config: SiteConfig, port: str) -> SiteConfig:
    """The site with ctl-hall-a turned into an RS-485 OSDP bus on ``port``."""
    controllers = [ctl.model_copy(update={"kind": "osdp", "port": port}) if ctl.key == "ctl-hall-a" else ctl
                   for ctl in config.controllers]
    readers = [r.model_copy(update={"osdp_address": OSDP_READERS[r.key][0], "kind": OSDP_READERS[r.key][1]})
               if r.key in OSDP_READERS else r for r in config.readers]
    return config.model_copy(update={"controllers": controllers, "readers": readers})


def _osdp_traffic(readers: list[SimReader], stop: threading.Event) -> None:
    """Hall A engineers at the OSDP readers: card and PIN at the hall, card and finger at the cage."""
    rng = random.Random()
    staff = [(card, pin, name.split()[0].lower()) for name, levels, card, pin in DEMO_PEOPLE
             if "hall-a-engineers" in levels]
    while not stop.wait(rng.uniform(3, 8)):
        reader = rng.choice(readers)
        card, pin, finger = rng.choice(staff)
        reader.present_card("wiegand26", card)
        if reader.kind == "keypad":
            reader.keypad(pin or "0000")
        elif reader.kind == "biometric":
            reader.biometric(finger)


def _badge_when_seen(config: SiteConfig, sims: dict[str, SimController], stop: threading.Event) -> None:
    """Most people the lobby camera sees badge in at once; the rest walk in unbadged and raise the
    unauthorized-entry alarm, which is what the desk is there for."""
    rng = random.Random()
    client = site_client(config, f"demo-lobby-{secrets.token_hex(4)}", role=CONSOLE)
    lobby = sims.get("ctl-lobby")
    if lobby is None:
        return

    def on_message(_c: object, _u: object, msg: object) -> None:
        events = c.PublishedEvents.model_validate_json(msg.payload).events  # type: ignore[attr-defined]
        for event in events:
            if event.kind == EventKind.MOTION_START and event.door == "main-entrance" and rng.random() < 0.75:
                person = rng.choice(DEMO_PEOPLE[:4])
                lobby.present("main-in", "main-entrance", "wiegand26", person[2])

    client.on_message = on_message
    client.on_connect = lambda cl, *_: cl.subscribe(Topics(config.mqtt.topic_prefix).bridge_events())
    client.connect(config.mqtt.host, config.mqtt.port)
    client.loop_start()
    stop.wait()
    client.loop_stop()
    client.disconnect()


def _start_cli(config_path: str, broker_port: int, command: str) -> subprocess.Popen[bytes]:
    """A `badge-bridge` command as its own process on the demo's broker: the console (gunicorn), or the
    site's cameras (the test videos, looped, one worker process each)."""
    env = {**os.environ, MQTT_PORT_ENV: str(broker_port)}
    return subprocess.Popen([sys.executable, "-m", "badge_bridge.cli", "-c", config_path, command], env=env)


def _banner(config: SiteConfig, engine: Engine, keys: KeyStore, passwords: dict[str, str], broker: Broker,
            bridge: Bridge) -> None:
    metrics = bridge.metrics_server.server_address[1] if bridge.metrics_server else "?"
    prefix = config.mqtt.topic_prefix
    logins = "\n".join(f"    {role:<11} {role} / {password}" for role, password in passwords.items())
    click.echo(f"""
badge-bridge demo: site {config.site.name!r}, database {engine.url.render_as_string()}
  console:         http://{config.console.host}:{config.console.port}/   logins (user / password):
{logins}
  MQTT broker:     127.0.0.1:{broker.port}, TLS on {broker.tls_port} (CA {broker.tls.ca if broker.tls else "-"})
                   watch: mosquitto_sub -p {broker.port} -u console -P "$(cat {keys.mqtt_password_file(CONSOLE_ACCOUNT)})" -t '{prefix}/bridge/#' -v
  metrics, health: http://127.0.0.1:{metrics}/metrics  http://127.0.0.1:{metrics}/health
  simulated controllers: {", ".join(c.key for c in config.controllers if c.kind == "mqtt")} (MQTT);
                   OSDP bus {", ".join(c.key for c in config.controllers if c.kind == "osdp")}: readers {", ".join(OSDP_READERS)}
demo people (wiegand26 cards):""")
    for name, levels, card, pin in DEMO_PEOPLE:
        click.echo(f"  {name:<18} card {card}  PIN {pin or '-':<5} levels {', '.join(levels)}")
    click.echo("people are walking through the doors; Ctrl-C to stop\n")


if __name__ == "__main__":
    main()
