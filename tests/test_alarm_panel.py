"""The alarm panel through Flask's test client, against a real database (SQLite and PostgreSQL): the attacker
first (hostile alarm fields, CSRF, wrong roles, off-site redirects, two operators at once, the database
away), then what the desk sees (groups, priority, order, momentary kinds, acknowledgement and resolution
kept apart, the Assign list, clips that play in the page)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from badge_bridge.audit.writer import AuditWriter
from badge_bridge.config import AlarmsSection, SiteConfig
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry
from badge_bridge.records import alarm_raised
from camera.evidence import EvidenceStore, encode_clip
from tests import test_console_routes as console
from tests.test_console_routes import (
    Seed,
    assert_escaped,
    assert_inert,
    console_log,
    csrf_token,
    get,
    login,
    messages,
    page,
    post,
    snapshot,
)
from web import alarms as web_alarms
from web.stream import AlarmVersion

HOSTILE = '"><img src=x onerror=alert(1)>'
SCRIPT = "<script>alert(1)</script>"

app, client_as, make_app, seed = console.app, console.client_as, console.make_app, console.seed
cheap_password_hashes = console.cheap_password_hashes
"""The fixtures of the route tests: the seeded site, its app, a logged-in browser per role."""


def add_alarms(engine: Engine, *rows: dict[str, object]) -> list[int]:
    """Alarm rows as the bridge writes them (the effect of an alarm.raised entry)."""
    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():
        made = [Alarm(**{"event_id": Event.new_id("alarm.raised"), "source": "ctl-lobby",
                         "raised_at": now - timedelta(seconds=int(str(r.pop("ago", 0)))), **r}) for r in rows]
        s.add_all(made)
        s.flush()
        return [a.id for a in made]


def ack_group(client: FlaskClient, kind: str, place: str, comment: str = "Checked on camera", *,
              next: str = "", json_answer: bool = False):
    headers = {"Accept": "application/json"} if json_answer else {}
    return client.post("/alarms/group/acknowledge", headers=headers, data={
        "csrf_token": csrf_token(client), "kind": kind, "place": place, "comment": comment, "next": next})


def panel_rows(html: str) -> list[str]:
    """The data-key of each panel row, in order."""
    return re.findall(r'<li class="alarm-group [^"]*" data-key="([^"]*)"', html)


# --- the attacker and the failure --------------------------------------------------------------------


def test_hostile_alarm_fields_are_text_in_the_panel(client_as: Callable[[str], FlaskClient], engine: Engine,
                                                    seed: Seed) -> None:
    add_alarms(engine, {"kind": SCRIPT, "door": None, "source": HOSTILE},
               {"kind": HOSTILE, "door": SCRIPT, "source": "ctl-lobby"},
               {"kind": "door.held_open", "door": "noc", "source": SCRIPT, "state": "acknowledged",
                "acknowledged_by": "guard", "comment": HOSTILE})
    guard = client_as("guard")
    for path in ("/alarms/panel", "/", "/alarms", "/events"):
        shown = page(guard, path)
        assert_inert(shown, SCRIPT)
        assert_inert(shown, HOSTILE)
    panel = page(guard, "/alarms/panel")
    assert_escaped(panel, SCRIPT)
    assert_escaped(panel, HOSTILE)
    # a hostile acknowledgement comment: stored as typed, shown as text in the panel and the queue
    assert ack_group(guard, "door.forced", "main-entrance", SCRIPT, json_answer=True).json["acknowledged"] == 1
    for path in ("/alarms/panel", "/alarms"):
        assert_escaped(page(guard, path), SCRIPT)


def test_group_acknowledge_needs_its_csrf_token(client_as: Callable[[str], FlaskClient], engine: Engine,
                                                seed: Seed) -> None:
    guard = client_as("guard")
    stolen = csrf_token(client_as("supervisor"))
    before = snapshot(engine)
    form = {"kind": "door.forced", "place": "main-entrance", "comment": "forged"}
    assert guard.post("/alarms/group/acknowledge", data=form).status_code == 400
    assert guard.post("/alarms/group/acknowledge", data={**form, "csrf_token": stolen}).status_code == 400
    assert guard.post("/alarms/group/acknowledge", data=form, headers={"Accept": "application/json"}).status_code == 400
    assert snapshot(engine) == before


def test_a_guard_cannot_resolve_and_an_auditor_gets_no_panel(client_as: Callable[[str], FlaskClient], engine: Engine,
                                                            seed: Seed) -> None:
    guard, auditor = client_as("guard"), client_as("auditor")
    before = snapshot(engine)
    assert post(guard, f"/alarms/{seed.acked_alarm}/resolve", comment="I may not").status_code == 403
    assert snapshot(engine) == before
    assert 'id="alarm-panel"' not in page(auditor, "/events")
    assert get(auditor, "/alarms/panel").status_code == 403
    assert ack_group(auditor, "door.forced", "main-entrance").status_code == 403
    assert snapshot(engine) == before
    assert get(client_as("anonymous"), "/alarms/panel").status_code == 302


def test_a_wall_display_gets_the_panel_read_only(client_as: Callable[[str], FlaskClient], seed: Seed) -> None:
    wall = client_as("wall")
    html = page(wall, "/alarms/panel")
    assert 'data-key="door.forced@main-entrance"' in html
    assert "<form" not in html and 'href="/alarms"' not in html
    assert ack_group(wall, "door.forced", "main-entrance").status_code == 403


@pytest.mark.parametrize("target", ["//evil.example", "//evil.example/alarms", "/\\evil.example",
                                    "https://evil.example/", "evil.example", "/\t/evil.example", "javascript:alert(1)"])
def test_acknowledging_does_not_redirect_off_site(target: str, client_as: Callable[[str], FlaskClient],
                                                  seed: Seed) -> None:
    response = ack_group(client_as("guard"), "door.forced", "main-entrance", next=target)
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert response.location == "/alarms", response.location


def test_acknowledging_returns_to_the_page_it_was_on(client_as: Callable[[str], FlaskClient], seed: Seed) -> None:
    guard = client_as("guard")
    response = ack_group(guard, "door.forced", "main-entrance", next="/events?door=noc")
    assert response.location == "/events?door=noc"
    assert ("info", f"Alarm {seed.open_alarm} acknowledged.") in messages(guard.get(response.location))


def test_two_operators_acknowledge_one_group_at_once(client_as: Callable[[str], FlaskClient], engine: Engine,
                                                     seed: Seed) -> None:
    ids = add_alarms(engine, *({"kind": "reader.offline", "door": "hall-a", "source": "rdr-hall-a-in", "ago": i}
                               for i in range(5)))
    operators = [client_as("guard"), client_as("supervisor")]
    start = threading.Barrier(len(operators))
    answers: list[dict[str, object]] = []

    def acknowledge(client: FlaskClient, who: int) -> None:
        token = csrf_token(client)
        start.wait()
        answers.append(client.post("/alarms/group/acknowledge", headers={"Accept": "application/json"}, data={
            "csrf_token": token, "kind": "reader.offline", "place": "hall-a", "comment": f"operator {who}"}).json)

    threads = [threading.Thread(target=acknowledge, args=(c, i)) for i, c in enumerate(operators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(int(str(a["acknowledged"])) for a in answers) == 5  # each alarm once, by whoever came first
    with Session(engine) as s:
        rows = list(s.scalars(select(Alarm).where(Alarm.id.in_(ids))))
    assert {a.state for a in rows} == {"acknowledged"}
    acks = console_log(engine, "alarm.acknowledged")
    assert len(acks) == 5
    for a in rows:  # the row and its audit entry name the same operator
        entry = next(e for e in acks if e.subject["alarm"] == a.event_id)
        assert entry.detail["comment"] == a.comment and entry.subject["user"] == a.acknowledged_by
    late = [a for a in answers if a["acknowledged"] != 5]
    for a in late:  # whoever came second is told, not shown an error page
        assert all("cannot be acknowledged" in str(m) or "someone else" in str(m) or "acknowledged." in str(m)
                   for m in a["messages"])  # type: ignore[attr-defined]


def test_the_panel_says_when_the_database_is_away(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    guard = client_as("guard")

    def away(*_args: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(web_alarms, "panel_groups", away)
    response = guard.get("/alarms/panel")
    assert response.status_code == 503
    assert response.get_data(as_text=True) == web_alarms.DB_AWAY
    assert "Traceback" not in response.get_data(as_text=True)
    monkeypatch.undo()
    assert get(guard, "/alarms/panel").status_code == 200


def test_the_alarm_version_is_null_while_the_database_is_away() -> None:
    answers = iter([OperationalError("SELECT", {}, Exception("gone")), "7:3"])

    def read() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    version = AlarmVersion(read, every=0.0)
    assert json.loads(version.current()) == {"version": None}
    assert json.loads(version.current()) == {"version": "7:3"}


def test_another_process_acknowledging_changes_the_version(make_app: Callable[..., Flask], site: SiteConfig,
                                                           seed: Seed, engine: Engine) -> None:
    """Two console processes on one database: the second's acknowledgement (never on MQTT) changes what the
    first's streams compare, so its pages redraw."""
    first, second = make_app(site), make_app(site)
    with first.app_context():
        before = web_alarms.alarm_version(Session(engine))
    client = second.test_client()
    login(client, "guard")
    assert ack_group(client, "door.forced", "main-entrance", json_answer=True).json["acknowledged"] == 1
    with first.app_context():
        assert web_alarms.alarm_version(Session(engine)) != before


def test_the_stream_sends_the_alarm_version(client_as: Callable[[str], FlaskClient], seed: Seed) -> None:
    response = client_as("guard").get("/stream")
    chunks = iter(response.response)
    seen = ""
    while "event: alarms" not in seen:
        seen += next(chunks).decode()
    response.close()
    data = seen.split("event: alarms\ndata: ")[1].split("\n")[0]
    assert json.loads(data)["version"]


# --- what the desk sees ------------------------------------------------------------------------------


def test_groups_priority_order_and_counts(make_app: Callable[..., Flask], site: SiteConfig, engine: Engine,
                                          seed: Seed) -> None:
    """Repeats and flaps are one row with a count; highest priority first, then newest; a site's own
    priority wins over the default."""
    add_alarms(engine, *({"kind": "reader.offline", "door": "hall-a", "source": "rdr-hall-a-in", "ago": 60 + i}
                         for i in range(5)),
               {"kind": "camera.offline", "door": None, "source": "cam-lobby", "ago": 1},
               {"kind": "door.unauthorized_entry", "door": "noc", "source": "cam-lobby", "ago": 30})
    configured = make_app(site.model_copy(update={"alarms": AlarmsSection(priorities={"reader.offline": "high"})}))
    guard = configured.test_client()
    login(guard, "guard")
    html = page(guard, "/alarms/panel")
    assert panel_rows(html) == [
        "door.unauthorized_entry@noc",  # high, 30 s ago (its newest)
        "reader.offline@hall-a",  # high by the site's choice, the newest 60 s ago
        "door.forced@main-entrance",  # high, 5 min ago (seeded)
        "camera.offline@cam-lobby",  # medium
        "door.held_open@hall-a",  # medium, acknowledged (seeded)
    ]
    reader_row = html.split('data-key="reader.offline@hall-a"')[1].split("</li>")[0]
    assert "×5" in reader_row and "5 open" in reader_row and "Data hall A" in reader_row
    assert "Acknowledge all 5" in reader_row
    assert ">ACTIVE<" in reader_row
    entry_row = html.split('data-key="door.unauthorized_entry@noc"')[1].split("</li>")[0]
    assert ">event<" in entry_row and "ACTIVE" not in entry_row  # a moment, not a condition
    assert "NOC" in entry_row


def test_group_acknowledge_acknowledges_each_open_alarm_of_the_row_only(client_as: Callable[[str], FlaskClient],
                                                                        engine: Engine, seed: Seed) -> None:
    flaps = add_alarms(engine, *({"kind": "reader.offline", "door": "hall-a", "source": "rdr-hall-a-in"}
                                 for _ in range(3)))
    other = add_alarms(engine, {"kind": "reader.offline", "door": "noc", "source": "rdr-noc-in"})
    answer = ack_group(client_as("guard"), "reader.offline", "hall-a", "Bus cable loose", json_answer=True).json
    assert answer == {"acknowledged": 3, "ok": True, "messages": ["3 alarms acknowledged: reader.offline at Data hall A."]}
    with Session(engine) as s:
        states = {i: st for i, st in s.execute(select(Alarm.id, Alarm.state).where(Alarm.id.in_(flaps + other)))}
    assert [states[i] for i in flaps] == ["acknowledged"] * 3 and states[other[0]] == "open"
    assert len(console_log(engine, "alarm.acknowledged")) == 3
    again = ack_group(client_as("guard"), "reader.offline", "hall-a", json_answer=True).json
    assert again == {"acknowledged": 0, "ok": False,
                     "messages": ["Nothing left to acknowledge there: someone else already did."]}
    empty = ack_group(client_as("guard"), "reader.offline", "noc", "", json_answer=True).json
    assert empty["ok"] is False and empty["messages"] == ["Comment: Say what you saw or did."]


def test_resolution_is_kept_apart_and_momentary_alarms_are_never_active(client_as: Callable[[str], FlaskClient],
                                                                        engine: Engine, seed: Seed) -> None:
    (entry,) = add_alarms(engine, {"kind": "door.unauthorized_entry", "door": "noc", "source": "cam-lobby",
                                   "state": "acknowledged", "acknowledged_by": "guard", "comment": "Walked in behind Ada"})
    supervisor = client_as("supervisor")
    for alarm_id, resolution in ((entry, "Visitor, badge issued"), (seed.acked_alarm, "Closer fixed")):
        assert post(supervisor, f"/alarms/{alarm_id}/resolve", comment=resolution).status_code == 302
    with Session(engine) as s:
        row = s.get(Alarm, entry)
        assert row is not None
        assert (row.comment, row.resolution, row.resolved_by) == ("Walked in behind Ada", "Visitor, badge issued",
                                                                 "supervisor")
    html = page(supervisor, "/alarms")
    line = html.split(f'id="alarm-{entry}"')[1].split("</tr>")[0]
    assert "Walked in behind Ada" in line and "Visitor, badge issued" in line
    assert 'class="condition">event<' in line and "ACTIVE" not in line
    held = html.split(f'id="alarm-{seed.acked_alarm}"')[1].split("</tr>")[0]
    assert "Cleaner propped it open" in held and "Closer fixed" in held
    assert "resolved while active" in held  # a condition resolved before the bridge saw it end
    assert f'id="alarm-{entry}"' not in page(supervisor, "/alarms/panel")  # resolved: off the desk


def test_the_assign_list_starts_with_nobody(client_as: Callable[[str], FlaskClient], seed: Seed) -> None:
    html = page(client_as("supervisor"), "/alarms")
    select_html = html.split(f'id="alarm-{seed.open_alarm}"')[1].split('<select name="user"')[1].split("</select>")[0]
    assert select_html.split("<option")[1].startswith(' value="" selected>choose someone')
    response = post(client_as("supervisor"), f"/alarms/{seed.open_alarm}/assign", user="")
    assert ("error", "Choose someone on duty to assign the alarm to.") in messages(client_as("supervisor").get(
        response.location)) or response.status_code == 302


def test_the_panel_links_to_the_alarm_event(client_as: Callable[[str], FlaskClient], engine: Engine,
                                            site: SiteConfig, keys: KeyStore, seed: Seed) -> None:
    """The alarm.raised entry of the row's newest alarm is one click away."""
    raised, effect = alarm_raised("door.tailgating", door="noc", source="cam-lobby", cause="test", ts=datetime.now(UTC))
    writer = AuditWriter(engine, site.site.instance, keys.signer())
    writer.start()
    writer.submit(raised, effect=effect)
    assert writer.stop()
    with Session(engine) as s:
        entry_id = s.scalar(select(AuditEntry.id).where(AuditEntry.event_id == raised.id))
    assert f'href="/events/{entry_id}">event &amp; video</a>' in page(client_as("guard"), "/alarms/panel")
    assert f'href="/events/{entry_id}"' in page(client_as("guard"), "/alarms")


def test_webm_clips_play_in_the_page_and_avi_still_downloads(client_as: Callable[[str], FlaskClient], engine: Engine,
                                                             site: SiteConfig, keys: KeyStore, seed: Seed) -> None:
    frames = [(i / 10, np.full((72, 128, 3), (i * 20, 90, 160), np.uint8)) for i in range(10)]
    store = EvidenceStore(site.path(site.evidence.dir), keys.evidence_key())
    webm = store.put(encode_clip(frames, 10.0), "video/webm")
    _, jpeg = cv2.imencode(".jpg", frames[0][1])
    avi = store.put(b"RIFF....AVI LIST" + jpeg.tobytes(), "video/x-msvideo")  # an old clip, as stored
    guard = client_as("guard")
    played = get(guard, f"/evidence/{webm}")
    assert played.status_code == 200 and played.mimetype == "video/webm"
    assert played.headers["Content-Disposition"].startswith("inline;")
    assert "media-src 'self'" in played.headers["Content-Security-Policy"]
    downloaded = get(guard, f"/evidence/{webm}?download=1")
    assert downloaded.headers["Content-Disposition"] == f'attachment; filename="evidence-{webm[:16]}.webm"'
    old = get(guard, f"/evidence/{avi}")
    assert old.mimetype == "video/x-msvideo"
    assert old.headers["Content-Disposition"] == f'attachment; filename="evidence-{avi[:16]}.avi"'
