"""The auditor's side of the witnesses: does the database still hold what was countersigned outside it?

A database administrator can rewrite, cut or roll back every table and re-sign with a key of their own
(adding a ``.pub`` to the keys folder); what they cannot change is the latest head a witness countersigned
on another host. ``audit verify --witness URL_OR_FILE`` checks for every chain the witness holds: the
countersignature verifies with the witness key the auditor trusts, the head with a trusted bridge key, the
chain still exists, it has at least the head's ``size`` entries, and the RFC 9162 root of its first
``size`` entries and the hash of entry ``size`` are the head's. Without ``--witness`` the stored
``tree_head`` and ``witness_cosignature`` rows are checked the same way against the log.

The roots are computed while ``audit verify`` scans the entries: each scanned seq range keeps a
``TreeTap`` (the range's ``merkle.CompactRange`` and a copy of it at each seq a head needs), the ranges are
joined in order with ``CompactRange.extend``, so the check costs one leaf hash per entry in the scanning
processes and O(log n) per head. A chain pruned under the retention policy starts from the frontier stored
at its pruned boundary (``audit.frontier``).

What no check can see: entries appended after the last countersigned head (at most
``audit.publish_seconds`` while the witness is reachable) can still be cut or rewritten unseen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import and_, func, select, text
from sqlalchemy.engine import Connection

from badge_bridge.audit import frontier
from badge_bridge.audit.chain import GENESIS, checkpoint_message
from badge_bridge.audit.merkle import CompactRange, Tree
from badge_bridge.audit.scan import Finding
from badge_bridge.audit.tree_head import EMPTY_ROOT, Cosignature, TreeHead
from badge_bridge.audit.witness_api import Held, WitnessError, load_heads
from badge_bridge.keys import verify_signature
from badge_bridge.models import Segment
from badge_bridge.models import TreeHead as TreeHeadRow
from badge_bridge.models import WitnessCosignature as CosignatureRow

Keys = Mapping[str, Ed25519PublicKey]


@dataclass(frozen=True)
class WitnessView:
    """What one witness holds (fetched from it, or the auditor's saved copy of its ``GET /v1/heads``), with
    the witness key the auditor trusts: never the key the answer itself names."""

    source: str
    key_id: str
    key: Ed25519PublicKey
    heads: Mapping[str, Held]


def views(sources: Sequence[str], keys: Keys) -> list[WitnessView]:
    """What each witness (URL, or a saved answer) holds, each with the one of ``keys`` it countersigns with.
    ValueError naming the source when it cannot be read or no key is trusted for it."""
    out = []
    for source in sources:
        try:
            key_id, heads = load_heads(source)
        except (OSError, ValueError, WitnessError) as exc:
            raise ValueError(f"witness {source}: {exc}") from None
        key = keys.get(key_id)
        if key is None:
            raise ValueError(f"witness {source} countersigns with key {key_id or '(none named)'}, which is none of the "
                             "witness keys given (--witness-key) or configured (audit.witnesses): pass its public key")
        out.append(WitnessView(source, key_id, key, heads))
    return out


class TreeTap:
    """The Merkle tree of one scanned seq range of a chain, and a copy of it after each marked seq: what a
    scanning process hands back (so it pickles small: O(log n) hashes per copy). Leaves are taken in
    aligned blocks of ``BLOCK``, each hashed level by level as one subtree: half the time of one leaf at a
    time, which matters at a million entries."""

    __slots__ = ("at", "marks", "pending", "range")
    BLOCK_LEVEL = 10
    BLOCK = 1 << BLOCK_LEVEL

    def __init__(self, first_seq: int, marks: frozenset[int], start: CompactRange | None = None) -> None:
        self.range = start.copy() if start is not None else CompactRange(first_seq - 1)
        self.marks = marks
        self.pending: list[str] = []
        """Entry hashes (hex) read but not yet in ``range``."""
        self.at: dict[int, tuple[CompactRange, str]] = {}
        """seq -> (the range up to that entry, the entry's hash); only where leaf positions match seqs."""

    def add(self, seq: int, stored: str) -> None:
        self.pending.append(stored)
        if seq in self.marks:
            tree = self.flush()
            if tree.end == seq and seq not in self.at:
                self.at[seq] = (tree.copy(), stored)
        elif len(self.pending) >= 2 * self.BLOCK:
            self.flush()

    def flush(self) -> CompactRange:
        """Take in the pending leaves; the range as it now stands."""
        tree, hexes, i = self.range, self.pending, 0
        while i < len(hexes):
            if tree.end % self.BLOCK == 0 and len(hexes) - i >= self.BLOCK:
                block = CompactRange(tree.end)
                block.nodes = [(self.BLOCK_LEVEL, Tree([bytes.fromhex(h) for h in hexes[i:i + self.BLOCK]]).root)]
                block.end = tree.end + self.BLOCK
                tree.extend(block)
                i += self.BLOCK
            else:
                tree.append(bytes.fromhex(hexes[i]))
                i += 1
        self.pending = []
        return tree


def _roots(taps: Sequence[TreeTap]) -> dict[int, tuple[str, str]]:
    """(root, entry hash) of the chain at each marked seq, joining the ranges in order; past a range that
    does not start where the one before ended (entries missing or doubled), nothing is known."""
    known: dict[int, tuple[str, str]] = {}
    prefix = CompactRange()
    for tap in taps:
        tap.flush()
        if tap.range.begin != prefix.end:
            break
        for seq, (upto, digest) in tap.at.items():
            whole = prefix.copy()
            whole.extend(upto)
            known[seq] = (whole.root().hex(), digest)
        prefix.extend(tap.range)
    return known


class WitnessCheck:
    """The heads of every chain, loaded once per `audit verify`; ``taps`` before a chain's scan, ``check``
    after it. ``witness_keys`` are the configured witnesses' keys (None: none configured, so stored
    countersignatures are not checked for their signer)."""

    def __init__(self, conn: Connection, trusted: Keys, witnesses: Sequence[WitnessView] = (),
                 witness_keys: Keys | None = None, chain: str | None = None, every: bool = False) -> None:
        self.trusted = dict(trusted)
        self.witnesses = witnesses
        self.witness_keys = witness_keys
        self.cosigners: dict[str, Ed25519PublicKey] = {**(witness_keys or {}), **{w.key_id: w.key for w in witnesses}}
        heads = select(*TreeHeadRow.__table__.c).order_by(TreeHeadRow.chain_id, TreeHeadRow.size)
        cosigs = select(*CosignatureRow.__table__.c).order_by(CosignatureRow.chain_id, CosignatureRow.size)
        if chain:
            heads, cosigs = heads.where(TreeHeadRow.chain_id == chain), cosigs.where(CosignatureRow.chain_id == chain)
        count = select(func.count()).select_from(TreeHeadRow)
        if not every and (conn.scalar(count.where(TreeHeadRow.chain_id == chain) if chain else count) or 0) > THIN_ABOVE:
            kept = _hourly(chain)
            heads = heads.join(kept, and_(TreeHeadRow.chain_id == kept.c.chain_id, TreeHeadRow.size == kept.c.size))
            cosigs = cosigs.join(kept, and_(CosignatureRow.chain_id == kept.c.chain_id,
                                            CosignatureRow.size == kept.c.size))
        self.heads: dict[str, list[TreeHead]] = {}
        for r in conn.execute(heads):
            self.heads.setdefault(r.chain_id, []).append(TreeHead(r.chain_id, r.size, r.root, r.head_hash, r.signed_us,
                                                                  r.key_id, r.signature))
        self.cosigs: dict[str, list[tuple[int, Cosignature]]] = {}
        for r in conn.execute(cosigs):
            self.cosigs.setdefault(r.chain_id, []).append((r.size, Cosignature(r.witness_key_id, r.cosigned_us,
                                                                                r.signature)))
        self.chains = set(self.heads) | set(self.cosigs) | {c for w in witnesses for c in w.heads if chain in (None, c)}
        """Every chain a head names: one with no entries left is checked too (it was deleted)."""

    def _held(self, chain: str) -> list[tuple[WitnessView, Held]]:
        return [(w, w.heads[chain]) for w in self.witnesses if chain in w.heads]

    def taps(self, conn: Connection, chain: str, ranges: Sequence[tuple[int, int]],
             pruned_through: int) -> list[TreeTap] | None:
        """One tap per scanned range, or None when no head of this chain needs a root past the pruned prefix."""
        sizes = {h.size for h in self.heads.get(chain, [])} | {held.head.size for _w, held in self._held(chain)}
        marks = frozenset(s for s in sizes if s > pruned_through)
        if not marks:
            return None
        start = frontier.load(conn, chain, pruned_through)
        if start is None:
            return None  # no frontier at the pruned boundary: ``check`` says the roots cannot be rebuilt
        return [TreeTap(lo, marks, start if i == 0 else None) for i, (lo, _hi) in enumerate(ranges)]

    def check(self, conn: Connection, chain: str, size: int, pruned_through: int, exists: bool,
              taps: Sequence[TreeTap] | None) -> list[Finding]:
        """``size``: the chain's last seq in the database (pruned entries count); ``exists``: the database
        has entries or segments of it."""
        known = _roots(taps) if taps else {}
        known[0] = (EMPTY_ROOT, GENESIS)
        if pruned_through:
            start = frontier.load(conn, chain, pruned_through)
            last = conn.scalar(select(Segment.last_hash).where(Segment.chain_id == chain,
                                                                Segment.last_seq == pruned_through))
            if start is not None and last is not None:
                known[pruned_through] = (start.root().hex(), last)
        c = _Chain(chain, size, pruned_through, exists, known, _Found(chain))
        held = []
        for view, h in self._held(chain):
            if not (h.head.chain_id == chain and h.cosignature.witness_key_id == view.key_id
                    and h.cosignature.valid_for(h.head, {view.key_id: view.key})):
                c.found.add("witness", h.head.size, f"witness {view.source}: its countersignature of the head of "
                            f"{h.head.size} entries does not verify with the witness key {view.key_id}: the heads "
                            "were altered after the witness gave them")
                continue
            held.append((view, h.head))
            if not h.head.signed_by(self.trusted):
                c.found.add("witness", h.head.size, f"the head of {h.head.size} entries the witness countersigned is "
                            f"signed by key {h.head.key_id}, which is not a trusted key: the trusted keys were replaced")
        self._vouch(c, [head for _view, head in held])
        for view, head in held:
            self._compare(conn, c, head, f"the witness {view.source} countersigned", "witness")
        self._check_stored(conn, c)
        return c.found.findings

    def _vouch(self, c: _Chain, held: Sequence[TreeHead]) -> None:
        """Which sizes the database provably holds the original log up to (``c.good``): a head a witness
        countersigned that still matches. And which bridge keys' signatures may say so too
        (``c.bridge_keys``): those of heads a witness countersigned, where there are any; another trusted key
        may be one a database administrator added to the keys folder."""
        vouched = {h.key_id for h in held}
        by_size = {h.size: h for h in self.heads.get(c.chain, [])}
        matches = [h for h in [*held, *by_size.values()] if c.known.get(h.size) == (h.root, h.head_hash)]
        c.good.update(h.size for h in held if h in matches)
        for size, cos in self.cosigs.get(c.chain, []):
            signed = by_size.get(size)
            if signed is not None and cos.valid_for(signed, self.cosigners):
                vouched.add(signed.key_id)
                if signed in matches:
                    c.good.add(size)
        c.bridge_keys = {k: v for k, v in self.trusted.items() if not vouched or k in vouched}
        c.good.update(h.size for h in matches if h.signed_by(c.bridge_keys))

    def _intact_through(self, conn: Connection, c: _Chain, below: int) -> int:
        """The last entry before ``below`` up to which the log provably is the original one."""
        best = max((s for s in c.good if s < below), default=0)
        rows = conn.execute(text(
            "SELECT c.seq, c.hash, c.signed_us, c.key_id, c.signature FROM checkpoint c JOIN audit_entry e "
            "ON e.chain_id = c.chain_id AND e.seq = c.seq AND e.hash = c.hash "
            "WHERE c.chain_id = :c AND c.seq > :lo AND c.seq < :hi ORDER BY c.seq DESC LIMIT 100"),
            dict(c=c.chain, lo=best, hi=below))
        for seq, digest, signed_us, key_id, signature in rows:
            key = c.bridge_keys.get(key_id)
            if key is not None and verify_signature(key, signature, checkpoint_message(c.chain, seq, digest, signed_us)):
                return int(seq)
        return best

    def _compare(self, conn: Connection, c: _Chain, head: TreeHead, who: str, problem: str) -> None:
        n = head.size
        if not c.exists and n:
            c.found.add(problem, 1, f"chain {c.chain} was deleted: {who} {n} entries", key="gone")
        elif n > c.size:
            c.found.add(problem, c.size + 1, f"entries {c.size + 1}..{n} are missing: {who} {n} entries and the log "
                        f"ends at {c.size} (cut, or rolled back to an older copy)", key="cut")
        elif n in c.known:
            if c.known[n] != (head.root, head.head_hash):
                first = self._intact_through(conn, c, n) + 1
                frontier_too = (f", or the tree frontier stored at the pruned boundary {c.pruned_through} is wrong"
                                if c.pruned_through else "")
                c.found.add(problem, first, f"entries {first}..{n} are not the ones {who}: the root of entries 1..{n} "
                            f"is {c.known[n][0][:16]}…, not {head.root[:16]}… (rewritten{frontier_too})", key="rewritten")
        elif n > c.pruned_through:
            why = (f"no tree frontier is stored at the pruned boundary {c.pruned_through}" if c.pruned_through
                   else "entries are missing or doubled before it")
            c.found.add(problem, n, f"the tree of entries 1..{n} ({who}) cannot be rebuilt: {why}", key="unknown")

    def _check_stored(self, conn: Connection, c: _Chain) -> None:
        heads = self.heads.get(c.chain, [])
        for h in heads:
            if h.key_id not in self.trusted:
                c.found.add("tree_head", h.size, f"the tree head of {h.size} entries is signed by key {h.key_id}, "
                            "which is not a trusted key", key="untrusted")
            elif not h.signed_by(self.trusted):
                c.found.add("tree_head", h.size, f"the signature of the tree head of {h.size} entries does not "
                            "verify: the head was altered", key="altered")
        # The largest head decides a cut; the smallest mismatching one where a rewrite starts.
        for h in sorted(heads, key=lambda h: -h.size if h.size > c.size else h.size):
            self._compare(conn, c, h, "a signed tree head vouches for", "tree_head")
        by_size = {h.size: h for h in heads}
        for size, cos in self.cosigs.get(c.chain, []):
            signed = by_size.get(size)
            if signed is None:
                c.found.add("witness", size, f"witness {cos.witness_key_id} countersigned the head of {size} "
                            "entries, which is no longer in the database: the head was deleted", key="orphan")
            elif self.witness_keys is not None and cos.witness_key_id not in self.cosigners:
                c.found.add("witness", size, f"the countersignature of the head of {size} entries is by key "
                            f"{cos.witness_key_id}, which is no configured witness", key="stranger")
            elif self.witness_keys is not None and not cos.valid_for(signed, self.cosigners):
                c.found.add("witness", size, f"the countersignature of the head of {size} entries does not "
                            "verify: the head or its countersignature was altered", key="bad-cosig")


HOUR_US = 3_600_000_000
THIN_ABOVE = 20_000
"""Past this many stored heads only the last of each hour is checked (``_hourly``)."""


def _hourly(chain: str | None) -> Any:
    """The last stored head of each hour of each chain (the newest among them): heads come every 10 s, a
    quarter of a million a month, and each later head's root vouches for every entry before it; the hourly
    ones keep each hour's roots checked. ``audit verify --every-signature`` checks them all."""
    q = select(TreeHeadRow.chain_id, func.max(TreeHeadRow.size).label("size"))
    if chain:
        q = q.where(TreeHeadRow.chain_id == chain)
    return q.group_by(TreeHeadRow.chain_id, TreeHeadRow.signed_us // HOUR_US).subquery()


@dataclass
class _Chain:
    """One chain's check in progress."""

    chain: str
    size: int
    pruned_through: int
    exists: bool
    known: dict[int, tuple[str, str]]
    """(root, hash of entry n) of the database's first n entries, for each n a head needs."""
    found: _Found
    good: set[int] = field(default_factory=lambda: {0})
    bridge_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)


class _Found:
    """One finding per kind of problem and chain (the first, in the order checked), with how many more there
    were: a chain with a head every 10 s has thousands of heads, all wrong after one cut."""

    def __init__(self, chain: str) -> None:
        self.chain = chain
        self.first: dict[tuple[str, str], tuple[int, str]] = {}
        self.more: dict[tuple[str, str], int] = {}

    def add(self, problem: str, seq: int, message: str, key: str = "") -> None:
        k = (problem, key or message)
        if k in self.first:
            self.more[k] = self.more.get(k, 0) + 1
        else:
            self.first[k] = (seq, message)

    @property
    def findings(self) -> list[Finding]:
        out = []
        for (problem, key), (seq, message) in self.first.items():
            more = self.more.get((problem, key))
            out.append(Finding(self.chain, seq, problem, message + (f" ({more} more heads like it)" if more else "")))
        return out
