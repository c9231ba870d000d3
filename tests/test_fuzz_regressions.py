"""Every input the fuzz harness (`make fuzz`, docs/fuzz.md) found breaking something, replayed: fuzz/crashers/.

A parser input runs its fuzz target (fuzz/targets.py): refused with the parser's documented exception, or
accepted as the strict contract allows. An MQTT message goes through the bridge's own pipeline
(fuzz/oracle.py: the MQTT driver's dispatch, the processor, the audit writer) on SQLite and on PostgreSQL,
and must end processed or dead-lettered, acknowledged once, committed, counted, bounded, without a PIN
stored and without a grant.

Times in an input are moved to keep their distance from now (``Crasher.replay``). Inputs that still break
the code are strict xfails naming their finding in ``FINDINGS``; delete the entry with the fix, and the
test must pass.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fuzz import store
from fuzz.oracle import Oracle
from fuzz.site import write_site
from fuzz.targets import TARGETS

DATABASES = ("sqlite", "postgresql")
PG = ("postgresql",)
F = {
    "F01": "F01 poison: a lone surrogate reaches a dead letter's text, the audit writer retries it for ever",
    "F02": "F02 poison: a NUL reaches an event's text, PostgreSQL refuses it, the writer retries it for ever",
    "F03": "F03 unacked: odd-length card.raw_hex raises ValueError in ingest._card",
    "F04": "F04 unacked: a camera evidence.event outside the id alphabet raises InvalidEvent",
    "F05": "F05 unacked: a lone surrogate beside a pin field raises UnicodeEncodeError in records.redact",
    "F06": "F06 unacked: esp-rfid JSON nested past the recursion limit raises RecursionError",
    "F07": "F07 unacked: a 5000-digit integer raises ValueError in esp-rfid's JSON load",
    "F08": "F08 storage: a refused payload is stored whole (up to 1 MiB)",
    "F09": "F09 secret: a PIN in a payload that is not a JSON object is stored verbatim",
    "F10": "F10 contract: v true, 1.0 or missing is accepted",
    "F11": "F11 contract: a time without a zone (or a number in a string) is accepted",
    "F12": "F12 contract: card numbers in other digits or with surrounding whitespace are accepted",
    "F13": "F13 contract: a time more than 30 s ahead is accepted",
    "F14": "F14 contract: a time before 2000 (year 1) is accepted",
    "F15": "F15 contract: an offline decision is accepted from a controller that is online",
    "F16": "F16 topics: a contract message on the esp-rfid controller's topic is accepted",
    "N1": "N1 unacked: a lone surrogate in an esp-rfid message raises UnicodeEncodeError in esp_rfid._id",
    "N2": "N2 unacked: a huge esp-rfid uptime raises OverflowError or ValueError in esp_rfid._uptime",
    "N3": "N3 topics: a contract message on the OSDP bus controller's MQTT topic is taken as from the bus",
    "N4": "N4 secret: a PIN in a wrongly typed field is quoted by the validation error into the audit log",
    "N5": "N5 unacked: a non-ASCII letter in a topic's device name makes dead_letter raise InvalidEvent",
    "N6": "N6 contract: an ASCII card number ending in a newline is accepted (cards.ASCII_RE: match with $)",
    "N7": "N7 contract: NaN and Infinity, which are not JSON, are accepted as numbers",
    "N8": "N8 unacked: camera motion that started in year 1 raises OverflowError in correlate.covering",
}
"""Finding ids: F from issue 12, N found by the fuzzer (docs/fuzz.md)."""
FINDINGS: dict[str, tuple[str, tuple[str, ...]]] = {}
"""Crasher id -> (finding, the databases it fails on today): strict xfails until the fix."""
CRASHERS = store.load()


def _cases(*, messages: bool) -> list[object]:
    cases = []
    for crasher in CRASHERS:
        if (crasher.target == "message") != messages:
            continue
        for database in DATABASES if messages else ("",):
            finding, failing = FINDINGS.get(crasher.id, ("", ()))
            marks = [pytest.mark.xfail(strict=True, reason=finding)] if finding and (
                not messages or database in failing) else []
            cases.append(pytest.param(crasher, database, marks=marks,
                                      id=f"{crasher.id}-{database}" if database else crasher.id))
    return cases


@pytest.mark.parametrize(("crasher", "database"), _cases(messages=False))
def test_parser_refuses_or_accepts_within_the_contract(crasher: store.Crasher, database: str) -> None:
    TARGETS[crasher.target](crasher.replay(datetime.now(UTC)))


@pytest.mark.parametrize(("crasher", "database"), _cases(messages=True))
def test_message_ends_processed_or_dead_lettered(crasher: store.Crasher, database: str, tmp_path: Path,
                                                 request: pytest.FixtureRequest) -> None:
    db_url = request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "pg_url"}[database])
    oracle = Oracle(write_site(tmp_path, db_url), db_url)
    try:
        verdict = oracle.check(crasher.topic or "", crasher.replay(datetime.now(UTC)))
    finally:
        oracle.close()
    assert verdict.problems == []
