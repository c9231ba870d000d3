"""Stored tree frontiers (``tree_frontier``): a chain's Merkle tree at one size, kept as its O(log n)
complete subtrees so the tree over the whole chain can be taken up again where the entries before that size
are gone (pruned under the retention policy) or not worth rereading.

Sealing stores one at each new segment's last entry, so a chain pruned up to any segment still gives the
root of its whole tree. A frontier is not signed: a wrong one gives a root that no countersigned tree head
has, which ``audit verify --witness`` reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from badge_bridge.audit.merkle import CompactRange
from badge_bridge.models import AuditEntry, Segment, TreeFrontier


def load(conn: Connection, chain_id: str, size: int) -> CompactRange | None:
    """The stored frontier of the chain's first ``size`` entries (the empty one for 0), or None."""
    if size == 0:
        return CompactRange()
    nodes = conn.scalar(select(TreeFrontier.nodes).where(TreeFrontier.chain_id == chain_id, TreeFrontier.size == size))
    if nodes is None:
        return None
    try:
        return CompactRange.from_text(size, nodes)
    except ValueError:
        return None


def _hashes(conn: Connection, chain_id: str, lo: int, hi: int) -> Iterable[Any]:
    return conn.execute(
        select(AuditEntry.seq, AuditEntry.hash).where(AuditEntry.chain_id == chain_id, AuditEntry.seq.between(lo, hi))
        .order_by(AuditEntry.seq), execution_options={"stream_results": True, "yield_per": 20_000})


def _start(conn: Connection, chain_id: str, size: int) -> CompactRange | None:
    """The frontier at ``size``: stored, or rebuilt from entries 1..size while they are all there."""
    stored = load(conn, chain_id, size)
    if stored is not None:
        return stored
    count = conn.scalar(select(func.count()).where(AuditEntry.chain_id == chain_id, AuditEntry.seq.between(1, size)))
    if count != size:
        return None
    tree = CompactRange()
    for _seq, digest in _hashes(conn, chain_id, 1, size):
        tree.append(bytes.fromhex(digest))
    return tree


def store_at_segments(conn: Connection, chain_id: str, made: Sequence[Segment]) -> None:
    """Store the frontier at each new segment's last entry (where absent). The segments were just cut from
    a chain that verified over their range, so their entries are all there."""
    if not made:
        return
    tree = _start(conn, chain_id, made[0].first_seq - 1)
    if tree is None:
        return  # the entries before were pruned without a frontier: nothing to take up from
    have = set(conn.scalars(select(TreeFrontier.size).where(
        TreeFrontier.chain_id == chain_id, TreeFrontier.size.in_([s.last_seq for s in made]))))
    ends = {s.last_seq for s in made}
    for seq, digest in _hashes(conn, chain_id, made[0].first_seq, made[-1].last_seq):
        tree.append(bytes.fromhex(digest))
        if seq in ends and seq not in have and tree.end == seq:
            conn.execute(insert(TreeFrontier).values(chain_id=chain_id, size=seq, nodes=tree.to_text()))
