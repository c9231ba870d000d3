"""The alarm panel in a real headless Chromium (tests/console_site.py): the bridge in process, a simulated
lobby controller, the console over real HTTP.

The panel stays on screen while the page scrolls, at 1366x768 and 1920x1080; a forced door appears live with
the title, banner and a tone, a low-priority alarm appears quietly; a guard acknowledges a group in place
and another operator's panel follows without a reload (the console's own acknowledgements are not on MQTT);
hostile alarm fields stay text; the database going away is said on the panel while the page keeps working;
one click leads from an alarm to its event, whose WebM clip plays in the page. Screenshots go to
``test-artifacts/test_alarm_panel_browser/<test>/``.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import cv2
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry
from camera.evidence import EvidenceStore, encode_clip, encode_snapshot
from tests.console_site import Console, Watched
from tests.waiting import wait_until

VIDEO = Path(__file__).resolve().parent / "data" / "video" / "door-entries-part1.mp4"
HOSTILE = '"><img src=x onerror=alert(1)>'
SCRIPT = "<script>alert(1)</script>"
COUNT_TONES = """
window.__tones = 0;
const RealAudioContext = window.AudioContext;
window.AudioContext = function () { window.__tones += 1; return new RealAudioContext(); };
"""
"""An init script (run by Playwright before the page's own): counts the tones alarms.js plays."""
TALL = "const d = document.createElement('div'); d.style.height = '4000px'; d.id = 'tall'; " \
       "document.querySelector('main').append(d); window.scrollTo(0, document.body.scrollHeight);"
"""Makes the page long and scrolls to its end (a busy event log)."""


def add_alarm(console: Console, kind: str, door: str | None, source: str, **extra: object) -> int:
    """An alarm row as another process would write it (no MQTT message: only the alarm version tells)."""
    with Session(console.engine) as s, s.begin():
        alarm = Alarm(event_id=Event.new_id("alarm.raised"), kind=kind, door=door, source=source,
                      raised_at=datetime.now(UTC), **extra)
        s.add(alarm)
        s.flush()
        return alarm.id


def on_screen(page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    view = page.viewport_size
    return box is not None and box["y"] >= 0 and box["x"] >= 0 and box["x"] + box["width"] <= view["width"] + 1 \
        and box["y"] < view["height"]


def guard(console: Console, browser, name: str = "gus", *, size: dict[str, int] | None = None) -> Watched:
    w = Watched(browser, console.url)
    if size:
        w.page.set_viewport_size(size)
    w.page.add_init_script(COUNT_TONES)
    w.login(name)
    return w


def test_the_panel_stays_on_screen_and_is_loud_only_for_high(console: Console, browser, artifacts: Path) -> None:
    gus = guard(console, browser, size={"width": 1366, "height": 768})
    page = gus.page
    page.wait_for_selector("#alarm-panel .alarm-none")
    page.click("nav a[href='/events']")
    page.wait_for_selector("#live-state:has-text('live')")
    gus.mark()
    page.evaluate(TALL)
    assert page.evaluate("window.scrollY") > 1000
    assert on_screen(page, "#alarm-panel .alarm-panel-head") and on_screen(page, "header")
    base_title = page.title()

    # a forced door: a HIGH row at the top of the panel, the title, the banner and one tone, no reload
    console.lobby.open_door("main-entrance")
    row = "#alarm-panel .alarm-group[data-key='door.forced@main-entrance']"
    page.wait_for_selector(row)
    assert (page.inner_text(f"{row} .pill.prio"), page.inner_text(f"{row} .alarm-kind")) == ("HIGH", "door.forced")
    assert page.inner_text(f"{row} .place") == "Main entrance" and page.inner_text(f"{row} .cond-active") == "ACTIVE"
    page.wait_for_function("() => document.title.startsWith('(1) ALARM · door.forced at Main entrance')")
    assert page.is_visible("#alarm-banner")
    assert page.evaluate("window.__tones") == 1
    page.wait_for_selector("#alarm-panel .alarm-group .age:has-text('s ago')")  # the age counts up in the page
    assert on_screen(page, "#alarm-panel .alarm-group") and page.evaluate("window.scrollY") > 1000
    page.screenshot(path=str(artifacts / "01-forced-1366x768-scrolled.png"))

    # it happens again: one row counting two, a second tone
    console.lobby.close_door("main-entrance")
    page.wait_for_selector("#alarm-panel .alarm-group[data-key='door.forced@main-entrance'] .pill.cond-cleared")
    console.lobby.open_door("main-entrance")
    page.wait_for_selector("#alarm-panel .alarm-group[data-key='door.forced@main-entrance'] .repeats:text-is('×2')")
    page.wait_for_function("() => window.__tones === 2")
    console.lobby.close_door("main-entrance")

    # a LOW alarm written by another process: the panel follows within seconds, quietly
    title = page.title()
    add_alarm(console, "audit.state_mismatch", None, "bridge-1")
    low = "#alarm-panel .alarm-group[data-key='audit.state_mismatch@bridge-1']"
    page.wait_for_selector(low)
    assert page.inner_text(f"{low} .pill.prio") == "LOW"
    keys = page.eval_on_selector_all("#alarm-panel .alarm-group", "rows => rows.map(r => r.dataset.key)")
    assert keys == ["door.forced@main-entrance", "audit.state_mismatch@bridge-1"]  # highest priority first
    assert page.title() == title and page.evaluate("window.__tones") == 2
    assert page.inner_text("#alarm-count") == "3"
    assert gus.still_same_document()
    page.screenshot(path=str(artifacts / "02-low-quietly-1366x768.png"))

    # a wall-sized screen: the panel beside the page, the page's heading not pushed down
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.evaluate("window.scrollTo(0, 0)")
    assert page.locator("main h1").bounding_box()["y"] < 150
    assert page.locator("#alarm-panel").bounding_box()["x"] > page.locator("main h1").bounding_box()["x"] + 900
    page.screenshot(path=str(artifacts / "03-1920x1080.png"))
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert on_screen(page, "#alarm-panel .alarm-group")
    assert page.title() != base_title
    assert gus.errors == []


def test_acknowledge_a_group_in_place_and_the_other_desk_follows(console: Console, browser, artifacts: Path) -> None:
    flaps = [add_alarm(console, "reader.offline", "hall-a", "rdr-hall-a-in") for _ in range(3)]
    gus, sam = guard(console, browser), guard(console, browser, "sam")
    row = "#alarm-panel .alarm-group[data-key='reader.offline@hall-a']"
    for w in (gus, sam):
        w.page.wait_for_selector(f"{row} .repeats:text-is('×3')")
        w.mark()
    sam.page.click("nav a[href='/doors']")
    sam.page.wait_for_selector("#live-state:has-text('live')")
    sam.mark()
    page = gus.page
    page.click("nav a[href='/events']")  # a page that does not grow while we look
    page.wait_for_selector("#live-state:has-text('live')")
    gus.mark()
    page.evaluate(TALL)

    # the supervisor starts typing into another row; a redraw must not lose it
    forced_row = "#alarm-panel .alarm-group[data-key='door.forced@main-entrance']"
    console.lobby.open_door("main-entrance")
    sam.page.wait_for_selector(forced_row)
    page.wait_for_selector("#alarm-banner:visible")  # (the banner moves the page down: the browser keeps its place)
    scrolled = page.evaluate("window.scrollY")
    sam.page.click(f"{forced_row} summary")
    sam.page.fill(f"{forced_row} textarea", "Going to look")

    page.click(f"{row} summary")
    page.fill(f"{row} textarea", "Bus cable loose, electrician called")
    page.screenshot(path=str(artifacts / "01-typing-the-acknowledgement.png"))
    page.click(f"{row} button:has-text('Acknowledge')")
    page.wait_for_selector(f"{row}.state-acknowledged")
    page.wait_for_selector("#alarm-panel-status.ok:has-text('3 alarms acknowledged: reader.offline at Data hall A.')")
    assert gus.still_same_document() and page.evaluate("window.scrollY") == scrolled
    assert "by gus: Bus cable loose, electrician called" in page.inner_text(row)
    page.screenshot(path=str(artifacts / "02-acknowledged-in-place.png"))
    with Session(console.engine) as s:
        rows = list(s.scalars(select(Alarm).where(Alarm.id.in_(flaps))))
    assert {(a.state, a.acknowledged_by, a.comment) for a in rows} == {
        ("acknowledged", "gus", "Bus cable loose, electrician called")}

    # the supervisor's page follows without a reload, and kept what was being typed
    sam.page.wait_for_selector(f"{row}.state-acknowledged")
    assert sam.page.input_value(f"{forced_row} textarea") == "Going to look"
    assert sam.still_same_document()
    sam.page.screenshot(path=str(artifacts / "03-other-desk-follows.png"))
    console.lobby.close_door("main-entrance")
    assert gus.errors == [] and sam.errors == []


def test_hostile_alarm_fields_stay_text(console: Console, browser, artifacts: Path) -> None:
    gus = guard(console, browser)
    dialogs: list[str] = []
    gus.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    add_alarm(console, SCRIPT, HOSTILE, SCRIPT, state="acknowledged", acknowledged_by=HOSTILE, comment=SCRIPT)
    add_alarm(console, HOSTILE, None, HOSTILE)
    row = gus.page.wait_for_selector(f"#alarm-panel .alarm-group .alarm-kind:text-is('{HOSTILE}')")
    assert row is not None
    gus.page.wait_for_selector(f"#alarm-panel .alarm-group .alarm-kind:text-is('{SCRIPT}')")
    panel = gus.page.inner_text("#alarm-panel")
    assert SCRIPT in panel and HOSTILE in panel
    assert gus.page.locator("#alarm-panel img, #alarm-panel script").count() == 0
    # a hostile comment typed at the desk
    console.lobby.open_door("main-entrance")
    forced = "#alarm-panel .alarm-group[data-key='door.forced@main-entrance']"
    gus.page.click(f"{forced} summary")
    gus.page.fill(f"{forced} textarea", HOSTILE)
    gus.page.click(f"{forced} button:has-text('Acknowledge')")
    gus.page.wait_for_selector(f"{forced}.state-acknowledged")
    gus.page.wait_for_selector("#alarm-banner", state="hidden")  # no high alarm left open: the banner goes
    assert HOSTILE in gus.page.inner_text(forced)
    assert gus.page.locator("#alarm-panel img, #alarm-panel script").count() == 0
    gus.page.screenshot(path=str(artifacts / "01-hostile-fields-as-text.png"))
    console.lobby.close_door("main-entrance")

    # what the stream carries (MQTT payloads, re-dispatched by stream.js) only makes the panel redraw from the
    # server: a hostile event is never drawn, not even in the banner
    gus.page.click("nav a[href='/events']")
    gus.page.wait_for_selector("#live-state:has-text('live')")
    gus.page.evaluate("""([hostile, script]) => {
      document.dispatchEvent(new CustomEvent("bb:events", { detail: { events: [{ kind: "alarm.raised", door: hostile,
        source: script, ts: "2026-01-01T00:00:00", detail: { alarm: script } }] } }));
      document.dispatchEvent(new CustomEvent("bb:alarms", { detail: { version: hostile } }));
    }""", [HOSTILE, SCRIPT])
    gus.page.wait_for_selector(f"#alarm-panel .alarm-group .alarm-kind:text-is('{SCRIPT}')")
    assert gus.page.locator("img, script:not([src])").count() == 0
    assert HOSTILE not in gus.page.inner_text("#alarm-banner")
    assert dialogs == [] and gus.errors == []


def test_the_database_away_is_said_and_the_page_keeps_working(console: Console, browser, artifacts: Path) -> None:
    gus = guard(console, browser)
    page = gus.page
    add_alarm(console, "reader.offline", "hall-a", "rdr-hall-a-in")
    row = "#alarm-panel .alarm-group[data-key='reader.offline@hall-a']"
    page.wait_for_selector(row)
    gus.mark()
    away = [True]

    def refuse(*_args: object) -> None:
        if away[0]:
            raise sqlite3.OperationalError("unable to open database file (test: the database is away)")

    event.listen(console.engine, "do_connect", refuse)
    console.engine.pool.dispose()  # pooled connections gone: the next query must connect
    try:
        page.evaluate("document.dispatchEvent(new CustomEvent('bb:alarms', { detail: { version: 'changed' } }))")
        page.wait_for_selector("#alarm-panel-status:has-text('Not up to date since')")
        assert page.is_visible(row)  # the last rows stay
        assert gus.still_same_document()
        page.screenshot(path=str(artifacts / "01-database-away.png"))
    finally:
        away[0] = False
    page.wait_for_selector("#alarm-panel-status", state="hidden", timeout=30_000)  # it retries, then recovers
    add_alarm(console, "camera.offline", None, "cam-lobby")
    page.wait_for_selector("#alarm-panel .alarm-group[data-key='camera.offline@cam-lobby']")
    assert gus.still_same_document()
    page.screenshot(path=str(artifacts / "02-database-back.png"))
    event.remove(console.engine, "do_connect", refuse)
    # the browser saw the failed fetch as a console error (a 500 or 503): that is the case under test
    assert all("Failed to load resource" in e for e in gus.errors), gus.errors


def test_one_click_from_the_alarm_to_its_event_and_the_clip_plays(console: Console, browser, artifacts: Path) -> None:
    gus = guard(console, browser)
    page = gus.page
    console.lobby.open_door("main-entrance")
    link = "#alarm-panel .alarm-group[data-key='door.forced@main-entrance'] a.to-event"
    page.wait_for_selector(link)
    console.lobby.close_door("main-entrance")
    with Session(console.engine) as s:
        alarm = s.scalars(select(Alarm)).one()
        raised = s.scalars(select(AuditEntry).where(AuditEntry.event_id == alarm.event_id)).one()

    # what the lobby camera would have saved for it: a snapshot and a WebM clip of the door video
    cap = cv2.VideoCapture(str(VIDEO), cv2.CAP_FFMPEG)
    frames = [(i / 15, cap.read()[1]) for i in range(45)]
    cap.release()
    keys = KeyStore(console.config.path(console.config.keys.dir))
    store = EvidenceStore(console.config.path(console.config.evidence.dir), keys.evidence_key())
    jpeg, clip = encode_snapshot(frames[0][1]), encode_clip(frames, 15.0)
    now = datetime.now(UTC).isoformat()
    items = [{"kind": "snapshot", "sha256": store.put(jpeg, "image/jpeg"), "media_type": "image/jpeg",
              "bytes": len(jpeg), "frames": 1, "start": now, "end": now},
             {"kind": "clip", "sha256": store.put(clip, "video/webm"), "media_type": "video/webm",
              "bytes": len(clip), "frames": len(frames), "start": now, "end": now}]
    done = []
    console.seeder.submit(Event(id=f"evidence:cam-lobby:{raised.event_id}"[:128], kind="evidence.saved",
                                source="cam-lobby", ts=datetime.now(UTC), door="main-entrance",
                                detail={"event": raised.event_id, "items": items}),
                          lambda _e, _d: done.append(True))
    wait_until(lambda: done, 10, "the evidence entry committed")

    page.click(link)
    page.wait_for_url(f"**/events/{raised.id}")
    video = page.wait_for_selector(".evidence video.clip")
    # preload="none": the clip is fetched (and its viewing audited) only when the guard plays it
    assert video.evaluate("v => v.readyState") == 0
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('.evidence video').readyState >= 2")
    state = video.evaluate("v => ({ready: v.readyState, duration: v.duration, error: v.error && v.error.code,"
                           " width: v.videoWidth})")
    assert state["ready"] >= 2 and state["duration"] > 0 and state["error"] is None and state["width"] == 768, state
    page.wait_for_function("() => document.querySelector('.evidence video').currentTime > 0.5")
    page.screenshot(path=str(artifacts / "01-event-with-clip-playing.png"), full_page=True)
    assert gus.errors == []
