"""`audit verify`: recompute every chain and check every signed checkpoint.

It names the first entry that was modified, deleted, inserted or reordered (and carries on, so several
independent edits are all reported), any checkpoint that no longer matches the log or whose signature
does not verify against the trusted public keys, and the entries no valid checkpoint covers (the writer
signs every batch, so an unsigned entry is one it did not write). The entries themselves are walked by
``badge_bridge.audit.scan``; long chains are split into seq ranges checked in parallel processes: each
range starts from the stored hash of the entry before it, and a wrong stored hash there is reported by the
range that owns that entry.

Sealed segments (badge_bridge.audit.segments) are checked too: their signatures, and their signed last hash
against the log. A chain whose first segments were pruned under the retention policy starts at its first
remaining entry, anchored by the last pruned segment's signed last hash; such a range is reported in
``ChainStatus.pruned_through``, not as deleted. Only a prefix of whole segments, each with a valid signed
prune record, counts as pruned: any other missing entry is reported as deleted.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import Connection

from badge_bridge.audit import state_check
from badge_bridge.audit.chain import GENESIS, checkpoint_message
from badge_bridge.audit.scan import Finding, scan, scan_range
from badge_bridge.audit.segments import prune_message, segment_message
from badge_bridge.audit.witness_check import TreeTap, WitnessCheck, WitnessView
from badge_bridge.keys import verify_signature
from badge_bridge.models import AuditEntry, Segment

RANGE_MIN = 200_000
"""Below this many entries a chain is checked in this process: starting workers costs more than it saves."""


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
    unchecked_signatures: int = 0
    """Older checkpoints whose signatures were not checked (see SIGN_ALL_UP_TO)."""


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


SIGN_ALL_UP_TO = 20_000
"""A chain with more checkpoints than this has the signatures of only its newest ones checked (each valid
signature vouches, through the hash chain, for every entry before it; the older checkpoints are still
checked against the log). A quiet site signs every event alone: a million signatures would take a minute.
``audit verify --every-signature`` checks them all."""
NEWEST_SIGNED = 1000


def _check_checkpoints(
    conn: Connection, status: ChainStatus, trusted: Mapping[str, Ed25519PublicKey], pruned_last: Mapping[int, str],
    every: bool = False,
) -> list[Finding]:
    findings = []
    from_seq = 0
    if not every:
        count, newest = conn.execute(text("SELECT count(*), min(seq) FROM (SELECT seq FROM checkpoint WHERE "
                                          "chain_id = :c ORDER BY seq DESC LIMIT :n) newest"),
                                     dict(c=status.chain_id, n=NEWEST_SIGNED)).one()
        total = conn.scalar(text("SELECT count(*) FROM checkpoint WHERE chain_id = :c"), dict(c=status.chain_id))
        if total > SIGN_ALL_UP_TO and count:
            from_seq = newest
    rows = conn.execute(
        text(
            "SELECT c.seq, c.hash, c.signed_us, c.key_id, c.signature, e.hash FROM checkpoint c "
            "LEFT JOIN audit_entry e ON e.chain_id = c.chain_id AND e.seq = c.seq "
            "WHERE c.chain_id = :c ORDER BY c.seq"
        ),
        dict(c=status.chain_id),
    )
    covered = status.pruned_through
    for seq, head, signed_us, key_id, signature, entry in rows:
        status.checkpoints += 1
        status.last_checkpoint_seq = max(status.last_checkpoint_seq, seq)
        key = trusted.get(key_id)
        chain = status.chain_id
        unchecked = seq < from_seq  # vouched for by a newer signature through the chain: checked against the log
        status.unchecked_signatures += unchecked
        signed = unchecked or (key is not None and verify_signature(key, signature, checkpoint_message(
            chain, seq, head, signed_us)))
        if signed and not unchecked:
            covered = max(covered, seq)  # a signature that no longer matches the log is a finding of its own
        if key is None and not unchecked:
            findings.append(Finding(chain, seq, "checkpoint", f"signed by key {key_id}, which is not a trusted key"))
        elif not signed:
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
    if status.head_seq > covered:
        findings.append(Finding(status.chain_id, covered + 1, "unsigned",
                                f"entries {covered + 1}..{status.head_seq}: no signature covers them"))
    return findings


def _parts(count: int, jobs: int) -> int:
    """How many seq ranges a chain of ``count`` entries is checked in, at once."""
    return max(1, min(jobs, count // RANGE_MIN))


def _scan_ranges(conn: Connection, pool: Executor | None, url: str, chain: str, ranges: list[tuple[int, int]],
                 anchor: tuple[int, str] | None, taps: list[TreeTap] | None
                 ) -> list[tuple[int, list[Finding], TreeTap | None]]:
    """Each range's entry count, findings and tree, in order: the workers take all ranges but the first, which
    this process checks meanwhile (one process fewer to start)."""
    (lo, hi), rest = ranges[0], ranges[1:]
    trees: list[TreeTap | None] = list(taps) if taps else [None] * len(ranges)
    later = []
    if rest:
        assert pool is not None, "verify makes a pool as large as its longest chain needs"
        later = [pool.submit(scan_range, url, chain, a, b, None, t) for (a, b), t in zip(rest, trees[1:], strict=True)]
    return [(*scan(conn, chain, lo, hi, anchor, trees[0]), trees[0])] + [f.result() for f in later]


def verify(
    engine: Engine, url: str, trusted: Mapping[str, Ed25519PublicKey], *, chain: str | None = None, jobs: int = 0,
    witnesses: Sequence[WitnessView] = (), witness_keys: Mapping[str, Ed25519PublicKey] | None = None,
    every_signature: bool = False,
) -> Report:
    """Verify every chain (or one). ``jobs`` 0 means one process per core for long chains. Workers are
    spawned, never forked: this runs inside the console's threads too, and a fork copies their locks.
    ``witnesses``: what each holds, checked against the log; ``witness_keys``: the configured witnesses'
    keys, which stored countersignatures must verify with (audit.witness_check)."""
    report = Report()
    jobs = jobs or os.cpu_count() or 1
    with engine.connect() as conn, ExitStack() as stack:
        sql = "SELECT chain_id, min(seq), max(seq), count(*) FROM audit_entry"
        sql += " WHERE chain_id = :chain GROUP BY chain_id" if chain else " GROUP BY chain_id"
        chains = {row[0]: row[1:] for row in conn.execute(text(sql), dict(chain=chain)).all()}
        sealed = select(Segment.chain_id).distinct()
        sealed_chains = set(conn.scalars(sealed.where(Segment.chain_id == chain) if chain else sealed))
        workers = max((_parts(count, jobs) for _, _, count in chains.values()), default=1) - 1
        pool = (stack.enter_context(ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")))
                if workers else None)
        heads = WitnessCheck(conn, trusted, witnesses, witness_keys, chain, every_signature)
        for chain_id in sorted(chains.keys() | sealed_chains | heads.chains):
            lo, hi, count = chains.get(chain_id, (None, 0, 0))
            status = report.chains[chain_id] = ChainStatus(chain_id, head_seq=hi)
            anchor, pruned_last, found = _check_segments(conn, status, trusted, lo)
            report.findings.extend(found)
            if lo is None:  # every entry pruned
                status.head_seq, status.head_hash = status.pruned_through, anchor[1] if anchor else GENESIS
                report.findings.extend(_check_checkpoints(conn, status, trusted, pruned_last, every_signature))
                report.findings.extend(heads.check(conn, chain_id, status.head_seq, status.pruned_through,
                                                   status.segments > 0, None))
                continue
            status.head_hash = conn.scalar(text("SELECT hash FROM audit_entry WHERE chain_id=:c AND seq=:s"),
                                           dict(c=chain_id, s=hi))
            if lo != 1 and anchor is None:
                report.findings.append(Finding(chain_id, 1, "deleted", f"entries 1..{lo - 1} are missing"))
            parts = _parts(count, jobs)
            bounds = [lo + (hi - lo + 1) * i // parts for i in range(parts)] + [hi + 1]
            ranges = [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]
            taps = heads.taps(conn, chain_id, ranges, status.pruned_through)
            scanned_ranges = _scan_ranges(conn, pool, url, chain_id, ranges, anchor, taps)
            for scanned, found, _tree in scanned_ranges:
                status.entries += scanned
                report.findings.extend(found)
            report.findings.extend(_check_checkpoints(conn, status, trusted, pruned_last, every_signature))
            trees = [t for _n, _f, t in scanned_ranges if t is not None] if taps else None
            report.findings.extend(heads.check(conn, chain_id, hi, status.pruned_through, True, trees))
        orphans = conn.execute(text(
            "SELECT chain_id, count(*) FROM checkpoint" + (" WHERE chain_id = :chain" if chain else "")
            + " GROUP BY chain_id"), dict(chain=chain)).all()
        for chain_id, n in orphans:
            if chain_id not in report.chains:
                report.findings.append(Finding(chain_id, 1, "deleted", f"{n} signed checkpoints exist but the chain is empty"))
        if chain is None:  # the access tables against the states the admin entries of every chain record
            report.findings.extend(state_check.findings(engine, trusted))
    report.findings.sort(key=lambda f: (f.chain_id, f.seq))
    return report
