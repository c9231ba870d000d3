"""What the coverage-guided fuzzer checks, one function per target, each taking the fuzzer's bytes.

A target raises ``Finding`` when an input breaks an invariant; the documented rejection of each parser
(pydantic's ``ValidationError`` for the contract, ``EspRfidError``, ``CardFormatError``, ``InvalidEvent``)
is the expected answer to bad input, any other exception is a finding. The same functions replay the saved
crash inputs in ``make test`` (tests/test_fuzz_regressions.py), so they need nothing from atheris.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import create_engine, select

from badge_bridge import cards
from badge_bridge.audit.chain import GENESIS, entry_body, entry_hash
from badge_bridge.controllers import contract as c
from badge_bridge.controllers import esp_rfid
from badge_bridge.events import Event, InvalidEvent
from badge_bridge.models import DeadLetter
from badge_bridge.records import dead_letter, redact
from fuzz.oracle import ASCII_NUMBER, PIN_TEXT, STORED_MAX, WIEGAND_NUMBER, _where, contract_breaches

TIME_WINDOW = frozenset({"ts_in_future", "ts_ancient"})
ESP = {"controller": "esp-noc", "door": "noc", "reader": "noc-in"}
"""The fuzz site's esp-rfid controller (fuzz/site.py)."""
CONTRACT: dict[str, tuple[str, TypeAdapter[object]]] = {
    "controller-event": ("controller-event", c.controller_event),
    "controller-status": ("controller-status", TypeAdapter(c.ControllerStatus)),
    "console-command": ("console", TypeAdapter(c.ConsoleCommand)),
    "camera-event": ("camera-event", c.camera_event),
    "camera-status": ("camera-status", TypeAdapter(c.CameraStatus)),
}
"""Every inbound contract message, with the topic kind the oracle's contract rules know it by."""


class Finding(Exception):
    """An input broke an invariant; the message starts with the problem's kind (see ``oracle.signature``)."""


class Input:
    """Splits the fuzzer's bytes into fields: a byte, or a length-prefixed piece of text or bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return value

    def chunk(self) -> bytes:
        n = self.byte()
        piece = self.data[self.pos:self.pos + n]
        self.pos += n
        return piece

    def text(self) -> str:
        """UTF-8, lone surrogates included (what ``json.loads`` makes of ``\\ud800``); else Latin-1."""
        piece = self.chunk()
        try:
            return piece.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return piece.decode("latin-1")

    def rest(self) -> bytes:
        return self.data[self.pos:]


def unexpected(exc: BaseException, what: str) -> Finding:
    return Finding(f"exception:{type(exc).__name__}@{_where(exc)} in {what}: {str(exc)[:200]}")


def storable(event: Event) -> None:
    """What the audit writer does with an event before the database sees it, and what either database
    refuses: text that UTF-8 cannot encode (lone surrogates) and, for PostgreSQL, NUL."""
    record = event.record("fuzz")
    try:
        entry_hash(GENESIS, entry_body(*record))
    except UnicodeEncodeError as exc:
        raise Finding(f"unstorable:surrogate in event {event.kind}: {exc}") from None
    if any("\x00" in field for field in record if isinstance(field, str)):
        raise Finding(f"unstorable:NUL in event {event.kind} (PostgreSQL refuses it)")


# --- targets -----------------------------------------------------------------------------------------


def contract(data: bytes) -> None:
    """Each inbound contract message: refused with ValidationError, or valid by the strict contract, and
    what the bridge would publish of it reads back the same."""
    now = datetime.now(UTC)
    for name, (kind, adapter) in CONTRACT.items():
        try:
            msg = adapter.validate_json(data)
        except ValidationError:
            continue
        except Exception as exc:
            raise unexpected(exc, name) from None
        # How far from now a time may be is the processor's check (ingest.max_future_s, the offline
        # window), not the parser's: the message oracle judges those.
        breaches = [b for b in contract_breaches(kind, data, now) if b not in TIME_WINDOW]
        if breaches:
            raise Finding(f"off_contract:{breaches[0]} accepted as {name}")
        try:
            again = adapter.validate_json(adapter.dump_json(msg))
        except ValidationError as exc:
            raise Finding(f"round_trip:{name} does not read back its own JSON: {exc.errors()[0]['msg']}") from None
        if again != msg:
            raise Finding(f"round_trip:{name} reads back different")


def esp_rfid_parse(data: bytes) -> None:
    """esp-rfid payloads: refused with EspRfidError, or translated into valid contract messages only."""
    try:
        messages = esp_rfid.parse(data, received=datetime.now(UTC), **ESP)
    except esp_rfid.EspRfidError:
        return
    except Exception as exc:
        raise unexpected(exc, "esp_rfid.parse") from None
    for msg in messages:
        adapter = TypeAdapter(c.ControllerStatus) if isinstance(msg, c.ControllerStatus) else c.controller_event
        try:
            adapter.validate_json(msg.model_dump_json())
        except ValidationError as exc:
            raise Finding(f"invalid_translation:{type(msg).__name__}: {exc.errors()[0]['msg']}") from None
        card = getattr(msg, "card", None)
        if card is not None and not ASCII_NUMBER.fullmatch(card.number or ""):
            raise Finding(f"invalid_translation:card number {card.number!r}")


def card_numbers(data: bytes) -> None:
    """Card numbers as operators type them and raw reads as readers send them: refused with CardFormatError,
    or in the one canonical form, from ASCII input only (a number in other digits is another card)."""
    given = Input(data)
    mode, selector = given.byte(), given.byte()
    if mode % 2:
        bits, raw = selector, given.rest()
        try:
            fmt, number = cards.decode_wiegand(raw, bits)
        except cards.CardFormatError:
            return
        except Exception as exc:
            raise unexpected(exc, "decode_wiegand") from None
        if cards.decode_wiegand(*cards.encode_wiegand(fmt, number)) != (fmt, number):
            raise Finding(f"card_round_trip:{fmt} {number} does not encode back")
        return
    formats = (*cards.FORMATS, given.text())
    fmt, number = formats[selector % len(formats)], given.text()
    try:
        canonical = cards.canonical(fmt, number)
    except cards.CardFormatError:
        return
    except Exception as exc:
        raise unexpected(exc, "canonical") from None
    if not (ASCII_NUMBER if fmt == "ascii" else WIEGAND_NUMBER).fullmatch(number):
        raise Finding(f"card_not_canonical:{_oddity(number)} {fmt} number {number!r} accepted as {canonical!r}")


def _oddity(number: str) -> str:
    if number != number.strip():
        return "surrounding_whitespace"
    if not number.isascii():
        return "non_ascii"
    return "other"


_DEAD = create_engine("sqlite://")
DeadLetter.__table__.create(_DEAD)


def records(data: bytes) -> None:
    """Refused input as the bridge stores it (``records.dead_letter``): whatever the payload, the topic and
    the parser's reason, the event is storable and the row bounded, with no PIN; and an Event built from
    parsed JSON is refused with InvalidEvent or storable."""
    given = Input(data)
    where, reason, payload = given.text(), given.text(), given.rest()
    try:
        redacted = redact(payload)
    except Exception as exc:
        raise unexpected(exc, "redact") from None
    if PIN_TEXT.search(redacted):
        raise Finding("secret_stored:redact keeps a PIN")
    try:
        event, effect = dead_letter(where.split("/")[-2] if where.count("/") > 1 else "console", "invalid_message",
                                    reason, payload, where=where, now=datetime.now(UTC))
    except Exception as exc:
        raise unexpected(exc, "dead_letter") from None
    storable(event)
    with _DEAD.begin() as conn:
        try:
            effect(conn)
        except Exception as exc:
            raise Finding(f"unstorable:dead letter row refused: {type(exc).__name__}") from None
        stored = conn.execute(select(DeadLetter.payload).order_by(DeadLetter.id.desc()).limit(1)).scalar_one()
        conn.execute(DeadLetter.__table__.delete())
    if len(stored) > STORED_MAX:
        raise Finding(f"unbounded_dead_letter:{len(stored)} bytes kept")
    if PIN_TEXT.search(stored):
        raise Finding("secret_stored:dead_letter")
    _parsed_event(payload)


def _parsed_event(payload: bytes) -> None:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return
    if not isinstance(value, dict):
        return
    try:
        event = Event(id="fuzz:1", kind="input.fuzzed", source="fuzz", ts=datetime.now(UTC), detail=value)
    except InvalidEvent:
        return
    except Exception as exc:
        raise unexpected(exc, "Event") from None
    storable(event)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "contract": contract, "esp_rfid": esp_rfid_parse, "cards": card_numbers, "records": records,
}
"""The parser targets; ``message`` (the whole pipeline, fuzz/oracle.py) needs a database and runs apart."""
