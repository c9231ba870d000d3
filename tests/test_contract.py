"""The MQTT contract: generated schemas are current, every example in docs/mqtt.md is valid per schema and
per model, and malformed messages are refused by both."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, TypeAdapter, ValidationError

from badge_bridge.controllers import contract
from badge_bridge.controllers.schemas import REGENERATE, SUFFIX, render_schemas

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "docs" / "schemas"
DOC = ROOT / "docs" / "mqtt.md"
SCHEMA_COMMENT = re.compile(r"^<!-- schema: ([a-z-]+) -->$")


# --- generated files ---------------------------------------------------------------------------------


def test_schema_files_equal_the_models() -> None:
    rendered = render_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob(f"*{SUFFIX}")}
    stale = sorted(name for name in rendered if on_disk.get(name) != rendered[name])
    extra = sorted(set(on_disk) - set(rendered))
    assert not stale and not extra, (
        f"docs/schemas/ is out of date with badge_bridge/controllers/contract.py "
        f"(differs or missing: {stale}; no longer generated: {extra}). Regenerate with `{REGENERATE}` "
        f"and commit the files.")


@pytest.mark.parametrize("name", sorted(contract.SCHEMAS))
def test_schemas_are_valid_json_schema(name: str) -> None:
    Draft202012Validator.check_schema(contract.json_schemas()[name])


def test_date_time_format_is_checked() -> None:
    """Without rfc3339-validator installed, jsonschema silently skips date-time and naive times pass."""
    assert not Draft202012Validator.FORMAT_CHECKER.conforms("2026-03-02T08:15:00", "date-time"), (
        "jsonschema does not check date-time: pip install rfc3339-validator")


# --- validating with both ------------------------------------------------------------------------------


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(contract.json_schemas()[name], format_checker=Draft202012Validator.FORMAT_CHECKER)


def _schema_errors(name: str, value: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in _validator(name).iter_errors(value)]


def _parse(name: str, text: str) -> Any:
    """As the bridge does: from the raw JSON text."""
    model = contract.SCHEMAS[name]
    if isinstance(model, TypeAdapter):
        return model.validate_json(text)
    assert issubclass(model, BaseModel)
    return model.model_validate_json(text)


def _both_reject(name: str, value: Any) -> None:
    assert _schema_errors(name, value), f"schema {name} accepts {value}"
    with pytest.raises(ValidationError):
        _parse(name, json.dumps(value))


# --- the examples in docs/mqtt.md -----------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    line: int
    schema: str
    text: str

    @property
    def value(self) -> Any:
        return json.loads(self.text)


def _examples() -> list[Example]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```json":
            start = i + 1
            marker = SCHEMA_COMMENT.match(lines[i - 1].strip()) if i > 0 else None
            assert marker, (f"docs/mqtt.md line {i + 1}: a ```json block needs `<!-- schema: NAME -->` on the line "
                            f"just before it (NAME one of {sorted(contract.SCHEMAS)})")
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            out.append(Example(start, marker.group(1), "\n".join(lines[start:end])))
            i = end
        i += 1
    return out


EXAMPLES = _examples()


def test_the_doc_has_examples_of_every_message() -> None:
    assert {e.schema for e in EXAMPLES} == set(contract.SCHEMAS)
    event_types = {e.value["type"] for e in EXAMPLES if e.schema == "controller-event"}
    assert event_types == {"credential", "door", "rex", "tamper", "heartbeat"}
    command_types = {e.value["type"] for e in EXAMPLES if e.schema == "command"}
    assert command_types == {"grant", "deny", "unlock", "lock", "lockdown"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}-{e.schema}" for e in EXAMPLES])
def test_doc_example_is_valid(example: Example) -> None:
    assert example.schema in contract.SCHEMAS, f"line {example.line}: unknown schema {example.schema!r}"
    try:
        value = example.value
    except json.JSONDecodeError as exc:
        pytest.fail(f"docs/mqtt.md line {example.line}: not JSON: {exc}")
    errors = _schema_errors(example.schema, value)
    assert not errors, f"docs/mqtt.md line {example.line}: invalid per {example.schema}: {errors}"
    parsed = _parse(example.schema, example.text)
    # What the models send is valid per the schema too.
    dumped = TypeAdapter(type(parsed)).dump_python(parsed, mode="json", exclude_none=True)
    assert not _schema_errors(example.schema, dumped)
    assert _parse(example.schema, json.dumps(dumped)) == parsed


def _mutations(schema: str, value: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Generic ways to break any example: every one must be refused by the schema and the model."""
    out: list[tuple[str, dict[str, Any]]] = [("extra field", {**value, "extra": 1}),
                                             ("wrong version", {**value, "v": 2}),
                                             ("version as text", {**value, "v": "one"})]
    if "id" in value:
        out.append(("missing id", {k: v for k, v in value.items() if k != "id"}))
        out.append(("id not a string", {**value, "id": 42}))
        out.append(("id too long", {**value, "id": "x" * 129}))
    if "ts" in value:
        naive = re.sub(r"(Z|[+-]\d\d:\d\d)$", "", value["ts"])
        out.append(("naive time", {**value, "ts": naive}))
        out.append(("not a time", {**value, "ts": "yesterday"}))
    if "online" in value:
        out.append(("online not a boolean", {**value, "online": "maybe"}))
        out.append(("missing online", {k: v for k, v in value.items() if k != "online"}))
    if "type" in value:
        out.append(("unknown type", {**value, "type": "teleport"}))
    if "door" in value and schema != "published-events":  # there `door` is the audit log's free text
        out.append(("door key not a key", {**value, "door": "Main Entrance"}))
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}-{e.schema}" for e in EXAMPLES])
def test_broken_doc_examples_are_refused(example: Example) -> None:
    for what, broken in _mutations(example.schema, example.value):
        assert _schema_errors(example.schema, broken), f"line {example.line}, {what}: schema accepts it"
        with pytest.raises(ValidationError):
            _parse(example.schema, json.dumps(broken))


def _example(schema: str, **match: Any) -> dict[str, Any]:
    for e in EXAMPLES:
        if e.schema == schema and all(e.value.get(k) == v for k, v in match.items()):
            return copy.deepcopy(e.value)
    raise LookupError(f"no {schema} example with {match}")


def _set(value: dict[str, Any], path: str, new: Any) -> dict[str, Any]:
    out = copy.deepcopy(value)
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target[p]
    target[last] = new
    return out


SPECIFIC = [
    # (schema, example selector, path, new value)
    ("controller-event", {"type": "credential"}, "card.format", "wiegand99"),
    ("controller-event", {"type": "credential"}, "card.number", 1001),
    ("controller-event", {"type": "credential"}, "card.extra", True),
    ("controller-event", {"type": "credential"}, "card.bits", 12),
    ("controller-event", {"type": "credential"}, "card", "12:1001"),
    ("controller-event", {"type": "credential"}, "reader", None),
    ("controller-event", {"type": "credential"}, "id", "a b"),
    ("controller-event", {"type": "credential"}, "id", "x" * 65),
    ("command", {"type": "grant"}, "id", "grant/1"),
    ("controller-event", {"type": "credential"}, "pin", "12ab"),
    ("controller-event", {"type": "credential"}, "pin", 4711),
    ("controller-event", {"type": "credential"}, "biometric", {"match": "maybe"}),
    ("controller-event", {"type": "credential"}, "biometric", {"match": True, "score": 1.5}),
    ("controller-event", {"type": "credential"}, "biometric", {"match": True, "template": "AAAA"}),
    ("controller-event", {"type": "credential"}, "offline", {"granted": True}),
    ("controller-event", {"type": "door"}, "state", "ajar"),
    ("controller-event", {"type": "tamper"}, "state", True),
    ("controller-event", {"type": "heartbeat"}, "uptime_s", -1),
    ("controller-event", {"type": "heartbeat"}, "uptime_s", [1]),
    ("command", {"type": "grant"}, "open_time_s", 0),
    ("command", {"type": "grant"}, "open_time_s", 61),
    ("command", {"type": "grant"}, "request", None),
    ("command", {"type": "deny"}, "feedback", "green"),
    ("command", {"type": "unlock"}, "duration_s", 86_401),
    ("command", {"type": "lockdown"}, "doors", "hall-a"),
    ("command", {"type": "lockdown"}, "active", "yes please"),
    ("credential-sync", {}, "doors.hall-a.factors", ["card", "retina"]),
    ("credential-sync", {}, "schedules.always.intervals", [[0, 0]]),
    ("credential-sync", {}, "schedules.business.holidays", ["24.12.2026"]),
    ("credential-sync", {}, "entries", [{"card": "12:1001", "doors": {}}]),
    ("credential-sync", {}, "entries", [{"card": "AB" * 32, "doors": {}}]),
    ("door-state", {}, "contact", "ajar"),
    ("door-state", {}, "alarms", "door.forced"),
    ("console-command", {"type": "unlock"}, "reason", ""),
    ("console-command", {"type": "unlock"}, "user", "u" * 65),
    ("console-command", {"type": "unlock"}, "type", "open_all_doors"),
]


@pytest.mark.parametrize(("schema", "select", "path", "new"), SPECIFIC,
                         ids=[f"{s}-{p}={json.dumps(n)[:20]}" for s, _, p, n in SPECIFIC])
def test_malformed_messages_are_refused_by_both(schema: str, select: dict[str, Any], path: str, new: Any) -> None:
    _both_reject(schema, _set(_example(schema, **select), path, new))


def test_refused_before_parsing_when_too_large() -> None:
    """The limit the bridge applies before parsing; an example with padding passes the models, so the
    size check cannot be left to them."""
    big = _example("controller-event", type="credential")
    big["card"]["number"] = "1" * 64
    text = json.dumps(big) + " " * contract.MAX_PAYLOAD
    assert len(text.encode()) > contract.MAX_PAYLOAD
    _parse("controller-event", text)  # valid JSON, valid model: only the size check refuses it


# --- where the models and the schemas still disagree ------------------------------------------------


LAX = [
    # Strict models refuse what the schemas refuse: no coercion of numbers, strings or booleans.
    ("controller-event", {"type": "heartbeat"}, "ts", 1772439120),
    ("controller-event", {"type": "heartbeat"}, "uptime_s", "5"),
    ("controller-event", {"type": "credential", "reader": "cage-7-in"}, "biometric.match", "yes"),
    ("command", {"type": "lockdown"}, "active", 1),
]


@pytest.mark.parametrize(("schema", "select", "path", "new"), LAX,
                         ids=[f"{s}-{p}={json.dumps(n)}" for s, _, p, n in LAX])
def test_models_are_as_strict_as_the_schemas(schema: str, select: dict[str, Any], path: str, new: Any) -> None:
    _both_reject(schema, _set(_example(schema, **select), path, new))


def test_command_type_is_required_by_the_schema() -> None:
    grant = _example("command", type="grant")
    del grant["type"]
    _both_reject("command", grant)
