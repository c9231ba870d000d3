"""The feed for people (issue 18, item 2): names instead of ids, door and area names, site local time with its
zone, readable detail, door events by default, live rows that link to their event; and the loose ends (the
auditor's landing, the unfinished month's export).

Attacker and failure first: hostile person names, door names, event details and MQTT payloads stay text on
the server's pages and in the live batch; an unknown or malformed person id, a database that does not answer,
a time the calendar cannot hold and a hostile time zone never fail a page. The live feed in a real Chromium
is in test_console_feed_browser.py.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.config import ConfigError, SiteConfig, load_config
from badge_bridge.controllers.contract import PublishedEvents
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry
from tests import test_console_routes as console
from tests.conftest import write_site
from tests.test_console_routes import Seed, assert_inert, login, page, post
from web import current_services
from web.present import Presenter, published

app, client_as, make_app, seed = console.app, console.client_as, console.make_app, console.seed
cheap_password_hashes = console.cheap_password_hashes
"""The route tests' fixtures: the seeded site (Ada Lovelace, card 12:1001), its app, a browser per role."""

NAME = "<script>alert('name')</script>"
DETAIL = '"><img src=x onerror=alert("detail")>'
WINTER = datetime(2026, 1, 15, 12, 0, 5, tzinfo=UTC)
SUMMER = datetime(2026, 7, 15, 12, 0, 5, tzinfo=UTC)


def log_events(engine: Engine, config: SiteConfig, keys: KeyStore, *events: Event) -> list[int]:
    """Write ``events`` to the bridge's chain as the bridge would; their row ids in the log."""
    writer = AuditWriter(engine, config.site.instance, keys.signer())
    writer.start()
    for event in events:
        writer.submit(event)
    assert writer.stop()
    with Session(engine) as s:
        return [s.scalars(select(AuditEntry.id).where(AuditEntry.event_id == e.id)).one() for e in events]


def access(kind: str, subject: dict[str, Any], *, ts: datetime = WINTER, door: str = "main-entrance",
           **detail: Any) -> Event:
    return Event(id=Event.new_id(kind), kind=kind, source="ctl-lobby", ts=ts, door=door, subject=subject,
                 detail={"reader": "main-in", "direction": "in", "factors": ["card"], **detail})


def batch(*events: dict[str, Any]) -> PublishedEvents:
    """A batch as the bridge publishes it on bridge/events (validated as the console validates it)."""
    return PublishedEvents.model_validate_json(json.dumps({"v": 1, "chain": "bridge-1", "events": [
        {"v": 1, "id": f"e{i}", "ts": WINTER.isoformat(), "kind": "access.granted", "source": "ctl-lobby",
         "door": "main-entrance", **e} for i, e in enumerate(events)]}))


def shown(app: Flask, published_batch: PublishedEvents, session_factory: Callable[[], Session] | None = None) -> list[dict[str, Any]]:
    svc = current_services(app)
    return [e["shown"] for e in json.loads(published(session_factory or svc.session, svc.presenter,
                                                     published_batch))["events"]]


# --- the live batch: names, places, time ----------------------------------------------------------------


def test_a_live_batch_reads_as_people_doors_and_local_time(app: Flask, seed: Seed) -> None:
    ada = {"person": seed.person, "credential": seed.credential}
    granted, denied, winter, summer = shown(app, batch(
        {"subject": ada, "detail": {"reason": "granted", "factors": ["card", "pin"], "direction": "in"}},
        {"kind": "access.denied", "subject": {"card": "wiegand26:12:9999"}, "door": "hall-a",
         "detail": {"reason": "unknown_credential", "factors": ["card"], "failed": ["pin"]}},
        {"kind": "door.opened", "subject": {}, "detail": {}},
        {"kind": "door.opened", "subject": {}, "detail": {}, "ts": SUMMER.isoformat()}))
    assert granted["who"] == {"name": "Ada Lovelace", "note": "Analytical Engines · card wiegand26",
                              "person": seed.person}
    assert (granted["label"], granted["where"], granted["areas"]) == ("Access granted", "Main entrance",
                                                                      "Outside / car park → Lobby")
    assert granted["text"] == "card + PIN · going in"
    assert granted["time"] == "2026-01-15 13:00:05 CET" and granted["utc"] == "2026-01-15T12:00:05+00:00"
    assert (granted["door_event"], granted["alarm"]) == (True, False)
    assert denied["who"] == {"name": "unknown card", "note": "wiegand26:12:9999", "person": None}
    assert "unknown card" in denied["text"] and "failed: PIN" in denied["text"]
    assert (denied["where"], denied["areas"]) == ("Data hall A", "Hall A mantrap → Data hall A")
    assert winter["time"].endswith(" CET") and summer["time"] == "2026-07-15 14:00:05 CEST"


def test_motion_evidence_and_cameras_are_not_door_events(app: Flask) -> None:
    kinds = ["access.granted", "door.forced", "alarm.raised", "face.mismatch", "console.unlock", "motion.start",
             "evidence.saved", "camera.offline", "controller.online", "console.login", "admin.person_added"]
    rows = shown(app, batch(*({"kind": k, "subject": {}, "detail": {}} for k in kinds)))
    assert {k: r["door_event"] for k, r in zip(kinds, rows, strict=True)} == {
        k: k.startswith(("access.", "door.", "alarm.", "face.")) or k == "console.unlock" for k in kinds}


@pytest.mark.parametrize("person", [999_999, 0, -1, True, 2**31, 10**30, "2", "<b>1</b>", None, [1], {"id": 1}, 1.5],
                         ids=repr)
def test_an_unknown_or_malformed_person_id_reads_as_unknown(person: object, app: Flask, seed: Seed) -> None:
    [row] = shown(app, batch({"subject": {"person": person, "credential": person}, "detail": {}}))
    if person is None:
        assert row["who"] is None
    else:
        assert row["who"]["name"].startswith("unknown person #") and row["who"]["person"] is None


def test_hostile_values_in_a_published_batch_stay_text(app: Flask, seed: Seed) -> None:
    """The console reads whatever JSON the batch holds: it is shortened and passed on as text, never
    interpreted (feed.js puts it in with textContent; the browser test proves the page)."""
    huge = "x" * 100_000
    [row] = shown(app, batch({"kind": "door.weird", "subject": {"user": DETAIL}, "door": "no-such-door",
                              "detail": {"note": DETAIL, "huge": huge, "nested": {"a": [DETAIL]}}}))
    assert row["who"] == {"name": DETAIL, "note": "console", "person": None}
    assert row["where"] == "no-such-door" and DETAIL in row["text"] and len(row["text"]) <= 300


def test_a_renamed_person_reads_by_the_new_name_in_the_next_batch(app: Flask, seed: Seed, engine: Engine) -> None:
    ada = {"person": seed.person, "credential": seed.credential}
    assert shown(app, batch({"subject": ada, "detail": {}}))[0]["who"]["name"] == "Ada Lovelace"
    with Session(engine) as s, s.begin():
        people.update_person(s, "cli:test", seed.person, name="Ada King", company="", levels=["staff"],
                             lockdown_exempt=False)
    assert shown(app, batch({"subject": ada, "detail": {}}))[0]["who"]["name"] == "Ada King"


def test_without_the_database_a_batch_still_goes_out_with_numbers(app: Flask, seed: Seed) -> None:
    def away() -> Session:
        raise OperationalError("SELECT", {}, ConnectionRefusedError("database away"))

    [row] = shown(app, batch({"subject": {"person": seed.person}, "detail": {"reason": "granted"}}), away)
    assert row["who"] == {"name": f"person #{seed.person}", "note": "name unavailable (database)",
                          "person": seed.person}
    assert row["where"] == "Main entrance" and row["time"].endswith("CET")


def test_names_are_looked_up_once_per_batch(app: Flask, seed: Seed, engine: Engine) -> None:
    from sqlalchemy import event

    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        shown(app, batch(*({"subject": {"person": seed.person + i % 3, "credential": seed.credential}, "detail": {}}
                           for i in range(1000))))
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len([s for s in statements if "FROM person" in s]) == 1
    assert len([s for s in statements if "FROM credential" in s]) == 1


# --- time: unreadable and hostile ------------------------------------------------------------------------


@pytest.mark.parametrize("ts", [2**62, -(2**62), datetime(9999, 12, 31, 23, 30, tzinfo=UTC)], ids=repr)
def test_a_time_the_calendar_cannot_hold_reads_as_such(ts: int | datetime, site: SiteConfig) -> None:
    text, utc = Presenter(site).local(ts)
    assert text == "(time unreadable)" and utc == ""


def test_an_entry_at_the_end_of_time_does_not_break_the_pages(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                                  engine: Engine, site: SiteConfig, keys: KeyStore) -> None:
    """Year 9999 23:30 UTC is year 10000 in Berlin: the page shows the row, not a 500."""
    [entry] = log_events(engine, site, keys, access("access.granted", {"person": seed.person},
                                                    ts=datetime(9999, 12, 31, 23, 30, tzinfo=UTC)))
    guard = client_as("guard")
    for path in ("/", "/events", f"/events/{entry}"):
        assert "(time unreadable)" in page(guard, path)


@pytest.mark.parametrize("zone", ["../../../../etc/passwd", "<script>alert(1)</script>", "Europe/Berlin\n",
                                  "/etc/localtime", "Nowhere/Atlantis", ""])
def test_a_hostile_time_zone_is_refused_by_the_site_file(zone: str, tmp_path: Any, sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match="timezone"):
        load_config(write_site(tmp_path, sqlite_url, ('timezone = "Europe/Berlin"', f"timezone = {json.dumps(zone)}")))


def test_the_zone_heads_every_time_column(client_as: Callable[[str], FlaskClient], seed: Seed, engine: Engine,
                                          site: SiteConfig, keys: KeyStore) -> None:
    [entry] = log_events(engine, site, keys, access("access.granted", {"person": seed.person}, ts=SUMMER))
    guard = client_as("guard")
    for path in ("/", "/events"):
        shown_page = page(guard, path)
        assert "<th>time (Europe/Berlin)</th>" in shown_page and "time (UTC)" not in shown_page
        assert "2026-07-15 14:00:05 CEST" in shown_page
    assert "when (Europe/Berlin)" in page(guard, f"/events/{entry}")


# --- the server's pages ------------------------------------------------------------------------------------


def test_feed_rows_name_people_and_doors(client_as: Callable[[str], FlaskClient], seed: Seed, engine: Engine,
                                         site: SiteConfig, keys: KeyStore) -> None:
    log_events(engine, site, keys,
               access("access.granted", {"person": seed.person, "credential": seed.credential}, reason="granted"),
               access("access.denied", {"person": seed.person, "credential": seed.credential}, door="noc",
                      reason="no_access_level"))
    guard = client_as("guard")
    for path in ("/", "/events"):
        shown_page = page(guard, path)
        assert f'<a href="/people/{seed.person}">Ada Lovelace</a><small>Analytical Engines · card wiegand26</small>' \
            in shown_page
        assert "Access denied" in shown_page and "no access to this door" in shown_page and ">NOC<" in shown_page
        assert '{"credential"' not in shown_page and "&#34;credential&#34;" not in shown_page


def test_event_detail_reads_as_text_with_the_raw_record_folded(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                               engine: Engine, site: SiteConfig, keys: KeyStore) -> None:
    [entry] = log_events(engine, site, keys, access(
        "access.denied", {"person": seed.person, "credential": seed.credential}, reason="pin_wrong",
        factors=["card"], failed=["pin"]))
    shown_page = page(client_as("auditor"), f"/events/{entry}")
    assert "<h1>Access denied</h1>" in shown_page
    assert "<dt>why</dt><dd>wrong PIN</dd>" in shown_page and "<dt>failed factors</dt><dd>PIN</dd>" in shown_page
    assert re.search(r"<details class=\"raw\"><summary>Raw record.*&#34;reason&#34;: &#34;pin_wrong&#34;.*</details>",
                     shown_page, re.DOTALL)


def test_an_alarm_page_says_who_acknowledged_it(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                engine: Engine, site: SiteConfig, keys: KeyStore) -> None:
    with Session(engine) as s:
        held = s.get(Alarm, seed.acked_alarm)
        assert held is not None
    [entry] = log_events(engine, site, keys, Event(id=held.event_id, kind="alarm.raised", source="ctl-hall-a",
                                                   ts=held.raised_at, door="hall-a",
                                                   detail={"alarm": "door.held_open", "cause": "c1"}))
    shown_page = page(client_as("guard"), f"/events/{entry}")
    assert "ALARM: Door held open" in shown_page
    assert "<dt>acknowledged by</dt><dd>guard: “Cleaner propped it open”</dd>" in shown_page


def test_door_events_by_default_the_rest_on_request(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                     engine: Engine, site: SiteConfig, keys: KeyStore) -> None:
    motion = Event(id=Event.new_id("motion.start"), kind="motion.start", source="cam-lobby", ts=WINTER,
                   door="main-entrance", detail={"zone": "main-entrance", "people": 1})
    log_events(engine, site, keys, motion, access("access.granted", {"person": seed.person}))
    guard = client_as("guard")
    default, everything = page(guard, "/"), page(guard, "/?all=1")
    assert 'data-kind="access.granted"' in default and 'data-kind="motion.start"' not in default
    assert 'data-kind="evidence.saved"' not in default and 'data-kind="admin.person_added"' not in default
    assert 'data-kind="motion.start"' in everything and 'data-kind="evidence.saved"' in everything
    assert 'data-kind="motion.start"' in page(guard, "/?kind=&all=1")
    assert 'data-machine="1"' in everything and 'id="show-all" checked' in everything


def test_hostile_names_and_details_are_text_on_every_page(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                          make_app: Callable[..., Flask], engine: Engine,
                                                          site: SiteConfig, keys: KeyStore) -> None:
    with Session(engine) as s, s.begin():
        people.update_person(s, "cli:test", seed.person, name=NAME, company=DETAIL, levels=["staff"],
                             lockdown_exempt=False)
    doors = [d.model_copy(update={"name": NAME}) if d.key == "main-entrance" else d for d in site.doors]
    areas = [a.model_copy(update={"name": DETAIL}) for a in site.areas]
    hostile_site = site.model_copy(update={"doors": doors, "areas": areas})
    ids = log_events(engine, site, keys,
                     access("access.denied", {"person": seed.person, "credential": seed.credential},
                            reason=DETAIL, factors=[DETAIL], failed=[NAME], companion=seed.person),
                     Event(id=Event.new_id("door.weird"), kind="door.weird", source="ctl-lobby", ts=WINTER,
                           door="main-entrance", subject={"card": NAME, "user": DETAIL}, detail={DETAIL: NAME}))
    guard = login_as(make_app(hostile_site), "guard")
    for path in ("/", "/?all=1", "/events", *(f"/events/{i}" for i in ids)):
        shown_page = page(guard, path)
        assert_inert(shown_page, NAME)
        assert_inert(shown_page, DETAIL)
        assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in shown_page, path


def login_as(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, role).status_code == 302
    return client


# --- live rows link to their event ----------------------------------------------------------------------


def test_find_an_event_by_its_id(client_as: Callable[[str], FlaskClient], seed: Seed, engine: Engine,
                                 site: SiteConfig, keys: KeyStore) -> None:
    event = access("access.granted", {"person": seed.person})
    [entry] = log_events(engine, site, keys, event)
    for role in ("guard", "auditor"):
        client = client_as(role)
        response = client.get("/events/find", query_string={"event": event.id})
        assert response.status_code == 302 and response.location == f"/events/{entry}"
        assert client.get("/events/find", query_string={"event": "no-such-event"}).status_code == 404
        assert client.get("/events/find", query_string={"event": NAME}).status_code == 404
        assert client.get("/events/find", query_string={"event": "x" * 201}).status_code == 400
        assert client.get("/events/find", query_string={"event": "a\x00b"}).status_code == 400
        assert 'name="event"' in page(client, "/events/find")
    assert client_as("anonymous").get("/events/find", query_string={"event": event.id}).status_code == 302
    assert client_as("anonymous").get("/events/find", query_string={"event": event.id}).location.startswith("/login")


# --- the loose ends -----------------------------------------------------------------------------------


def test_an_auditor_logging_in_from_the_front_door_lands_on_the_event_log(app: Flask, seed: Seed) -> None:
    auditor = app.test_client()
    asked = auditor.get("/")
    assert asked.status_code == 302 and asked.location.startswith("/login")
    response = auditor.post(asked.location, data={"csrf_token": console.csrf_token(auditor), "username": "auditor",
                                                  "password": console.PASSWORDS["auditor"]})
    assert response.status_code == 302 and response.location == "/events"
    assert auditor.get(response.location).status_code == 200
    # a page of theirs they asked for is kept; a guard from "/" still lands on the feed
    assert login(app.test_client(), "auditor", next="/audit").location == "/audit"
    assert login(app.test_client(), "guard", next="/").location == "/"


def test_exporting_the_unfinished_month_says_so(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                app: Flask) -> None:
    auditor = client_as("auditor")
    now = datetime.now(UTC).astimezone(current_services(app).presenter.tz)
    month = f"{now:%Y-%m}"
    shown_page = page(auditor, "/audit")
    assert "The current month is not complete." in shown_page and f"{month} is not complete" in shown_page
    response = post(auditor, "/audit/export", month=month)
    assert response.status_code == 200
    assert f"audit-export-{month}-INCOMPLETE.zip" in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.comment.decode().startswith(f"INCOMPLETE MONTH. {month} is not complete")
    assert archive.namelist()
    assert console.audited(current_services(app).engine, "console.export_downloaded").detail["complete"] is False
    with app.test_request_context():
        from web.auditing import unfinished

        assert unfinished("2026-01", datetime(2026, 2, 1, 0, 0, tzinfo=UTC)) == ""  # 01:00 CET: January is over
        assert "2026-01 is not complete" in unfinished("2026-01", datetime(2026, 1, 31, 22, 59, tzinfo=UTC))


def test_from_and_until_are_the_sites_time(client_as: Callable[[str], FlaskClient], seed: Seed, engine: Engine,
                                           site: SiteConfig, keys: KeyStore) -> None:
    """13:00:05 CET is 12:00:05 UTC: a search from 13:00 local finds it, from 13:01 does not; a time with no
    UTC equivalent is a 400 naming the field, not a 500."""
    log_events(engine, site, keys, access("access.granted", {"person": seed.person}))
    guard = client_as("guard")
    assert "<label>From (Europe/Berlin)" in page(guard, "/events")
    assert "13:00:05 CET" in page(guard, "/events?since=2026-01-15T13:00&until=2026-01-15T13:01")
    assert "13:00:05 CET" not in page(guard, "/events?since=2026-01-15T13:01")
    for hostile in ("0001-01-01T00:00", "0001-01-01T00:30"):
        response = guard.get("/events", query_string={"since": hostile})
        assert response.status_code == 400 and "since: out of the calendar" in response.get_data(as_text=True)
    assert guard.get("/events", query_string={"until": "9999-12-31T23:59"}).status_code == 200


def test_an_event_without_a_door_names_its_device(app: Flask) -> None:
    offline, alarm = shown(app, batch({"kind": "controller.offline", "door": None, "source": "ctl-hall-a",
                                       "subject": {}, "detail": {}},
                                      {"kind": "alarm.raised", "door": "", "source": "ctl-hall-a", "subject": {},
                                       "detail": {"alarm": "controller.offline", "cause": "c1"}}))
    assert (offline["where"], offline["areas"], offline["door_event"]) == ("ctl-hall-a", "", False)
    assert (alarm["label"], alarm["where"], alarm["text"], alarm["alarm"]) == (
        "ALARM: Controller: offline", "ctl-hall-a", "", True)
