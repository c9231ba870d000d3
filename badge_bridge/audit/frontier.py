"""A chain's Merkle tree frontier (``merkle.CompactRange``) at a given size: from the nearest one stored in
tree_frontier and the entries after it. Kept before entries are pruned, so the tree can still be taken up
after them (the export of a partly pruned month, a head after a restart)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection

from badge_bridge.audit import merkle
from badge_bridge.models import TreeFrontier

_HASHES = text("SELECT seq, hash FROM audit_entry WHERE chain_id = :c AND seq BETWEEN :lo AND :hi ORDER BY seq")


def entry_hashes(conn: Connection, chain: str, lo: int, hi: int) -> Iterator[tuple[int, str]]:
    yield from conn.execute(_HASHES, dict(c=chain, lo=lo, hi=hi),
                            execution_options={"stream_results": True, "yield_per": 20_000})


def frontier_at(conn: Connection, chain: str, size: int) -> merkle.CompactRange | None:
    """The tree's frontier at ``size`` entries: from the nearest stored one (tree_frontier) and the entries
    after it; None if entries it needs are gone (pruned with no frontier kept)."""
    row = conn.execute(select(TreeFrontier.size, TreeFrontier.nodes).where(
        TreeFrontier.chain_id == chain, TreeFrontier.size <= size).order_by(TreeFrontier.size.desc()).limit(1)).first()
    frontier = merkle.CompactRange()
    if row is not None:
        try:
            frontier = merkle.CompactRange.from_text(row[0], row[1])
        except ValueError:
            frontier = merkle.CompactRange()
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
