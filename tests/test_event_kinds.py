"""EventKind: a member is the very string the log stores, and every kind the code can record is a member.

As everywhere in the tests, the stored format is written out as literals: they are the oracle."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from badge_bridge.audit.writer import entry_body
from badge_bridge.controllers import contract as c
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import KIND_RE, Event
from badge_bridge.face_match import Verdict
from badge_bridge.ingest.liveness import READER_KINDS
from badge_bridge.people import CREDENTIAL_STATUSES

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("badge_bridge", "camera", "web", "firmware_config")
FAMILIES = {kind.value.split(".")[0] for kind in EventKind}
BUILT_AT_RUN_TIME = {
    "motion.": get_args(c.Motion.model_fields["state"].annotation),
    "face.": get_args(get_type_hints(Verdict)["outcome"]),
    "console.": get_args(c.ConsoleCommand.model_fields["type"].annotation),
    "admin.credential_": CREDENTIAL_STATUSES,
    "reader.": tuple(READER_KINDS),  # the alarm raised for a reader condition
}
"""The kinds the code builds with an f-string, by their fixed start, and where the rest comes from."""
NOT_KINDS = {"bridge.restarting": "the OSDP dispatcher's marker for a reader's own disable; never recorded"}


def test_a_member_is_its_dotted_lower_case_string() -> None:
    for kind in EventKind:
        assert KIND_RE.match(kind.value), kind
        assert kind.name == kind.value.upper().replace(".", "_")
        assert kind == kind.value and hash(kind) == hash(kind.value)
        assert str(kind) == f"{kind}" == kind.value  # as log lines, ids and SQL parameters take it
        assert json.dumps({kind: kind}) == json.dumps({kind.value: kind.value})
    assert EventKind("door.forced") is EventKind.DOOR_FORCED
    assert EventKind.ACCESS_GRANTED == "access.granted"
    assert "door.held_open" in {EventKind.DOOR_HELD_OPEN}


def test_values_are_unique() -> None:
    # An enum quietly makes a second name with the same value an alias; @unique refuses it at import.
    assert len(EventKind.__members__) == len({kind.value for kind in EventKind.__members__.values()})


def test_an_event_hashes_and_serializes_the_same_with_a_member_or_its_string() -> None:
    ts = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def event(kind: str, alarm: str) -> Event:
        return Event(id="alarm:door.forced:e1", kind=kind, source="bridge-1", ts=ts, received_ts=ts, door="d1",
                     detail={"alarm": alarm})

    member, text = event(EventKind.ALARM_RAISED, EventKind.DOOR_FORCED), event("alarm.raised", "door.forced")
    assert entry_body(*member.record("bridge-1")) == entry_body(*text.record("bridge-1"))
    assert member.detail_json == text.detail_json == '{"alarm":"door.forced"}'
    published = c.PublishedEvent(id="e1", ts=ts, kind=member.kind, source=member.source)
    assert json.loads(published.model_dump_json())["kind"] == "alarm.raised"


@pytest.mark.parametrize("prefix", sorted(BUILT_AT_RUN_TIME))
def test_kinds_built_at_run_time_are_members(prefix: str) -> None:
    values = BUILT_AT_RUN_TIME[prefix]
    assert values
    assert {f"{prefix}{v}" for v in values} <= {kind.value for kind in EventKind}


def _production_code() -> list[tuple[str, ast.Module]]:
    files = [p for pkg in PRODUCTION for p in sorted((ROOT / pkg).rglob("*.py"))
             if "migrations" not in p.parts and p.name != "event_kinds.py"]
    return [(str(p.relative_to(ROOT)), ast.parse(p.read_text(), str(p))) for p in files]


def test_every_kind_the_code_names_is_a_member() -> None:
    """Kinds written as literals (of a family the enum knows), built by f-strings, and ``EventKind.X``
    references (a typo there is an AttributeError only when that path runs) are all members."""
    members, literals, built, references = {k.value for k in EventKind}, [], [], []
    for where, tree in _production_code():
        strings = {id(piece) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for piece in node.values}
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                start = str(node.values[0].value)
                if "." in start and start.split(".")[0] in FAMILIES and KIND_RE.match(start.rstrip("_.") + ".x"):
                    built.append((where, node.lineno, start))
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and KIND_RE.match(node.value)
                  and node.value.split(".")[0] in FAMILIES and id(node) not in strings | docstrings):
                literals.append((where, node.lineno, node.value))
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "EventKind":
                references.append((where, node.lineno, node.attr))
    foreign_key_or_file = ("id", "html", "toml")
    assert [(w, n, v) for w, n, v in literals if v not in members and v not in NOT_KINDS
            and v.rsplit(".", 1)[1] not in foreign_key_or_file] == []
    assert [(w, n, s) for w, n, s in built if s not in BUILT_AT_RUN_TIME] == []
    assert [(w, n, a) for w, n, a in references if a not in EventKind.__members__] == []
    assert len(references) > 50  # the scan sees the code
