"""The doors board and a mantrap: an unlock while the other door of the mantrap is open is refused by the
console (from the live door states) unless the supervisor ticks the emergency override, which the signed
command then carries (the bridge's own refusal and audit: tests/test_interlock.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import console_signing
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from tests.console_site import Console, Watched
from tests.test_console_routes import CommandListener, linked_app, login, make_app, page, submit, texts
from web import current_services

__all__ = ["linked_app", "make_app"]  # fixtures


def _door_state(app: Flask, door: str, contact: str, lock: str = "locked") -> None:
    state = c.DoorState(v=1, door=door, ts=datetime.now(UTC), contact=contact, lock=lock, alarms=[], online=True)
    current_services(app).hub.doors[door] = state.model_dump_json()


def test_an_unlock_of_a_busy_mantrap_needs_the_emergency_override(linked_app: Flask, broker: Broker,
                                                                  keys: KeyStore) -> None:
    supervisor = linked_app.test_client()
    assert login(supervisor, "supervisor").status_code == 302
    board = page(supervisor, "/doors")
    assert board.count('name="override"') == 2  # hall-a and its mantrap's outer door, nowhere else
    listener = CommandListener(broker)
    try:
        _door_state(linked_app, "hall-a-mantrap", "open")
        refused = submit(supervisor, "/doors/hall-a/unlock", reason="Fire brigade")
        assert "hall-a-mantrap of its mantrap is open or unlocked" in texts(refused, "error")
        assert texts(refused, "info") == ""
        sent = submit(supervisor, "/doors/hall-a/unlock", reason="Fire brigade", override="y")
        assert "Emergency override unlock of hall-a" in texts(sent, "info")
        cmd = listener.next()
        assert (cmd.type, cmd.door, cmd.override, cmd.reason) == ("unlock", "hall-a", True, "Fire brigade")
        assert console_signing.verify(cmd, keys.console_command_public())
        _door_state(linked_app, "hall-a-mantrap", "closed", lock="unlocked")  # held unlocked: busy too
        assert "of its mantrap is open or unlocked" in texts(submit(supervisor, "/doors/hall-a/unlock",
                                                                     reason="Fire brigade"), "error")
        _door_state(linked_app, "hall-a-mantrap", "closed")
        assert texts(submit(supervisor, "/doors/hall-a/unlock", reason="Cleaning crew"), "error") == ""
        cmd = listener.next()
        assert cmd.override is None and cmd.model_dump(exclude_none=True).get("override") is None
        assert listener.received.empty()
    finally:
        listener.close()


def test_the_mantrap_override_in_a_real_browser(console: Console, browser: object, broker: Broker, keys: KeyStore,
                                               artifacts: Path) -> None:
    """The supervisor unlocks the mantrap's outer door; the inner door's unlock is refused on the board until
    the emergency override is ticked; the controller gets it and the bridge audits the override."""
    readers = {r.key: r.door for r in console.config.readers if r.controller == "ctl-hall-a"}
    hall = SimController("ctl-hall-a", "127.0.0.1", broker.port, sync_key=keys.sync_key("ctl-hall-a"),
                         username="ctl-hall-a", password=broker.passwords["ctl-hall-a"], readers=readers)
    try:
        hall.wait_connected()
        sup = Watched(browser, console.url)
        sup.login("sam")
        page = sup.page
        page.click("nav a[href='/doors']")
        outer, inner = "#door-hall-a-mantrap", "#door-hall-a"
        assert page.locator("#door-main-entrance input[name=override]").count() == 0
        page.fill(f"{outer} form[action$='/unlock'] [name=reason]", "Rack delivery into hall A")
        page.click(f"{outer} form[action$='/unlock'] button")
        hall.wait_for_command(lambda cmd: isinstance(cmd, c.Unlock) and cmd.door == "hall-a-mantrap")
        page.wait_for_selector(f"{outer} .door-lock.lock-unlocked:text-is('unlocked')")

        page.fill(f"{inner} form[action$='/unlock'] [name=reason]", "Rack delivery into hall A")
        page.click(f"{inner} form[action$='/unlock'] button")
        page.wait_for_selector(".flash.error:has-text('hall-a-mantrap of its mantrap is open or unlocked')")
        sup.shot(artifacts / "mantrap-refused.png")

        page.fill(f"{inner} form[action$='/unlock'] [name=reason]", "Fire in hall A: evacuation through the mantrap")
        page.check(f"{inner} input[name=override]")
        page.click(f"{inner} form[action$='/unlock'] button")
        hall.wait_for_command(lambda cmd: isinstance(cmd, c.Unlock) and cmd.door == "hall-a")
        page.wait_for_selector(".flash.info:has-text('Emergency override unlock of hall-a until locked sent')")
        page.wait_for_selector(f"{inner} .door-lock.lock-unlocked:text-is('unlocked')")
        sup.shot(artifacts / "mantrap-override.png")
        with Session(console.engine) as session:
            [detail] = session.scalars(select(AuditEntry.detail).where(AuditEntry.kind == "console.unlock",
                                                                       AuditEntry.door == "hall-a"))
        assert json.loads(detail)["override"] is True and json.loads(detail)["interlock_busy"] == ["hall-a-mantrap"]
        assert sup.errors == []
    finally:
        hall.close()
