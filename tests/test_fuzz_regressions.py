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
FINDINGS: dict[str, tuple[str, tuple[str, ...]]] = {}
"""Crasher id -> (finding id of docs/fuzz.md, the databases it fails on today): strict xfails until the fix.
Empty: every finding so far (F01-F16 of issue 12, N1-N8 of the fuzzer) is fixed and replayed as a pass."""
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
