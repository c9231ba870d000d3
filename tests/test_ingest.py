"""The processor on a real database: decisions and commands, door alarms, offline decisions, refusals.

The driver boundary (``send``) is a list here; tests/test_mqtt_bridge.py runs the same paths over a real
broker with a simulated controller.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.ingest import Processor
from badge_bridge.ingest.console_auth import ConsoleAuthority
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry, DeadLetter
from badge_bridge.site_sync import sync_site
from badge_bridge.snapshot import load_snapshot
from tests.console_commands import command, operator


class SetClock:
    """The processor's clock here: it stands still until a test sets it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Rig:
    def __init__(self, engine: Engine, site: SiteConfig, keys: KeyStore) -> None:
        pepper = keys.pin_pepper()
        with Session(engine) as session, session.begin():
            sync_site(session, site)
            for name, levels, card, pin in [("Ada", ["staff", "hall-a-engineers"], "12:1001", "4711"),
                                            ("Grace", ["staff", "hall-a-engineers"], "12:1002", None),
                                            ("Alan", ["staff"], "12:1003", None)]:
                person, _ = people.add_person(session, "test", name, levels=levels)
                people.add_credential(session, "test", person.id, "wiegand26", card, pepper=pepper, pin=pin,
                                      biometric_ref=f"bio-{name.lower()}")
            snapshot = load_snapshot(session)
        self.engine = engine
        self.writer = AuditWriter(engine, "bridge-1", keys.signer())
        self.writer.start()
        self.sent: list[tuple[str, object]] = []
        self.camera_requests: list[c.EvidenceRequest | c.FaceRequest | c.PeopleRequest] = []
        self.acks: list[str] = []
        self.clock = SetClock()
        self.started = self.clock()
        authority = ConsoleAuthority(keys.console_command_public(), engine,
                                     timedelta(seconds=site.ingest.console_max_age_s))
        self.p = Processor(site, self.writer, snapshot, pepper, send=lambda ctl, cmd: self.sent.append((ctl, cmd)),
                           send_camera=lambda camera, request: self.camera_requests.append(request), clock=self.clock,
                           console_authority=authority)
        self.n = 0
        self.keys = keys
        self.sam = operator(engine, "sam", now=self.started)

    def console(self, type_: str, **fields: object) -> c.ConsoleCommand:
        """A command the console signed for sam, in his session, sent now."""
        self.n += 1
        cmd = command(self.keys, self.sam, id=f"k{self.n}", ts=self.clock(), type=type_, **fields)
        self.p.console_command(cmd, cmd.model_dump_json().encode(), "console/commands", None)
        return cmd

    def tick(self, at: datetime) -> None:
        """The processor's timers, with its clock set to ``at``."""
        self.clock.now = at
        self.p.tick()

    def msg(self, type_: str, ts: datetime | None = None, **fields: object) -> object:
        self.n += 1
        return c.controller_event.validate_json(json.dumps(
            {"v": 1, "id": f"m{self.n}", "ts": (ts or self.clock()).isoformat(), "type": type_, **fields}))

    def feed(self, controller: str, message: object) -> None:
        mid = getattr(message, "id", "?")
        payload = message.model_dump_json(exclude_none=True).encode() if isinstance(message, BaseModel) else b"{}"
        self.p.controller_event(controller, message, payload, f"controllers/{controller}/events",  # type: ignore[arg-type]
                                lambda: self.acks.append(mid))

    def card(self, number: str, reader: str = "main-in", ctl: str = "ctl-lobby", **kw: object) -> object:
        message = self.msg("credential", reader=reader, card={"format": "wiegand26", "number": number}, **kw)
        self.feed(ctl, message)
        return message

    def entries(self) -> list[AuditEntry]:
        assert self.writer.flush()
        with Session(self.engine) as session:
            return list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))

    def kinds(self) -> list[str]:
        return [e.kind for e in self.entries()]

    def alarms(self) -> list[Alarm]:
        assert self.writer.flush()
        with Session(self.engine) as session:
            return list(session.scalars(select(Alarm).order_by(Alarm.id)))


@pytest.fixture
def rig(engine: Engine, site: SiteConfig, keys: KeyStore) -> Iterator[Rig]:
    r = Rig(engine, site, keys)
    yield r
    r.writer.stop()


def test_grant_and_deny_send_commands_and_are_audited(rig: Rig) -> None:
    rig.card("12:1001")
    rig.card("12:9999")
    (ctl1, grant), (ctl2, deny) = rig.sent
    assert ctl1 == ctl2 == "ctl-lobby"
    assert isinstance(grant, c.Grant) and grant.door == "main-entrance" and grant.open_time_s == 5
    assert isinstance(deny, c.Deny) and deny.reason == "unknown_credential"
    granted, denied = rig.entries()
    assert (granted.kind, denied.kind) == ("access.granted", "access.denied")
    assert json.loads(granted.subject) == {"person": 1, "credential": 1}
    assert json.loads(denied.subject) == {"card": "wiegand26:12:9999"}
    assert json.loads(granted.detail)["actuated"] is True
    assert rig.acks == ["m1", "m2"]


def test_pin_door_checks_the_pin_and_never_logs_it(rig: Rig) -> None:
    rig.card("12:1001", reader="hall-a-in", ctl="ctl-hall-a", pin="4711")
    rig.card("12:1001", reader="hall-a-out", ctl="ctl-hall-a", pin="0000")
    rig.card("12:1001", reader="hall-a-out", ctl="ctl-hall-a")
    reasons = [getattr(cmd, "reason", "granted") for _, cmd in rig.sent]
    assert reasons == ["granted", "pin_wrong", "pin_required"]
    stored = " ".join(e.subject + e.detail for e in rig.entries())
    assert "4711" not in stored and "0000" not in stored


def test_forced_and_held_open_raise_alarms_that_clear_on_close(rig: Rig) -> None:
    t0 = rig.clock()
    rig.feed("ctl-lobby", rig.msg("door", ts=t0, door="main-entrance", state="opened"))
    rig.feed("ctl-lobby", rig.msg("door", ts=t0 + timedelta(seconds=3), door="main-entrance", state="closed"))
    rig.card("12:1001", ts=t0 + timedelta(seconds=10))  # a grant: the next opening is authorized
    rig.feed("ctl-lobby", rig.msg("door", ts=t0 + timedelta(seconds=12), door="main-entrance", state="opened"))
    rig.tick(t0 + timedelta(seconds=20))  # within the 30 s limit
    rig.tick(t0 + timedelta(seconds=43))  # 31 s open: held open
    rig.tick(t0 + timedelta(seconds=50))  # raised once only
    rig.feed("ctl-lobby", rig.msg("door", ts=t0 + timedelta(seconds=55), door="main-entrance", state="closed"))
    rig.feed("ctl-lobby", rig.msg("rex", ts=t0 + timedelta(seconds=60), door="main-entrance"))
    rig.feed("ctl-lobby", rig.msg("door", ts=t0 + timedelta(seconds=61), door="main-entrance", state="opened"))
    door_events = [e for e in rig.entries() if e.door == "main-entrance"]  # not the silent controllers
    # The lobby camera never reported: nobody saw whether the grant was used (the correlator's record).
    assert [e.kind for e in door_events].count("access.blind") == 1
    door_events = [e for e in door_events if e.kind != "access.blind"]
    assert [e.kind for e in door_events] == ["door.forced", "alarm.raised", "door.closed", "alarm.cleared", "access.granted",
                           "door.opened", "door.held_open", "alarm.raised", "door.closed", "alarm.cleared",
                           "door.exit_request", "door.opened"]
    forced, held = [a for a in rig.alarms() if a.door == "main-entrance"]
    assert (forced.kind, forced.door, forced.state) == ("door.forced", "main-entrance", "open")
    assert forced.cleared_at is not None and held.kind == "door.held_open" and held.cleared_at is not None


def test_offline_decisions_keep_their_time_and_are_marked(rig: Rig) -> None:
    yesterday = rig.clock() - timedelta(days=1)
    rig.card("12:1003", ts=yesterday, offline={"granted": True, "reason": "granted", "sync_version": "abc"})
    rig.card("12:1002", ts=yesterday, reader="hall-a-in", ctl="ctl-hall-a",
             offline={"granted": False, "reason": "pin_unverifiable_offline"})
    assert rig.sent == []  # nothing is actuated for a decision already taken
    first, second = rig.entries()
    assert first.ts_us == int(yesterday.timestamp() * 1_000_000)
    assert json.loads(first.detail) == {"reader": "main-in", "direction": "in", "factors": ["card"], "offline": True,
                                        "bridge_reason": "granted", "sync_version": "abc", "reason": "granted"}
    assert second.kind == "access.denied" and json.loads(second.detail)["bridge_reason"] == "pin_required"


def test_stale_request_is_decided_and_logged_but_never_opens_the_door(rig: Rig) -> None:
    rig.card("12:1001", ts=rig.clock() - timedelta(minutes=3))
    assert rig.sent == []
    (entry,) = rig.entries()
    assert entry.kind == "access.granted" and json.loads(entry.detail)["actuated"] is False


@pytest.mark.parametrize("controller, fields, code", [
    ("ctl-nowhere", dict(reader="main-in"), "unknown_controller"),
    ("ctl-lobby", dict(reader="hall-a-in"), "unknown_reader"),  # a reader of another controller
    ("ctl-lobby", dict(reader="main-in", card={"format": "wiegand26", "number": "300:1"}), "bad_card"),
    ("ctl-lobby", dict(reader="main-in", card={"raw_hex": "ffffffff", "bits": 26}), "bad_card"),
    ("ctl-lobby", dict(reader="main-in", ts=datetime.now(UTC) + timedelta(hours=1)), "future_time"),
])
def test_bad_input_is_dead_lettered_with_its_reason(rig: Rig, controller: str, fields: dict[str, object],
                                                    code: str) -> None:
    base: dict[str, object] = dict(reader="main-in", card={"format": "wiegand26", "number": "12:1001"})
    base.update(fields)
    rig.feed(controller, rig.msg("credential", **base))
    rig.card("12:1001")  # and the bridge keeps serving
    (rejected, granted) = rig.entries()
    assert rejected.kind == "input.rejected" and json.loads(rejected.detail)["code"] == code
    assert granted.kind == "access.granted"
    with Session(rig.engine) as session:
        (letter,) = session.scalars(select(DeadLetter))
    assert letter.reason.startswith(code) and rig.p.counts().dead_letters == {code: 1}
    assert rig.acks == ["m1", "m2"]  # the refused message is released too: it is kept, not retried


def test_a_retransmission_is_not_decided_again_and_a_replayed_id_with_other_content_is_refused(rig: Rig) -> None:
    message = rig.card("12:1001")
    rig.feed("ctl-lobby", message)  # the same bytes: the controller sends it again for want of a receipt
    assert rig.kinds() == ["access.granted"]
    assert rig.p.counts().retransmitted == {"ctl-lobby": 1}
    rig.feed("ctl-lobby", message.model_copy(update={"ts": message.ts + timedelta(seconds=1)}))  # other content
    assert len(rig.sent) == 1
    assert rig.kinds() == ["access.granted", "input.rejected"]
    assert rig.acks == [message.id] * 3


def test_console_unlock_and_lockdown(rig: Rig) -> None:
    def console(type_: str, **kw: object) -> None:
        rig.console(type_, reason="drill", **{"door": None, **kw})

    console("unlock", door="noc", duration_s=10)
    console("lockdown", area="hall-a")
    rig.card("12:1001", reader="hall-a-in", ctl="ctl-hall-a", pin="4711")
    console("lift_lockdown", area="hall-a")
    rig.card("12:1001", reader="hall-a-in", ctl="ctl-hall-a", pin="4711")
    console("unlock", door="no-such-door")
    commands = [(ctl, type(cmd).__name__, getattr(cmd, "reason", None)) for ctl, cmd in rig.sent]
    assert commands == [("esp-noc", "Unlock", "drill"), ("ctl-hall-a", "Lockdown", None),
                        ("ctl-hall-a", "Deny", "lockdown"), ("ctl-hall-a", "Lockdown", None),
                        ("ctl-hall-a", "Grant", None)]
    kinds = rig.kinds()
    assert kinds == ["console.unlock", "console.lockdown", "access.denied", "console.lift_lockdown",
                     "access.granted", "input.rejected"]
    assert json.loads(rig.entries()[0].subject) == {"user": "sam"}


def test_an_area_unlock_gives_each_door_its_own_command_id(rig: Rig) -> None:
    """hall-a and cage-7 share a controller: one id for both would be acted on once (a controller refuses an id
    it has acted on as a replay), leaving the second door locked."""
    rig.console("unlock", reason="fire brigade", door=None, area="hall-a")
    unlocks = [(ctl, cmd) for ctl, cmd in rig.sent if isinstance(cmd, c.Unlock)]
    assert sorted((ctl, cmd.door) for ctl, cmd in unlocks) == [("ctl-hall-a", "cage-7"), ("ctl-hall-a", "hall-a")]
    assert len({cmd.id for _, cmd in unlocks}) == 2


def test_a_refused_message_keeps_no_pin(rig: Rig) -> None:
    """A credential with a PIN at the wrong reader is dead-lettered with the PIN masked, nothing else lost."""
    payload = json.dumps({"v": 1, "id": "p1", "ts": rig.clock().isoformat(), "type": "credential",
                          "reader": "hall-a-in", "pin": "4711", "card": {"format": "wiegand26", "number": "12:1001"}})
    rig.p.controller_event("ctl-lobby", c.controller_event.validate_json(payload), payload.encode(),
                           "controllers/ctl-lobby/events", None)
    assert rig.writer.flush()
    with Session(rig.engine) as session:
        (letter,) = session.scalars(select(DeadLetter))
    kept = json.loads(letter.payload)
    assert kept["pin"] == "<redacted>" and kept["reader"] == "hall-a-in" and kept["card"]["number"] == "12:1001"
    assert b"4711" not in letter.payload


def test_timed_unlock_shows_unlocked_and_relocks_by_itself(rig: Rig) -> None:
    now = rig.clock()
    rig.console("unlock", door="noc", duration_s=30)
    assert rig.p.door_state("noc").lock == "unlocked"
    rig.tick(now + timedelta(seconds=10))
    assert rig.p.door_state("noc").lock == "unlocked"
    rig.tick(now + timedelta(seconds=31))
    assert rig.p.door_state("noc").lock == "locked"


def test_a_controller_that_never_reports_is_marked_offline(rig: Rig) -> None:
    rig.p.controller_status("ctl-lobby", c.ControllerStatus(online=True, ts=rig.clock()), b"{}", "s", None)
    rig.tick(rig.started + timedelta(seconds=5))
    assert "controller.offline" not in rig.kinds()
    rig.tick(rig.started + timedelta(seconds=31))
    rig.tick(rig.started + timedelta(seconds=32))
    offline = [e for e in rig.entries() if e.kind == "controller.offline"]
    assert sorted(e.source for e in offline) == ["ctl-hall-a", "esp-noc"]  # once each; ctl-lobby reported
    assert sorted(a.source for a in rig.alarms() if a.kind == "controller.offline") == ["ctl-hall-a", "esp-noc"]
    # cameras too: a silent camera breaks the surveillance promise
    assert sorted(a.source for a in rig.alarms() if a.kind == "camera.offline") == ["cam-lobby", "cam-outside"]


def test_a_device_without_a_last_will_is_reported_offline_when_it_goes_quiet(rig: Rig) -> None:
    """esp-rfid in plain mode has no last will: a dead device was never reported."""
    now = rig.clock()
    rig.feed("esp-noc", rig.msg("heartbeat", uptime_s=5.0))
    rig.tick(now + timedelta(seconds=590))  # quiet for less than silent_after_s: still online
    assert rig.p.controllers_online()["esp-noc"] is True
    rig.tick(now + timedelta(seconds=605))
    assert rig.p.controllers_online()["esp-noc"] is False
    rig.feed("esp-noc", rig.msg("heartbeat", uptime_s=6.0))
    esp = [(e.kind, json.loads(e.detail).get("alarm")) for e in rig.entries() if e.source == "esp-noc"]
    assert esp == [("controller.online", None), ("controller.offline", None), ("alarm.raised", "controller.offline"),
                   ("controller.online", None), ("alarm.cleared", "controller.offline")]


def test_a_console_command_not_signed_by_the_console_is_forged(rig: Rig) -> None:
    cmd = command(rig.keys, rig.sam, door="noc", ts=rig.clock()).model_copy(update={"user": "mallory"})
    payload = cmd.model_dump_json().encode()
    rig.p.console_command(cmd, payload, "console/commands", None)
    rig.p.console_command(cmd, payload, "console/commands", None)  # redelivered: no second row
    assert rig.sent == [] and rig.p.door_state("noc").lock == "locked"
    assert rig.kinds() == ["input.rejected", "alarm.raised"]
    (alarm,) = rig.alarms()
    assert alarm.kind == "console.forged_command" and alarm.source == "console"
    with Session(rig.engine) as session:
        (letter,) = session.scalars(select(DeadLetter))
    assert letter.reason.startswith("forged_command: bad signature") and letter.payload == payload
    assert rig.p.counts().dead_letters == {"forged_command": 2}


def test_a_console_command_the_database_cannot_confirm_is_not_obeyed(rig: Rig, tmp_path: Path,
                                                                     site: SiteConfig) -> None:
    """The user cannot be looked up (here: a database without the tables): refused, but not called forged."""
    away = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    rig.p._console_authority = ConsoleAuthority(rig.keys.console_command_public(), away,
                                                timedelta(seconds=site.ingest.console_max_age_s))
    rig.console("unlock", door="noc")
    assert rig.sent == [] and rig.kinds() == ["input.rejected"] and rig.alarms() == []
    assert rig.p.counts().dead_letters == {"unverified_command": 1}


def test_a_processor_without_a_console_authority_obeys_no_console(rig: Rig) -> None:
    rig.p._console_authority = None
    rig.console("lockdown", door=None)
    assert rig.sent == [] and rig.kinds() == ["input.rejected", "alarm.raised"]


def test_a_forgery_in_a_hostile_name_is_stored_escaped(rig: Rig) -> None:
    """The claimed user of an unsigned command is the attacker's text, NUL and an escape character included:
    the alarm keeps it readable and storable on both databases."""
    cmd = c.ConsoleCommand.model_validate_json(json.dumps(
        {"v": 1, "id": "evil-1", "ts": rig.clock().isoformat(), "type": "lockdown", "user": "root\u0000\u001b",
         "reason": "\u0000"}))
    rig.p.console_command(cmd, cmd.model_dump_json().encode(), "console/commands", None)
    assert rig.kinds() == ["input.rejected", "alarm.raised"] and rig.sent == []
    detail = json.loads(rig.entries()[1].detail)
    assert detail["claimed_user"] == "root\\u0000\\u001b" and detail["alarm"] == "console.forged_command"
