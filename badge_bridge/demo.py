"""`make demo`: the whole thing on embedded defaults: the demo site's database from the example site file,
a Mosquitto of its own on a free port, configured by `badge-bridge mqtt broker-config` (every client on its own
account, no anonymous ones), the bridge, and simulated controllers with people walking through.

Idempotent: a second run keeps the people and credentials it made the first time, and gives the console
admin a fresh password (only a hash is stored, so the old one cannot be printed again).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import click
from osdp import LogLevel
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import db, logs, people, visitors
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.bridge import Bridge
from badge_bridge.config import MQTT_PORT_ENV, SiteConfig, load_config
from badge_bridge.controllers import contract as c
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.instance_status import InstanceStatus
from badge_bridge.keys import KeyStore
from badge_bridge.models import ConsoleUser, Credential, Person, Visit
from badge_bridge.mqtt_accounts import CONSOLE_ACCOUNT
from badge_bridge.mqtt_client import credentials, site_client
from badge_bridge.sim.broker import Broker, for_site
from badge_bridge.sim.controller import SimController, controllers_from_site, run_demo_traffic
from badge_bridge.sim.esp_rfid import SimEspRfid
from badge_bridge.sim.osdp_reader import PtyBus, ReaderKind, SimReader
from badge_bridge.site_sync import sync_site
from badge_bridge.topics import CONSOLE, ESP_RFID, Topics

log = logging.getLogger(__name__)

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


DEMO_ESCORT = ("Margaret Hamilton", ["staff", "hall-a-engineers"], "12:1006", "1969")
"""A hall A engineer who may escort visitors (name, levels, card, PIN); she badges only with the demo's visitor,
so each passage shows the escort rule: the visitor's beep, then her badge taking the visitor in."""
DEMO_VISITOR = ("Vic Visitor", "Example Networks GmbH", "4242")
"""Name, company and the PIN the desk gives with the badge (hall A's doors ask for one)."""
VISITOR_LEVEL = "hall-a-visits"


def visit(writer: AuditWriter, config: SiteConfig, pepper: bytes) -> str:
    """The demo's visitor, on site from now: the badge of an earlier run comes back to the desk, a new visit
    is registered and checked in with a new badge (each change audited). Returns the badge's number."""
    now = datetime.now(UTC)
    escort_name, levels, escort_card, escort_pin = DEMO_ESCORT
    with Session(writer.engine) as session:
        escort = session.scalars(select(Person).where(Person.name == escort_name)).one_or_none()
    if escort is None:
        added, _ = commit_change(writer, ACTOR, lambda s: people.add_person(s, ACTOR, escort_name, levels=levels))
        commit_change(writer, ACTOR, lambda s: people.add_credential(
            s, ACTOR, added.id, "wiegand26", escort_card, pepper=pepper, pin=escort_pin))
        escort = added
    with Session(writer.engine) as session:
        earlier = list(session.scalars(select(Visit.id).where(Visit.state == "on_site",
                                                             Visit.host == visitors.host_of(ACTOR))))
        used = set(session.scalars(select(Credential.number).where(Credential.format == "wiegand26")))
    if not escort.may_escort:
        commit_change(writer, ACTOR, lambda s: visitors.set_may_escort(s, ACTOR, escort.id, True))
    for visit_id in earlier:
        commit_change(writer, ACTOR, lambda s: visitors.return_badge(s, ACTOR, visit_id, now))  # noqa: B023
    name, company, pin = DEMO_VISITOR
    registered, _ = commit_change(writer, ACTOR, lambda s: visitors.register(
        s, ACTOR, site=config, name=name, company=company, starts_at=now, levels=[VISITOR_LEVEL],
        ends_at=now + timedelta(hours=config.visitors.max_visit_hours), purpose="PSU swap in hall A, escorted"))
    number = next(f"12:{n}" for n in range(2001, 9999) if f"12:{n}" not in used)
    commit_change(writer, ACTOR, lambda s: visitors.check_in(
        s, ACTOR, registered.id, id_document="passport, last 4: 0815", fmt="wiegand26", number=number,
        pepper=pepper, pin=pin, now=now))
    return number


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


def build(config: SiteConfig) -> tuple[Engine, KeyStore, dict[str, str], str]:
    """The demo database, keys, people and visitor; returns the console logins' fresh passwords and the
    visitor's badge number."""
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
    visitor_card = visit(writer, config, keys.pin_pepper())
    writer.stop()
    return engine, keys, passwords, visitor_card


@click.command()
@click.option("-c", "--config", "config_path", default="site.example.toml", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="The console's port (0: a free one). Default: console.port from the site file, or a free "
                   "port if that one is taken.")
@click.option("--seconds", type=float, default=None, help="Stop by itself after this long (default: Ctrl-C).")
def main(config_path: str, port: int | None, seconds: float | None) -> None:
    """Build the demo site, start a broker of its own, the bridge, and simulated controllers with people
    walking through the doors."""
    os.environ.setdefault(logs.LOG_FORMAT_ENV, "text")  # every process of the demo writes the same lines
    os.environ.setdefault(logs.ACCESS_LOG_ENV, "off")
    logs.setup("text", logging.INFO)
    config = load_config(config_path)
    console_port = free_console_port(config.console.host, config.console.port if port is None else port,
                                     explicit=port is not None)
    config = config.model_copy(update={"console": config.console.model_copy(update={"port": console_port})})
    engine, keys, passwords, visitor_card = build(config)
    broker = for_site(config.path("var/demo-mosquitto"), config)
    broker.start()
    config = config.model_copy(update={
        "mqtt": config.mqtt.model_copy(update={"host": "127.0.0.1", "port": broker.port}),
        "metrics": config.metrics.model_copy(update={"port": 0}),
    })
    stop = threading.Event()
    readers = OsdpReaders({key: keys.osdp_key(key) or keys.new_osdp_key(key, replace=False) for key in OSDP_READERS})
    config = on_osdp_bus(config, readers.cp_link)
    esp = esp_from_site(config)  # before the bridge: it is subscribed when the bridge syncs its user list
    bridge = Bridge(config, engine, keys)
    status = InstanceStatus(config, config.site.instance, "demo")
    sims: dict[str, SimController] = {}
    processes: list[subprocess.Popen[bytes]] = []
    summary = logs.MinuteSummary(logging.getLogger("badge_bridge.demo"))
    try:
        # The cameras first: the bridge reports a camera it has not heard within 30 s of starting offline, and
        # on a busy machine their workers take that long to start (their retained status waits in the broker).
        processes.append(_start_cli(config_path, broker.port, "cameras"))
        bridge.start()
        status.start("active")
        sims = controllers_from_site(config, keys)
        for target, args in ((run_demo_traffic, (sims, DEMO_PEOPLE, stop)), (_watch, (config, sims, summary, stop)),
                             (_noc_traffic, (esp, stop)), (summary.run, (stop,)),
                             (_mantrap_traffic, (sims.get("ctl-lobby"), readers, stop)),
                             (_escorted_visit, (sims.get("ctl-lobby"), readers, visitor_card, stop))):
            threading.Thread(target=target, args=args, daemon=True).start()
        processes.append(_start_cli(config_path, broker.port, "console", "--port", str(console_port)))
        url = f"{'https' if config.console.tls_cert else 'http'}://{_reachable(config.console.host)}:{console_port}/"
        if not wait_listening(processes[-1], url, stop, timeout=180):
            raise click.ClickException(f"the console did not start on port {console_port} (see its lines above)")
        banner = _banner(config_path, config, engine, keys, passwords, broker, bridge, url, visitor_card)
        saved = write_private(config.path("var/demo-logins.txt"), banner)
        click.echo(f"{banner}\n(saved in {saved}, readable by you only)\n"
                   "people are walking through the doors; one line a minute sums up what happened; Ctrl-C to stop\n")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait(seconds)
    finally:
        stop.set()
        # The bridge first: devices and cameras going away after it are the demo ending, not alarms to
        # find on the desk at the next start.
        bridge.stop()
        status.stop()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(15)
        for sim in sims.values():
            sim.close()
        if esp is not None:
            esp.close()
        readers.stop()
        broker.stop()
    click.echo(f"\ndemo stopped.{banner}\n(saved in {saved})\n"
               f"Check what it logged: {_cli()} -c {config_path} audit verify")


OSDP_READERS: dict[str, tuple[int, ReaderKind]] = {"hall-a-in": (1, "keypad"), "hall-a-out": (2, "keypad"), "cage-7-in": (3, "biometric")}
"""In the demo, hall A's controller is an OSDP bus of simulated readers (libosdp PDs on a pty bus)."""
MANTRAP_READERS = ("hall-a-mantrap-in", "hall-a-mantrap-out")
"""The hall A mantrap's outer door readers: on the lobby's simulated IP controller in the demo."""


def on_osdp_bus(config: SiteConfig, port: str) -> SiteConfig:
    """The site with ctl-hall-a turned into an RS-485 OSDP bus on ``port``; its readers that are not on the
    simulated bus (the mantrap's outer door, ``MANTRAP_READERS``) move to the lobby's IP controller."""
    controllers = [ctl.model_copy(update={"kind": "osdp", "port": port}) if ctl.key == "ctl-hall-a" else ctl
                   for ctl in config.controllers]
    readers = [r.model_copy(update={"osdp_address": OSDP_READERS[r.key][0], "kind": OSDP_READERS[r.key][1]})
               if r.key in OSDP_READERS else r.model_copy(update={"controller": "ctl-lobby"})
               if r.key in MANTRAP_READERS else r for r in config.readers]
    return config.model_copy(update={"controllers": controllers, "readers": readers})


class OsdpReaders:
    """Hall A's bus (a PtyBus) and its readers in a process of their own, with the hall A engineers at them:
    card and PIN at the hall, card and finger at the cage.

    Not in the demo's process: there the readers' libosdp loops and the bus relay waited behind the bridge's
    threads for the interpreter and now and then answered a poll after libosdp's 200 ms reply timeout. The
    control panel then sent the poll again, the reader, which had taken the first one, found the MAC chain
    broken ("Invalid MAC; discarding SC"), answered NAK, and the control panel dropped it ("Going offline for
    300 seconds"): a reader.offline alarm whenever it took more than 3 s to come back. A real reader has a
    processor of its own and answers within milliseconds."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stopping = ctx.Event()
        parent, child = ctx.Pipe()
        self.process = ctx.Process(target=_run_osdp_readers, args=(keys, child, self.stopping),
                                   name="osdp-readers", daemon=True)
        self.process.start()
        if not parent.poll(60):
            self.process.kill()
            raise click.ClickException("the simulated OSDP readers did not start")
        self.cp_link: str = parent.recv()
        """The port the bridge opens: the bus's control-panel end."""
        self.link = parent

    def badge(self, reader: str, card: str, pin: str | None = None) -> None:
        """Someone presents ``card`` at ``reader`` of the bus (with their PIN at a keypad: ``pin``, or a
        demo person's own)."""
        self.link.send((reader, card, pin))

    def stop(self) -> None:
        self.stopping.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def _run_osdp_readers(keys: dict[str, bytes], ready: Connection, stopping: threading.Event) -> None:
    """OsdpReaders' process: the bus, the readers (libosdp's own lines only for errors), the traffic."""
    logs.setup("text", logging.INFO)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the demo's to handle: it stops this process
    bus = PtyBus(len(OSDP_READERS))
    readers = [SimReader(address, bus, keys[key], kind=kind, log_level=LogLevel.Error)
               for key, (address, kind) in OSDP_READERS.items()]
    ready.send(bus.cp_link)
    rng = random.Random()
    staff = [(card, pin, name.split()[0].lower()) for name, levels, card, pin in DEMO_PEOPLE
             if "hall-a-engineers" in levels]
    by_key = dict(zip(OSDP_READERS, readers, strict=True))
    pins = {card: pin for card, pin, _ in staff}

    def present(reader: SimReader, card: str, pin: str | None, finger: str) -> None:
        reader.present_card("wiegand26", card)
        if reader.kind == "keypad":
            reader.keypad(pin or "0000")
        elif reader.kind == "biometric":
            reader.biometric(finger)

    try:
        while not stopping.wait(rng.uniform(3, 8)):
            while ready.poll():  # someone the demo walked through the mantrap's outer door, at the inner one now
                key, card, pin = ready.recv()
                present(by_key[key], card, pin or pins.get(card), "")
            card, pin, finger = rng.choice(staff)
            present(rng.choice(readers), card, pin, finger)
    finally:
        for reader in readers:
            reader.stop()
        bus.close()


ESP_HEARTBEAT_S = 20.0
"""The demo's esp-rfid is set to a heartbeat every 20 s (the firmware's default is 180 s): its boot message goes
out before the bridge listens, and the bridge reports a controller it has not heard within 30 s of starting
offline (Liveness.silent), which with the default would be the demo's first alarm."""


def esp_from_site(config: SiteConfig) -> SimEspRfid | None:
    """A simulated stock esp-rfid for the site's esp-rfid controller (the NOC's), connected."""
    ctl = next((c for c in config.controllers if c.kind == "esp-rfid"), None)
    if ctl is None:
        return None
    username, password = credentials(config, ESP_RFID, ctl.key)
    esp = SimEspRfid(ctl.topic or ctl.key, ctl.device or "", config.mqtt.host, config.mqtt.port,
                     username=username, password=password, hostname=ctl.key, heartbeat_s=ESP_HEARTBEAT_S)
    if not esp.connected.wait(15):
        log.warning("the simulated esp-rfid %s could not connect to the broker", ctl.key)
    return esp


def _mantrap_traffic(lobby: SimController | None, bus: OsdpReaders, stop: threading.Event) -> None:
    """Hall A engineers through the mantrap: card at its outer door (the lobby's controller; they walk in and
    it closes behind them), then card and PIN at the hall's door on the OSDP bus a few seconds later; sometimes
    sooner than the outer door's release is over, and the bridge holds the inner badge until it is."""
    rng = random.Random()
    engineers = [card for _name, levels, card, _pin in DEMO_PEOPLE if "hall-a-engineers" in levels]
    while lobby is not None and not stop.wait(rng.uniform(15, 40)):
        card = rng.choice(engineers)
        try:
            lobby.present(MANTRAP_READERS[0], None, "wiegand26", card)
        except Exception:  # the demo goes on
            log.exception("demo traffic at the mantrap")
            continue
        if stop.wait(rng.uniform(2, 8)):
            return
        bus.badge("hall-a-in", card)


def _escorted_visit(lobby: SimController | None, bus: OsdpReaders, card: str, stop: threading.Event) -> None:
    """The visitor and their escort through the hall A mantrap and back, every minute or two: at each door the
    visitor badges first (the reader beeps: waiting for an escort), then the escort, whose grant takes the
    visitor in; a while in the hall, then out the same way (the escort rule holds both ways)."""
    rng = random.Random()
    pin = DEMO_VISITOR[2]
    escort = DEMO_ESCORT[2], DEMO_ESCORT[3]

    def pair(at: str, on_bus: bool) -> None:
        for who, their_pin in ((card, pin), escort):
            if on_bus:
                bus.badge(at, who, their_pin)
            else:
                lobby.present(at, None, "wiegand26", who)  # type: ignore[union-attr]
            if stop.wait(rng.uniform(1.5, 3)):
                return

    steps = ((MANTRAP_READERS[0], False), ("hall-a-in", True), ("hall-a-out", True), (MANTRAP_READERS[1], False))
    while lobby is not None and not stop.wait(rng.uniform(45, 90)):
        for i, (reader, on_bus) in enumerate(steps):
            try:
                pair(reader, on_bus)
            except Exception:  # the demo goes on
                log.exception("demo visitor at %s", reader)
            if stop.wait(rng.uniform(30, 60) if i == 1 else rng.uniform(6, 10)):
                return


def _noc_traffic(esp: SimEspRfid | None, stop: threading.Event) -> None:
    """The NOC's 24x7 staff at its stock esp-rfid, which decides from the user list the bridge synced to it."""
    rng = random.Random()
    while esp is not None and not stop.wait(rng.uniform(15, 40)):
        if esp.users:
            esp.present(rng.choice(sorted(esp.users)))


def _watch(config: SiteConfig, sims: dict[str, SimController], summary: logs.MinuteSummary,
           stop: threading.Event) -> None:
    """The bridge's published events: counted for the minute's summary line; and at the lobby most people
    the camera sees badge in at once, the rest walk in unbadged and raise the unauthorized-entry alarm, which
    is what the desk is there for."""
    rng = random.Random()
    client = site_client(config, f"demo-watch-{secrets.token_hex(4)}", role=CONSOLE)
    lobby = sims.get("ctl-lobby")

    def on_message(_c: object, _u: object, msg: object) -> None:
        events = c.PublishedEvents.model_validate_json(msg.payload).events  # type: ignore[attr-defined]
        for event in events:
            summary.count(event.kind, event.detail)
            if (lobby is not None and event.kind == EventKind.MOTION_START and event.door == "main-entrance"
                    and rng.random() < 0.75):
                person = rng.choice(DEMO_PEOPLE[:4])
                lobby.present("main-in", "main-entrance", "wiegand26", person[2])

    client.on_message = on_message
    client.on_connect = lambda cl, *_: cl.subscribe(Topics(config.mqtt.topic_prefix).bridge_events())
    client.connect(config.mqtt.host, config.mqtt.port)
    client.loop_start()
    stop.wait()
    client.loop_stop()
    client.disconnect()


def free_console_port(host: str, wanted: int, *, explicit: bool) -> int:
    """The port the console will listen on: ``wanted`` if it is free, any free one for 0. A port asked for
    (``--port``, ``make demo PORT=``) that is taken is an error; the site file's, taken, is replaced by a
    free one, and said so (the banner shows the real one)."""
    if wanted and _bindable(host, wanted):
        return wanted
    if wanted and explicit:
        raise click.ClickException(f"port {wanted} on {host} is taken: stop what listens there, or choose "
                                   "another (make demo PORT=8090, or PORT=0 for any free port)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    if wanted:
        log.warning("port %d on %s is taken (another demo?): the console listens on %d instead "
                    "(make demo PORT=... to choose)", wanted, host, port)
    return port


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_listening(process: subprocess.Popen[bytes], url: str, stop: threading.Event, timeout: float) -> bool:
    """Wait until the console started as ``process`` answers its login page at ``url`` (True), or the
    process ends, the demo is stopped or ``timeout`` passes (False)."""
    context = ssl._create_unverified_context()  # the demo's own console: any certificate the site file names
    deadline = time.monotonic() + timeout
    while process.poll() is None and not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "login", timeout=2, context=context) as answer:
                if answer.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        stop.wait(0.2)
    return False


def write_private(path: Path, text: str) -> Path:
    """``text`` in ``path``, readable and writable by the owner only (0600, also if the file was there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text + "\n")
    return path


def _reachable(host: str) -> str:
    """A host to put in a URL for a console listening on ``host`` (all addresses: the local one)."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)


def _cli() -> str:
    """How to run `badge-bridge` here: the script next to this Python (the venv's), relative when it can be."""
    script = Path(sys.executable).parent / "badge-bridge"
    if not script.exists():
        return f"{sys.executable} -m badge_bridge.cli"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _start_cli(config_path: str, broker_port: int, *command: str) -> subprocess.Popen[bytes]:
    """A `badge-bridge` command as its own process on the demo's broker: the console (gunicorn), or the
    site's cameras (the test videos, looped, one worker process each)."""
    env = {**os.environ, MQTT_PORT_ENV: str(broker_port)}
    return subprocess.Popen([sys.executable, "-m", "badge_bridge.cli", "-c", config_path, *command], env=env)


def _banner(config_path: str, config: SiteConfig, engine: Engine, keys: KeyStore, passwords: dict[str, str], broker: Broker,
            bridge: Bridge, url: str, visitor_card: str) -> str:
    metrics = bridge.metrics_server.server_address[1] if bridge.metrics_server else "?"
    prefix = config.mqtt.topic_prefix
    logins = "\n".join(f"    {role:<11} {role} / {password}" for role, password in passwords.items())
    people = "\n".join(f"  {name:<18} card {card}  PIN {pin or '-':<5} levels {', '.join(levels)}"
                       for name, levels, card, pin in [*DEMO_PEOPLE, DEMO_ESCORT])
    return f"""
badge-bridge demo: site {config.site.name!r}, database {engine.url.render_as_string()}
  console:         {url}   logins (user / password):
{logins}
  MQTT broker:     127.0.0.1:{broker.port}, TLS on {broker.tls_port} (CA {broker.tls.ca if broker.tls else "-"})
  what the bridge publishes (topic {prefix}/bridge/#):
                   mosquitto_sub -p {broker.port} -u console -P "$(cat {keys.mqtt_password_file(CONSOLE_ACCOUNT)})" -t '{prefix}/bridge/#' -v
  metrics, health: http://127.0.0.1:{metrics}/metrics  http://127.0.0.1:{metrics}/health
  simulated controllers: {", ".join(c.key for c in config.controllers if c.kind == "mqtt")} (MQTT); \
{", ".join(c.key for c in config.controllers if c.kind == "esp-rfid")} (esp-rfid);
                   OSDP bus {", ".join(c.key for c in config.controllers if c.kind == "osdp")}: readers {", ".join(OSDP_READERS)}
  the CLI:         {_cli()} -c {config_path} --help   (make cli ARGS="audit verify")
demo people (wiegand26 cards):
{people}  (escorts visitors)
  {DEMO_VISITOR[0]:<18} card {visitor_card}  PIN {DEMO_VISITOR[2]:<5} a visitor, escorted through the hall A mantrap"""


if __name__ == "__main__":
    main()
