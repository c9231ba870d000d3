"""Sealed segments: a signed RFC 9162 Merkle root over each chain's entries of one UTC day.

Why: a checkpoint proves a chain head, but proving one entry with it needs every entry before it. A sealed
segment lets an auditor check one event offline with O(log n) hashes and a public key, lets an auditor who
kept an earlier root check that the day only grew (consistency), and lets old entries be pruned under a
retention policy while the chain stays anchored: each segment signs the chain hash before its first entry
and after its last.

What a day's segment holds: entries are taken in seq order from the end of the chain's last segment, and
the segment is cut before the first entry whose received time (``received_us``) falls on a later UTC day.
So segments are contiguous seq ranges that never overlap or leave gaps, whatever the clocks did; an entry
received late in a day but committed after that day was sealed simply lands in the next segment. A day is
sealed once it is over (UTC), and only days that have entries get a segment.

Merkle leaves are the entries' chain hashes (hex decoded), which already commit to their content and to
every entry before them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from badge_bridge.audit import frontier, merkle
from badge_bridge.audit.chain import GENESIS, ChainWalk
from badge_bridge.audit.frontier import keep_frontier
from badge_bridge.audit.ownership import covered_head
from badge_bridge.audit.writer import register_key, to_us_now
from badge_bridge.keys import Signer, verify_signature
from badge_bridge.models import AuditEntry, PruneWindow, Segment

MIN_KEEP_DAYS = 90
"""PCI DSS 10.5.1 keeps audit trails for at least twelve months with the last three immediately available."""
DEFAULT_KEEP_DAYS = 366
US_PER_DAY = 86_400_000_000

_FIELDS = (AuditEntry.seq, AuditEntry.event_id, AuditEntry.ts_us, AuditEntry.received_us, AuditEntry.source,
           AuditEntry.door, AuditEntry.kind, AuditEntry.subject, AuditEntry.detail, AuditEntry.prev_hash,
           AuditEntry.hash)


class SegmentError(Exception):
    """Sealing, proving or pruning cannot be done; the message says why and what to do."""


class ProofError(SegmentError):
    """A proof does not verify."""


def segment_message(chain_id: str, day: date, first_seq: int, last_seq: int, size: int, root: str,
                    prev_hash: str, last_hash: str) -> bytes:
    """What a segment signature covers; the previous hash is included so it anchors a pruned chain."""
    return (f"badge-bridge segment v1\n{chain_id}\n{day.isoformat()}\n{first_seq}\n{last_seq}\n{size}\n{root}\n"
            f"{prev_hash}\n{last_hash}").encode()


def prune_message(chain_id: str, first_seq: int, last_seq: int, last_hash: str, pruned_us: int) -> bytes:
    """What a prune signature covers: these entries were removed on purpose, by the key holder."""
    return f"badge-bridge prune v1\n{chain_id}\n{first_seq}\n{last_seq}\n{last_hash}\n{pruned_us}".encode()


def segment_dict(s: Segment) -> dict[str, Any]:
    return dict(chain_id=s.chain_id, day=s.day.isoformat(), first_seq=s.first_seq, last_seq=s.last_seq, size=s.size,
                root=s.root, prev_segment_last_hash=s.prev_segment_last_hash, last_hash=s.last_hash,
                key_id=s.key_id, signature=s.signature, sealed_us=s.sealed_us)


def utc_day(us: int) -> date:
    return date(1970, 1, 1) + timedelta(days=us // US_PER_DAY)


# --- sealing ---------------------------------------------------------------------------------------


def seal(engine: Engine, signer: Signer, chain_id: str | None = None, *, until_day: date | None = None) -> list[Segment]:
    """Seal every day before ``until_day`` (default: today, UTC) of every chain (or one) not sealed yet.
    Idempotent: it starts after each chain's last segment. Refuses to sign a chain that does not verify
    over the range it seals, so a tampered entry is never laundered by a signature."""
    until = until_day or datetime.now(UTC).date()
    sealed: list[Segment] = []
    with engine.connect() as conn:
        chains = [chain_id] if chain_id else list(conn.scalars(select(AuditEntry.chain_id).distinct()))
    for chain in sorted(chains):
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                register_key(session.connection(), signer)
                new = _seal_chain(session.connection(), signer, chain, until)
                frontier.store_at_segments(session.connection(), chain, new)
                session.add_all(new)
        except IntegrityError:
            continue  # another bridge instance sealed this chain meanwhile: its segments stand
        sealed.extend(new)
    return sealed


def _seal_chain(conn: Connection, signer: Signer, chain: str, until: date) -> list[Segment]:
    last = conn.execute(select(Segment.last_seq, Segment.last_hash, Segment.day).where(Segment.chain_id == chain)
                        .order_by(Segment.last_seq.desc()).limit(1)).first()
    expected, head = (last[0] + 1, last[1]) if last else (1, GENESIS)
    after = last[2] + timedelta(days=1) if last else date.min
    signed, _ = covered_head(conn, chain, {**signer.trusted, signer.key_id: signer.public})  # never past it: a
    rows = conn.execute(  # row no checkpoint of ours covers is foreign, and is not sealed either
        select(*_FIELDS).where(AuditEntry.chain_id == chain, AuditEntry.seq.between(expected, signed))
        .order_by(AuditEntry.seq),
        execution_options={"stream_results": True, "yield_per": 20_000})
    try:
        return _cut(signer, chain, until, after, expected, head, rows)
    finally:
        rows.close()


def _cut(signer: Signer, chain: str, until: date, after: date, expected: int, head: str, rows: Iterable[Sequence[Any]]
         ) -> list[Segment]:
    """Check the chain and cut it into days (see the module docstring); the first day is at least ``after``,
    the day following the last sealed one, where an entry committed after its own day was sealed belongs."""
    segments: list[Segment] = []
    day: date | None = None
    walk = ChainWalk(chain, expected, head)
    step, first, prev = walk.step, expected, head
    leaves: list[bytes] = []
    for seq, event_id, ts_us, received_us, source, door, kind, subject, detail, prev_hash, stored in rows:
        entry_day = utc_day(received_us)
        if day is None:
            day = max(entry_day, after)
        elif entry_day > day:
            segments.append(_segment(signer, chain, day, first, prev, walk.last, leaves))
            day, first, prev, leaves = entry_day, seq, walk.last, []
        if day >= until:
            break
        if step(seq, event_id, ts_us, received_us, source, door or "", kind, subject, detail, prev_hash, stored):
            raise SegmentError(f"chain {chain} entry {seq} does not follow from entry {walk.expected - 1}: not sealing "
                               "a log that does not verify; run `badge-bridge audit verify`")
        leaves.append(bytes.fromhex(stored))
    if day is not None and day < until and leaves:
        segments.append(_segment(signer, chain, day, first, prev, walk.last, leaves))
    return segments


def _segment(signer: Signer, chain: str, day: date, first: int, prev: str, last_hash: str, leaves: list[bytes]) -> Segment:
    size = len(leaves)
    root = merkle.root(leaves).hex()
    signature = signer.sign(segment_message(chain, day, first, first + size - 1, size, root, prev, last_hash))
    return Segment(chain_id=chain, day=day, first_seq=first, last_seq=first + size - 1, size=size, root=root,
                   prev_segment_last_hash=prev, last_hash=last_hash, key_id=signer.key_id, signature=signature,
                   sealed_us=to_us_now(), pruned=False)


# --- proofs ----------------------------------------------------------------------------------------


def _tree(conn: Connection, s: Segment) -> merkle.Tree:
    """The segment's tree rebuilt from the database, refused if it no longer matches what was signed."""
    hashes = conn.scalars(select(AuditEntry.hash).where(
        AuditEntry.chain_id == s.chain_id, AuditEntry.seq.between(s.first_seq, s.last_seq)).order_by(AuditEntry.seq)).all()
    tree = merkle.Tree([bytes.fromhex(h) for h in hashes])
    if tree.size != s.size or tree.root.hex() != s.root:
        raise SegmentError(f"the entries of chain {s.chain_id} sealed for {s.day} no longer match their signed root: "
                           "the log was changed after sealing; run `badge-bridge audit verify`")
    return tree


def prove(engine: Engine, event_id: str) -> dict[str, Any]:
    """Everything needed to check offline, with only a public key, that the event is in its sealed day."""
    with Session(engine) as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.event_id == event_id)).first()
        if entry is None:
            raise SegmentError(f"event {event_id} is not in the audit log: it never existed, or its segment was "
                               "pruned under the retention policy (its signed segment is kept, its entries are not)")
        s = session.scalars(select(Segment).where(Segment.chain_id == entry.chain_id, Segment.first_seq <= entry.seq,
                                                  Segment.last_seq >= entry.seq)).first()
        if s is None:
            raise SegmentError(f"event {event_id} (chain {entry.chain_id} entry {entry.seq}) is not sealed yet: a day "
                               "is sealed once it is over (`badge-bridge audit seal`)")
        index = entry.seq - s.first_seq
        proof = _tree(session.connection(), s).inclusion_proof(index)
        return dict(
            version=1,
            event=dict(chain_id=entry.chain_id, seq=entry.seq, event_id=entry.event_id, ts_us=entry.ts_us,
                       received_us=entry.received_us, source=entry.source, door=entry.door or "", kind=entry.kind,
                       subject=entry.subject, detail=entry.detail, prev_hash=entry.prev_hash, hash=entry.hash),
            segment=segment_dict(s),
            leaf_index=index,
            inclusion_proof=[p.hex() for p in proof],
        )


def _check_segment(seg: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey]) -> None:
    key = trusted.get(seg["key_id"])
    if key is None:
        raise ProofError(f"the segment is signed by key {seg['key_id']}, which is not a trusted key")
    message = segment_message(seg["chain_id"], date.fromisoformat(seg["day"]), seg["first_seq"], seg["last_seq"],
                              seg["size"], seg["root"], seg["prev_segment_last_hash"], seg["last_hash"])
    if not verify_signature(key, seg["signature"], message):
        raise ProofError("the segment's signature does not verify: the signed root was altered")


def verify_proof(proof: Mapping[str, Any], trusted_public_keys: Mapping[str, Ed25519PublicKey]) -> None:
    """Raise ProofError unless the event hashes to its leaf, the leaf is in the root, and the root is signed
    by a trusted key. Needs nothing but the proof and the keys."""
    try:
        seg, ev = proof["segment"], proof["event"]
        _check_segment(seg, trusted_public_keys)
        if ev["chain_id"] != seg["chain_id"] or proof["leaf_index"] != ev["seq"] - seg["first_seq"]:
            raise ProofError("the event is not at the position in the segment the proof claims")
        # The entry walked alone from the link it claims; its hash, which the proof places under the signed
        # root, covers that link.
        one = ChainWalk(ev["chain_id"], ev["seq"], ev["prev_hash"])
        if one.step(ev["seq"], ev["event_id"], ev["ts_us"], ev["received_us"], ev["source"], ev["door"], ev["kind"],
                     ev["subject"], ev["detail"], ev["prev_hash"], ev["hash"]):
            raise ProofError(f"event {ev['event_id']}: its content does not match its hash (the entry was modified)")
        path = [bytes.fromhex(p) for p in proof["inclusion_proof"]]
        leaf = merkle.leaf_hash(bytes.fromhex(ev["hash"]))
        if not merkle.verify_inclusion(leaf, proof["leaf_index"], seg["size"], path, bytes.fromhex(seg["root"])):
            raise ProofError(f"event {ev['event_id']} is not in the signed segment: the inclusion proof fails")
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"malformed proof: {exc!r}") from None


def _segment_of_day(session: Session, chain_id: str, day: date) -> Segment:
    s = session.scalars(select(Segment).where(Segment.chain_id == chain_id, Segment.day == day)).first()
    if s is None:
        raise SegmentError(f"chain {chain_id} has no sealed segment for {day}")
    if s.pruned:
        raise SegmentError(f"the segment of chain {chain_id} for {day} was pruned: its entries are gone")
    return s


def consistency(engine: Engine, chain_id: str, day: date, old_size: int) -> dict[str, Any]:
    """Proof that the day's tree over its first ``old_size`` entries is a prefix of the sealed one: an
    auditor who saw that earlier root learns the day only grew."""
    with Session(engine) as session:
        s = _segment_of_day(session, chain_id, day)
        if not 0 < old_size <= s.size:
            raise SegmentError(f"old size {old_size} is outside 1..{s.size}, the size of the sealed segment")
        tree = _tree(session.connection(), s)
        old_root = merkle.Tree([bytes.fromhex(h) for h in _hashes(session.connection(), s, old_size)]).root
        return dict(version=1, segment=segment_dict(s), old_size=old_size, old_root=old_root.hex(),
                    consistency_proof=[p.hex() for p in tree.consistency_proof(old_size)])


def _hashes(conn: Connection, s: Segment, count: int) -> list[str]:
    return list(conn.scalars(select(AuditEntry.hash).where(
        AuditEntry.chain_id == s.chain_id, AuditEntry.seq.between(s.first_seq, s.first_seq + count - 1))
        .order_by(AuditEntry.seq)))


def verify_consistency(proof: Mapping[str, Any], trusted_public_keys: Mapping[str, Ed25519PublicKey],
                       old_root: str | None = None) -> None:
    """Raise ProofError unless the signed segment extends the tree of ``old_size`` leaves whose root is
    ``old_root`` (the one the auditor kept; default: the one in the proof)."""
    try:
        seg = proof["segment"]
        _check_segment(seg, trusted_public_keys)
        if old_root is not None and old_root != proof["old_root"]:
            raise ProofError("the proof is for another earlier root than the one you hold")
        path = [bytes.fromhex(p) for p in proof["consistency_proof"]]
        if not merkle.verify_consistency(proof["old_size"], seg["size"], bytes.fromhex(proof["old_root"]),
                                         bytes.fromhex(seg["root"]), path):
            raise ProofError("the sealed segment is not an extension of the earlier tree: the day was rewritten")
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"malformed proof: {exc!r}") from None


# --- retention -------------------------------------------------------------------------------------


@dataclass
class PruneReport:
    cutoff: date
    """Segments of days before this were pruned."""
    segments: list[dict[str, Any]] = field(default_factory=list)
    entries: int = 0


def check_keep_days(keep_days: int) -> None:
    if keep_days < MIN_KEEP_DAYS:
        raise SegmentError(f"keep_days {keep_days} is too short: PCI DSS asks for at least three months "
                           f"({MIN_KEEP_DAYS} days) of audit log")


def prune(engine: Engine, signer: Signer, *, keep_days: int = DEFAULT_KEEP_DAYS, now: datetime | None = None) -> PruneReport:
    """Delete the entries of whole sealed segments of days older than ``keep_days``; keep the segment rows
    (marked pruned, with a signed prune record), checkpoints and keys. A chain is only ever pruned from
    its start, so what remains is anchored by the last pruned segment's signed last hash. Each segment's
    entries are checked against its signed root first: tampered evidence is never destroyed."""
    check_keep_days(keep_days)
    cutoff = (now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=keep_days)
    report = PruneReport(cutoff)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        conn = session.connection()
        register_key(conn, signer)
        candidates = session.scalars(select(Segment).where(Segment.pruned.is_(False), Segment.day < cutoff)
                                     .order_by(Segment.chain_id, Segment.first_seq)).all()
        # A chain's segment days grow with seq, so the old ones are always a prefix of the unpruned ones.
        for chain, last in {s.chain_id: s.last_seq for s in candidates}.items():
            keep_frontier(conn, chain, last)  # the tree can be taken up after the pruned entries
        for s in candidates:
            _tree(conn, s)
            pruned_us = to_us_now()
            conn.execute(update(Segment).where(Segment.id == s.id).values(
                pruned=True, pruned_us=pruned_us, prune_key_id=signer.key_id,
                prune_signature=signer.sign(prune_message(s.chain_id, s.first_seq, s.last_seq, s.last_hash, pruned_us))))
            conn.execute(insert(PruneWindow).values(chain_id=s.chain_id, first_seq=s.first_seq, last_seq=s.last_seq))
            deleted = conn.execute(delete(AuditEntry).where(AuditEntry.chain_id == s.chain_id,
                                                            AuditEntry.seq.between(s.first_seq, s.last_seq))).rowcount
            conn.execute(delete(PruneWindow).where(PruneWindow.chain_id == s.chain_id, PruneWindow.first_seq == s.first_seq))
            report.entries += deleted
            report.segments.append(dict(chain_id=s.chain_id, day=s.day.isoformat(), first_seq=s.first_seq,
                                        last_seq=s.last_seq, entries=deleted))
    return report

