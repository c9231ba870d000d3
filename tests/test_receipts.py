"""End-to-end receipts (docs/mqtt.md, "Receipts"): a broker killed with SIGKILL loses nothing, a controller's
retransmission is not decided twice nor dead-lettered, a same-id forgery is, and a forged receipt makes a
controller drop nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from badge_bridge.controllers import contract as c
from badge_bridge.controllers.receipts import Receipts
from badge_bridge.ingest.admission import Admission, Rejected, Retransmitted, digest
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry, DeadLetter
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.outbox import Outbox
from badge_bridge.topics import Topics
from tests.mqtt_clients import Client
from tests.test_mqtt_bridge import READERS, Site, assert_exactly_once, listen, publish_stream, stream_ids_in_log
from tests.waiting import wait_until

P = "badge-bridge/v1"


@pytest.fixture
def site(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore) -> Iterator[Site]:
    s = Site(tmp_path, db_url, broker, keys)
    yield s
    s.close()


# --- the pieces ------------------------------------------------------------------------------------------


def test_the_replay_guard_tells_a_retransmission_from_a_forgery() -> None:
    from datetime import UTC, datetime, timedelta

    admission = Admission(timedelta(seconds=30), timedelta(days=7))
    now = datetime.now(UTC)
    msg = c.RequestToExit(id="m1", ts=now, type="rex", door="d")
    first, other = msg.model_dump_json().encode(), msg.model_copy(update={"door": "e"}).model_dump_json().encode()
    admission.check("ctl", msg, now, digest(first))
    with pytest.raises(Retransmitted):
        admission.check("ctl", msg, now, digest(first))
    with pytest.raises(Rejected) as refused:
        admission.check("ctl", msg, now, digest(other))
    assert refused.value.code == "replayed_id"
    # A late retransmission is still one (its first copy was decided in time), not "too old".
    with pytest.raises(Retransmitted):
        admission.check("ctl", msg, now + timedelta(days=30), digest(first))
    # Without a digest (the console, cameras), a repeat is a replay, as always.
    with pytest.raises(Rejected):
        admission.check("ctl", msg, now)


def test_a_retransmission_is_receipted_only_after_its_first_copy_commits() -> None:
    sent: list[list[str]] = []
    receipts = Receipts()
    receipts.register("ctl", sent.append)
    receipts.start()
    acked: list[str] = []
    first = receipts.track("ctl", "m1", lambda: acked.append("first"))
    again = receipts.track("ctl", "m1", lambda: acked.append("again"))
    assert first is not None and again is not None
    again()  # the retransmission decides nothing: acknowledged at once, while the first copy still commits
    again()  # a second call is a no-op
    assert acked == ["again"]
    first()
    wait_until(lambda: sent, what="the receipt")
    receipts.stop()
    assert sent == [["m1"]]
    assert receipts.track("other", "m1", None) is None  # a controller without receipts: untouched


def test_the_outbox_is_bounded_and_publishes_again_only_what_is_due() -> None:
    box = Outbox(limit=3, timeout_s=0.0)
    for i in range(5):
        box.keep(f"m{i}", f"payload {i}")
    assert box.ids() == ["m2", "m3", "m4"] and box.dropped == 2  # the oldest go first
    assert box.due(everything=True) == ["payload 2", "payload 3", "payload 4"]  # a reconnection: all of it
    assert box.receipted(["m3", "unknown"]) == 1
    assert box.ids() == ["m2", "m4"]
    waiting = Outbox(timeout_s=3600)
    waiting.keep("m1", "p")
    assert waiting.due() == []  # not yet due
    waiting.receipted(["other"])  # receipts flow: the bridge is draining, nothing is due on a timeout
    assert waiting.due() == [] and waiting.due(everything=True) == ["p"]


# --- against the real bridge and broker ---------------------------------------------------------------------


def test_every_event_is_receipted_and_leaves_the_outbox(site: Site) -> None:
    site.start_bridge()
    sim = site.sim("ctl-lobby", walk_through=False)
    ids = [sim.present("main-in", None, "wiegand26", "12:1001") for _ in range(50)]
    ids.append(sim.rex("main-entrance"))
    sim.wait_receipted()
    assert sim.outbox.republished == 0
    with site.engine.connect() as conn:
        logged = set(conn.scalars(select(AuditEntry.event_id).where(AuditEntry.source == "ctl-lobby")))
    assert {f"ctl-lobby:{i}" for i in ids} <= logged


def test_a_retransmission_is_not_decided_again_and_a_same_id_forgery_is_a_dead_letter(site: Site) -> None:
    bridge = site.start_bridge()
    sim = site.sim("ctl-lobby", walk_through=False)
    _, receipts = listen(site.broker, Topics(P).controller_receipts("ctl-lobby"))
    eid = sim.present("main-in", None, "wiegand26", "12:1001")
    sim.wait_for_command(lambda cmd: cmd.type == "grant")
    sim.wait_receipted()
    original = sim.sent[-1].model_dump_json(exclude_none=True)

    sim.publish_raw(original)  # the controller's retransmission: its receipt was lost, say
    wait_until(lambda: sum(eid in r["ids"] for r in receipts) >= 2, what="the receipt sent again")
    assert bridge.processor is not None
    assert bridge.processor.counts().retransmitted == {"ctl-lobby": 1}

    forged = json.loads(original)
    forged["card"]["number"] = "12:1002"
    forger = Client(site.broker, "anyone")  # a stolen account on a mis-configured broker
    forger.publish(Topics(P).controller_events("ctl-lobby"), json.dumps(forged))  # the same id, other content
    wait_until(lambda: bridge.processor is not None and bridge.processor.counts().dead_letters.get("replayed_id"),
               what="the forgery's dead letter")
    bridge.writer.flush()
    with site.engine.connect() as conn:
        decisions = list(conn.scalars(select(AuditEntry.kind).where(AuditEntry.event_id == f"ctl-lobby:{eid}")))
        letters = list(conn.scalars(select(DeadLetter.reason)))
    assert decisions == ["access.granted"]  # decided once
    assert len(letters) == 1 and "other content" in letters[0]
    assert [cmd.type for cmd in sim.commands] == ["grant"]  # commanded once
    # The forgery's dead letter is committed too, so its id is receipted: a controller whose genuine event
    # lost the race to a forger must not publish it for ever (the dead letter keeps its payload).
    wait_until(lambda: sum(eid in r["ids"] for r in receipts) == 3, what="the dead letter's receipt")
    forger.close()


def test_a_forged_receipt_makes_the_controller_drop_nothing(site: Site) -> None:
    sim = site.sim("ctl-lobby", walk_through=False)  # no bridge: nothing receipts its events
    eid = sim.present("main-in", None, "wiegand26", "12:1001")
    forger = Client(site.broker, "anyone")
    receipt = c.Receipt(type="receipt", id="r-1", ts=sim.clock(), ids=[eid])  # no MAC
    forger.publish(Topics(P).controller_receipts("ctl-lobby"), receipt.model_dump_json())
    sim.wait_for(lambda: any("receipt" in why for _, why in sim.refused))
    assert eid in sim.outbox.ids()  # kept (with the tamper report the forgery caused)
    site.start_bridge()  # the bridge comes: the event is republished, decided and receipted
    sim.wait_receipted()
    forger.close()


@pytest.mark.slow
@pytest.mark.parametrize("keep_persistence", [True, False], ids=["persistence", "no-persistence"])
def test_broker_sigkill_under_load_loses_nothing(site: Site, db_url: str, keep_persistence: bool) -> None:
    """SIGKILL, not a graceful stop: Mosquitto has acknowledged events its disk does not have. Restarted on
    the same port with what it saved, or with nothing: every id the controllers published is in the log
    exactly once, none dead-lettered as a replay."""
    bridge = site.start_bridge()
    sims = [site.sim(k, walk_through=False, receipt_timeout_s=2.0) for k in READERS]
    result: list[str] = []
    publisher = threading.Thread(target=lambda: result.extend(publish_stream(sims, 3_000, 600)))
    publisher.start()
    wait_until(lambda: len(stream_ids_in_log(site.engine)) >= 500, timeout=60, what="a first part of the stream")
    site.broker.kill(keep_persistence=keep_persistence)
    assert len(stream_ids_in_log(site.engine)) < 3_000, "the kill came too late to test anything"
    site.broker.start()
    publisher.join()
    for sim in sims:
        sim.wait_receipted(timeout=120)
    assert_exactly_once(site.engine, db_url, site.keys, result)
    assert bridge.processor is not None
    assert "replayed_id" not in bridge.processor.counts().dead_letters
