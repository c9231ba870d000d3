"""The site plan, the lockdown banner and muster in a real headless Chromium, against the bridge and a
simulated lobby controller (tests/console_site.py). Screenshots at 1366x768 and 1920x1080 go to
``test-artifacts/test_console_plan_browser/<test>/``."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from badge_bridge import people
from badge_bridge.config import load_config
from badge_bridge.db import make_engine
from badge_bridge.keys import KeyStore
from badge_bridge.models import SiteState
from badge_bridge.site_sync import sync_site
from tests.console_site import PASSWORD, Console, Watched
from tests.test_console_plan import EVIL, plan_site

SIZES = {"1366x768": {"width": 1366, "height": 768}, "1920x1080": {"width": 1920, "height": 1080}}
ICON = ".plan-icons .door-icon[data-door='{}']"


def shots(watched: Watched, folder: Path, name: str, *, full_page: bool = False) -> None:
    """The page at both sizes (the viewport, as a guard sees it without scrolling, unless ``full_page``)."""
    for size, viewport in SIZES.items():
        watched.page.set_viewport_size(viewport)
        watched.page.screenshot(path=str(folder / f"{name}-{size}.png"), full_page=full_page, animations="disabled")


def test_the_plan_beside_the_feed_with_live_door_icons(console: Console, browser, artifacts: Path) -> None:
    sup = Watched(browser, console.url)
    sup.login("sam")
    page = sup.page
    page.wait_for_selector(".site-plan img[src='/plans/dc1/drawing.svg']")
    assert page.evaluate("document.querySelector('.site-plan img').naturalWidth") > 0  # the drawing loaded
    main = ICON.format("main-entrance")
    page.wait_for_selector(f"{main}.state-locked")
    assert page.text_content(f"{main} text.state") == "LOCKED"
    assert page.text_content(f"{main} title") == "Main entrance: LOCKED"
    for door in ("noc", "hall-a", "cage-7"):  # no simulator for their controllers: locked until found silent
        assert page.text_content(f"{ICON.format(door)} text.state") in ("LOCKED", "OFFLINE", "NO STATE"), door
    sup.mark()

    # forced: the icon says so in words, live
    console.lobby.open_door("main-entrance")
    page.wait_for_selector(f"{main}.state-forced")
    assert page.text_content(f"{main} text.state") == "FORCED"
    assert sup.still_same_document()
    shots(sup, artifacts, "01-live-forced")
    console.lobby.close_door("main-entrance")

    # the icons sit on the doors of the drawing: inside the picture, in the order of the plan
    box = page.locator(".site-plan img").bounding_box()
    spots = {d: page.locator(f"{ICON.format(d)} rect.mark").bounding_box() for d in ("main-entrance", "noc", "hall-a", "cage-7")}
    for door, spot in spots.items():
        assert box["x"] <= spot["x"] <= box["x"] + box["width"] and box["y"] <= spot["y"] <= box["y"] + box["height"], door
    assert spots["main-entrance"]["x"] < spots["noc"]["x"] < spots["hall-a"]["x"] < spots["cage-7"]["x"]

    # the plan's own page, larger; a click on a door goes to its row on the doors board
    page.click(".site-plan h2 a[href='/plans']")
    page.wait_for_selector(f".plans-page {main}")
    shots(sup, artifacts, "02-plan-page")
    page.click(f".plans-page {main}")
    page.wait_for_url("**/doors#door-main-entrance")
    page.wait_for_selector("#door-main-entrance")
    assert sup.errors == []


def test_lockdown_banner_appears_and_clears_live_on_every_page(console: Console, browser, artifacts: Path) -> None:
    guard = Watched(browser, console.url)
    guard.login("gus")
    guard.page.goto("/people")
    guard.page.wait_for_selector("#live-state:has-text('live')")
    assert guard.page.is_hidden("#lockdown-banner")
    guard.mark()

    sup = Watched(browser, console.url)
    sup.login("sam")
    sup.page.goto("/doors")
    lockdown = "section.card.danger form[action='/doors/lockdown']"
    sup.page.select_option(f"{lockdown} select[name=scope]", "site")
    sup.page.fill(f"{lockdown} [name=reason]", "Intruder reported in the car park")
    sup.page.click(f"{lockdown} button")

    banner = guard.page.wait_for_selector("#lockdown-banner:not([hidden])")
    guard.page.wait_for_selector("#lockdown-text:has-text('The whole site is locked down')")  # every door is
    text = banner.inner_text()
    assert text.startswith("LOCKDOWN") and ", since " in text and ("CET" in text or "CEST" in text), text
    assert guard.still_same_document()
    shots(guard, artifacts, "01-guard-people-page-lockdown")

    # a page loaded now draws it from the database, and the plan shows LOCKDOWN on the door
    sup.page.goto("/")
    sup.page.wait_for_selector("#lockdown-banner:not([hidden])")
    assert "The whole site is locked down" in sup.page.inner_text("#lockdown-text")
    sup.page.wait_for_selector(f"{ICON.format('main-entrance')}.state-lockdown")
    assert sup.page.text_content(f"{ICON.format('main-entrance')} text.state") == "LOCKDOWN"
    shots(sup, artifacts, "02-live-page-lockdown")

    # lifted: gone without a reload
    sup.page.goto("/doors")
    lift = "section.card.danger form[action='/doors/lockdown/lift']"
    sup.page.select_option(f"{lift} select[name=scope]", "site")
    sup.page.fill(f"{lift} [name=reason]", "Police: all clear")
    sup.page.click(f"{lift} button")
    guard.page.wait_for_selector("#lockdown-banner", state="hidden")
    assert guard.still_same_document()
    sup.page.goto("/")
    assert sup.page.is_hidden("#lockdown-banner")
    assert guard.errors == [] and sup.errors == []


def test_muster_follows_entries_and_exits_and_prints(console: Console, browser, artifacts: Path) -> None:
    guard = Watched(browser, console.url)
    guard.login("gus")
    page = guard.page
    page.click(".site-plan a[href='/muster']")
    page.wait_for_selector("h1:has-text('Who is inside now')")
    page.wait_for_selector("#live-state:has-text('live')")
    assert page.inner_text(".muster-total strong") == "0"
    guard.mark()

    console.lobby.present("main-in", None, "wiegand26", "12:1001")
    row = page.wait_for_selector(".muster-area[data-area='lobby'] tr[data-person='1']")
    cells = row.inner_text().split("\t")
    assert cells[0] == "Ada" and cells[3] == "Main entrance" and cells[4].endswith(("CET", "CEST")), cells
    assert page.inner_text(".muster-area[data-area='lobby'] .muster-count") == "1"
    assert page.inner_text(".muster-total strong") == "1"
    assert guard.still_same_document()
    shots(guard, artifacts, "01-muster-ada-in-lobby")

    console.lobby.present("main-out", None, "wiegand26", "12:1001")
    page.wait_for_selector(".muster-area.outside[data-area='outside'] tr[data-person='1']")
    assert page.locator(".muster-area[data-area='lobby'] tr[data-person]").count() == 0
    assert page.inner_text(".muster-total strong") == "0"
    assert guard.still_same_document()

    # printed for an evacuation: black on white, every area with its count, the time of printing
    console.lobby.present("main-in", None, "wiegand26", "12:1001")
    page.wait_for_selector(".muster-area[data-area='lobby'] tr[data-person='1']")
    page.emulate_media(media="print")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
    assert page.evaluate("getComputedStyle(document.querySelector('table.muster td')).color") == "rgb(0, 0, 0)"
    assert page.is_hidden("header") and page.is_hidden("#muster-print")
    pdf = artifacts / "03-muster-print.pdf"
    page.pdf(path=str(pdf), format="A4", print_background=True)
    subprocess.run(["pdftoppm", "-png", "-r", "70", "-f", "1", "-l", "1", str(pdf), str(artifacts / "03-muster-print")],
                   check=True)
    assert page.inner_text("#muster-printed")  # beforeprint put the time of printing there
    text = page.inner_text("#muster-list")
    for area in console.config.areas:
        assert area.name in text, area.key
    assert guard.errors == []


@contextmanager
def served(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_hostile_door_names_stay_text_in_live_icons_and_banner(browser, tmp_path: Path, sqlite_url: str,
                                                                keys: KeyStore, artifacts: Path) -> None:
    from web import create_app, current_services

    site_file = plan_site(tmp_path)
    text = site_file.read_text().replace('url = "sqlite:///var/badge-bridge.db"', f'url = "{sqlite_url}"')
    site_file.write_text(text.replace('name = "Main entrance"', f"name = {json.dumps(EVIL)}", 1))
    config = load_config(site_file)
    engine = make_engine(sqlite_url)
    with Session(engine) as s, s.begin():
        sync_site(s, config)
        people.add_user(s, "test", "gus", "guard", PASSWORD)
    app = create_app(config, engine, keys, mqtt_link=False)
    try:
        with served(app) as url:
            guard = Watched(browser, url)
            dialogs: list[str] = []
            guard.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            guard.login("gus")
            name = guard.page.text_content(f"{ICON.format('main-entrance')} text.name")
            assert name == EVIL
            # the bridge says the door is locked down: the banner names it, as text
            current_services(app).hub.publish("door", json.dumps(
                {"v": 1, "door": "main-entrance", "ts": "2026-12-07T09:31:05Z", "contact": "closed", "lock": "lockdown",
                 "alarms": [], "online": True}))
            guard.page.wait_for_selector("#lockdown-banner:not([hidden])")
            assert guard.page.inner_text("#lockdown-text") == f"Locked down: {EVIL}, since Mon 07 Dec 10:31:05 CET"
            assert guard.page.text_content(f"{ICON.format('main-entrance')} text.state") == "LOCKDOWN"
            assert guard.page.locator("img[src=x]").count() == 0
            guard.shot(artifacts / "01-hostile-names.png")
            assert dialogs == [] and guard.errors == []
            with Session(engine) as s:
                assert s.query(SiteState).count() == 0  # the banner came from the live state alone
    finally:
        current_services(app).stop()
        engine.dispose()
