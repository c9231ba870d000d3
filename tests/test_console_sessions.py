"""Console sessions a desk can trust, tried as an attacker: a copied cookie, a session kept after a password
reset, a stolen cookie used for ever, a live feed that outlives its logout, session fixation, a login limit
that locks out a shared desk, and a password typed into the user name field that lands in the audit log.

Through Flask's test client on SQLite and PostgreSQL; the CLI as a real process; the disabled user's open
page in a real Chromium.
"""

from __future__ import annotations

import http.client
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import console_sessions, people
from badge_bridge.config import SiteConfig
from badge_bridge.models import Base, ConsoleSession, ConsoleUser
from tests import console_site as browser_tests
from tests import test_console_routes as routes
from tests.test_cli import cli, ok
from tests.test_console_routes import Seed, audited, console_log, csrf_token, login, messages, post, submit
from tests.waiting import wait_until
from web import current_services
from web.auth import current_session_ref

app, client_as, make_app, seed = routes.app, routes.client_as, routes.make_app, routes.seed
cheap_password_hashes = routes.cheap_password_hashes
"""The fixtures of the console's route and browser tests."""

ELSEWHERE = {"REMOTE_ADDR": "203.0.113.66", "HTTP_USER_AGENT": "curl/8.0 (the attacker's)"}
"""Another computer: another address and another browser."""


def copy_of(client: FlaskClient, app: Flask, environ: dict[str, str] | None = None) -> FlaskClient:
    """Another browser holding a copy of ``client``'s session cookie."""
    thief = app.test_client()
    thief.environ_base.update(environ or ELSEWHERE)
    thief.set_cookie("bb_session", client.get_cookie("bb_session").value)  # type: ignore[union-attr]
    return thief


def cookie_token(app: Flask, client: FlaskClient) -> str | None:
    """The session token inside a client's signed cookie (None: an anonymous session)."""
    cookie = client.get_cookie("bb_session")
    if cookie is None:
        return None
    data = app.session_interface.get_signing_serializer(app).loads(cookie.value)  # type: ignore[attr-defined]
    return data.get("sid")


def refused(client: FlaskClient, path: str = "/alarms") -> list[tuple[str, str]]:
    """Expect the login page for ``path``; return what it says."""
    response = client.get(path)
    assert response.status_code == 302 and urlsplit(response.location).path == "/login", response.status
    return messages(client.get(response.location))


def ended_says(reason: str) -> tuple[str, str]:
    from web.auth import ENDED

    return ("info", f"Your session has ended: {ENDED[reason]}. Please log in again.")


def rows(engine: Engine, user: str) -> list[ConsoleSession]:
    with Session(engine) as s:
        uid = s.scalar(select(ConsoleUser.id).where(ConsoleUser.username == user))
        return list(s.scalars(select(ConsoleSession).where(ConsoleSession.user_id == uid)
                              .order_by(ConsoleSession.created_at)))


class FakeClock:
    """The console's time, set by the test (Services.clock)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(app: Flask) -> FakeClock:
    fake = FakeClock()
    current_services(app).clock = fake
    return fake


# --- 1. a copied cookie, and what ends every session --------------------------------------------------


def test_a_cookie_copied_before_logout_is_refused_after_it(app: Flask, engine: Engine) -> None:
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    thief = copy_of(guard, app)
    assert thief.get("/alarms").status_code == 200  # the copy is a working cookie until the logout
    assert post(guard, "/logout").status_code == 302

    assert ended_says("logout") in refused(thief)
    assert ("info", "Please log in.") in refused(guard)  # the real browser's cookie was cleared
    (row,) = rows(engine, "guard")
    assert row.ended_reason == "logout" and row.ended_at is not None
    entry = audited(engine, "console.logout")
    assert entry.detail == {"everywhere": False, "sessions_ended": 1}
    assert row.token_sha256 not in entry.raw


def test_logout_ends_this_session_and_log_out_everywhere_ends_them_all(app: Flask, engine: Engine) -> None:
    desk, office = app.test_client(), app.test_client()
    assert login(desk, "guard").status_code == 302 and login(office, "guard").status_code == 302
    assert post(desk, "/logout").status_code == 302
    assert office.get("/alarms").status_code == 200  # plain logout: only this computer
    laptop = app.test_client()
    assert login(laptop, "guard").status_code == 302
    assert post(laptop, "/logout", everywhere="1").status_code == 302
    assert ended_says("logout_everywhere") in refused(office)
    assert [r.ended_reason for r in rows(engine, "guard")] == ["logout", "logout_everywhere", "logout_everywhere"]


@pytest.mark.parametrize(("action", "form", "reason", "kind"), [
    ("password", {}, "password_changed", "admin.password_reset"),
    ("disable", {}, "user_disabled", "admin.user_disabled"),
    ("role", {"role": "supervisor"}, "role_changed", "admin.role_changed"),
])
def test_an_admin_change_on_the_console_ends_every_session_of_the_user(
    action: str, form: dict[str, str], reason: str, kind: str, app: Flask, client_as: Callable[[str], FlaskClient],
    seed: Seed, engine: Engine,
) -> None:
    desk, other = client_as("guard"), client_as("guard")
    thief = copy_of(desk, app)
    bystander = client_as("supervisor")
    admin = client_as("admin")
    assert thief.get("/alarms").status_code == 200
    assert submit(admin, f"/users/{seed.users['guard']}/{action}", **form)
    for client in (desk, other, thief):
        assert ended_says(reason) in refused(client)
    assert bystander.get("/alarms").status_code == 200  # another user's session is untouched
    assert admin.get("/users").status_code == 200
    entry = audited(engine, kind)
    assert entry.source == "console:admin" and entry.detail["sessions_ended"] == 2
    assert {r.ended_reason for r in rows(engine, "guard")} == {reason}


@pytest.mark.parametrize(("args", "reason"), [
    (("password", "guard", "--password-stdin"), "password_changed"),
    (("disable", "guard"), "user_disabled"),
    (("role", "guard", "auditor"), "role_changed"),
], ids=["password", "disable", "role"])
def test_a_cli_change_ends_every_session_of_the_user(args: tuple[str, ...], reason: str, app: Flask,
                                                     site_file: Path, engine: Engine) -> None:
    desk = app.test_client()
    assert login(desk, "guard").status_code == 302
    out = ok(cli(site_file, "user", *args, stdin="a brand new password 1\n"))
    assert "1 session(s) ended" in out
    assert ended_says(reason) in refused(desk)
    if args[0] == "password":
        assert login(app.test_client(), "guard").status_code == 200  # the old password is refused
        assert login(app.test_client(), "guard", "a brand new password 1").status_code == 302
    with Session(engine) as s:
        raw = [e for e in s.scalars(select(Base.metadata.tables["audit_entry"].c.detail))]
    assert not any("a brand new password" in r for r in raw)


def test_a_cli_change_names_an_unknown_user_clearly(site_file: Path, seed: Seed) -> None:
    result = cli(site_file, "user", "disable", "nobody")
    assert result.returncode != 0 and "no console user 'nobody'" in result.stderr and "Traceback" not in result.stderr


# --- 2. time: idle, absolute end ----------------------------------------------------------------------


def test_a_stolen_cookie_stops_at_the_absolute_end_even_in_constant_use(app: Flask, clock: FakeClock,
                                                                         engine: Engine) -> None:
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    thief = copy_of(guard, app)
    started = clock.now
    limit = timedelta(hours=current_services(app).config.console.session_max_hours)
    while clock.now + timedelta(minutes=10) < started + limit:  # a request every 10 minutes: never idle
        clock.now += timedelta(minutes=10)
        assert thief.get("/alarms").status_code == 200, clock.now - started
    clock.now = started + limit
    assert ended_says("expired") in refused(thief)
    assert ended_says("expired") in refused(guard)  # the owner's own copy ends with it
    entry = audited(engine, "console.session_ended")
    assert entry.subject == {"user": "guard"} and entry.detail == {"reason": "expired"}


def test_an_idle_session_ends_on_the_server(app: Flask, clock: FakeClock, engine: Engine) -> None:
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    idle = timedelta(minutes=current_services(app).config.console.session_minutes)
    clock.now += idle - timedelta(seconds=1)
    assert guard.get("/alarms").status_code == 200
    clock.now += idle
    assert ended_says("idle") in refused(guard)
    clock.now -= idle * 3  # a clock set back does not revive it
    refused(guard)
    assert audited(engine, "console.session_ended").detail == {"reason": "idle"}


def test_last_seen_is_written_at_most_every_30_seconds(app: Flask, clock: FakeClock, engine: Engine) -> None:
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    (first,) = rows(engine, "guard")
    for _ in range(5):
        clock.now += timedelta(seconds=5)
        assert guard.get("/alarms").status_code == 200
    assert rows(engine, "guard")[0].last_seen_at == first.last_seen_at  # 25 s: no write
    clock.now += timedelta(seconds=6)
    assert guard.get("/alarms").status_code == 200
    assert rows(engine, "guard")[0].last_seen_at == clock.now


# --- 3. the live stream ----------------------------------------------------------------------------


def test_the_live_stream_ends_soon_after_logout(make_app: Callable[..., Flask], site: SiteConfig, seed: Seed,
                                                engine: Engine) -> None:
    app = make_app(site, SESSION_CHECK_SECONDS=0.2)
    hub = current_services(app).hub
    guard, other = app.test_client(), app.test_client()
    assert login(guard, "guard").status_code == 302 and login(other, "supervisor").status_code == 302
    chunks: queue.Queue[bytes | None] = queue.Queue()

    def read(client: FlaskClient) -> Callable[[], None]:
        def run() -> None:
            response = client.get("/stream")
            for chunk in response.response:  # type: ignore[attr-defined]
                chunks.put(chunk if client is guard else b"other:" + chunk)
            chunks.put(None if client is guard else b"other:closed")
        return run

    reader = threading.Thread(target=read(guard), daemon=True)
    reader.start()
    wait_until(lambda: hub.client_count == 1, 10, "the guard's stream subscribed")
    other_reader = threading.Thread(target=read(other), daemon=True)
    other_reader.start()
    wait_until(lambda: hub.client_count == 2, 10, "the supervisor's stream subscribed")
    hub.publish("events", '{"n": "before"}')
    assert post(guard, "/logout").status_code == 302
    logged_out = time.monotonic()
    after: list[bytes] = []

    def stream_closed() -> bool:
        hub.publish("events", '{"n": "after"}')  # the bridge keeps committing batches meanwhile
        while True:
            try:
                chunk = chunks.get_nowait()
            except queue.Empty:
                return False
            if chunk is None:
                return True
            if not chunk.startswith(b"other:"):
                after.append(chunk)

    wait_until(stream_closed, 15, "the logged-out guard's stream to close")
    took = time.monotonic() - logged_out
    batches = [c for c in after if c.startswith(b"event: events") and b"after" in c]
    assert after[-1] == b"event: session\ndata: ended\n\n"
    print(f"stream closed {took:.2f} s after logout, {len(batches)} batches sent after it (check every 0.2 s)")
    assert hub.client_count == 1  # the supervisor still watches
    reader.join(5)
    assert post(other, "/logout").status_code == 302  # and their stream ends with their own logout
    other_reader.join(15)
    assert not reader.is_alive() and not other_reader.is_alive()
    assert hub.client_count == 0


def test_a_stream_that_finds_its_session_expired_ends_and_audits_it(make_app: Callable[..., Flask],
                                                                     site: SiteConfig, seed: Seed,
                                                                     engine: Engine) -> None:
    """The desk's live page is often the first to find the session past its absolute end: that ending is
    audited like one a page request finds."""
    app = make_app(site, SESSION_CHECK_SECONDS=0.2)
    services = current_services(app)
    fake = FakeClock()
    services.clock = fake
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    chunks: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        for chunk in guard.get("/stream").response:  # type: ignore[attr-defined]
            chunks.append(chunk)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    wait_until(lambda: services.hub.client_count == 1, 10, "the guard's stream subscribed")
    fake.now += timedelta(hours=services.config.console.session_max_hours)
    wait_until(done.is_set, 15, "the stream to close at the session's end")
    assert chunks[-1] == b"event: session\ndata: ended\n\n"
    entry = audited(engine, "console.session_ended")
    assert entry.subject == {"user": "guard"} and entry.detail == {"reason": "expired"}


# --- 4. session fixation and current_session_ref --------------------------------------------------


def test_a_cookie_planted_before_login_is_never_the_logged_in_one(app: Flask) -> None:
    attacker = app.test_client()
    csrf_token(attacker)  # a session cookie from the login page, as the attacker would plant it
    planted = attacker.get_cookie("bb_session").value  # type: ignore[union-attr]
    victim = app.test_client()
    victim.set_cookie("bb_session", planted)
    assert login(victim, "supervisor").status_code == 302
    assert victim.get_cookie("bb_session").value != planted  # type: ignore[union-attr]
    assert cookie_token(app, victim) is not None
    assert attacker.get("/alarms").status_code == 302  # the planted cookie is still nobody's


def test_a_login_on_top_of_another_rotates_the_session_and_ends_the_old_one(app: Flask, engine: Engine) -> None:
    desk = app.test_client()
    assert login(desk, "guard").status_code == 302
    before = cookie_token(app, desk)
    copy = copy_of(desk, app)
    assert login(desk, "supervisor").status_code == 302
    after = cookie_token(app, desk)
    assert before and after and before != after
    assert ended_says("replaced") in refused(copy)
    assert desk.get("/doors").status_code == 200
    assert rows(engine, "guard")[0].ended_reason == "replaced"


def test_current_session_ref_names_the_live_row(app: Flask, engine: Engine) -> None:
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    with guard:
        assert guard.get("/alarms").status_code == 200
        ref = current_session_ref()
    (row,) = rows(engine, "guard")
    assert ref == row.token_sha256 == console_sessions.digest(cookie_token(app, guard) or "")
    assert len(ref) == 64 and int(ref, 16) >= 0
    assert row.ended_at is None and row.expires_at > datetime.now(UTC)
    post(guard, "/logout")
    (row,) = rows(engine, "guard")
    assert row.token_sha256 == ref and row.ended_reason == "logout"  # what the bridge checks a command against
    with app.test_request_context("/"), pytest.raises(LookupError):
        current_session_ref()


def test_only_the_hash_of_the_token_is_stored(app: Flask, engine: Engine) -> None:
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    token = cookie_token(app, guard)
    assert token and len(token) >= 40
    assert token not in dump(engine)


# --- 5. login limits --------------------------------------------------------------------------------

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
"""The limiter keeps its counts in memory; the database does not change what it counts."""


@SQLITE_ONLY
def test_successful_logins_are_never_counted(app: Flask) -> None:
    for _ in range(12):
        client = app.test_client()
        assert login(client, "guard").status_code == 302
        assert post(client, "/logout").status_code == 302


@SQLITE_ONLY
def test_a_shared_desk_address_is_not_locked_out_by_failures_up_to_the_limit(app: Flask) -> None:
    limits = current_services(app).config.console
    assert (limits.login_failures_per_address, limits.login_failures_per_account,
            limits.login_window_minutes) == (100, 5, 15)  # the figures docs/console.md gives
    client = app.test_client()
    for i in range(limits.login_failures_per_address - 1):  # many people at one NAT address mistyping
        response = login(client, f"someone-{i % 40}", "wrong password")
        assert response.status_code == 200, i
    assert login(client, "guard").status_code == 302  # a guard on another account still gets in
    assert post(client, "/logout").status_code == 302
    assert login(client, "nobody", "wrong").status_code == 200  # the hundredth failure
    response = login(client, "supervisor")
    assert response.status_code == 429 and "from this address" in response.get_data(as_text=True)
    elsewhere = app.test_client()
    elsewhere.environ_base.update(ELSEWHERE)
    assert login(elsewhere, "supervisor").status_code == 302


@SQLITE_ONLY
def test_an_account_is_locked_after_its_failures_with_the_consoles_own_page(app: Flask, engine: Engine) -> None:
    for n in range(5):  # from five addresses: the account's count does not care where from
        attacker = app.test_client()
        attacker.environ_base.update({"REMOTE_ADDR": f"198.51.100.{n + 1}"})
        assert login(attacker, " Guard ", f"guess {n}").status_code == 200  # the same account however typed
    desk = app.test_client()
    response = login(desk, "guard")  # even the right password, while the lock lasts
    assert response.status_code == 429
    body = response.get_data(as_text=True)
    assert "<title>Too many login attempts · badge-bridge</title>" in body
    assert 'href="/static/console.css"' in body and '<section class="card">' in body
    assert "Too many failed logins for this user name." in body and "Traceback" not in body
    retry = int(response.headers["Retry-After"])
    assert 0 < retry <= 15 * 60
    assert response.headers["Content-Security-Policy"]
    assert desk.get("/alarms").status_code == 302
    assert login(desk, "supervisor").status_code == 302  # another account from the same address
    assert len(console_log(engine, "console.login_failed")) == 5  # the refused attempt changed nothing


@SQLITE_ONLY
def test_a_forged_forwarded_for_changes_nothing_unless_a_proxy_is_configured(
    make_app: Callable[..., Flask], site: SiteConfig, seed: Seed, engine: Engine
) -> None:
    few = site.console.model_copy(update={"login_failures_per_address": 3})
    app = make_app(site.model_copy(update={"console": few}))
    client = app.test_client()
    for n in range(3):
        client.environ_base["HTTP_X_FORWARDED_FOR"] = f"192.0.2.{n}"  # a new address each time, says the header
        assert login(client, f"user-{n}", "wrong").status_code == 200
    assert login(client, "guard").status_code == 429
    assert {e.detail["address"] for e in console_log(engine, "console.login_failed")} == {"127.0.0.1"}

    proxied = make_app(site.model_copy(update={"console": few.model_copy(update={"trusted_proxies": 1})}))
    behind = proxied.test_client()
    behind.environ_base["HTTP_X_FORWARDED_FOR"] = "10.1.2.3"
    assert login(behind, "supervisor").status_code == 302
    assert audited(engine, "console.login").detail == {"address": "10.1.2.3"}


# --- 6. what a failed login records -----------------------------------------------------------------

TYPED = "Hunter2-is-my-PASSWORD!"
"""A password typed into the user name field."""


def dump(engine: Engine) -> str:
    """Every row of every table, as text."""
    with Session(engine) as s:
        return "\n".join(str(tuple(row)) for table in Base.metadata.sorted_tables for row in s.execute(table.select()))


def test_a_failed_login_by_a_name_no_account_has_stores_that_name_nowhere(
    app: Flask, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = app.test_client()
    for _ in range(6):  # into the per-account limit, whose log line names the limit's key
        login(client, TYPED, "anything")
    assert login(client, TYPED, "anything").status_code == 429
    assert login(client, "guard", "wrong password").status_code == 200
    entries = console_log(engine, "console.login_failed")
    assert [e.subject for e in entries] == [{"user": "(unknown user)"}] * 5 + [{"user": "guard"}]
    stored = dump(engine)
    for form in (TYPED, TYPED.lower(), TYPED.lower().strip()):
        assert form not in stored
        assert form not in caplog.text
    assert "anything" not in stored and "wrong password" not in stored


# --- 7. a real browser --------------------------------------------------------------------------------


def test_a_disabled_users_open_page_goes_to_the_login_page(console: Any, browser: Any, artifacts: Path) -> None:
    with Session(console.engine) as s, s.begin():
        people.add_user(s, "test", "ada-admin", "admin", browser_tests.PASSWORD)
    gus = browser_tests.Watched(browser, console.url)
    gus.login("gus")
    gus.shot(artifacts / "01-guard-watching.png")
    admin = browser_tests.Watched(browser, console.url)
    admin.login("ada-admin")
    admin.page.goto("/users")
    admin.page.locator("tr", has_text="gus").locator("button:has-text('Disable')").click()
    admin.page.wait_for_selector("p.flash.info:has-text('User disabled.')")
    admin.shot(artifacts / "02-admin-disabled-gus.png")

    page = gus.page
    if page.locator("header nav").count():  # the next action, unless the live feed already sent it away
        try:
            page.click("nav a:has-text('Doors')", timeout=3000)
        except Exception:  # the feed's own reload won the race: the page is at the login already
            pass
    page.wait_for_url("**/login**")
    page.wait_for_selector("p.flash:has-text('Your session has ended: the user was disabled.')")
    assert page.locator("header nav").count() == 0
    gus.shot(artifacts / "03-guard-sent-to-login.png")
    assert gus.errors == [], gus.errors



@SQLITE_ONLY
def test_a_hostile_host_header_is_not_reflected(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/alarms?x=1", headers={"Host": "evil.example"})
    assert response.status_code == 302 and "evil.example" not in response.location, response.location
    assert login(client, "guard", next="/alarms").location == "/alarms"


def test_one_login_holds_a_bounded_number_of_streams(make_app: Callable[..., Flask], site: SiteConfig,
                                                     seed: Seed) -> None:
    """Each open stream holds a server thread for its life: a stolen cookie (a wall's lives a year) opening
    streams in a loop holds STREAMS_PER_SESSION at most, each new one ending its oldest (a guard clicking
    through pages leaves streams the server only learns are closed when it next writes to them)."""
    from werkzeug.serving import make_server

    from web.services import STREAMS_PER_SESSION

    app = make_app(site)
    hub = current_services(app).hub
    guard, other = app.test_client(), app.test_client()
    assert login(guard, "guard").status_code == 302 and login(other, "supervisor").status_code == 302
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/stream"

    def open_stream(client: FlaskClient) -> http.client.HTTPResponse:
        cookie = "; ".join(f"{c.key}={c.value}" for c in client._cookies.values())  # the browser's cookie
        response = urllib.request.urlopen(urllib.request.Request(base, headers={"Cookie": cookie}), timeout=10)
        assert response.readline() == b"retry: 2000\n"
        return response

    try:
        held = [open_stream(guard) for _ in range(STREAMS_PER_SESSION)]
        theirs = open_stream(other)
        wait_until(lambda: hub.client_count == STREAMS_PER_SESSION + 1, 10, "the streams subscribed")
        newest = open_stream(guard)  # one more: the oldest of this login ends, another login's stays
        held[0].read()  # returns only once the server has ended that stream (a live one would time out)
        assert hub.client_count == STREAMS_PER_SESSION + 1

        def sees(response: http.client.HTTPResponse, marker: bytes) -> bool:
            while True:  # the stream's opening lines (door states, the alarm version), then the event
                line = response.readline()
                if not line or line.startswith(marker):
                    return bool(line)

        hub.publish("events", '{"events": []}')
        assert all(sees(r, b"event: events") for r in (*held[1:], newest, theirs))
        for response in (*held, newest, theirs):
            response.close()
    finally:
        server.shutdown()
