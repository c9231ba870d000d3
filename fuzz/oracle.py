"""The verdict on one MQTT message: what the bridge does with it, run in process on a real database with the
bridge's own code (the MQTT link's routing, the processor, the audit writer), and what must hold.

For every input, whatever it is:

* it is acknowledged exactly once, after its events are committed (processed, or dead-lettered);
* no exception escapes the link (one that does leaves the message unacknowledged, holding one of the
  broker's in-flight slots, and it fails again on every redelivery);
* the audit writer commits it (a value the database refuses stalls the writer for good);
* a rejection is counted (``badge_bridge_dead_letters``) and stored bounded, with no PIN in it;
* nothing is granted: the oracle's site has nobody enrolled, so any grant is one garbage caused;
* what the contract refuses (docs/mqtt.md, issue 12: ``v`` the integer 1, a zone on every time, ASCII digits
  in card numbers and PINs, no events from the future or from before 2000) is not accepted, and a contract
  message on the topic of a controller that does not speak the contract over MQTT (esp-rfid, OSDP) is not
  accepted either.

A broken invariant is a *problem*: ``kind:detail``; ``kind`` with the part of ``detail`` that does not depend
on the input makes the finding's signature.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from badge_bridge.audit.writer import AuditWriter
from badge_bridge.config import load_config
from badge_bridge.controllers import contract as c
from badge_bridge.controllers.driver import Context
from badge_bridge.controllers.esp_rfid import EspRfidDriver
from badge_bridge.controllers.link import MqttLink
from badge_bridge.db import make_engine
from badge_bridge.events import Event
from badge_bridge.ingest import Processor
from badge_bridge.ingest.console_auth import ConsoleAuthority
from badge_bridge.keys import KeyStore
from badge_bridge.models import DeadLetter
from badge_bridge.site_sync import sync_site
from badge_bridge.snapshot import load_snapshot
from fuzz.scratch import Scratch

STALL_S = 5.0
"""A commit that has not happened this long after the input is a stall (healthy ones take milliseconds)."""
STORED_MAX = 8 * 1024
"""A dead letter keeps "a few KiB" of the payload (issue 12): more than this is unbounded storage."""
FUTURE_MAX = timedelta(seconds=30)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
PIN_TEXT = re.compile(rb"""["']?pin(?:code|_code)?["']?\s*[:=]\s*["']?[0-9]{4,8}""", re.IGNORECASE)
"""A PIN as it appears in a payload, JSON or not: none may be stored."""
ZONE = re.compile(r"(Z|[+-]\d\d:\d\d)\Z")
WIEGAND_NUMBER = re.compile(r"[0-9]+:[0-9]+")
ASCII_NUMBER = re.compile(r"[\x21-\x7e]{1,64}")
ASCII_PIN = re.compile(r"[0-9]{4,8}")
TIME_KEYS = ("ts", "started", "t", "start", "end", "at")
EVENT_TOPICS = ("controller-event", "camera-event", "console")


@dataclass
class Verdict:
    topic: str
    payload: bytes
    problems: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    """Kinds of the events it caused that were committed."""

    @property
    def ok(self) -> bool:
        return not self.problems


def signature(problem: str) -> str:
    """The part of a problem that names the bug, not the input: its kind and the first word of its detail
    (``exception:RecursionError@esp_rfid.py:_load``, ``off_contract:v_not_integer_1``)."""
    kind, _, detail = problem.partition(":")
    if kind == "stall":  # the database's message, without the input's offsets
        return f"stall:{re.sub(r'(position|line|column) [0-9]+', lambda m: m.group(1) + ' N', detail)[:90]}"
    if kind in ("unbounded_dead_letter", "unacked", "garbage_grant", "uncounted_rejection") or not detail:
        return kind
    return f"{kind}:{detail.split(' ', 1)[0]}"


def topic_kind(topic: str, prefix: str, esp_topics: set[str]) -> str:
    if topic in esp_topics:
        return "esp-rfid"
    parts = topic.removeprefix(f"{prefix}/").split("/")
    if len(parts) == 3 and parts[0] in ("controllers", "cameras") and parts[2] in ("events", "status"):
        return f"{parts[0][:-1]}-{'event' if parts[2] == 'events' else 'status'}"
    return "console" if parts == ["console", "commands"] else "other"


def contract_breaches(kind: str, payload: bytes, now: datetime) -> list[str]:
    """What in an inbound contract message the strict contract refuses (empty: nothing)."""
    def constant(name: str) -> Any:
        raise ValueError(name)

    try:
        msg = json.loads(payload, parse_constant=constant)
    except (ValueError, RecursionError):
        return ["not_standard_json"]
    if not isinstance(msg, dict):
        return ["not_an_object"]
    out = []
    v = msg.get("v")
    if type(v) is not int or v != 1:
        out.append("v_not_integer_1")
    for key, value in _walk(msg):
        if key in TIME_KEYS and isinstance(value, str) and not ZONE.search(value):
            out.append(f"{key}_without_zone")
    ts = _time(msg.get("ts"))
    if kind in EVENT_TOPICS and ts is not None:
        if ts > now + FUTURE_MAX:
            out.append("ts_in_future")
        if ts < EARLIEST:
            out.append("ts_ancient")
    card = msg.get("card")
    if isinstance(card, dict) and str(card.get("format")).startswith("wiegand") and isinstance(card.get("number"), str):
        if not WIEGAND_NUMBER.fullmatch(card["number"]):
            out.append("card_number_not_ascii_digits")
    if isinstance(msg.get("pin"), str) and not ASCII_PIN.fullmatch(msg["pin"]):
        out.append("pin_not_ascii_digits")
    return out


def _object(payload: bytes) -> dict[str, Any]:
    """The payload's JSON object, or an empty one."""
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError):
        return {}
    return msg if isinstance(msg, dict) else {}


def _walk(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in [(k, v), *_walk(v)]]
    if isinstance(value, list):
        return [pair for v in value for pair in _walk(v)]
    return []


def _time(value: Any) -> datetime | None:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        return None
    return ts if ts is not None and ts.tzinfo is not None else None


def _where(exc: BaseException) -> str:
    """The innermost frame of the project's own code the exception came through; for an event refused by
    ``Event`` itself, the code that built it (the bug is in what it was given)."""
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if "/badge_bridge/" in f.filename or "/camera/" in f.filename]
    frames = [f for f in frames if not f.filename.endswith("/events.py")] or frames
    frame = frames[-1] if frames else tb[-1]
    return f"{Path(frame.filename).name}:{frame.name}"


def _unplaced(message: str) -> str:
    """A database error without the database's name or path, which change from run to run."""
    return re.sub(r"^database error [(][^)]*[)]", "database error", message)


def _end(thread: threading.Thread | None) -> None:
    """End an audit writer stuck retrying a batch its database refuses (it never gives up by itself, and
    would hold a database connection for ever): SystemExit raised in its thread, which the retry loop does
    not catch."""
    if thread is None or thread.ident is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    thread.join(5)


class Oracle:
    """The bridge's processing of MQTT messages on ``db_url`` (migrated; nobody enrolled). After a stall the
    writer is stuck for good (it retries for ever): ``broken`` says so, and a new Oracle is needed."""

    def __init__(self, site_file: Path, db_url: str, *, stall_s: float = STALL_S) -> None:
        self.stall_s, self.db_url = stall_s, db_url
        self.config = load_config(site_file)
        keys = KeyStore(self.config.keys_dir())
        keys.ensure()
        self.engine = make_engine(db_url)
        with Session(self.engine) as session, session.begin():
            sync_site(session, self.config)
        with Session(self.engine) as session:
            snapshot = load_snapshot(session)
        self.committed: list[Event] = []
        self._lock = threading.Lock()
        self.writer = AuditWriter(self.engine, self.config.site.instance, keys.signer(), on_commit=self._on_commit,
                                  retry_max_s=0.5)
        self.commands: list[object] = []
        authority = ConsoleAuthority(keys.console_command_public(), self.engine,
                                     timedelta(seconds=self.config.ingest.console_max_age_s))
        self.processor = Processor(self.config, self.writer, snapshot, keys.pin_pepper(),
                                   send=lambda _controller, command: self.commands.append(command),
                                   console_authority=authority)
        self.link = MqttLink(self.config, self.processor)
        ctx = Context(self.config, self.processor, keys, self.link)
        # The drivers that read the broker; the OSDP bus is the bridge process's (its port has one owner).
        esp = [EspRfidDriver(ctx, ctl) for ctl in self.config.controllers if ctl.kind == EspRfidDriver.kind]
        self.esp_topics = {topic for driver in esp for topic in driver.topics.inbound()}
        self.foreign = {ctl.key: ctl.kind for ctl in self.config.controllers if ctl.kind != "mqtt"}
        self.heard_since: dict[str, datetime] = {}
        """Controllers the processor holds online, since when (as seen between messages): an offline decision
        dated after that, past the grace margin, is one the controller cannot have made."""
        self.grace = timedelta(seconds=self.config.ingest.offline_grace_s)
        self.broken = False
        self.writer.start()

    def _on_commit(self, events: list[Event]) -> None:
        with self._lock:
            self.committed.extend(events)

    def close(self) -> None:
        if self.broken:
            _end(self.writer._thread)
        else:
            self.writer.stop(timeout=self.stall_s)
        self.engine.dispose()

    def check(self, topic: str, payload: bytes) -> Verdict:
        if self.broken:
            raise RuntimeError("the oracle's writer is stuck; make a new Oracle")
        verdict = Verdict(topic, payload)
        problems = verdict.problems
        seen, n_commands = len(self.committed), len(self.commands)
        counted_before = sum(self.processor.counts().dead_letters.values())
        with Session(self.engine) as session:
            last_row = session.scalar(select(func.max(DeadLetter.id))) or 0
        acks: list[int] = []
        now = datetime.now(UTC)
        for key, online in self.processor.controllers_online().items():
            if online:
                self.heard_since.setdefault(key, now)
            else:
                self.heard_since.pop(key, None)
        try:
            self.link.deliver(topic, payload, lambda: acks.append(1))
        except Exception as exc:
            problems.append(f"exception:{type(exc).__name__}@{_where(exc)} {str(exc)[:200]}")
        if not self.writer.flush(self.stall_s):
            self.broken = True
            problems.append(f"stall:{_unplaced(self.writer.stats.last_error or '')}")
            return verdict
        if not problems and len(acks) != 1:
            problems.append("unacked" if not acks else f"acked_{len(acks)}_times")
        with self._lock:
            events = self.committed[seen:]
        verdict.committed = [e.kind for e in events]
        self._stored(verdict, events, last_row)
        stored = sum(1 for e in events if e.kind == "input.rejected")
        counted = sum(self.processor.counts().dead_letters.values()) - counted_before
        if stored > counted:
            problems.append("uncounted_rejection")
        rejected = stored or counted  # a replayed rejection is counted, its dead letter not stored twice
        if any(isinstance(cmd, c.Grant) for cmd in self.commands[n_commands:]):
            problems.append("garbage_grant")
        if not rejected and not any(p.startswith("exception:") for p in problems):
            self._accepted(verdict, now)
        return verdict

    def _stored(self, verdict: Verdict, events: list[Event], last_row: int) -> None:
        with Session(self.engine) as session:
            rows = session.scalars(select(DeadLetter.payload).where(DeadLetter.id > last_row)).all()
        for stored in rows:
            if len(stored) > STORED_MAX:
                verdict.problems.append(f"unbounded_dead_letter:{len(stored)} bytes kept")
            if PIN_TEXT.search(stored):
                verdict.problems.append("secret_stored:dead_letter")
        if any(PIN_TEXT.search((e.subject_json + e.detail_json).encode()) for e in events):
            verdict.problems.append("secret_stored:audit_log")

    def _accepted(self, verdict: Verdict, now: datetime) -> None:
        """An accepted message: was it one the contract refuses?"""
        kind = topic_kind(verdict.topic, self.link.topics.prefix, self.esp_topics)
        if kind in ("esp-rfid", "other") or not verdict.payload:
            return
        controller = verdict.topic.split("/")[-2]
        if kind == "controller-event" and controller in self.foreign:
            verdict.problems.append(f"foreign_topic:{self.foreign[controller]} controller {controller}")
        breaches = contract_breaches(kind, verdict.payload, now)
        msg = _object(verdict.payload)
        card = msg.get("card") if isinstance(msg.get("card"), dict) else {}
        if card.get("format") == "ascii" and not ASCII_NUMBER.fullmatch(str(card.get("number"))):
            breaches.append("ascii_card_number_not_printable")  # cards.canonical() let it through to decide()
        heard, ts = self.heard_since.get(controller), _time(msg.get("ts"))
        if (kind == "controller-event" and isinstance(msg.get("offline"), dict) and heard is not None
                and ts is not None and ts >= heard + self.grace):
            breaches.append("offline_decision_while_online")
        verdict.problems += [f"off_contract:{breach}" for breach in breaches]


class Judge:
    """Oracles on throw-away databases of one kind: ``check`` runs inputs in turn through one oracle (a new
    one after a stall), ``alone`` runs one input in a database of its own, so a finding is known not to
    depend on what came before it."""

    def __init__(self, site_file: Path, scratch: Scratch, *, stall_s: float = STALL_S) -> None:
        self.site, self.scratch, self.stall_s = site_file, scratch, stall_s
        self.oracle: Oracle | None = None

    def _fresh(self) -> Oracle:
        return Oracle(self.site, self.scratch.new(), stall_s=self.stall_s)

    def _retire(self, oracle: Oracle) -> None:
        oracle.close()
        self.scratch.drop(oracle.db_url)

    def check(self, topic: str, payload: bytes) -> Verdict:
        if self.oracle is not None and self.oracle.broken:
            self._retire(self.oracle)
            self.oracle = None
        if self.oracle is None:
            self.oracle = self._fresh()
        return self.oracle.check(topic, payload)

    def alone(self, topic: str, payload: bytes) -> list[str]:
        oracle = self._fresh()
        try:
            return oracle.check(topic, payload).problems
        finally:
            self._retire(oracle)

    def close(self) -> None:
        if self.oracle is not None:
            self._retire(self.oracle)
