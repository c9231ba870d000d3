"""Stored tree frontiers (``tree_frontier``): a chain's Merkle tree at one size, kept as its O(log n)
complete subtrees (``merkle.CompactRange``) so the tree over the whole chain can be taken up again where the
entries before that size are gone (pruned under the retention policy) or not worth rereading.

Sealing stores one at each new segment's last entry and pruning before it deletes, so a chain pruned up to
any segment still gives the root of its whole tree (``audit verify --witness``, the export of a partly pruned
month). A frontier is not signed: a wrong one gives a root that no signed or countersigned tree head has.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection

from badge_bridge.audit import merkle
from badge_bridge.models import Segment, TreeFrontier

_HASHES = text("SELECT seq, hash FROM audit_entry WHERE chain_id = :c AND seq BETWEEN :lo AND :hi ORDER BY seq")


def entry_hashes(conn: Connection, chain: str, lo: int, hi: int) -> Iterator[tuple[int, str]]:
    yield from conn.execute(_HASHES, dict(c=chain, lo=lo, hi=hi),
                            execution_options={"stream_results": True, "yield_per": 20_000})


def load(conn: Connection, chain_id: str, size: int) -> merkle.CompactRange | None:
    """The stored frontier of the chain's first ``size`` entries (the empty one for 0), or None."""
    if size == 0:
        return merkle.CompactRange()
    return merkle.stored_frontier(size, conn.scalar(select(TreeFrontier.nodes).where(
        TreeFrontier.chain_id == chain_id, TreeFrontier.size == size)))


def frontier_at(conn: Connection, chain: str, size: int) -> merkle.CompactRange | None:
    """The tree's frontier at ``size`` entries: from the nearest stored one (tree_frontier) and the entries
    after it; None if entries it needs are gone (pruned with no frontier kept)."""
    row = conn.execute(select(TreeFrontier.size, TreeFrontier.nodes).where(
        TreeFrontier.chain_id == chain, TreeFrontier.size <= size).order_by(TreeFrontier.size.desc()).limit(1)).first()
    frontier = (merkle.stored_frontier(row[0], row[1]) if row is not None else None) or merkle.CompactRange()
    for seq, entry_hash in entry_hashes(conn, chain, frontier.size + 1, size):
        if seq != frontier.size + 1:
            return None
        frontier.append(bytes.fromhex(entry_hash))
    return frontier if frontier.size == size else None


def keep_frontier(conn: Connection, chain: str, size: int) -> None:
    """Store the frontier at ``size`` if it is not stored yet: done before entries are pruned, so the tree
    can still be taken up after them (an export of a partly pruned month needs it)."""
    if conn.scalar(select(TreeFrontier.size).where(TreeFrontier.chain_id == chain, TreeFrontier.size == size)):
        return
    frontier = frontier_at(conn, chain, size)
    if frontier is not None:
        conn.execute(insert(TreeFrontier).values(chain_id=chain, size=size, nodes=frontier.to_text()))


def store_at_segments(conn: Connection, chain_id: str, made: Sequence[Segment]) -> None:
    """Store the frontier at each new segment's last entry (where absent). The segments were just cut from
    a chain that verified over their range, so their entries are all there."""
    if not made:
        return
    tree = frontier_at(conn, chain_id, made[0].first_seq - 1)
    if tree is None:
        return  # the entries before were pruned without a frontier: nothing to take up from
    have = set(conn.scalars(select(TreeFrontier.size).where(
        TreeFrontier.chain_id == chain_id, TreeFrontier.size.in_([s.last_seq for s in made]))))
    ends = {s.last_seq for s in made}
    for seq, digest in entry_hashes(conn, chain_id, made[0].first_seq, made[-1].last_seq):
        tree.append(bytes.fromhex(digest))
        if seq in ends and seq not in have and tree.end == seq:
            conn.execute(insert(TreeFrontier).values(chain_id=chain_id, size=seq, nodes=tree.to_text()))
