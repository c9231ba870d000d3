"""Console commands as an attacker on the broker sends them, against a real Mosquitto, a real bridge and a
simulated controller: only a command the console signed, for an enabled user with the role, in an open
session of theirs, fresh and never seen, moves a door. Everything else is one dead letter that says why and
one ``console.forged_command`` alarm, and the controller hears nothing. Commands from the bridge carry a MAC
the controller checks, so a command published straight on a controller's topic moves nothing either."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import console_signing
from badge_bridge.canonical import canonical
from badge_bridge.controllers import command_mac
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore, card_digest
from badge_bridge.models import Alarm, DeadLetter
from badge_bridge.sim.broker import Broker
from tests.console_commands import command, operator
from tests.mqtt_clients import Client
from tests.test_mqtt_bridge import Site, entries, kinds, listen
from tests.waiting import wait_until

TOPIC = "badge-bridge/v1/console/commands"
LOBBY_COMMANDS = "badge-bridge/v1/controllers/ctl-lobby/commands"


# --- the bytes signed and MACed --------------------------------------------------------------------


def test_rfc_8785_bytes() -> None:
    # RFC 8785 section 3.2.2 and appendix B, number by number, and its sorting and escaping.
    numbers = {0.0: "0", 5.0: "5", 0.5: "0.5", 1e-7: "1e-7", 1e-6: "0.000001", 1e21: "1e+21",
               1e20: "100000000000000000000", 4.50: "4.5", 2e-3: "0.002", 333333333.33333329: "333333333.3333333",
               1e23: "1e+23", 5e-324: "5e-324", 0.1 + 0.2: "0.30000000000000004"}
    for value, text in numbers.items():
        assert canonical(value) == text.encode(), value
    assert canonical(-0.0) == b"0"
    assert canonical({"b": [1, None, True], "a": "é\n\"\u0001", "€": {}, "A": False}) == (
        '{"A":false,"a":"é\\n\\"\\u0001","b":[1,null,true],"€":{}}'.encode())


def test_signed_bytes_are_stable_through_the_wire(keys: KeyStore) -> None:
    """What the console signs is what the bridge checks after parsing the JSON it received, whatever zone or
    precision the time arrived in."""
    cmd = command(keys, "ab" * 32, ts=datetime(2026, 3, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1))),
                  duration_s=30)
    wire = c.ConsoleCommand.model_validate_json(cmd.model_dump_json())
    assert console_signing.signed_bytes(wire) == console_signing.signed_bytes(cmd)
    assert console_signing.verify(wire, keys.console_command_public())  # type: ignore[arg-type]
    text = console_signing.signed_bytes(cmd).decode()
    assert '"ts":"2026-03-01T12:00:00.000000Z"' in text and '"duration_s":30,' in text and "signature" not in text
    as_utc = json.loads(cmd.model_dump_json())
    as_utc["ts"] = "2026-03-01T12:00:00Z"
    assert console_signing.verify(c.ConsoleCommand.model_validate(as_utc | {"ts": datetime(2026, 3, 1, 12, tzinfo=UTC)}),
                                  keys.console_command_public())  # type: ignore[arg-type]
    spaced = cmd.model_copy(update={"signature": " ".join(cmd.signature or "")})
    assert not console_signing.verify(spaced, keys.console_command_public())  # type: ignore[arg-type]


def test_command_mac_is_over_the_json_received() -> None:
    key = b"s" * 32
    unlock = c.Unlock(type="unlock", id="u1", ts=datetime.now(UTC), door="main-entrance", duration_s=5.0)
    payload = command_mac.sealed(unlock, key).encode()
    assert command_mac.problem(payload, key) is None
    body = json.loads(payload)
    assert command_mac.problem(json.dumps(body, indent=2, sort_keys=True).encode(), key) is None  # any layout
    assert command_mac.problem(payload, b"t" * 32) == "wrong MAC"
    assert command_mac.problem(json.dumps({**body, "door": "noc"}).encode(), key) == "wrong MAC"
    assert command_mac.problem(json.dumps({k: v for k, v in body.items() if k != "mac"}).encode(), key) == "no MAC"
    twice = payload.replace(b'"door":"main-entrance"', b'"door":"main-entrance","door":"noc"')
    assert "twice" in (command_mac.problem(twice, key) or "")


# --- the bridge ------------------------------------------------------------------------------------


class Desk:
    """The site's bridge and lobby controller, operators with sessions, and an attacker's MQTT clients: one on
    the console's own account (its broker password stolen, not its signing key) and one on the test-only
    ``anyone`` account, which may publish anywhere (a broker whose ACL let an attacker through)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.keys = site.keys
        self.bridge = site.start_bridge()
        self.lobby = site.sim("ctl-lobby")
        self.sam = operator(site.engine, "sam", "supervisor")
        self.console = Client(site.broker, "console")
        self.anyone = Client(site.broker, "anyone")

    def publish(self, payload: str | bytes, topic: str = TOPIC) -> None:
        (self.console if topic == TOPIC else self.anyone).publish(topic, payload)

    def letters(self) -> list[str]:
        with Session(self.site.engine) as session:
            return list(session.scalars(select(DeadLetter.reason).order_by(DeadLetter.id)))

    def alarms(self, kind: str = "console.forged_command") -> list[Alarm]:
        with Session(self.site.engine) as session:
            return list(session.scalars(select(Alarm).where(Alarm.kind == kind).order_by(Alarm.id)))

    def moved(self) -> list[str]:
        """What reached the lobby controller, and what the bridge thinks of its door."""
        assert self.bridge.processor is not None
        lock = self.bridge.processor.door_state("main-entrance").lock
        return [cmd.type for cmd in self.lobby.commands] + ([] if lock == "locked" else [f"bridge says {lock}"])

    def close(self) -> None:
        self.console.close()
        self.anyone.close()


@pytest.fixture
def desk(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore) -> Iterator[Desk]:
    site = Site(tmp_path, db_url, broker, keys)
    d = Desk(site)
    yield d
    d.close()
    site.close()


Forgery = Callable[[Desk], str]


def _sent_at(delta: timedelta) -> Forgery:
    """Signed, sent ``delta`` from now (computed when sent)."""
    return lambda d: command(d.keys, d.sam, ts=datetime.now(UTC) + delta).model_dump_json()


def _unsigned(d: Desk) -> str:
    return command(d.keys, d.sam).model_copy(update={"signature": None}).model_dump_json()


def _tampered(d: Desk) -> str:
    """Signed for the NOC's door, then pointed at the main entrance."""
    return command(d.keys, d.sam, door="noc").model_copy(update={"door": "main-entrance"}).model_dump_json()


def _as(username: str, role: str = "supervisor", **session: bool) -> Forgery:
    return lambda d: command(d.keys, operator(d.site.engine, username, role, **session), user=username
                             ).model_dump_json()


FORGERIES: list[tuple[str, Forgery, str]] = [
    ("unsigned", _unsigned, "bad signature: the command is not signed"),
    ("signed with another key", lambda d: command(d.keys, d.sam, key=Ed25519PrivateKey.generate()).model_dump_json(),
     "bad signature: not signed by this site's console key"),
    ("valid signature, door changed", _tampered, "bad signature: not signed by this site's console key"),
    ("stale", _sent_at(timedelta(minutes=-2)), "stale: sent at"),
    ("from the future", _sent_at(timedelta(minutes=5)), "from the future: time"),
    ("unknown user", lambda d: command(d.keys, d.sam, user="mallory").model_dump_json(), "unknown user: "),
    ("disabled user", _as("dan", active=False), "disabled: console user 'dan'"),
    ("a guard", _as("gus", "guard"), "role: 'gus' is a guard; unlock needs supervisor"),
    ("a guard's lockdown", lambda d: command(d.keys, operator(d.site.engine, "gus", "guard"), user="gus",
                                             type="lockdown", door=None).model_dump_json(),
     "role: 'gus' is a guard; lockdown needs supervisor"),
    ("an ended session", _as("sam", ended=True), "session ended: 'sam''s session ended at"),
    ("an expired session", _as("sam", expired=True), "session ended: 'sam''s session expired at"),
    ("another user's session", lambda d: command(d.keys, operator(d.site.engine, "sue"), user="sam").model_dump_json(),
     "session ended: the command names no session of 'sam'"),
    ("no session", lambda d: command(d.keys, None).model_dump_json(), "session ended: the command names no session"),
]


def test_forged_console_commands_move_no_door_and_raise_one_alarm_each(desk: Desk) -> None:
    for n, (case, forge, why) in enumerate(FORGERIES, start=1):
        desk.publish(forge(desk))
        wait_until(lambda: len(desk.letters()) >= n, 20, f"the dead letter of {case!r}",  # noqa: B023
                   detail=desk.letters)
        letters, alarms = desk.letters(), desk.alarms()
        assert len(letters) == n and letters[-1].startswith(f"forged_command: {why}"), (case, letters[-1])
        assert len(alarms) == n, (case, [a.event_id for a in alarms])
    assert desk.moved() == [], "a forged command reached the controller"
    assert desk.lobby.lock_state == {} and desk.lobby.refused == []
    assert not [k for k in kinds(desk.site.engine) if k.startswith("console.") and k != "console.forged_command"]
    logged = [json.loads(e) for e in _alarm_details(desk)]
    assert {d["alarm"] for d in logged} == {"console.forged_command"}
    assert logged[0]["reason"].startswith("bad signature") and logged[-1]["claimed_user"] == "sam"


def _alarm_details(desk: Desk) -> list[str]:
    return [e.detail for e in entries(desk.site.engine) if e.kind == "alarm.raised"]


def test_a_redelivered_forgery_raises_no_second_alarm(desk: Desk) -> None:
    payload = _unsigned(desk)
    desk.publish(payload)
    desk.publish(payload)
    desk.publish(_tampered(desk))
    wait_until(lambda: len(desk.alarms()) == 2, 20, "the alarms of two distinct forgeries")
    assert len(desk.letters()) == 2 and desk.moved() == []


def test_the_console_signed_command_of_an_operator_in_session_moves_the_door_once(desk: Desk) -> None:
    capture, sealed = listen(desk.site.broker, LOBBY_COMMANDS, lambda p: p)
    unlock = command(desk.keys, desk.sam, duration_s=600)
    desk.publish(unlock.model_dump_json())
    sent = desk.lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Unlock))
    assert isinstance(sent, c.Unlock) and sent.door == "main-entrance" and sent.by == "sam" and sent.mac
    assert desk.lobby.lock_state == {"main-entrance": "unlocked"}
    wait_until(lambda: "console.unlock" in kinds(desk.site.engine), what="the audited unlock")

    desk.publish(unlock.model_dump_json())  # the same message again: a replay
    wait_until(lambda: desk.letters(), 20, "the replay's dead letter")
    (letter,) = desk.letters()
    assert letter.startswith("forged_command: replayed: message id")
    assert len(desk.alarms()) == 1 and [cmd.type for cmd in desk.lobby.commands] == ["unlock"]
    assert kinds(desk.site.engine).count("console.unlock") == 1
    capture.loop_stop()
    assert len(sealed) == 1 and command_mac.problem(sealed[0], desk.keys.sync_key("ctl-lobby")) is None


def test_a_command_without_a_valid_mac_does_not_move_the_controller(desk: Desk) -> None:
    """Published straight on the lobby controller's command topic, past the bridge."""
    capture, sealed = listen(desk.site.broker, LOBBY_COMMANDS, lambda p: p)
    now = datetime.now(UTC)

    def unlock(i: int) -> c.Unlock:
        return c.Unlock(type="unlock", id=f"x-{i}", ts=now, door="main-entrance", by="supervisor", reason="x")

    other_key = desk.keys.sync_key("ctl-hall-a")
    good = json.loads(command_mac.sealed(unlock(4), desk.keys.sync_key("ctl-lobby")))
    forged = [unlock(1).model_dump_json(),  # no MAC
              command_mac.sealed(unlock(2), other_key),  # another controller's key
              unlock(3).model_copy(update={"mac": "0" * 64}).model_dump_json(),
              json.dumps({**good, "duration_s": 86_400})]  # a valid MAC, a field changed after
    for payload in forged:
        desk.publish(payload, LOBBY_COMMANDS)
    wait_until(lambda: len(desk.lobby.refused) == len(forged), 20, "the controller to refuse every forgery",
               detail=lambda: desk.lobby.refused)
    assert [why for _, why in desk.lobby.refused] == ["no MAC", "wrong MAC", "wrong MAC", "wrong MAC"]
    assert desk.lobby.commands == [] and desk.lobby.lock_state == {}
    wait_until(lambda: len(desk.alarms("reader.tamper")) == len(forged), 20, "a tamper alarm per forgery")
    assert {a.source for a in desk.alarms("reader.tamper")} == {"ctl-lobby"}

    # The bridge's own command, captured and replayed after the door was locked again.
    desk.publish(command(desk.keys, desk.sam).model_dump_json())
    desk.lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Unlock))
    desk.publish(command(desk.keys, desk.sam, type="lock").model_dump_json())
    desk.lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Lock))
    wait_until(lambda: len(sealed) == len(forged) + 2, what="the bridge's two commands on the controller's topic")
    desk.publish(sealed[len(forged)], LOBBY_COMMANDS)  # the unlock
    wait_until(lambda: len(desk.lobby.refused) == len(forged) + 1, 20, "the replay refused")
    assert desk.lobby.refused[-1][1].startswith("replayed id")
    assert desk.lobby.lock_state == {"main-entrance": "locked"}
    capture.loop_stop()


def test_a_forged_or_older_credential_sync_is_refused(desk: Desk) -> None:
    """Past the ACL, on the lobby controller's retained sync topic: a list with a card added, an older list
    with a valid MAC (a captured one brought back), an empty retained message: the controller keeps its list."""
    topic = "badge-bridge/v1/controllers/ctl-lobby/sync"
    key = desk.keys.sync_key("ctl-lobby")
    current = desk.lobby.wait_for_sync()
    assert current.mac and command_mac.problem(command_mac.sealed(current, key).encode(), key) is None
    added = c.SyncEntry(card=card_digest(key, "wiegand26", "66:6666"), doors={"main-entrance": ["always"]})
    forged = current.model_copy(update={"entries": [*current.entries, added], "mac": None})
    older = current.model_copy(update={"ts": current.ts - timedelta(days=1), "mac": None})
    for payload in (forged.model_dump_json(), command_mac.sealed(forged, desk.keys.sync_key("ctl-hall-a")),
                    command_mac.sealed(older, key), b""):
        desk.anyone.publish(topic, payload, retain=True)
    wait_until(lambda: len(desk.lobby.refused) == 4, 20, "the controller to refuse every list",
               detail=lambda: desk.lobby.refused)
    assert [why for _, why in desk.lobby.refused] == [
        "sync: no MAC", "sync: wrong MAC", f"sync: an older credential sync ({older.ts.isoformat()}) than the one in use",
        "sync: an empty retained message: nothing proves the bridge cleared the list"]
    assert desk.lobby.sync == current
    assert not desk.lobby.decide_offline("main-entrance", "wiegand26", "66:6666", None, datetime.now(UTC)).granted


ACCOUNTS = ("ctl-lobby", "ctl-hall-a", "esp-noc", "camera@cam-lobby", "firmware", "bridge-1")
"""Every account of the example site but the console's (the bridge's own included: it reads console
commands, it never writes them)."""


def test_only_the_console_account_may_publish_a_console_command(desk: Desk) -> None:
    """A validly signed command, for an operator in session, published on every other account of the site:
    the broker refuses each, so no dead letter, no door movement; the same bytes on the console's account
    work, once."""
    watcher = Client(desk.site.broker, "watcher")
    watcher.subscribe(TOPIC)
    for account in ACCOUNTS:
        client = Client(desk.site.broker, account)
        assert client.connected.is_set(), account
        client.publish(TOPIC, command(desk.keys, desk.sam).model_dump_json())
        client.close()
    desk.publish(command(desk.keys, desk.sam, type="lock").model_dump_json())  # the console's: a marker
    desk.lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Lock))
    assert [json.loads(p)["type"] for _, p, _ in watcher.received] == ["lock"], "the broker let a command through"
    assert desk.letters() == [] and desk.alarms() == []
    assert [cmd.type for cmd in desk.lobby.commands] == ["lock"]
    assert not [k for k in kinds(desk.site.engine) if k.startswith("console.") and k != "console.lock"]
    watcher.close()


def test_without_the_console_public_key_every_command_is_refused(tmp_path: Path, db_url: str, broker: Broker,
                                                                 keys: KeyStore) -> None:
    """A bridge host missing keys/console/command.pub obeys no console (and says so), it does not open up."""
    private = keys.console_command_key()
    (keys.dir / "console" / "command.pub").unlink()
    (keys.dir / "console" / "command.key").unlink()
    site = Site(tmp_path, db_url, broker, keys)
    try:
        d = Desk(site)
        d.publish(command(keys, d.sam, key=private).model_dump_json())
        wait_until(d.letters, 20, "the dead letter")
        assert d.letters()[0].startswith("forged_command: bad signature: this bridge has no console public key")
        assert d.moved() == [] and len(d.alarms()) == 1
        d.close()
    finally:
        site.close()



def test_the_documented_test_vectors() -> None:
    """docs/mqtt.md gives firmware authors a MAC and a signature to check their code against."""
    doc = (Path(__file__).parents[1] / "docs" / "mqtt.md").read_text()
    unlock = b'{"v":1,"id":"u-1","ts":"2026-03-02T10:00:00Z","type":"unlock","door":"main-entrance","duration_s":30.0}'
    mac = command_mac.mac_of(json.loads(unlock), bytes(range(32)))
    assert f"`{unlock.decode()}`" in doc and f"its `mac` is `{mac}`" in doc
    assert command_mac.problem(json.dumps({**json.loads(unlock), "mac": mac}).encode(), bytes(range(32))) is None
    signed = next(json.loads(block) for block in _json_blocks(doc) if '"signature"' in block)
    public = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    assert console_signing.verify(c.ConsoleCommand.model_validate_json(json.dumps(signed)), public)


def _json_blocks(doc: str) -> list[str]:
    return [part.split("```", 1)[0] for part in doc.split("```json\n")[1:]]
