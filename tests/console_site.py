"""The console on a real site for browser tests: a seeded SQLite site, the bridge in process, a simulated
lobby controller on the test's own Mosquitto, the console served over real HTTP, and headless Chromium.

The fixtures ``console``, ``camera_console`` and ``browser`` reach every test through conftest; import
``Watched``, ``Console`` and ``PASSWORD`` from here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from werkzeug.serving import make_server

from badge_bridge import people
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.bridge import Bridge
from badge_bridge.config import SiteConfig, load_config
from badge_bridge.db import make_engine
from badge_bridge.instance_status import InstanceStatus
from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.site_sync import sync_site
from tests.conftest import IN_CI, write_site

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1440, "height": 900}
PASSWORD = "correct horse battery staple"
TIMEOUT_MS = 15_000


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is not installed (CI=true: a missing browser is a failure)")
        pytest.skip(f"{CHROMIUM} is not installed (make test installs the Debian package chromium)")


@dataclass
class Console:
    url: str
    config: SiteConfig
    engine: Engine
    lobby: SimController
    site_file: Path
    seeder: AuditWriter


@pytest.fixture
def console(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore) -> Iterator[Console]:
    """Seeded site, running bridge, the lobby controller and the console on a free port; no cameras (their
    silence would raise alarms mid-scenario)."""
    yield from _console(tmp_path, sqlite_url, broker, keys, cameras=False)


@pytest.fixture
def camera_console(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore) -> Iterator[Console]:
    """The same with the site's cameras: the lobby camera plays the real indoor footage."""
    yield from _console(tmp_path, sqlite_url, broker, keys, cameras=True)


def _console(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore, *, cameras: bool) -> Iterator[Console]:
    _require_chromium()
    from web import create_app
    from web.auth import limiter

    site_file = write_site(tmp_path, sqlite_url, broker_port=broker.port)
    config = load_config(site_file)
    if not cameras:
        config = config.model_copy(update={"cameras": []})
    engine = make_engine(sqlite_url)
    seeder = AuditWriter(engine, f"{config.site.instance}.cli", keys.signer())  # audited as the CLI does
    seeder.start()
    commit_change(seeder, "test", lambda s: (None, sync_site(s, config)))
    ada, _ = commit_change(seeder, "test", lambda s: people.add_person(s, "test", "Ada", levels=["staff"]))
    commit_change(seeder, "test", lambda s: people.add_credential(s, "test", ada.id, "wiegand26", "12:1001",
                                                                  pepper=keys.pin_pepper()))
    commit_change(seeder, "test", lambda s: people.add_user(s, "test", "sam", "supervisor", PASSWORD))
    commit_change(seeder, "test", lambda s: people.add_user(s, "test", "gus", "guard", PASSWORD))

    bridge = Bridge(config, engine, keys)
    bridge.start()
    status = InstanceStatus(config, config.site.instance, "b1")
    status.start("active")
    readers = {r.key: r.door for r in config.readers if r.controller == "ctl-lobby"}
    lobby = SimController("ctl-lobby", "127.0.0.1", broker.port, sync_key=keys.sync_key("ctl-lobby"), username="ctl-lobby",
                          password=broker.passwords["ctl-lobby"],
                          readers=readers, walk_delay_s=0.05, walk_fraction=0.05)
    app = server = thread = None
    try:
        lobby.wait_connected()
        lobby.wait_for(lambda: lobby.bridge_online is True)
        app = create_app(config, engine, keys, mqtt_link=True)
        svc = app.extensions["badge_bridge"]
        assert svc.link.connected.wait(10), "the console did not connect to the test broker"
        limiter.reset()  # the login limit is per address and process-wide: other tests' logins must not count
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="console-http", daemon=True)
        thread.start()
        yield Console(f"http://127.0.0.1:{server.server_port}", config, engine, lobby, site_file, seeder)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if app is not None:
            app.extensions["badge_bridge"].stop()
        lobby.close()
        status.stop()
        bridge.stop()
        seeder.stop()
        engine.dispose()


@pytest.fixture
def browser() -> Iterator[object]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page whose script errors and console errors (a CSP refusal, a 404 shows up there) fail the test."""

    def __init__(self, browser, base: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT, base_url=base)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"script error: {exc}"))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))

    def login(self, username: str, *, shot: Path | None = None, lands_on: str = "/", live: bool = True) -> None:
        page = self.page
        page.goto("/login")
        if shot is not None:
            self.shot(shot)
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", PASSWORD)
        page.click("button:has-text('Log in')")
        page.wait_for_url(f"**{lands_on}")
        if live:
            page.wait_for_selector("#live-state:has-text('live')")

    def shot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True, animations="disabled")

    def mark(self) -> None:
        """Tag the loaded document: ``still_same_document`` is False after any reload or navigation."""
        self.page.evaluate("window.__notReloaded = true")

    def still_same_document(self) -> bool:
        return bool(self.page.evaluate("window.__notReloaded === true"))
