"""Visitors and escorts end to end: the bridge against a real Mosquitto with a simulated controller, the
visits made as the desk makes them. A visitor never passes without an escort (not alone, not with staff who
do not escort, not with another customer's escort, not outside the escort window, never offline); with
one, both pass and the log names the companion. An unreturned badge raises visitor.overdue, once, cleared
when it comes back, however many bridges watch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import visitors
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore, card_digest
from badge_bridge.models import Alarm, AuditEntry, SiteState, Visit
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.visitor_watch import VisitorWatch
from tests.conftest import write_site
from tests.test_mqtt_bridge import Site
from tests.visit_site import TENANTS, Desk, synced, tenant_id, window
from tests.waiting import wait_until

ESCORT_WINDOW = ("escort_window_s = 30 ", "escort_window_s = 3 ")


@pytest.fixture
def site(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore) -> Iterator[Site]:
    s = Site(tmp_path, db_url, broker, keys, TENANTS, ESCORT_WINDOW)
    yield s
    s.close()


@pytest.fixture
def desk(site: Site) -> Iterator[Desk]:
    d = Desk(site.engine, site.config, site.keys)
    yield d
    d.close()


class Door:
    """The lobby controller's main-in reader, presenting at device times the test chooses (decisions are
    made at the device's time: the escort window is measured between them, whatever the machine's load)."""

    def __init__(self, sim: SimController) -> None:
        self.sim = sim
        self.base = datetime.now(UTC) - timedelta(seconds=5)

    def present(self, card: str, at: float) -> c.Command:
        self.sim.clock = lambda: self.base + timedelta(seconds=at)
        eid = self.sim.present("main-in", None, "wiegand26", card)
        return self.sim.wait_for_command(lambda cmd: getattr(cmd, "request", None) == eid)


def decisions(engine: Engine) -> list[tuple[int, str, int | None]]:
    """(person, reason, companion) of every access decision, in order."""
    with Session(engine) as session:
        found = session.execute(select(AuditEntry.subject, AuditEntry.detail).where(
            AuditEntry.kind.in_(("access.granted", "access.denied"))).order_by(AuditEntry.ts_us)).all()
    return [(json.loads(s)["person"], json.loads(d)["reason"], json.loads(d).get("companion")) for s, d in found]


def visitor_of(engine: Engine, visit_id: int) -> int:
    with Session(engine) as session:
        found = session.get(Visit, visit_id)
        assert found is not None
        return found.person_id


def test_a_visitor_passes_only_with_an_escort(site: Site, desk: Desk) -> None:
    a, b = tenant_id(site.engine, "visit-co-a"), tenant_id(site.engine, "visit-co-b")
    esther = desk.staff("Esther Escort", "12:3001", escort=True)
    cora = desk.staff("Cora of A", "12:3002", escort=True, tenant=a)
    alan = 3  # seeded staff, no escort
    cards = {"77:1": desk.register(), "77:2": desk.register(tenant_id=b), "77:3": desk.register()}
    for card, vid in cards.items():
        desk.check_in(vid, card)
    v1, vb, v2 = (visitor_of(site.engine, vid) for vid in cards.values())
    bridge = site.start_bridge()
    wait_until(lambda: all(bridge.processor and bridge.processor.snapshot.credential("wiegand26", card)
                           for card in cards), what="the bridge to load the visitors' badges")
    lobby = site.sim("ctl-lobby")
    # attack first: the controller never holds a visitor's badge, so offline it opens nothing
    sync = lobby.wait_for_sync()
    listed = {e.card for e in sync.entries}
    key = site.keys.sync_key("ctl-lobby")
    assert card_digest(key, "wiegand26", "12:3001") in listed
    assert not {card_digest(key, "wiegand26", card) for card in cards} & listed
    door = Door(lobby)

    alone = door.present("77:1", at=0)
    assert isinstance(alone, c.Deny) and (alone.reason, alone.feedback) == ("escort_waiting", "beep")
    assert isinstance(door.present("12:1003", at=4), c.Grant)  # staff who do not escort: the visitor waits
    assert door.present("77:1", at=5).reason == "escort_waiting"
    assert isinstance(door.present("12:3002", at=9), c.Grant)  # customer A's escort, customer B's visitor
    assert door.present("77:2", at=10).reason == "escort_waiting"
    assert isinstance(door.present("12:3001", at=14), c.Grant)  # an escort, but long before (window 3 s)
    assert door.present("77:1", at=18).reason == "escort_waiting"
    # escort first, visitor within the window: both pass
    assert isinstance(door.present("12:3001", at=22), c.Grant)
    assert isinstance(door.present("77:1", at=23), c.Grant)
    # visitor first: a beep; the escort's grant takes both through the door, opened once
    waits = door.present("77:3", at=27)
    assert isinstance(waits, c.Deny) and waits.feedback == "beep"
    grants = len([cmd for cmd in lobby.commands if isinstance(cmd, c.Grant)])
    assert isinstance(door.present("12:3001", at=28), c.Grant)
    assert len([cmd for cmd in lobby.commands if isinstance(cmd, c.Grant)]) == grants + 1

    wait_until(lambda: len(decisions(site.engine)) == 11, what="the decisions committed")
    assert decisions(site.engine) == [
        (v1, "escort_waiting", None), (alan, "granted", None), (v1, "escort_waiting", None),
        (cora, "granted", None), (vb, "escort_waiting", None), (esther, "granted", None),
        (v1, "escort_waiting", None), (esther, "granted", None), (v1, "granted_escorted", esther),
        (v2, "escort_waiting", None), (esther, "granted_escorting", v2)]
    with Session(site.engine) as session:
        positions = {key: value for key, value in session.execute(select(SiteState.key, SiteState.value))}
    assert positions[f"position/{v2}"] == positions[f"position/{esther}"] == '"lobby"'


def test_an_unreturned_badge_is_overdue_and_clears_when_returned(site: Site, desk: Desk) -> None:
    vid = desk.register(**window(minutes=1.1, start=-1))  # ends in about 6 s
    desk.check_in(vid, "77:9")
    ends_at = visitor_end(site.engine, vid)
    bridge = site.start_bridge()
    wait_until(lambda: bridge.processor and bridge.processor.snapshot.credential("wiegand26", "77:9"),
               what="the bridge to load the badge")
    lobby = site.sim("ctl-lobby")
    wait_until(lambda: overdue_alarms(site.engine), timeout=30, what="visitor.overdue raised")
    assert datetime.now(UTC) >= ends_at
    lobby.clock = lambda: datetime.now(UTC)
    late = lobby.present("main-in", None, "wiegand26", "77:9")
    assert lobby.wait_for_command(lambda cmd: getattr(cmd, "request", None) == late).reason == "expired"
    with Session(site.engine) as session:
        visit = session.get(Visit, vid)
        assert visit is not None and visit.overdue_at is not None and visit.state == "on_site"
    desk.change("console:desk", visitors.return_badge, vid, datetime.now(UTC))
    wait_until(lambda: overdue_alarms(site.engine) == [True], what="visitor.overdue cleared")
    assert alarm_entries(site.engine) == [("alarm.raised", "visitor.overdue"), ("alarm.cleared", "visitor.overdue")]


def visitor_end(engine: Engine, visit_id: int) -> datetime:
    with Session(engine) as session:
        found = session.get(Visit, visit_id)
        assert found is not None
        return found.ends_at


def overdue_alarms(engine: Engine) -> list[bool]:
    """Whether each visitor.overdue alarm is cleared."""
    with Session(engine) as session:
        return [cleared is not None for cleared in session.scalars(
            select(Alarm.cleared_at).where(Alarm.kind == "visitor.overdue"))]


def alarm_entries(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        found = session.execute(select(AuditEntry.kind, AuditEntry.detail).where(
            AuditEntry.kind.in_(("alarm.raised", "alarm.cleared"))).order_by(AuditEntry.ts_us, AuditEntry.id)).all()
    return [(kind, json.loads(detail)["alarm"]) for kind, detail in found
            if json.loads(detail)["alarm"] == "visitor.overdue"]


def test_several_bridges_watching_raise_and_clear_once(tmp_path: Path, db_url: str, engine: Engine,
                                                      keys: KeyStore) -> None:
    """Partitions each run the watch: at the same moment, only the one whose update changed the row audits."""
    config = synced(engine, write_site(tmp_path, db_url, TENANTS), keys)
    desk = Desk(engine, config, keys)
    try:
        vid = desk.register()
        desk.check_in(vid, "77:5")
        later = visitor_end(engine, vid) + timedelta(seconds=1)
        watch_all(engine, keys, later)
        assert overdue_alarms(engine) == [False] and len(alarm_entries(engine)) == 1
        watch_all(engine, keys, later)  # raised already: nothing more
        assert len(alarm_entries(engine)) == 1
        desk.change("console:desk", visitors.return_badge, vid, later)
        watch_all(engine, keys, later)
        assert overdue_alarms(engine) == [True]
        assert alarm_entries(engine) == [("alarm.raised", "visitor.overdue"), ("alarm.cleared", "visitor.overdue")]
    finally:
        desk.close()


def watch_all(engine: Engine, keys: KeyStore, now: datetime) -> None:
    """Three partitions' watches check at ``now``, each on its own chain, before any has committed."""
    writers = [AuditWriter(engine, f"part-{i}", keys.signer()) for i in range(3)]
    for w in writers:
        w.start()
    for i, w in enumerate(writers):
        VisitorWatch(engine, w, f"part-{i}", threading.Event()).check(now)
    for w in writers:
        assert w.stop(timeout=30)
