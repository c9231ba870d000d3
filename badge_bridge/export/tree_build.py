"""The exporter's side of ``tree_proof``: the month's heads, cosignatures, segments and pruned days read
from the database, and one pass over the entries' hashes (in a process of its own, beside the CSV and
JSON Lines writers) that regrows the tree, checks every exported root against the rows and makes the
consistency proof from the previous month's covering head.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, exists, func, or_, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from badge_bridge.audit.frontier import entry_hashes, frontier_at
from badge_bridge.audit.segments import segment_dict, utc_day
from badge_bridge.audit.tree_head import Cosignature, TreeHead
from badge_bridge.db import make_engine
from badge_bridge.export.tree_proof import (
    ChainTree,
    TreeResult,
    TreeWalk,
    WitnessedHead,
    consistency_proof,
    consistency_ranges,
    root_problems,
)
from badge_bridge.models import Segment
from badge_bridge.models import TreeHead as TreeHeadRow
from badge_bridge.models import WitnessCosignature as CosignatureRow

HOUR_US = 3_600_000_000
_HEAD = (TreeHeadRow.chain_id, TreeHeadRow.size, TreeHeadRow.root, TreeHeadRow.head_hash, TreeHeadRow.signed_us,
         TreeHeadRow.key_id, TreeHeadRow.signature)


def _head(row: Any) -> TreeHead:
    return TreeHead(*row)


def covering_head(conn: Connection, chain: str, seq: int, end_us: int) -> TreeHead | None:
    """The first head that covers entry ``seq`` and shows the period ending at ``end_us`` was over: it also
    covers a later entry, or was signed, or countersigned by a witness, at or after ``end_us`` (an idle chain's
    unchanged head is countersigned again hourly)."""
    fresh = exists().where(CosignatureRow.chain_id == TreeHeadRow.chain_id, CosignatureRow.size == TreeHeadRow.size,
                           CosignatureRow.cosigned_us >= end_us)
    row = conn.execute(select(*_HEAD).where(TreeHeadRow.chain_id == chain, or_(
        TreeHeadRow.size > seq, and_(TreeHeadRow.size == seq, or_(TreeHeadRow.signed_us >= end_us, fresh))))
        .order_by(TreeHeadRow.size, TreeHeadRow.signed_us).limit(1)).first()
    return _head(row) if row is not None else None


def _witnessed(conn: Connection, head: TreeHead) -> WitnessedHead:
    rows = conn.execute(text("SELECT witness_key_id, cosigned_us, signature FROM witness_cosignature "
                             "WHERE chain_id = :c AND size = :s ORDER BY witness_key_id"),
                        dict(c=head.chain_id, s=head.size))
    return WitnessedHead(head, tuple(Cosignature(*r) for r in rows))


def chain_tree(conn: Connection, chain: str, first_seq: int, last_seq: int, start_us: int, end_us: int
               ) -> tuple[ChainTree, int]:
    """Everything of the chain's ``tree`` but the frontier and the consistency proof (the tree pass makes
    those), and how far the rows must be read (the covering head's size, at least)."""
    cover = covering_head(conn, chain, last_seq, end_us)
    previous = covering_head(conn, chain, first_seq - 1, start_us) if first_seq > 1 else None
    heads: list[TreeHead] = []
    if cover is not None:
        # The last head of each hour (sizes grow with time): a month of 10-second heads is a quarter of a
        # million signatures to check, one an hour keeps every root checked against the rows hour by hour.
        # Countersigned ones only: a head the witness missed (away a few seconds at the hour's end) must not
        # stand for the hour, every exported head needs the witness's cosignature.
        witnessed = exists().where(CosignatureRow.chain_id == TreeHeadRow.chain_id,
                                   CosignatureRow.size == TreeHeadRow.size)
        hourly = (select(func.max(TreeHeadRow.size)).where(
            TreeHeadRow.chain_id == chain, TreeHeadRow.size.between(first_seq, cover.size - 1), witnessed)
            .group_by(TreeHeadRow.signed_us // HOUR_US))  # floor division: "/" is true division in SQLAlchemy 2
        heads = [_head(r) for r in conn.execute(select(*_HEAD).where(
            TreeHeadRow.chain_id == chain, TreeHeadRow.size.in_(hourly.scalar_subquery())).order_by(TreeHeadRow.size))]
        heads.append(cover)
    end_seq = max(last_seq, cover.size if cover else 0)
    with Session(conn) as orm:  # segment_dict reads ORM rows
        segs = orm.scalars(select(Segment).where(Segment.chain_id == chain, Segment.pruned.is_(False),
                                                  Segment.last_seq >= first_seq, Segment.first_seq <= end_seq)
                            .order_by(Segment.first_seq)).all()
        first_day, last_day = utc_day(start_us), utc_day(end_us - 1)
        pruned = orm.scalars(select(Segment).where(Segment.chain_id == chain, Segment.pruned.is_(True), or_(
            Segment.day.between(first_day, last_day), Segment.last_seq == first_seq - 1))
            .order_by(Segment.first_seq)).all()
    return ChainTree(0, None, tuple(_witnessed(conn, h) for h in heads),
                     _witnessed(conn, previous) if previous else None, (),
                     tuple(segment_dict(s) for s in segs),
                     tuple(dict(segment_dict(s), pruned_us=s.pruned_us, prune_key_id=s.prune_key_id,
                                prune_signature=s.prune_signature) for s in pruned)), end_seq


def tree_pass(url: str, jobs: list[tuple[str, int, int, int, dict[str, Any]]]) -> list[TreeResult]:
    """For each (chain, first_seq, last_seq, end_seq, tree as dict): the frontier before first_seq, the rows'
    hashes through end_seq regrown into the tree and checked against every head and segment, and the
    consistency proof from the previous head. Runs in a worker process: it needs only the URL."""
    engine = make_engine(url)
    results = []
    try:
        with engine.connect() as conn:
            for chain, first_seq, last_seq, end_seq, tree_dict in jobs:
                results.append(_one_chain(conn, chain, first_seq, last_seq, end_seq, ChainTree.from_dict(tree_dict)))
    finally:
        engine.dispose()
    return results


def _one_chain(conn: Connection, chain: str, first_seq: int, last_seq: int, end_seq: int, tree: ChainTree) -> TreeResult:
    result = TreeResult()
    frontier = frontier_at(conn, chain, first_seq - 1)
    if frontier is None:
        result.problems.append(f"chain {chain}: the tree before seq {first_seq} cannot be rebuilt (entries before the "
                               "month were pruned and no frontier was kept): the heads' roots cannot be checked")
        return result
    result.frontier = frontier.to_text()
    cover, prev = tree.covering, tree.previous
    ranges = tree.watched_ranges(first_seq, end_seq)
    if cover is not None and prev is not None and 0 < prev.head.size <= cover.size:
        ranges |= {r for r in consistency_ranges(prev.head.size, cover.size) if r[0] >= prev.head.size}
    walk = TreeWalk(frontier, tree.watched_sizes(), ranges, [prev.head.size] if prev else [])
    leaf = walk.leaf
    for seq, entry_hash in entry_hashes(conn, chain, first_seq, end_seq):
        leaf(seq, entry_hash)
    if walk.broken or walk.size < end_seq:
        result.problems.append(f"chain {chain}: entries between seq {first_seq} and {end_seq} (the month and the rows "
                               f"up to its covering head) are missing in the database (the log ends or breaks at "
                               f"{walk.size})")
        return result
    result.problems += root_problems(chain, tree, walk, last_seq)
    old = walk.frontiers.get(prev.head.size) if prev else None
    if cover is not None and old is not None and old.size <= cover.size:
        result.consistency = consistency_proof(old, cover.size, walk.range_roots)
    return result
