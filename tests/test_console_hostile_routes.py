"""No 500 from the outside (issue 14, part 5): every route of the console, walked with hostile path, query
and form values, as anonymous and as each role, on SQLite and PostgreSQL; and each finding of the issue as a
named test.

The walker enumerates ``app.url_map`` itself and finds which query parameters and form fields each view
reads by recording them (a first pass as admin), so a new route, parameter or field is walked without being
listed here. An answer of 500, or an exception out of a view (the test app propagates them), is a finding.
"""

from __future__ import annotations

import html
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import flask
import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.routing import AnyConverter, Rule
from werkzeug.test import TestResponse

from badge_bridge import people
from badge_bridge.config import SiteConfig
from badge_bridge.events import Event, InvalidEvent
from badge_bridge.models import ConsoleUser
from tests import test_console_routes as console
from tests.test_console_routes import ROLES, ROUTES, Seed, csrf_token, login
from web import auth
from web.params import BIG_ID_MAX, DbIdConverter, Sha256Converter, db_id

app, client_as, make_app, seed = console.app, console.client_as, console.make_app, console.seed
cheap_password_hashes = console.cheap_password_hashes
"""The fixtures of the route tests: the seeded site, its app, a logged-in browser per role."""


@pytest.fixture(autouse=True)
def cheap_unknown_user_hash(cheap_password_hashes: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login as an unknown user is checked against a dummy hash (as long as a real one): with the cheapest
    argon2id parameters, as the seeded users' are, the walker's hundreds of hostile user names take no minute."""
    monkeypatch.setattr(auth, "DUMMY_HASH", people.hasher.hash("not a password of anyone's"))

HUGE = "99999999999999999999999"
"""10**23, the value of the issue."""

HOSTILE: dict[str, str] = {
    # name: the value as it travels, percent-encoded (so invalid UTF-8 and NUL can be sent as they would be)
    "10**23": HUGE,
    "2**63": str(2**63),
    "2**64": str(2**64),
    "2**31": str(2**31),  # over PostgreSQL's integer
    "2**63-1": str(BIG_ID_MAX),  # the largest BIGINT: well formed, absent
    "-1": "-1",
    "0": "0",
    "leading zero": "007",
    "plus": "%2B1",
    "fullwidth digits": quote("１２"),
    "arabic-indic digits": quote("١٢"),
    "NUL": "1%00",
    "newline": "1%0A",
    "CR": "1%0D",
    "C1 control": quote("1\x85"),
    "RTL override": quote("\u202egpj.exe"),
    "emoji": quote("😀"),
    "10 kB": "A" * 10_240,
    "traversal": quote("../../etc/passwd", safe=""),
    "invalid UTF-8": "%FF%FE%C3%28",
    "percent garbage": "%zz%%2500",
    "quotes": quote("' OR \"1\"=\"1\"; --"),
    "cursor, huge time": quote(f"{HUGE}:1"),
    "empty": "",
}
ID_SHAPED = ("10**23", "2**63", "2**64", "2**31", "2**63-1", "-1", "0", "leading zero", "plus", "fullwidth digits",
             "arabic-indic digits", "NUL", "newline", "CR", "cursor, huge time")
"""In an ``<id:…>`` path position, those its column cannot hold are no route at all: 404, for every role and
anonymous alike. (The others change the path's shape: a traversal, an empty segment.)"""
CONTROL = ("NUL", "newline", "CR", "C1 control")
"""In a query parameter: 400, before any view, login or CSRF check."""
FORM_CONTROL = ("NUL", "C1 control")
"""In a form field (tab and line breaks belong in a comment): 400 likewise."""
COMMON_PARAMETERS = ("person", "door", "area", "kind", "since", "until", "before", "after", "q", "page", "limit",
                     "from", "to", "next", "id")
"""Sent together to every route as well, whether its view reads them or not."""
SESSION_ENDPOINTS = frozenset({"auth.login", "auth.logout"})
"""Walked with a new browser for each request: logging out ends the walk's session, and failed logins count
against the address's login limit."""
VIEWERS = ("anonymous", *ROLES)


# --- the walker's browser ----------------------------------------------------------------------------

_addresses = itertools.count(1)


def browser(app: Flask, role: str) -> FlaskClient:
    """A new browser at an address of its own (the login limit counts per address), logged in as ``role``."""
    n = next(_addresses)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    if role != "anonymous":
        assert login(client, role).status_code == 302, f"{role} could not log in"
    return client


READ: set[tuple[str, str]] = set()
"""("query" or "form", name): what the current request's view asked for."""


class Recorded(ImmutableMultiDict[str, str]):
    """Query and form values that note each name looked up (``get``, ``[]``, ``in``, ``getlist``)."""

    def _note(self, key: object) -> None:
        cached = flask.request.__dict__  # werkzeug caches request.args and request.form there
        READ.add(("form" if cached.get("form") is self else "query", str(key)))

    def __getitem__(self, key: str) -> str:
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)

    def getlist(self, key: str, type: Any = None) -> list[Any]:
        self._note(key)
        return super().getlist(key, type)


class RecordingRequest(Request):
    parameter_storage_class = Recorded


# --- the probes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    endpoint: str
    method: str
    path: str
    absent: str = ""
    """The route's path with absent ids: where a viewer's access is tried without changing anything."""
    query: str = ""
    form: str = ""
    """Percent-encoded, as sent (with the CSRF token added per browser)."""
    where: str = ""
    """What is hostile, for the report."""
    expect: int | None = None
    """The exact answer, for every viewer; None: anything but a server error."""

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} {self.where}"


VARIABLE = re.compile(r"<(?:[^:<>]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def baselines(seed: Seed) -> dict[str, str]:
    """Valid path values by argument name; an argument not named here gets one from its converter."""
    return {"person_id": str(seed.person), "entry_id": str(seed.event), "alarm_id": str(seed.open_alarm),
            "credential_id": str(seed.credential), "user_id": str(seed.users["guard"]), "key": "main-entrance",
            "sha256": seed.evidence, "filename": "console.css"}


ABSENT = frozenset({"person_id", "entry_id", "alarm_id", "credential_id", "user_id"})
"""Ids that, set to their column's largest value, name nothing: a request then changes nothing."""


def largest(rule: Rule, name: str) -> str:
    converter = rule._converters[name]
    assert isinstance(converter, DbIdConverter), f"{rule.rule}: {name} is not an <id:…>"
    return str(2 ** (converter.bits - 1) - 1)


def not_an_id(rule: Rule, name: str, label: str) -> bool:
    converter = rule._converters[name]
    if not isinstance(converter, DbIdConverter) or label not in ID_SHAPED:
        return False
    try:
        db_id(unquote(HOSTILE[label]), converter.bits)
    except ValueError:
        return True
    return False


def baseline(rule: Rule, name: str, known: dict[str, str]) -> str:
    converter = rule._converters[name]
    if name in known:
        return known[name]
    if isinstance(converter, AnyConverter):
        return sorted(converter.items)[0]
    if isinstance(converter, DbIdConverter):
        return largest(rule, name)  # well formed, absent
    if isinstance(converter, Sha256Converter):
        return "0" * 64
    return "x"


def path(rule: Rule, values: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: values[m.group(1)], rule.rule)


def methods(rule: Rule) -> list[str]:
    return sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})


def urlencoded(fields: dict[str, str]) -> str:
    """Field values already percent-encoded."""
    return "&".join(f"{quote(k)}={v}" for k, v in fields.items())


def valid_forms() -> dict[tuple[str, str], dict[str, str]]:
    """A valid form per route, from the route matrix of test_console_routes (uploads left out: these are
    sent urlencoded, so invalid UTF-8 arrives as it would). A route missing there is walked with no fields
    but those its view reads."""
    return {(r.endpoint, r.method): {k: quote(v) for k, v in r.form.items()
                                     if isinstance(v, str)} for r in ROUTES}


def discover(app: Flask, seed: Seed) -> dict[tuple[str, str], tuple[set[str], set[str]]]:
    """(endpoint, method) -> (query parameters, form fields) its view reads: each route asked once as admin,
    with a valid form but absent ids, so that nothing changes; the reads recorded."""
    known = baselines(seed)
    forms = valid_forms()
    found: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    for rule in app.url_map.iter_rules():
        values = {n: largest(rule, n) if n in ABSENT else baseline(rule, n, known) for n in rule.arguments}
        for method in methods(rule):
            client = browser(app, "admin")
            token = csrf_token(client) if method == "POST" else None
            READ.clear()
            response = send(client, Probe(rule.endpoint, method, path(rule, values),
                                          form=urlencoded(forms.get((rule.endpoint, method), {}))), token)
            assert response.status_code < 500, (rule.endpoint, method, response.status)
            found[(rule.endpoint, method)] = ({n for where, n in READ if where == "query"},
                                              {n for where, n in READ if where == "form"} - {"csrf_token"})
    return found


def probes(app: Flask, seed: Seed) -> list[Probe]:
    known = baselines(seed)
    reads = discover(app, seed)
    forms = valid_forms()
    out: list[Probe] = []
    for rule in app.url_map.iter_rules():
        base = {n: baseline(rule, n, known) for n in rule.arguments}
        absent = path(rule, {n: largest(rule, n) if n in ABSENT else v for n, v in base.items()})
        for method in methods(rule):
            query_names, field_names = reads[(rule.endpoint, method)]
            form = forms.get((rule.endpoint, method), {}) if method == "POST" else {}
            for label, value in HOSTILE.items():
                # a hostile path with a valid form, so the view goes as far as it can with the path's value;
                # query probes post no fields (a valid form would act: an export, each time)
                for name in sorted(rule.arguments):
                    expect = 404 if not_an_id(rule, name, label) else None
                    out.append(Probe(rule.endpoint, method, path(rule, {**base, name: value}), absent,
                                     form=urlencoded(form), where=f"path {name}={label}", expect=expect))
                for name in sorted(query_names):
                    out.append(Probe(rule.endpoint, method, path(rule, base), absent, query=f"{quote(name)}={value}",
                                     where=f"query {name}={label}", expect=400 if label in CONTROL else None))
                if method == "GET":
                    out.append(Probe(rule.endpoint, method, path(rule, base), absent,
                                     query=urlencoded(dict.fromkeys(COMMON_PARAMETERS, value)),
                                     where=f"query {'/'.join(COMMON_PARAMETERS)}={label}",
                                     expect=400 if label in CONTROL else None))
                for name in sorted(field_names):  # one field hostile in an otherwise valid form
                    out.append(Probe(rule.endpoint, method, path(rule, base), absent, form=urlencoded({**form, name: value}),
                                     where=f"form {name}={label}", expect=400 if label in FORM_CONTROL else None))
    return out


def send(client: FlaskClient, probe: Probe, token: str | None = None) -> TestResponse:
    form = f"csrf_token={quote(token)}&{probe.form}" if token else probe.form
    response = client.open(probe.path, method=probe.method, query_string=probe.query,
                           data=form.encode() if probe.method == "POST" else None,
                           content_type="application/x-www-form-urlencoded" if probe.method == "POST" else None)
    if response.mimetype == "text/event-stream":  # the live feed never ends: its first message, then hang up
        next(iter(response.response))
        response.close()
    return response


@dataclass
class Walk:
    probes: int = 0
    requests: int = 0
    findings: list[str] = field(default_factory=list)


def refused(response: TestResponse) -> bool:
    return response.status_code == 403 or (response.status_code == 302 and response.location.startswith("/login"))


def walk(app: Flask, seed: Seed) -> Walk:
    """Each probe as each viewer. A viewer the route refuses is refused before its view reads anything: for
    it only the path is walked (routing, and its 404s, come before the login and role checks)."""
    app.request_class = RecordingRequest
    plan = probes(app, seed)
    result = Walk(probes=len(plan))
    for role in VIEWERS:
        client = browser(app, role)
        token = csrf_token(client)
        allowed: dict[tuple[str, str], bool] = {}
        for probe in plan:
            if probe.endpoint in SESSION_ENDPOINTS:  # logging out, and the login limit: a browser each
                now, now_token = browser(app, role), None
            else:
                now, now_token = client, token
                route = (probe.endpoint, probe.method)
                if route not in allowed:
                    allowed[route] = not refused(send(client, Probe(*route, probe.absent), token))
                if not allowed[route] and not probe.where.startswith("path"):
                    continue
            result.requests += 1
            try:
                response = send(now, probe, (now_token or csrf_token(now)) if probe.method == "POST" else None)
            except Exception as exc:  # each one a finding, all of them reported
                result.findings.append(f"{role}: {probe}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            if response.status_code >= 500 or (probe.expect is not None and response.status_code != probe.expect):
                result.findings.append(f"{role}: {probe}: {response.status} (expected {probe.expect or '< 500'})")
    return result


def test_every_route_survives_hostile_values(app: Flask, seed: Seed, db_url: str) -> None:
    started, cpu = time.perf_counter(), time.process_time()
    result = walk(app, seed)
    rules = sum(len(methods(r)) for r in app.url_map.iter_rules())
    print(f"\nhostile walk on {db_url.split(':')[0]}: {rules} routes x {len(HOSTILE)} values x {len(VIEWERS)} viewers: "
          f"{result.probes} probes, {result.requests} requests in {time.perf_counter() - started:.1f} s "
          f"({time.process_time() - cpu:.1f} s CPU)")
    assert not result.findings, "\n".join(result.findings[:60]) + f"\n({len(result.findings)} in all)"


# --- the findings of the issue, by name --------------------------------------------------------------

CONSOLE_PAGE = re.compile(r'<section class="card"><h1>([^<]*)</h1><p>([^<]*)</p></section>')
"""The console's own error page (error.html): its title and message."""


def error_page(response: TestResponse, status: int) -> tuple[str, str]:
    """(title, message) of the console's error page, asserting the status and the security headers."""
    assert response.status_code == status, (response.status, response.get_data(as_text=True)[:300])
    console.assert_security_headers(response)
    found = CONSOLE_PAGE.search(response.get_data(as_text=True))
    assert found, f"not the console's page: {response.get_data(as_text=True)[:300]}"
    return found.group(1), html.unescape(found.group(2))


@pytest.mark.parametrize(("url", "status", "reason"), [
    (f"/events/{HUGE}", 404, "There is nothing here."),
    (f"/people/{HUGE}", 404, "There is nothing here."),
    (f"/events?person={HUGE}", 400, "person: expected a record number from 1 to 2147483647."),
    (f"/events?before={HUGE}:1", 400, "before: expected TIME:ID from the event log's Older link."),
    ("/evidence/{evidence}%0a", 404, "There is nothing here."),
], ids=["event id", "person id", "person filter", "page cursor", "evidence digest and newline"])
def test_the_issues_urls_answer_404_or_400(url: str, status: int, reason: str,
                                           client_as: Callable[[str], FlaskClient], seed: Seed) -> None:
    """Each answered 500 (SQLite: "Python int too large to convert to SQLite INTEGER"; the digest's
    pattern ended in ``$``, which matches before a final newline)."""
    _, message = error_page(client_as("guard").get(url.format(evidence=seed.evidence)), status)
    assert message == reason


@pytest.mark.parametrize(("url", "status"), [
    ("/people/2147483648", 404),  # PostgreSQL: integer out of range
    ("/alarms/2147483648/acknowledge", 404),
    ("/events?person=2147483648", 400),
    ("/events/9223372036854775808", 404),  # over BIGINT
    ("/events?door=%00", 400),  # PostgreSQL: "cannot contain NUL (0x00) bytes"
    ("/events?kind=access.%00", 400),
    ("/people?q=%00", 400),
    ("/people?q=" + "A" * 10_240, 400),
], ids=lambda v: str(v)[:40])
def test_postgresqls_limits_are_the_consoles(url: str, status: int, client_as: Callable[[str], FlaskClient]) -> None:
    """What PostgreSQL refuses (a 32-bit integer key over 2**31-1, NUL in text) never reaches it."""
    client = client_as("admin")
    response = client.post(url, data={"csrf_token": csrf_token(client), "comment": "x"}) if "/acknowledge" in url \
        else client.get(url)
    error_page(response, status)


def test_a_nul_in_the_login_form_is_refused_before_the_database(app: Flask, engine: Engine) -> None:
    client = browser(app, "anonymous")
    response = client.post("/login", data={"csrf_token": csrf_token(client), "username": "guard\x00", "password": "x"})
    assert error_page(response, 400) == ("Request refused", "The form contains a control character.")


FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
OTHER_SPELLINGS: dict[str, Callable[[str], str]] = {
    "fullwidth": lambda n: n.translate(FULLWIDTH),
    "arabic-indic": lambda n: n.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    "leading zero": lambda n: f"0{n}",
    "plus": lambda n: f"+{n}",
    "decimal point": lambda n: f"{n}.0",
    "space": lambda n: f" {n}",
}


@pytest.mark.parametrize("spelling", OTHER_SPELLINGS)
def test_an_id_is_canonical_ascii_decimal(spelling: str, client_as: Callable[[str], FlaskClient], seed: Seed) -> None:
    """Werkzeug's ``int`` converter read "１" (fullwidth) and "01" as person 1: one record, many addresses."""
    guard = client_as("guard")
    assert guard.get(f"/people/{seed.person}").status_code == 200
    error_page(guard.get("/people/" + quote(OTHER_SPELLINGS[spelling](str(seed.person)))), 404)


def test_the_error_pages_are_the_consoles(make_app: Callable[..., Flask], site: SiteConfig, seed: Seed,
                                          client_as: Callable[[str], FlaskClient]) -> None:
    guard = client_as("guard")
    assert error_page(guard.get("/no-such-page"), 404)[0] == "Not found"
    refused = guard.get("/logout")
    assert error_page(refused, 405)[0] == "Not allowed here" and refused.headers["Allow"] == "OPTIONS, POST"
    assert error_page(guard.get("/events?kind=%0a"), 400) == ("Request refused",
                                                            "The address contains a control character.")
    small = make_app(site, MAX_CONTENT_LENGTH=1024)
    admin = small.test_client()
    assert login(admin, "admin").status_code == 302
    big = admin.post("/people", data={"csrf_token": csrf_token(admin), "name": "A" * 2048})
    assert error_page(big, 413)[0] == "Too large"


def test_a_server_error_says_nothing_of_its_cause(make_app: Callable[..., Flask], site: SiteConfig, seed: Seed,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(site, PROPAGATE_EXCEPTIONS=False)  # as in production: the error handler answers

    def broken() -> str:
        raise RuntimeError("secret-detail at /var/lib/badge-bridge")

    app.add_url_rule("/broken", view_func=broken)
    response = app.test_client().get("/broken")
    assert response.status_code == 500 and response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert "Something went wrong" in body
    assert "secret-detail" not in body and "Traceback" not in body and "RuntimeError" not in body
    console.assert_security_headers(response)
    assert "secret-detail" in caplog.text  # the log has it, for the administrator


def test_a_user_name_is_matched_whole(client_as: Callable[[str], FlaskClient], engine: Engine) -> None:
    """USERNAME_RE ended in ``$``: "night-guard\\n" was a valid user name, a second "night-guard"."""
    flashed = console.submit(client_as("admin"), "/users", username="night-guard\n", role="guard")
    assert "user name" in console.texts(flashed, "error").lower()
    with Session(engine) as s:
        assert s.scalars(select(ConsoleUser).where(ConsoleUser.username.startswith("night-guard"))).all() == []


@pytest.mark.parametrize("spelling", ["newline", "fullwidth", "leading space", "a day"])
def test_an_export_month_is_matched_whole(spelling: str, client_as: Callable[[str], FlaskClient], site: SiteConfig,
                                          engine: Engine) -> None:
    """MONTH_RE ended in ``$`` and took ``\\d``: "2026-12\\n" and "２０２６-12" went on to the export of this
    month (the seeded log's): a 500 for the newline in the file's name, a zip for the fullwidth digits."""
    this_month = datetime.now(ZoneInfo(site.site.timezone))
    month = {"newline": f"{this_month:%Y-%m}\n", "fullwidth": f"{this_month:%Y}".translate(FULLWIDTH) + f"-{this_month:%m}",
             "leading space": f" {this_month:%Y-%m}", "a day": f"{this_month:%Y-%m-%d}"}[spelling]
    auditor = client_as("auditor")
    flashed = console.submit(auditor, "/audit/export", month=month)
    assert "Month: expected YYYY-MM" in console.texts(flashed, "error")
    assert console.console_log(engine, "console.export_downloaded") == []
    assert console.post(auditor, "/audit/export", month=f"{this_month:%Y-%m}").mimetype == "application/zip"


@pytest.mark.parametrize("pin", ["１２３４", "١٢٣٤", "1234\n"], ids=repr)
def test_a_pin_is_ascii_digits(pin: str, client_as: Callable[[str], FlaskClient], seed: Seed, engine: Engine) -> None:
    """The PIN field took ``\\d``, and badge_bridge.people ``str.isdigit``: a PIN of fullwidth digits was issued,
    one no keypad can type."""
    admin = client_as("admin")
    before = console.snapshot(engine)
    flashed = console.submit(admin, f"/people/{seed.person}/credentials", fmt="wiegand26",
                             number="12:2001", pin=pin)
    assert "A PIN is 4 to 8 digits." in console.texts(flashed, "error")
    assert console.snapshot(engine) == before
    with Session(engine) as s, pytest.raises(people.AdminError, match="a PIN is 4 to 8 digits"):
        people.add_credential(s, "cli:test", seed.person, "wiegand26", "12:2002", pepper=b"p" * 32, pin="１２３４")


@pytest.mark.parametrize("field", ["id", "kind", "source", "door"])
def test_an_event_name_is_matched_whole(field: str) -> None:
    """ID_RE, KIND_RE and NAME_RE ended in ``$``: a device's "door\\n" was a valid door, into the log."""
    valid = {"id": "e-1", "kind": "access.granted", "source": "ctl-1", "door": "main-entrance"}
    Event(**valid, ts=datetime.now(UTC))
    with pytest.raises(InvalidEvent):
        Event(**{**valid, field: valid[field] + "\n"}, ts=datetime.now(UTC))


@pytest.mark.parametrize(("text", "bits", "ok"), [
    ("1", 32, True), (str(2**31 - 1), 32, True), (str(2**31), 32, False),
    (str(2**63 - 1), 64, True), (str(2**63), 64, False), (HUGE, 64, False),
    ("0", 64, False), ("01", 64, False), ("-1", 64, False), ("１", 64, False), ("1\n", 64, False), ("", 32, False),
])
def test_a_database_id(text: str, bits: int, ok: bool) -> None:
    if ok:
        assert db_id(text, bits) == int(text)
    else:
        with pytest.raises(ValueError, match="expected a record number"):
            db_id(text, bits)


def test_a_control_character_in_the_next_page_refuses_the_login(app: Flask, engine: Engine) -> None:
    """``/<tab>/host`` leaves a browser as ``//host``: refused with the address, before any login (moved here from
    test_login_does_not_redirect_off_site, where it was a login that ignored the page asked for)."""
    client = browser(app, "anonymous")
    response = console.login(client, "guard", next="/\t/evil.example")
    assert error_page(response, 400)[1] == "The address contains a control character."
    assert "Location" not in response.headers
    assert console.console_log(engine, "console.login") == []
