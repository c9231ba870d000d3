"""The entry-by-entry part of `audit verify`: one seq range of one chain walked in the database, each break
named as what happened to the entry (modified, deleted, inserted, reordered).

Long chains are split into ranges checked in worker processes started with ``spawn``: this module is what
such a worker imports, so it needs nothing but SQLAlchemy and the chain itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection

from badge_bridge.audit.chain import AHEAD, BEHIND, ChainWalk
from badge_bridge.db import make_engine

if TYPE_CHECKING:
    from badge_bridge.audit.witness_check import TreeTap

MAX_FINDINGS = 100

_ROWS = text(
    "SELECT seq, event_id, ts_us, received_us, source, door, kind, subject, detail, hash, person_id, prev_hash "
    "FROM audit_entry "
    "WHERE chain_id = :chain AND seq BETWEEN :lo AND :hi ORDER BY seq, id"
)
_PREV_HASH = "SELECT prev_hash FROM audit_entry WHERE chain_id=:c AND seq=:s AND event_id=:e"
Fields = tuple[str, int, int, str, str, str, str, str]
"""An entry's hashed fields after its chain: event_id, ts_us, received_us, source, door, kind, subject, detail."""


@dataclass(frozen=True)
class Finding:
    chain_id: str
    seq: int
    problem: str
    """modified, deleted, inserted, reordered, checkpoint, segment, or unsigned."""
    message: str

    def __str__(self) -> str:
        return f"chain {self.chain_id} entry {self.seq}: {self.problem}: {self.message}"


def _one(conn: Connection, sql: str, **params: object) -> object:
    return conn.execute(text(sql), params).scalar()


def _classify(conn: Connection, chain: str, seq: int, fields: Fields, stored: str, last: str) -> Finding:
    """A row whose hash does not follow from the previous one: say what happened to it."""
    event_id = fields[0]
    prev = _one(conn, _PREV_HASH, c=chain, s=seq, e=event_id)
    # Does the row still hash from the link it stored? Then it was moved, or the entry before it was removed.
    consistent = isinstance(prev, str) and not ChainWalk(chain, seq, prev).step(seq, *fields, None, stored)
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


def scan_range(url: str, chain: str, lo: int, hi: int, anchor: tuple[int, str] | None, tree: TreeTap | None = None
               ) -> tuple[int, list[Finding], TreeTap | None]:
    """``scan`` on a connection of its own: what a worker process runs (it hands back the tree it kept)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return *scan(conn, chain, lo, hi, anchor, tree), tree
    finally:
        engine.dispose()


def scan(conn: Connection, chain: str, lo: int, hi: int, anchor: tuple[int, str] | None = None,
         tree: TreeTap | None = None) -> tuple[int, list[Finding]]:
    """Check entries lo..hi of one chain: how many there are, and what broke. ``anchor`` (next seq, hash
    before it) starts a chain whose first entries were pruned. The stored ``prev_hash`` is not trusted: each
    entry is hashed from the hash of the entry before it, and a stored ``prev_hash`` that differs from that
    hash is reported too. ``tree`` keeps the range's Merkle tree (for the tree heads, audit.witness_check)."""
    findings: list[Finding] = []
    walk, count = ChainWalk(chain, lo), 0
    if anchor is not None:
        walk.expected, walk.last = anchor
    elif lo > 1:
        # Continue from the entry before this range, so entries missing at the end of the previous range
        # are reported here as deleted, just as one scan of the whole chain would report them.
        before = conn.execute(text("SELECT seq, hash FROM audit_entry WHERE chain_id=:c AND seq<:s "
                                   "ORDER BY seq DESC LIMIT 1"), dict(c=chain, s=lo)).first()
        if before is not None:
            walk.follow(before[0], before[1])
    step, follow = walk.step, walk.follow
    rows = conn.execution_options(stream_results=True, yield_per=20_000).execute(_ROWS, dict(chain=chain, lo=lo, hi=hi))
    for seq, event_id, ts_us, received_us, source, door, kind, subject, detail, stored, person, prev_hash in rows:
        count += 1
        last = walk.last
        if tree is not None:
            tree.add(seq, stored)
        if person is not None and f'"person":{person},' not in subject and f'"person":{person}}}' not in subject:
            findings.append(Finding(chain, seq, "modified",
                                    f"event {event_id}: its person index ({person}) does not match its subject"))
        breaks = step(seq, event_id, ts_us, received_us, source, door, kind, subject, detail, None, stored)
        if not breaks:
            if prev_hash != last and len(findings) < MAX_FINDINGS:
                findings.append(Finding(chain, seq, "modified", f"event {event_id}: its stored prev_hash is not the "
                                        "hash of the entry before it"))
            continue
        if len(findings) >= MAX_FINDINGS:
            break
        if breaks & BEHIND:
            findings.append(Finding(chain, seq, "inserted", f"event {event_id} is a second entry numbered {seq}"))
            continue
        fields = (event_id, ts_us, received_us, source, door, kind, subject, detail)
        if breaks & AHEAD:
            gap = f"{walk.expected}" if seq == walk.expected + 1 else f"{walk.expected}..{seq - 1}"
            findings.append(Finding(chain, walk.expected, "deleted", f"entries {gap} are missing"))
            prev = _one(conn, _PREV_HASH, c=chain, s=seq, e=event_id)
            # Take up the chain again from the link this entry stored: is the entry itself intact?
            walk.expected, walk.last = seq, prev if isinstance(prev, str) else walk.last
            breaks = step(seq, *fields, None, stored)
        if breaks:
            findings.append(_classify(conn, chain, seq, fields, stored, walk.last))
            follow(seq, stored)
    return count, findings
