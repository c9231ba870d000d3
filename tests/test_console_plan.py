"""Floor plans and the lockdown banner, attacker first: hostile drawings (script, outside references,
entity expansion, size), traversal in the drawing's path, unknown doors and positions off the drawing, XSS
through door names into icons and the banner, the drawing's own CSP, who may see what (the wall too), and
the banner drawn from the database on every page (browser tests: test_console_plan_browser.py)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from badge_bridge.config import ConfigError, SiteConfig, load_config
from badge_bridge.floor_plan import MAX_BYTES, DrawingError, check_svg
from badge_bridge.models import SiteState
from tests import test_console_routes as routes
from tests.conftest import EXAMPLE_SITE, ROOT
from tests.test_console_routes import Seed, login, page

app, cheap_password_hashes, client_as, make_app, seed = (  # the route tests' fixtures, shared
    routes.app, routes.cheap_password_hashes, routes.client_as, routes.make_app, routes.seed)

SVG = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 100 50">{}</svg>'
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
          + SVG.format("<text>&d;</text>"))
HOSTILE = {
    "script": (SVG.format("<script>alert(1)</script>"), "<script> element"),
    "script in another namespace": (SVG.format('<h:script xmlns:h="http://www.w3.org/1999/xhtml">alert(1)</h:script>'),
                                    "<script> element"),
    "event handler": (SVG.format('<rect width="5" height="5" onclick="alert(1)"/>'), "event handler (onclick"),
    "onload on the root": (SVG.replace("viewBox", 'onload="alert(1)" viewBox'), "event handler (onload"),
    "foreignObject": (SVG.format('<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>'),
                      "<foreignObject> element"),
    "javascript link": (SVG.format('<a href="javascript:alert(1)"><text>x</text></a>'), "refers to 'javascript:"),
    "external image": (SVG.format('<image href="https://evil.example/track.png"/>'), "refers to 'https://evil"),
    "xlink to a local file": (SVG.format('<image xlink:href="file:///etc/passwd"/>'), "refers to 'file:///etc"),
    "use of another file": (SVG.format('<use href="other.svg#door"/>'), "refers to 'other.svg#door'"),
    "nested svg picture": (SVG.format('<image href="data:image/svg+xml;base64,PHN2Zy8+"/>'), "refers to 'data:image/svg"),
    "animation that rewrites a link": (SVG.format('<a href="#x"><set attributeName="href" to="javascript:alert(1)"/></a>'),
                                       "<set> element"),
    "css url": (SVG.format('<rect style="fill: url(https://evil.example/x)"/>'), "outside the drawing (url"),
    "css url quoted": (SVG.format('<rect fill="url(\'//evil.example/x\')"/>'), "outside the drawing (url"),
    "style import": (SVG.format("<style>@import 'https://evil.example/x.css';</style>"), "<style> refers"),
    "style url": (SVG.format("<style>rect { fill: url(http://evil.example/x) }</style>"), "<style> refers"),
    "style url split by a character reference": (SVG.format("<style>rect{fill:&#117;rl(https://evil.example/x)}</style>"),
                                                  "<style> refers"),
    "style url spelled with a css escape": (SVG.format("<style>rect{fill:u\\72l(https://evil.example/x)}</style>"),
                                            "<style> refers"),
    "style import behind a character reference": (SVG.format('<style>&#64;import "https://evil.example/x.css";</style>'),
                                                  "<style> refers"),
    "style image-set": (SVG.format('<style>rect{fill:image-set("https://evil.example/x.png" 1x)}</style>'),
                        "<style> refers"),
    "css escape in a style attribute": (SVG.format('<rect style="fill: u\\72l(https://evil.example/x)"/>'),
                                        "CSS escape"),
    "stylesheet instruction": ('<?xml-stylesheet href="https://evil.example/x.css"?>' + SVG.format(""), "xml-stylesheet"),
    "billion laughs": (LAUGHS, "has a DOCTYPE"),
    "external entity": ('<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + SVG.format("<text>&x;</text>"),
                        "has a DOCTYPE"),
    "parameter entity": ('<!DOCTYPE svg SYSTEM "https://evil.example/x.dtd">' + SVG.format(""), "has a DOCTYPE"),
    "not an svg": ('<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>', "not an SVG <svg>"),
    "svg without its namespace": ('<svg viewBox="0 0 1 1"/>', "not an SVG <svg>"),
    "no viewBox": ('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "has no viewBox"),
    "viewBox of words": (SVG.replace("0 0 100 50", "0 0 wide tall"), "is not four numbers"),
    "infinite viewBox": (SVG.replace("0 0 100 50", "0 0 inf 50"), "is not four numbers"),
    "empty viewBox": (SVG.replace("0 0 100 50", "0 0 0 50"), "width and height above 0"),
    "enormous viewBox": (SVG.replace("0 0 100 50", "0 0 1e300 50"), "width and height above 0"),
    "not well-formed": (SVG.format("<g>"), "not well-formed XML"),
    "too deep": (SVG.format("<g>" * 70 + "</g>" * 70), "nested deeper than 64"),
    "too many elements": (SVG.format("<rect/>" * 50_001), "more than 50000 elements"),
    "binary": ("\x00\x01PNG", "not well-formed XML"),
}
PLAIN = SVG.format('<defs><linearGradient id="g"><stop offset="0"/></linearGradient><rect id="rack" width="2" height="3"/>'
                   '</defs><use href="#rack" x="5"/><use xlink:href="#rack" x="9"/><rect fill="url(#g)" '
                   'style="fill: url( \'#g\' )" width="9" height="9"/><image href="data:image/png;base64,iVBORw0KGgo=" '
                   'width="1" height="1"/><style>rect { stroke: #000 }</style><text>Lobby</text>')


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_drawing_is_refused_with_the_reason(name: str) -> None:
    data, reason = HOSTILE[name]
    with pytest.raises(DrawingError) as refused:
        check_svg(data.encode(), "plans/dc1.svg")
    assert reason in str(refused.value)
    assert str(refused.value).startswith("'plans/dc1.svg': ")


def test_a_plain_drawing_with_internal_references_and_an_embedded_picture_is_taken() -> None:
    box = check_svg(PLAIN.encode(), "plan.svg")
    assert (box.x, box.y, box.width, box.height) == (0, 0, 100, 50)


def test_the_demo_plan_is_a_plain_drawing() -> None:
    config = load_config(EXAMPLE_SITE)
    [plan] = config.plans
    data, box = plan.drawing("plans[0]", config.base_dir)
    assert data == (ROOT / "plans" / "dc1.svg").read_bytes()
    assert str(box) == "0 0 1200 800"
    assert set(plan.doors) == {d.key for d in config.doors}


def plan_site(tmp_path: Path, drawing: str | bytes | None = None, *, svg: str = "plans/dc1.svg",
              doors: str = "{ main-entrance = [240, 560] }", extra: str = "") -> Path:
    """The example site in ``tmp_path`` with one plan (and the demo's drawing, or ``drawing``, at plans/dc1.svg)."""
    text = EXAMPLE_SITE.read_text()
    plan = f'[[plans]]\nkey = "dc1"\nsvg = {json.dumps(svg)}\ndoors = {doors}\n{extra}'
    text = re.sub(r"\[\[plans\]\]\n(.+\n)+?doors = .*\n", lambda _: plan, text)
    (tmp_path / "plans").mkdir(exist_ok=True)
    data = (ROOT / "plans" / "dc1.svg").read_bytes() if drawing is None else drawing
    (tmp_path / "plans" / "dc1.svg").write_bytes(data.encode() if isinstance(data, str) else data)
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("svg", ["../secret.svg", "plans/../../secret.svg", "/etc/secret.svg", "\\\\host\\share\\x.svg",
                                 "plans\\..\\..\\x.svg", "plans/dc1.png", "../keys/console-secret", ""])
def test_a_drawing_path_outside_the_site_folder_is_refused_at_load(tmp_path: Path, svg: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(plan_site(tmp_path, svg=svg))
    assert "plans[0].svg: " in str(refused.value)


def test_a_link_out_of_the_site_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.svg").write_text(SVG.format(""))
    site = tmp_path / "site"
    site.mkdir()
    config = load_config(plan_site(site, svg="plans/link.svg"))
    (site / "plans" / "link.svg").symlink_to(outside / "secret.svg")
    with pytest.raises(DrawingError, match=r"plans\[0\]\.svg: 'plans/link.svg' leads outside the site file's folder"):
        config.plans[0].drawing("plans[0]", config.base_dir)


@pytest.mark.parametrize(("doors", "says"), [
    ('{ nowhere = [1, 1] }', "plans[0].doors.nowhere: unknown door 'nowhere'"),
    ('{ noc = [nan, 1] }', "plans[0].doors.noc[0]: Input should be a finite number"),
    ('{ noc = [1, inf] }', "plans[0].doors.noc[1]: Input should be a finite number"),
    ('{ noc = [1] }', "plans[0].doors.noc[1]: Field required"),
    ('{ noc = "here" }', "plans[0].doors.noc: "),
])
def test_door_positions_name_known_doors_with_two_finite_numbers(tmp_path: Path, doors: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(plan_site(tmp_path, doors=doors))
    assert says in str(refused.value)


def test_an_unknown_area_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plans\[0\]\.area: unknown area 'basement'"):
        load_config(plan_site(tmp_path, extra='area = "basement"\n'))


def test_a_position_off_the_drawing_and_a_missing_or_huge_file_name_the_field(tmp_path: Path) -> None:
    config = load_config(plan_site(tmp_path, doors="{ noc = [1200.5, 10], hall-a = [600, -1], cage-7 = [0, 800] }"))
    with pytest.raises(DrawingError) as refused:
        config.plans[0].drawing("plans[0]", config.base_dir)
    assert str(refused.value).splitlines() == [
        "plans[0].doors.noc: position (1200.5, 10) is outside the drawing's viewBox (0 0 1200 800)",
        "plans[0].doors.hall-a: position (600, -1) is outside the drawing's viewBox (0 0 1200 800)"]
    (tmp_path / "plans" / "dc1.svg").write_bytes(b"<!--" + b" " * MAX_BYTES + b"-->")
    with pytest.raises(DrawingError, match=r"plans\[0\]\.svg: 'plans/dc1.svg': larger than 2 MiB"):
        config.plans[0].drawing("plans[0]", config.base_dir)
    (tmp_path / "plans" / "dc1.svg").unlink()
    with pytest.raises(DrawingError, match=r"plans\[0\]\.svg: 'plans/dc1.svg': no such file"):
        config.plans[0].drawing("plans[0]", config.base_dir)


# --- on the console ---------------------------------------------------------------------------------------


def console_with(make_app: Callable[..., Flask], site_file: Path, site: SiteConfig) -> Flask:
    """The console on the test's database with the site file's plans (and its evidence folder as ``site``'s)."""
    config = load_config(site_file)
    return make_app(config.model_copy(update={"evidence": site.evidence}))


def test_a_hostile_drawing_does_not_stop_the_console_and_is_never_served(
        make_app: Callable[..., Flask], site: SiteConfig, seed: Seed, tmp_path: Path) -> None:
    app = console_with(make_app, plan_site(tmp_path, HOSTILE["script"][0]), site)
    client = app.test_client()
    login(client, "guard")
    text = html.unescape(page(client, "/plans/dc1"))
    assert "This plan cannot be shown: plans[0].svg: 'plans/dc1.svg': has a <script> element" in text
    assert "drawing.svg" not in text
    assert client.get("/plans/dc1/drawing.svg").status_code == 404
    assert "This plan cannot be shown" in html.unescape(page(client, "/"))  # the live page still renders


def test_the_drawing_is_an_image_under_its_own_csp(app: Flask, seed: Seed) -> None:
    client = app.test_client()
    login(client, "guard")
    response = client.get("/plans/dc1/drawing.svg")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert response.data == (ROOT / "plans" / "dc1.svg").read_bytes()
    csp = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
    assert "sandbox" in csp and "script-src 'none'" in csp and "object-src 'none'" in csp
    assert not any("unsafe" in part for part in csp)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    again = client.get("/plans/dc1/drawing.svg", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    pages = client.get("/plans/dc1")
    assert "sandbox" not in pages.headers["Content-Security-Policy"]  # the console's own pages keep theirs
    assert '<img src="/plans/dc1/drawing.svg"' in pages.get_data(as_text=True)
    assert "<svg xmlns" not in pages.get_data(as_text=True)  # the drawing is never inlined
    assert client.get("/plans/nowhere").status_code == 404
    assert client.get("/plans/nowhere/drawing.svg").status_code == 404


class Icons(HTMLParser):
    """The door icons of a page: door -> (classes, the link, name, state word), and the banner's data."""

    def __init__(self) -> None:
        super().__init__()
        self.icons: dict[str, dict[str, str]] = {}
        self.banner: dict[str, str] = {}
        self._door: str | None = None
        self._text: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("a", "g") and "door-icon" in a.get("class", ""):  # a link, or on the wall a group
            self._door = a["data-door"]
            self.icons[self._door] = {"class": a["class"], "href": a.get("href", "")}
        elif tag == "text" and self._door:
            self._text = a["class"]
        elif a.get("id") == "lockdown-banner":
            self.banner = a

    def handle_endtag(self, tag: str) -> None:
        if tag in ("a", "g"):
            self._door = None
        self._text = None

    def handle_data(self, data: str) -> None:
        if self._door and self._text:
            self.icons[self._door][self._text] = data


def icons(text: str) -> Icons:
    parsed = Icons()
    parsed.feed(text)
    return parsed


def test_icons_link_to_the_doors_board_and_say_their_state_in_words(app: Flask, seed: Seed) -> None:
    client = app.test_client()
    login(client, "guard")
    found = icons(page(client, "/")).icons
    assert set(found) == {"main-entrance", "noc", "hall-a", "cage-7", "hall-a-mantrap"}
    assert found["hall-a"]["href"] == "/doors#door-hall-a"
    assert found["hall-a"]["name"] == "Data hall A"
    # no bridge in this test: no door state, and the database has no controller marked online
    assert {f["state"] for f in found.values()} == {"OFFLINE"}
    assert all("state-offline" in f["class"] for f in found.values())


EVIL = "<script>alert('x')</script>\"'><img src=x onerror=alert(1)>"


def test_door_and_plan_names_stay_text_in_icons_and_banner(make_app: Callable[..., Flask], site: SiteConfig,
                                                           seed: Seed, engine: Engine, tmp_path: Path) -> None:
    site_file = plan_site(tmp_path, extra=f"name = {json.dumps(EVIL)}\n")
    text = site_file.read_text().replace('name = "Main entrance"', f"name = {json.dumps(EVIL)}", 1)
    site_file.write_text(text.replace('name = "Data hall A"\narea_out', f"name = {json.dumps(EVIL + '2')}\narea_out", 1))
    app = console_with(make_app, site_file, site)
    lock_down(engine, "lockdown/door/main-entrance", "lockdown/door/hall-a")
    client = app.test_client()
    login(client, "guard")
    for path in ("/", "/plans", "/plans/dc1", "/people"):
        body = page(client, path)
        assert "<script>alert" not in body and "<img src=x" not in body, path
    parsed = icons(page(client, "/plans/dc1"))
    assert parsed.icons["main-entrance"]["name"] == EVIL
    names = json.loads(parsed.banner["data-names"])
    assert names["main-entrance"] == EVIL and names["hall-a"] == EVIL + "2"
    assert json.loads(parsed.banner["data-down"]).keys() == {"main-entrance", "hall-a"}


# --- the lockdown banner from the database ----------------------------------------------------------------

AT = datetime(2026, 12, 7, 9, 31, 5, tzinfo=UTC)


def lock_down(engine: Engine, *keys: str, value: str = "true", at: datetime = AT) -> None:
    """Rows as the bridge writes them (ingest.persist) when a lockdown is committed."""
    with Session(engine) as s, s.begin():
        s.add_all(SiteState(key=key, value=value, event_id=f"console:c-{i}", partition="bridge-1", updated_at=at)
                  for i, key in enumerate(keys))


def banner(client: FlaskClient, path: str) -> tuple[bool, str]:
    """(shown, its words) on ``path``."""
    body = page(client, path)
    match = re.search(r'<div id="lockdown-banner"(.*?)>(.*?)</div>', body, re.DOTALL)
    assert match, f"no lockdown banner on {path}"
    return " hidden" not in match.group(1).split("data-")[0], " ".join(html.unescape(re.sub("<[^>]+>", " ", match.group(2))).split())


def test_no_banner_without_a_lockdown(client_as: Callable[[str], FlaskClient]) -> None:
    for role, path in [("guard", "/"), ("auditor", "/events"), ("admin", "/users")]:
        shown, _ = banner(client_as(role), path)
        assert not shown, (role, path)


def test_a_door_lockdown_shows_on_every_page_for_every_role(client_as: Callable[[str], FlaskClient],
                                                            engine: Engine) -> None:
    lock_down(engine, "lockdown/door/hall-a", "lockdown/door/cage-7")
    for role, path in [("guard", "/"), ("guard", "/people"), ("supervisor", "/doors"), ("auditor", "/events"),
                       ("admin", "/users"), ("guard", "/muster"), ("guard", "/plans")]:
        shown, words = banner(client_as(role), path)
        assert shown, (role, path)
        assert words.startswith("LOCKDOWN Locked down: Cage 7, Data hall A, since Mon 07 Dec 10:31:05 CET"), words


def test_a_site_lockdown_and_an_unreadable_row_count_as_locked_down(client_as: Callable[[str], FlaskClient],
                                                                    engine: Engine) -> None:
    lock_down(engine, "lockdown", value="{garbage", at=AT)
    lock_down(engine, "lockdown/door/noc", "lockdown/door/no-such-door", at=AT.replace(hour=10))
    shown, words = banner(client_as("guard"), "/")
    assert shown
    assert "The whole site is locked down, since Mon 07 Dec 10:31:05 CET" in words
    body = page(client_as("guard"), "/")
    assert "no-such-door" not in icons(body).banner["data-down"]  # the bridge ignores a door it does not know


def test_the_wall_sees_the_plan_but_not_muster_and_its_icons_are_not_links(client_as: Callable[[str], FlaskClient]) -> None:
    client = client_as("wall")
    found = icons(page(client, "/wall")).icons
    assert found and all(not f["href"] for f in found.values())
    assert client.get("/plans/dc1/drawing.svg").status_code == 200
    assert client.get("/plans/dc1").status_code == 403  # the wall's plan is on its own page
    assert client.get("/muster").status_code == 403
    assert client.get("/muster/list").status_code == 403
    assert client.get("/doors").status_code == 403
