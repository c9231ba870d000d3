"""The wall display (web.wall), tried as an attacker first: a wall cookie stolen and used after revocation, a
one-time link replayed, a wall posting console forms and opening other pages, a wall user's password login,
guessed links (rate limit), wall management by a supervisor; then what the desk relies on: no idle end, an
open stream closed within seconds of a revocation, every step audited, the CLI.

Through Flask's test client on SQLite and PostgreSQL; the CLI as a real process. The browser side is in
tests/test_wall_browser.py.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from badge_bridge import console_sessions, people
from badge_bridge.config import SiteConfig
from badge_bridge.models import ConsoleSession, ConsoleUser
from tests import test_console_routes as routes
from tests.test_cli import cli, ok
from tests.test_console_routes import (
    ROUTES,
    Seed,
    console_log,
    csrf_token,
    get,
    login,
    messages,
    post,
    snapshot,
    submit,
    texts,
)
from tests.test_console_sessions import FakeClock, copy_of
from tests.waiting import wait_until
from web import current_services
from web.wall import LINK_FAILURES

app, client_as, make_app, seed = routes.app, routes.client_as, routes.make_app, routes.seed
cheap_password_hashes = routes.cheap_password_hashes
"""The fixtures of the console's route tests."""

REVOKED = "This wall display was revoked"


def connect(client: FlaskClient, token: str) -> tuple[int, str]:
    """Post a wall link's token as the connect page does: (status, where it leads or what the page says)."""
    response = client.post("/wall/connect", data={"csrf_token": csrf_token(client), "token": token})
    return response.status_code, response.location if response.status_code == 302 else response.get_data(as_text=True)


def wall_screen(app: Flask, seed: Seed) -> FlaskClient:
    screen = app.test_client()
    assert connect(screen, seed.wall_link) == (302, "/wall")
    return screen


def revoke(app: Flask, seed: Seed) -> None:
    admin = app.test_client()
    assert login(admin, "admin").status_code == 302
    assert "Wall display revoked." in texts(submit(admin, f"/users/{seed.users['wall']}/revoke"), "info")


def sessions_of(engine: Engine, user_id: int) -> list[ConsoleSession]:
    with Session(engine) as s:
        return list(s.scalars(select(ConsoleSession).where(ConsoleSession.user_id == user_id)
                              .order_by(ConsoleSession.created_at)))


# --- 1. the attacker ---------------------------------------------------------------------------------


def test_a_wall_cookie_stolen_is_refused_once_the_wall_is_revoked(app: Flask, seed: Seed, engine: Engine) -> None:
    screen = wall_screen(app, seed)
    thief = copy_of(screen, app, {"REMOTE_ADDR": "127.0.0.1"})  # the same address and browser: only the cookie
    streamer = copy_of(screen, app, {"REMOTE_ADDR": "127.0.0.1"})
    assert thief.get("/wall").status_code == 200  # a working copy, until the revocation
    revoke(app, seed)

    for client in (thief, screen):
        response = client.get("/wall")
        assert response.status_code == 401 and REVOKED in response.get_data(as_text=True)
        assert client.get("/wall").status_code == 401  # the cookie was cleared: not connected any more
    assert get(streamer, "/stream").status_code == 302  # no stream either
    assert all(row.ended_reason in ("revoked", "exchanged") for row in sessions_of(engine, seed.users["wall"]))


def test_a_wall_link_works_once(app: Flask, seed: Seed, engine: Engine) -> None:
    wall_screen(app, seed)
    replay = app.test_client()
    status, page = connect(replay, seed.wall_link)
    assert status == 200 and "This wall link does not work" in page
    assert replay.get("/wall").status_code == 401
    assert [r.ended_reason for r in sessions_of(engine, seed.users["wall"])] == ["exchanged", None]
    (refused,) = console_log(engine, "console.wall_refused")
    assert refused.subject == {"user": "seed-wall"} and refused.detail["reason"] == "exchanged"


def test_the_link_token_is_stored_only_as_its_hash_and_the_cookie_carries_another(app: Flask, seed: Seed,
                                                                                    engine: Engine) -> None:
    screen = wall_screen(app, seed)
    link, live = sessions_of(engine, seed.users["wall"])
    assert link.token_sha256 == console_sessions.digest(seed.wall_link)
    with Session(engine) as s:
        stored = " ".join(str(v) for row in s.execute(select(ConsoleSession)).all() for v in row[0].__dict__.values())
    assert seed.wall_link not in stored
    data = app.session_interface.get_signing_serializer(app).loads(screen.get_cookie("bb_session").value)  # type: ignore[attr-defined, union-attr]
    assert data["sid"] != seed.wall_link and console_sessions.digest(data["sid"]) == live.token_sha256
    assert seed.wall_link not in "".join(e.raw for e in console_log(engine))


POSTS_AND_PAGES = [r for r in ROUTES if "wall" not in r.allowed]


@pytest.mark.parametrize("route", POSTS_AND_PAGES, ids=str)
def test_a_wall_can_do_nothing_but_show_the_wall(route: routes.Route, app: Flask, seed: Seed, engine: Engine) -> None:
    screen = wall_screen(app, seed)
    before = snapshot(engine)
    path = route.path.format(**seed.ids())
    response = get(screen, path) if route.method == "GET" else post(screen, path, **route.form)
    assert response.status_code == 403
    assert 'href="/' not in response.get_data(as_text=True).replace('href="/static/', "")  # no way elsewhere
    after = snapshot(engine)
    assert after.pop("console log") == before.pop("console log") and after == before


def test_a_wall_user_never_logs_in_with_a_password(app: Flask, seed: Seed, engine: Engine) -> None:
    with Session(engine) as s, s.begin():  # even a password someone set in the database does not work
        s.execute(update(ConsoleUser).where(ConsoleUser.username == "seed-wall")
                  .values(password_hash=people.hasher.hash("a password somebody knows")))
    client = app.test_client()
    response = login(client, "seed-wall", "a password somebody knows")
    assert response.status_code == 200 and ("error", "Wrong user name or password.") in messages(response)
    assert client.get("/wall").status_code == 401
    assert console_log(engine, "console.login_failed")[-1].subject == {"user": "seed-wall"}
    with Session(engine) as s, s.begin(), pytest.raises(people.AdminError, match="no password"):
        people.reset_password(s, "test", seed.users["wall"], "another long password")
    with Session(engine) as s, s.begin(), pytest.raises(people.AdminError, match="keeps its role"):
        people.set_role(s, "test", seed.users["wall"], "admin")
    with Session(engine) as s, s.begin(), pytest.raises(people.AdminError, match="added as a wall"):
        people.add_user(s, "test", "sneaky", "wall", "a long enough password")


def test_guessed_wall_links_are_limited_per_address(app: Flask, seed: Seed, engine: Engine) -> None:
    guesser = app.test_client()
    for n in range(LINK_FAILURES):
        status, _ = connect(guesser, f"guess-{n}")
        assert status == 200
    status, page = connect(guesser, seed.wall_link)  # even the right link, from this address, now
    assert status == 429 and "Too many wrong wall links" in page
    assert len(console_log(engine, "console.wall_refused")) == LINK_FAILURES
    assert all(e.detail["reason"] == "unknown" for e in console_log(engine, "console.wall_refused"))
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert connect(elsewhere, seed.wall_link) == (302, "/wall")


@pytest.mark.parametrize("path", ["/users/walls", "/users/{wall_user}/revoke"])
def test_a_supervisor_cannot_add_or_revoke_a_wall(path: str, client_as: Callable[[str], FlaskClient], seed: Seed,
                                                  engine: Engine) -> None:
    supervisor = client_as("supervisor")
    before = snapshot(engine)
    response = post(supervisor, path.format(**seed.ids()), name="Rogue wall")
    assert response.status_code == 403
    assert snapshot(engine) == before
    with Session(engine) as s:
        assert s.scalar(select(ConsoleUser.active).where(ConsoleUser.username == "seed-wall")) is True


def test_a_link_expires_unused(app: Flask, seed: Seed) -> None:
    clock = FakeClock()
    current_services(app).clock = clock
    clock.now += console_sessions.WALL_LINK_LIFETIME
    status, page = connect(app.test_client(), seed.wall_link)
    assert status == 200 and "This wall link does not work" in page


def test_a_revoked_wall_stays_revoked(app: Flask, seed: Seed, engine: Engine) -> None:
    revoke(app, seed)
    admin = app.test_client()
    assert login(admin, "admin").status_code == 302
    said = submit(admin, f"/users/{seed.users['wall']}/enable")
    assert "revoked wall display" in texts(said, "error")
    status, _ = connect(app.test_client(), seed.wall_link)
    assert status == 200


# --- 2. what the desk relies on ----------------------------------------------------------------------


def test_the_wall_has_no_idle_end_and_no_form_or_link(app: Flask, seed: Seed) -> None:
    clock = FakeClock()
    current_services(app).clock = clock
    screen = wall_screen(app, seed)
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    clock.now += timedelta(hours=13)  # past an operator's idle end and absolute end alike
    assert guard.get("/alarms").status_code == 302
    page = screen.get("/wall")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<form" not in html and not re.search(r'<a\s', html)
    assert 'data-stream="/stream"' in html and 'id="feed"' in html
    clock.now += console_sessions.WALL_LIFETIME
    assert screen.get("/wall").status_code == 401


def test_the_wall_cookie_outlives_an_operators_session(app: Flask, seed: Seed) -> None:
    screen = app.test_client()
    response = screen.post("/wall/connect", data={"csrf_token": csrf_token(screen), "token": seed.wall_link})
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("bb_session="))
    expires = re.search(r"Expires=([^;]+)", cookie)
    assert expires and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    left = parsedate_to_datetime(expires.group(1)) - datetime.now(UTC)
    assert left > console_sessions.WALL_LIFETIME - timedelta(days=1), left


def test_a_revoked_walls_open_stream_closes_and_says_so(make_app: Callable[..., Flask], site: SiteConfig,
                                                        seed: Seed) -> None:
    app = make_app(site, SESSION_CHECK_SECONDS=0.2)
    hub = current_services(app).hub
    screen = wall_screen(app, seed)
    chunks: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        for chunk in screen.get("/stream").response:  # type: ignore[attr-defined]
            chunks.put(chunk)
        chunks.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: hub.client_count == 1, 10, "the wall's stream subscribed")
    revoke(app, seed)
    seen: list[bytes] = []

    def closed() -> bool:
        while True:
            try:
                chunk = chunks.get_nowait()
            except queue.Empty:
                return False
            if chunk is None:
                return True
            seen.append(chunk)

    wait_until(closed, 10, "the revoked wall's stream to close")
    assert seen[-1] == b"event: session\ndata: ended\n\n"
    reader.join(5)
    assert hub.client_count == 0
    response = screen.get("/wall")  # what stream.js reloads: the screen says why
    assert response.status_code == 401 and REVOKED in response.get_data(as_text=True)


def test_every_step_is_audited(client_as: Callable[[str], FlaskClient], app: Flask, seed: Seed,
                               engine: Engine) -> None:
    admin = client_as("admin")
    said = submit(admin, "/users/walls", name="NOC wall")
    link = re.search(r"(http://\S+/wall/connect#(\S+))", texts(said, "secret"))
    assert link, said
    assert connect(app.test_client(), link.group(2)) == (302, "/wall")
    noc = people.wall_username("NOC wall")
    with Session(engine) as s:
        noc_id = s.scalar(select(ConsoleUser.id).where(ConsoleUser.username == noc))
    assert "Wall display revoked." in texts(submit(admin, f"/users/{noc_id}/revoke"), "info")
    kinds = [(e.kind, e.source, e.subject.get("user")) for e in console_log(engine)
             if e.kind.startswith(("admin.wall", "console.wall"))]
    assert kinds == [("admin.wall_added", "console:admin", noc), ("console.wall_connected", "console", noc),
                     ("admin.wall_revoked", "console:admin", noc)]
    assert link.group(2) not in "".join(e.raw for e in console_log(engine))
    page = admin.get("/users").get_data(as_text=True)
    assert "noc-wall" in page and "revoked" in page


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "x", "wall\nlogin"])
def test_a_hostile_or_short_wall_name_is_refused(name: str, client_as: Callable[[str], FlaskClient],
                                                 engine: Engine) -> None:
    said = submit(client_as("admin"), "/users/walls", name=name)
    assert texts(said, "error") and "<script>" not in texts(said, "secret")
    with Session(engine) as s:
        assert s.scalar(select(ConsoleUser.id).where(ConsoleUser.role == "wall",
                                                     ConsoleUser.username != "seed-wall")) is None


# --- 3. the CLI --------------------------------------------------------------------------------------


def test_the_cli_adds_lists_and_revokes_walls(site_file: Path, engine: Engine) -> None:
    ok(cli(site_file, "init"))
    added = ok(cli(site_file, "wall", "add", "NOC wall"))
    token = re.search(r"/wall/connect#(\S+)", added)
    assert token and "wall display noc-wall added" in added
    assert "noc-wall\tnot connected" in ok(cli(site_file, "wall", "list"))
    with Session(engine) as s:
        (row,) = s.scalars(select(ConsoleSession))
        assert row.token_sha256 == console_sessions.digest(token.group(1)) and row.ended_at is None
    assert "1 session(s) ended" in ok(cli(site_file, "wall", "revoke", "NOC wall"))
    assert "noc-wall\trevoked" in ok(cli(site_file, "wall", "list"))
    assert cli(site_file, "user", "add", "sneaky", "--role", "wall").returncode != 0
    assert cli(site_file, "wall", "revoke", "nobody").returncode != 0


def test_a_link_opened_in_a_logged_in_browser_ends_that_session(app: Flask, seed: Seed, engine: Engine) -> None:
    browser = app.test_client()
    assert login(browser, "guard").status_code == 302
    thief = copy_of(browser, app, {"REMOTE_ADDR": "127.0.0.1"})
    assert connect(browser, seed.wall_link) == (302, "/wall")
    assert browser.get("/alarms").status_code == 403  # a wall now, nothing else
    assert thief.get("/alarms").status_code == 302  # the guard's session ended with it
    (guard_session,) = sessions_of(engine, seed.users["guard"])
    assert guard_session.ended_reason == "replaced"


def test_a_wall_is_sent_door_events_without_who_or_what_was_recorded() -> None:
    """A wall is a screen visitors walk past: its stream carries door events only, with no name, no subject,
    no detail and no text (the console's own pages get all of it)."""
    from web.stream import for_wall

    granted = {"id": "e1", "kind": "access.granted", "door": "main-entrance", "subject": {"person": 1},
               "detail": {"reason": "granted"}, "shown": {"door_event": True, "who": {"name": "Ada", "person": 1},
                                                          "text": "Ada badged in", "label": "Access granted"}}
    motion = {"id": "e2", "kind": "motion.start", "door": "main-entrance", "subject": {}, "detail": {},
              "shown": {"door_event": False, "who": None, "text": "", "label": "Motion"}}
    shown = json.loads(for_wall(json.dumps({"events": [granted, motion]})))["events"]
    assert [e["id"] for e in shown] == ["e1"]
    assert shown[0]["subject"] == {} and shown[0]["detail"] == {}
    assert shown[0]["shown"]["who"] is None and shown[0]["shown"]["text"] == ""
    assert "Ada" not in json.dumps(shown) and shown[0]["shown"]["label"] == "Access granted"
