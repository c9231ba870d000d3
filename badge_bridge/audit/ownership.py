"""Which rows of its chain a writer may extend, and where it goes on when it finds one it may not.

A writer extends only entries that link and that a valid checkpoint signature of a trusted key covers (every
batch it commits carries one, so its own entries, and those of another process of ours on the same chain,
always are). Any other row is foreign, a DBA's INSERT for instance: the writer never writes after it or signs
over it. It raises ``audit.foreign_entry`` and goes on in a new chain ``<base>~k`` (k = 2, 3, ...), whose first
entry, ``audit.chain_continued``, names the chain left behind, the last entry of ours there and the foreign
rows. ``<base>`` is what the writer was created with (the instance, ``<instance>.cli``, ...); state that must
survive a move is keyed by the base (``chain_ids`` selects all of a base's chains).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import ColumnElement, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstrumentedAttribute

from badge_bridge.audit.chain import GENESIS, ChainWalk, checkpoint_message
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import verify_signature

EPOCH_MARK = "~"
FOREIGN_LISTED = 100
"""An alarm names at most this many foreign seqs (and says how many there were)."""

_USED = ("SELECT 1 FROM audit_entry WHERE chain_id = :c UNION ALL "
         "SELECT 1 FROM checkpoint WHERE chain_id = :c LIMIT 1")
_CHECKPOINTS = ("SELECT c.seq, c.hash, c.signed_us, c.key_id, c.signature FROM checkpoint c "
                "JOIN audit_entry e ON e.chain_id = c.chain_id AND e.seq = c.seq AND e.hash = c.hash "
                "WHERE c.chain_id = :c AND c.seq > :s ORDER BY c.seq DESC")
_AFTER = ("SELECT seq, event_id, ts_us, received_us, source, door, kind, subject, detail, prev_hash, hash "
          "FROM audit_entry WHERE chain_id = :c AND seq > :s ORDER BY seq, id")
_HEAD = "SELECT seq, hash FROM audit_entry WHERE chain_id = :c ORDER BY seq DESC LIMIT 1"
_AT = "SELECT hash FROM audit_entry WHERE chain_id = :c AND seq = :s"
_ORPHANS = ("SELECT c.seq FROM checkpoint c WHERE c.chain_id = :c AND c.seq > :s AND NOT EXISTS (SELECT 1 FROM "
            "audit_entry e WHERE e.chain_id = c.chain_id AND e.seq = c.seq AND e.hash = c.hash) ORDER BY c.seq LIMIT 100")


def base_of(chain_id: str) -> str:
    return chain_id.split(EPOCH_MARK, 1)[0]


def epoch_id(base: str, k: int) -> str:
    """The base's k-th chain: the base itself for k = 1, else ``<base>~k``."""
    return base if k == 1 else f"{base}{EPOCH_MARK}{k}"


def chain_ids(column: ColumnElement[str] | InstrumentedAttribute[str], base: str) -> ColumnElement[bool]:
    """A condition selecting the base's chains: the base and its continuations ``<base>~k``."""
    return (column == base) | column.startswith(base + EPOCH_MARK, autoescape=True)


def _used(conn: Connection, chain: str) -> bool:
    return conn.execute(text(_USED), dict(c=chain)).first() is not None


def latest_chain(conn: Connection, base: str) -> str:
    """The base's newest chain in use (the base itself when it has no continuation)."""
    k = 2
    while _used(conn, epoch_id(base, k)):
        k += 1
    return epoch_id(base, k - 1)


def next_free_chain(conn: Connection, base: str, after: str) -> str:
    """The first unused ``<base>~k`` past ``after``."""
    tail = after[len(base) + 1:]
    k = int(tail) + 1 if after != base and tail.isdigit() else 2
    while _used(conn, epoch_id(base, k)):
        k += 1
    return epoch_id(base, k)


def db_head(conn: Connection, chain: str) -> tuple[int, str]:
    row = conn.execute(text(_HEAD), dict(c=chain)).first()
    return (row[0], row[1]) if row else (0, GENESIS)


def _valid(trusted: Mapping[str, Ed25519PublicKey], chain: str, seq: int, head: str, signed_us: int, key_id: str,
           signature: str) -> bool:
    key = trusted.get(key_id)
    return key is not None and verify_signature(key, signature, checkpoint_message(chain, seq, head, signed_us))


def covered_head(conn: Connection, chain: str, trusted: Mapping[str, Ed25519PublicKey]) -> tuple[int, str]:
    """The newest entry a valid checkpoint of a trusted key covers, or (0, GENESIS). Only the newest hundred
    checkpoints are tried: past that many bad ones, everything is treated as foreign."""
    for seq, head, signed_us, key_id, signature in conn.execute(text(_CHECKPOINTS + " LIMIT 100"), dict(c=chain, s=0)):
        if _valid(trusted, chain, seq, head, signed_us, key_id, signature):
            return seq, head
    return 0, GENESIS


@dataclass
class Reconciled:
    """What a chain holds after the writer's own head (seq, hash)."""

    head: tuple[int, str]
    """The newest entry the writer may extend: its own head, or a later one of ours it adopts."""
    foreign: list[int] = field(default_factory=list)
    """Seqs of the rows after ``head`` that no valid signature covers or that do not link."""
    own_missing: bool = False
    """The writer's own head is no longer in the database (deleted or rewritten)."""

    @property
    def clean(self) -> bool:
        return not self.foreign and not self.own_missing


def reconcile(conn: Connection, chain: str, own: tuple[int, str], trusted: Mapping[str, Ed25519PublicKey]) -> Reconciled:
    """Adopt the rows after ``own`` that link and that a valid checkpoint covers (written by another process of
    ours on the same chain); every row after the last such one is foreign."""
    seq0, hash0 = own
    if seq0 and conn.execute(text(_AT), dict(c=chain, s=seq0)).scalar() != hash0:
        return Reconciled(own, [r[0] for r in conn.execute(text(_AFTER), dict(c=chain, s=seq0))], own_missing=True)
    rows = conn.execute(text(_AFTER), dict(c=chain, s=seq0)).all()
    # Read after the rows: a batch's checkpoint commits with its rows, so every row read has its signature here.
    signed: dict[int, list[tuple[str, int, str, str]]] = {}
    for seq, head, signed_us, key_id, signature in conn.execute(text(_CHECKPOINTS), dict(c=chain, s=seq0)):
        signed.setdefault(seq, []).append((head, signed_us, key_id, signature))
    walk, covered, after = ChainWalk(chain, seq0 + 1, hash0), own, []
    linked = True
    for seq, event_id, ts_us, received_us, source, door, kind, subject, detail, prev_hash, stored in rows:
        after.append(seq)
        linked = linked and not walk.step(seq, event_id, ts_us, received_us, source, door, kind, subject, detail,
                                          prev_hash, stored)
        if linked and any(head == stored and _valid(trusted, chain, seq, head, signed_us, key_id, signature)
                          for head, signed_us, key_id, signature in signed.get(seq, [])):
            covered = (seq, stored)
    # A checkpoint row with no entry of its own past our head (planted by hand) takes the seq our next batch's
    # checkpoint needs: foreign too, or the writer would retry against it forever.
    orphans = [r[0] for r in conn.execute(text(_ORPHANS), dict(c=chain, s=covered[0]))]
    return Reconciled(covered, sorted({s for s in after if s > covered[0]} | set(orphans)))


def continuation(base: str, left: str, new: str, result: Reconciled,
                 now: datetime | None = None) -> list[tuple[Event, Callable[[Connection], Event | None] | None]]:
    """The first entry of the new chain and the critical alarm, in that order."""
    from badge_bridge.records import alarm_raised  # records imports the writer, which imports this module

    now = now or datetime.now(UTC)
    seq, head = result.head
    detail = {"chain": left, "last_seq": seq, "last_hash": head, "foreign_seqs": result.foreign[:FOREIGN_LISTED],
              "foreign_count": len(result.foreign), "own_head_missing": result.own_missing}
    # Ids no one can guess and plant beforehand (a planted id would make these entries pass for duplicates).
    first = Event(id=Event.new_id(EventKind.AUDIT_CHAIN_CONTINUED), kind=EventKind.AUDIT_CHAIN_CONTINUED,
                  source=base, ts=now, received_ts=now, detail=detail)
    where = result.foreign[0] if result.foreign else seq
    alarm, effect = alarm_raised(EventKind.AUDIT_FOREIGN_ENTRY, door=None, source=base, ts=now,
                                 cause=f"{left.replace(EPOCH_MARK, '+')}@{where}:{secrets.token_hex(6)}",
                                 detail={"severity": "critical", "chain": left, "continued_in": new,
                                         "foreign_seqs": result.foreign[:FOREIGN_LISTED],
                                         "own_head_missing": result.own_missing})
    return [(first, None), (alarm, effect)]
