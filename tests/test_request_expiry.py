"""An access request end to end, with a real broker, the bridge and a simulated controller: the card is refused
before approval, opens the door inside the window once approved, is refused outside_window from the end on
even before the bridge has recorded the end, and the bridge then marks the request expired, audited."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import access_requests as ar
from badge_bridge import bridge as bridge_module
from badge_bridge import people
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.controllers import contract as c
from badge_bridge.event_kinds import EventKind
from badge_bridge.keys import KeyStore
from badge_bridge.models import AccessRequest, AuditEntry
from badge_bridge.request_expiry import RequestExpiry
from badge_bridge.sim.broker import Broker
from tests.test_mqtt_bridge import Site
from tests.waiting import wait_until

CARD = "12:1009"
WINDOW = timedelta(seconds=20)
"""Long enough for an approval to reach the bridge (a reload every two seconds) on a busy machine."""


@pytest.fixture
def site(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore) -> Iterator[Site]:
    s = Site(tmp_path, db_url, broker, keys)
    yield s
    s.close()


def test_a_time_boxed_level_opens_inside_its_window_only_and_expires(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # the door must not depend on the expiry round: it runs only when woken below
    monkeypatch.setattr(bridge_module, "RequestExpiry", functools.partial(RequestExpiry, every_s=3600))
    writer = AuditWriter(site.engine, "bridge-1.console", site.keys.signer())
    writer.start()
    try:
        guard, supervisor = ar.Who("console:gina", "guard"), ar.Who("console:sam", "supervisor")
        visitor, _ = commit_change(writer, "test", lambda s: people.add_person(s, "test", "Contractor"))
        commit_change(writer, "test", lambda s: people.add_credential(s, "test", visitor.id, "wiegand26", CARD,
                                                                      pepper=site.keys.pin_pepper()))
        bridge = site.start_bridge()
        lobby = site.sim("ctl-lobby")

        def decision() -> c.Command:
            lobby.commands.clear()
            lobby.present("main-in", None, "wiegand26", CARD)
            return lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Grant | c.Deny))

        assert isinstance(denied := decision(), c.Deny) and denied.reason == "no_access_level"
        starts = datetime.now(UTC)
        ends = starts + WINDOW
        request, _ = commit_change(writer, guard.actor, lambda s: ar.open_request(
            s, guard, site.config, visitor.id, "staff", starts, ends, ticket="CHG-7", now=starts))
        assert isinstance(decision(), c.Deny)  # asked for, not yet approved
        commit_change(writer, supervisor.actor, lambda s: ar.approve(s, supervisor, request.id, now=datetime.now(UTC)))

        def has_level() -> bool:
            record = bridge.processor.snapshot.credential("wiegand26", CARD)  # type: ignore[union-attr]
            return record is not None and "main-entrance" in record.view.doors

        wait_until(has_level, 15, "the bridge to reload the approved request")
        assert isinstance(decision(), c.Grant)
        wait_until(lambda: datetime.now(UTC) >= ends, 30, "the end of the window")
        assert isinstance(late := decision(), c.Deny) and late.reason == "outside_window"
        with Session(site.engine) as s:
            assert s.get_one(AccessRequest, request.id).state == "approved"  # not yet recorded: still refused
        bridge.request_expiry.wake()

        def expired() -> list[AuditEntry]:
            with Session(site.engine) as s:
                return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == EventKind.ADMIN_REQUEST_EXPIRED)))

        [entry] = wait_until(expired, 15, "the bridge to record the end")
        assert entry.source == "bridge-1" and entry.chain_id == "bridge-1"
        assert json.loads(entry.detail)["state"][f"request/{request.id}"]["state"] == "expired"
        with Session(site.engine) as s:
            assert s.get_one(AccessRequest, request.id).state == "expired"
        wait_until(lambda: not has_level(), 15, "the level to leave the snapshot")
        assert isinstance(gone := decision(), c.Deny) and gone.reason == "no_access_level"
    finally:
        writer.stop()
