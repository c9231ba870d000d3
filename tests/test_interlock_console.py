"""The doors board and a mantrap: an unlock while the other door of the mantrap is open is refused by the
console (from the live door states) unless the supervisor ticks the emergency override, which the signed
command then carries (the bridge's own refusal and audit: tests/test_interlock.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask

from badge_bridge import console_signing
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker
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
