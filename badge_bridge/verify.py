"""`audit verify`: recompute every chain and check every signed checkpoint.

It names the first entry that was modified, deleted, inserted or reordered (and carries on, so several
independent edits are all reported), and any checkpoint that no longer matches the log or whose signature
does not verify against the trusted public keys. Long chains are split into seq ranges checked in
parallel processes: each range starts from the stored hash of the entry before it, and a wrong stored hash
there is reported by the range that owns that entry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from badge_bridge.audit import GENESIS, checkpoint_message, entry_body, entry_hash
from badge_bridge.db import make_engine
from badge_bridge.keys import verify_signature

RANGE_MIN = 200_000
"""Below this many entries a chain is checked in this process: starting workers costs more than it saves."""
MAX_FINDINGS = 100


@dataclass(frozen=True)
class Finding:
    chain_id: str
    seq: int
    problem: str
    """modified, deleted, inserted, reordered, or checkpoint."""
    message: str

    def __str__(self) -> str:
        return f"chain {self.chain_id} entry {self.seq}: {self.problem}: {self.message}"


@dataclass
class ChainStatus:
    chain_id: str
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    checkpoints: int = 0
    last_checkpoint_seq: int = 0


@dataclass
class Report:
    chains: dict[str, ChainStatus] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        return min(self.findings, key=lambda f: (f.chain_id, f.seq)) if self.findings else None


_ROWS = text(
    "SELECT seq, event_id, ts_us, received_us, source, door, kind, subject, detail, hash, person_id FROM audit_entry "
    "WHERE chain_id = :chain AND seq BETWEEN :lo AND :hi ORDER BY seq, id"
)


def _one(conn: Connection, sql: str, **params: object) -> object:
    return conn.execute(text(sql), params).scalar()


def _classify(conn: Connection, chain: str, seq: int, event_id: str, body: str, stored: str, last: str) -> Finding:
    """A row whose hash does not follow from the previous one: say what happened to it."""
    prev = _one(conn, "SELECT prev_hash FROM audit_entry WHERE chain_id=:c AND seq=:s AND event_id=:e",
                c=chain, s=seq, e=event_id)
    consistent = isinstance(prev, str) and entry_hash(prev, body) == stored
    if prev == last or not consistent:
        return Finding(chain, seq, "modified", f"event {event_id}: its content no longer matches its hash")
    linked = _one(conn, "SELECT min(seq) FROM audit_entry WHERE chain_id=:c AND hash=:h", c=chain, h=prev)
    if isinstance(linked, int) and linked > seq:
        return Finding(chain, seq, "reordered",
                       f"event {event_id} was written after entry {linked} but now stands before it")
    if isinstance(linked, int) and linked < seq - 1:
        return Finding(chain, linked + 1, "inserted",
                       f"entries {linked + 1}..{seq - 1} are not in the chain: event {event_id} follows entry {linked}")
    return Finding(chain, seq, "deleted",
                   f"the entry that preceded event {event_id} is gone (deleted, or rewritten with a new hash)")


def _verify_range(url: str, chain: str, lo: int, hi: int) -> tuple[int, list[Finding]]:
    """Check entries lo..hi of one chain; runs in a worker process for long chains."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _scan(conn, chain, lo, hi)
    finally:
        engine.dispose()


def _scan(conn: Connection, chain: str, lo: int, hi: int) -> tuple[int, list[Finding]]:
    findings: list[Finding] = []
    last, expected, count = GENESIS, lo, 0
    if lo > 1:
        # Continue from the entry before this range, so entries missing at the end of the previous range
        # are reported here as deleted, just as one scan of the whole chain would report them.
        before = conn.execute(text("SELECT seq, hash FROM audit_entry WHERE chain_id=:c AND seq<:s "
                                   "ORDER BY seq DESC LIMIT 1"), dict(c=chain, s=lo)).first()
        if before is not None:
            last, expected = before[1], before[0] + 1
    rows = conn.execution_options(stream_results=True, yield_per=20_000).execute(_ROWS, dict(chain=chain, lo=lo, hi=hi))
    for seq, event_id, ts_us, received_us, source, door, kind, subject, detail, stored, person in rows:
        count += 1
        body = entry_body(chain, event_id, ts_us, received_us, source, door, kind, subject, detail)
        if person is not None and f'"person":{person},' not in subject and f'"person":{person}}}' not in subject:
            findings.append(Finding(chain, seq, "modified",
                                    f"event {event_id}: its person index ({person}) does not match its subject"))
        if seq == expected and entry_hash(last, body) == stored:
            last, expected = stored, seq + 1
            continue
        if len(findings) >= MAX_FINDINGS:
            break
        if seq < expected:
            findings.append(Finding(chain, seq, "inserted", f"event {event_id} is a second entry numbered {seq}"))
            continue
        if seq > expected:
            gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            findings.append(Finding(chain, expected, "deleted", f"entries {gap} are missing"))
            prev = _one(conn, "SELECT prev_hash FROM audit_entry WHERE chain_id=:c AND seq=:s AND event_id=:e",
                        c=chain, s=seq, e=event_id)
            last = prev if isinstance(prev, str) else last
        if entry_hash(last, body) != stored:
            findings.append(_classify(conn, chain, seq, event_id, body, stored, last))
        last, expected = stored, seq + 1
    return count, findings


def _check_checkpoints(conn: Connection, status: ChainStatus, trusted: Mapping[str, Ed25519PublicKey]) -> list[Finding]:
    findings = []
    rows = conn.execute(
        text(
            "SELECT c.seq, c.hash, c.signed_us, c.key_id, c.signature, e.hash FROM checkpoint c "
            "LEFT JOIN audit_entry e ON e.chain_id = c.chain_id AND e.seq = c.seq "
            "WHERE c.chain_id = :c ORDER BY c.seq"
        ),
        dict(c=status.chain_id),
    )
    for seq, head, signed_us, key_id, signature, entry in rows:
        status.checkpoints += 1
        status.last_checkpoint_seq = max(status.last_checkpoint_seq, seq)
        key = trusted.get(key_id)
        chain = status.chain_id
        if key is None:
            findings.append(Finding(chain, seq, "checkpoint", f"signed by key {key_id}, which is not a trusted key"))
        elif not verify_signature(key, signature, checkpoint_message(chain, seq, head, signed_us)):
            findings.append(Finding(chain, seq, "checkpoint", "signature does not verify: the checkpoint was altered"))
        elif entry is None and seq > status.head_seq:
            end = status.head_seq
            findings.append(Finding(chain, end + 1, "deleted", f"entries {end + 1}..{seq} are missing: a signed "
                                    f"checkpoint vouches for entry {seq} but the log ends at {end}"))
        elif entry is None:
            findings.append(Finding(chain, seq, "deleted", f"a signed checkpoint vouches for entry {seq}, which is missing"))
        elif entry != head:
            findings.append(Finding(chain, seq, "checkpoint",
                                    "the log up to here differs from what was signed: entries were rewritten"))
    return findings


def verify(
    engine: Engine, url: str, trusted: Mapping[str, Ed25519PublicKey], *, chain: str | None = None, jobs: int = 0
) -> Report:
    """Verify every chain (or one). ``jobs`` 0 means one worker per core for long chains."""
    report = Report()
    jobs = jobs or os.cpu_count() or 1
    with engine.connect() as conn:
        sql = "SELECT chain_id, min(seq), max(seq), count(*) FROM audit_entry"
        sql += " WHERE chain_id = :chain GROUP BY chain_id" if chain else " GROUP BY chain_id"
        chains = conn.execute(text(sql), dict(chain=chain)).all()
        for chain_id, lo, hi, count in chains:
            status = report.chains[chain_id] = ChainStatus(chain_id, head_seq=hi)
            status.head_hash = _one(conn, "SELECT hash FROM audit_entry WHERE chain_id=:c AND seq=:s", c=chain_id, s=hi)
            if lo != 1:
                report.findings.append(Finding(chain_id, 1, "deleted", f"entries 1..{lo - 1} are missing"))
            parts = max(1, min(jobs, count // RANGE_MIN))
            bounds = [lo + (hi - lo + 1) * i // parts for i in range(parts)] + [hi + 1]
            ranges = [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]
            if parts == 1:
                results = [_scan(conn, chain_id, lo, hi)]
            else:
                with ProcessPoolExecutor(parts) as pool:
                    results = list(pool.map(_verify_range, [url] * parts, [chain_id] * parts,
                                            [a for a, _ in ranges], [b for _, b in ranges]))
            for scanned, found in results:
                status.entries += scanned
                report.findings.extend(found)
            report.findings.extend(_check_checkpoints(conn, status, trusted))
        orphans = conn.execute(text(
            "SELECT chain_id, count(*) FROM checkpoint WHERE chain_id NOT IN (SELECT DISTINCT chain_id FROM audit_entry)"
            + (" AND chain_id = :chain" if chain else "") + " GROUP BY chain_id"), dict(chain=chain)).all()
        for chain_id, n in orphans:
            report.findings.append(Finding(chain_id, 1, "deleted", f"{n} signed checkpoints exist but the chain is empty"))
    report.findings.sort(key=lambda f: (f.chain_id, f.seq))
    return report
