"""`audit verify`: recompute every chain and check every signed checkpoint.

It names the first entry that was modified, deleted, inserted or reordered (and carries on, so several
independent edits are all reported), and any checkpoint that no longer matches the log or whose signature
does not verify against the trusted public keys. Long chains are split into seq ranges checked in
parallel processes: each range starts from the stored hash of the entry before it, and a wrong stored hash
there is reported by the range that owns that entry.

Sealed segments (badge_bridge.audit.segments) are checked too: their signatures, and their signed last hash
against the log. A chain whose first segments were pruned under the retention policy starts at its first
remaining entry, anchored by the last pruned segment's signed last hash; such a range is reported in
``ChainStatus.pruned_through``, not as deleted. Only a prefix of whole segments, each with a valid signed
prune record, counts as pruned: any other missing entry is reported as deleted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import Connection

from badge_bridge.audit.writer import GENESIS, checkpoint_message, entry_body, entry_hash
from badge_bridge.db import make_engine
from badge_bridge.keys import verify_signature
from badge_bridge.models import AuditEntry, Segment
from badge_bridge.audit.segments import prune_message, segment_message

RANGE_MIN = 200_000
"""Below this many entries a chain is checked in this process: starting workers costs more than it saves."""
MAX_FINDINGS = 100


@dataclass(frozen=True)
class Finding:
    chain_id: str
    seq: int
    problem: str
    """modified, deleted, inserted, reordered, checkpoint, or segment."""
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
    pruned_through: int = 0
    """Entries 1..pruned_through were pruned under the retention policy (signed), not deleted."""
    pruned_segments: int = 0
    segments: int = 0


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


def _verify_range(url: str, chain: str, lo: int, hi: int, anchor: tuple[int, str] | None) -> tuple[int, list[Finding]]:
    """Check entries lo..hi of one chain; runs in a worker process for long chains."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _scan(conn, chain, lo, hi, anchor)
    finally:
        engine.dispose()


def _scan(conn: Connection, chain: str, lo: int, hi: int, anchor: tuple[int, str] | None = None) -> tuple[int, list[Finding]]:
    """``anchor`` (next seq, hash before it) starts a chain whose first entries were pruned."""
    findings: list[Finding] = []
    last, expected, count = GENESIS, lo, 0
    if anchor is not None:
        expected, last = anchor
    elif lo > 1:
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


def _check_segments(
    conn: Connection, status: ChainStatus, trusted: Mapping[str, Ed25519PublicKey], first_remaining: int | None
) -> tuple[tuple[int, str] | None, dict[int, str], list[Finding]]:
    """Check the chain's sealed segments; return where the remaining log starts after the pruned prefix
    (next seq, hash before it), the pruned segments' signed last hashes by seq, and the findings."""
    chain = status.chain_id
    findings: list[Finding] = []
    pruned_last: dict[int, str] = {}
    anchor_seq, anchor_hash, prefix = 0, GENESIS, True
    rows = conn.execute(
        select(Segment.day, Segment.first_seq, Segment.last_seq, Segment.size, Segment.root,
               Segment.prev_segment_last_hash, Segment.last_hash, Segment.key_id, Segment.signature, Segment.pruned,
               Segment.pruned_us, Segment.prune_key_id, Segment.prune_signature, AuditEntry.hash)
        .outerjoin(AuditEntry, (AuditEntry.chain_id == Segment.chain_id) & (AuditEntry.seq == Segment.last_seq))
        .where(Segment.chain_id == chain).order_by(Segment.first_seq)
    )
    for day, first, last, size, root, prev, last_hash, key_id, sig, pruned, pruned_us, pkey_id, psig, entry in rows:
        status.segments += 1
        key = trusted.get(key_id)
        signed = key is not None and verify_signature(key, sig, segment_message(chain, day, first, last, size, root,
                                                                                 prev, last_hash))
        if key is None:
            findings.append(Finding(chain, first, "segment", f"the segment of {day} is signed by key {key_id}, "
                                    "which is not a trusted key"))
        elif not signed:
            findings.append(Finding(chain, first, "segment", f"the signature of the segment of {day} does not verify: "
                                    "the segment was altered"))
        if pruned:
            pkey = trusted.get(pkey_id or "")
            record = pkey is not None and verify_signature(pkey, psig or "", prune_message(chain, first, last, last_hash,
                                                                                           pruned_us or 0))
            if not record:
                findings.append(Finding(chain, first, "segment", f"the segment of {day} is marked pruned without a "
                                        "valid signed prune record"))
            elif (signed and prefix and first == anchor_seq + 1 and prev == anchor_hash
                  and (first_remaining is None or last < first_remaining)):
                anchor_seq, anchor_hash = last, last_hash
                pruned_last[last] = last_hash
                status.pruned_segments += 1
                continue
        prefix = False
        if pruned:
            continue  # its missing entries are not covered by the pruned prefix: the scan reports them deleted
        if entry is None and last > status.head_seq:
            findings.append(Finding(chain, status.head_seq + 1, "deleted", f"entries {status.head_seq + 1}..{last} are "
                                    f"missing: the segment signed for {day} vouches for them"))
        elif entry is not None and entry != last_hash:
            findings.append(Finding(chain, last, "segment", f"the log up to here differs from the segment signed for "
                                    f"{day}: entries were rewritten"))
    status.pruned_through = anchor_seq
    return ((anchor_seq + 1, anchor_hash) if anchor_seq else None), pruned_last, findings


def _check_checkpoints(
    conn: Connection, status: ChainStatus, trusted: Mapping[str, Ed25519PublicKey], pruned_last: Mapping[int, str]
) -> list[Finding]:
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
        elif entry is None and seq <= status.pruned_through:
            if pruned_last.get(seq, head) != head:
                findings.append(Finding(chain, seq, "checkpoint", "the pruned log up to here differs from what was "
                                        "signed: its segment and this checkpoint disagree"))
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
        chains = {row[0]: row[1:] for row in conn.execute(text(sql), dict(chain=chain)).all()}
        sealed = select(Segment.chain_id).distinct()
        sealed_chains = set(conn.scalars(sealed.where(Segment.chain_id == chain) if chain else sealed))
        for chain_id in sorted(chains.keys() | sealed_chains):
            lo, hi, count = chains.get(chain_id, (None, 0, 0))
            status = report.chains[chain_id] = ChainStatus(chain_id, head_seq=hi)
            anchor, pruned_last, found = _check_segments(conn, status, trusted, lo)
            report.findings.extend(found)
            if lo is None:  # every entry pruned
                status.head_seq, status.head_hash = status.pruned_through, anchor[1] if anchor else GENESIS
                report.findings.extend(_check_checkpoints(conn, status, trusted, pruned_last))
                continue
            status.head_hash = _one(conn, "SELECT hash FROM audit_entry WHERE chain_id=:c AND seq=:s", c=chain_id, s=hi)
            if lo != 1 and anchor is None:
                report.findings.append(Finding(chain_id, 1, "deleted", f"entries 1..{lo - 1} are missing"))
            parts = max(1, min(jobs, count // RANGE_MIN))
            bounds = [lo + (hi - lo + 1) * i // parts for i in range(parts)] + [hi + 1]
            ranges = [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]
            anchors = [anchor] + [None] * (parts - 1)
            if parts == 1:
                results = [_scan(conn, chain_id, lo, hi, anchor)]
            else:
                with ProcessPoolExecutor(parts) as pool:
                    results = list(pool.map(_verify_range, [url] * parts, [chain_id] * parts,
                                            [a for a, _ in ranges], [b for _, b in ranges], anchors))
            for scanned, found in results:
                status.entries += scanned
                report.findings.extend(found)
            report.findings.extend(_check_checkpoints(conn, status, trusted, pruned_last))
        orphans = conn.execute(text(
            "SELECT chain_id, count(*) FROM checkpoint" + (" WHERE chain_id = :chain" if chain else "")
            + " GROUP BY chain_id"), dict(chain=chain)).all()
        for chain_id, n in orphans:
            if chain_id not in report.chains:
                report.findings.append(Finding(chain_id, 1, "deleted", f"{n} signed checkpoints exist but the chain is empty"))
    report.findings.sort(key=lambda f: (f.chain_id, f.seq))
    return report
