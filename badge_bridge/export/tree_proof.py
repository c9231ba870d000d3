"""What an export carries to tie each chain's month to the signed, witnessed Merkle tree, and the checks on
it that need no database: the same code runs in `export` (which refuses to sign what fails) and in
`verify-export` (on the auditor's machine, with the auditor's keys).

Per chain, proof.json's ``tree`` holds: the frontier (``merkle.CompactRange``) of the tree just before the
month's first row; the month's signed tree heads with their witness cosignatures, the last one being the
*covering head*, the first head that shows the month was over (it covers the month's last row and either a
row received after the month's end, or was signed after it); the previous month's covering head and the RFC
9162 consistency proof from it to this covering head; the sealed segments over the rows; and the pruned
segments (retention) of the month's days. ``TreeWalk`` regrows the tree from the frontier as the rows
stream past, so every head's root, every segment's root and the consistency proof's new nodes come from the
rows themselves, in O(log n) memory.

Why the covering head must show the month's end: a database administrator who cuts the month's last days
(entries, checkpoints, even heads) leaves a log whose last signed head stops inside the month; no head the
bridge signed after the cut can be made without the signing key, and a witness holds a copy of each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from badge_bridge.audit import merkle
from badge_bridge.audit.segments import prune_message, segment_message
from badge_bridge.audit.tree_head import Cosignature, TreeHead
from badge_bridge.keys import verify_signature

_sha256 = hashlib.sha256


@dataclass(frozen=True)
class WitnessedHead:
    head: TreeHead
    cosignatures: tuple[Cosignature, ...]

    def to_dict(self) -> dict[str, Any]:
        # vars(), not to_dict(): dataclasses.asdict deep-copies, a third of a second per thousand heads
        return {"head": dict(vars(self.head)), "cosignatures": [dict(vars(c)) for c in self.cosignatures]}

    @classmethod
    def from_dict(cls, d: Any) -> WitnessedHead:
        if not isinstance(d, dict) or not isinstance(d.get("cosignatures"), list):
            raise ValueError("a witnessed head is {head, cosignatures}")
        return cls(TreeHead.from_dict(d.get("head")), tuple(Cosignature.from_dict(c) for c in d["cosignatures"]))


@dataclass(frozen=True)
class ChainTree:
    """proof.json's ``tree`` of one chain (see the module docstring)."""

    frontier_size: int
    frontier: str | None
    """``CompactRange.to_text`` of the tree of entries 1..frontier_size; None if the exporter had none."""
    heads: tuple[WitnessedHead, ...]
    """The month's heads, in size order; the last is the covering head."""
    previous: WitnessedHead | None
    """The previous month's covering head (None when the chain starts in this month)."""
    consistency: tuple[str, ...]
    """RFC 9162 proof from ``previous`` to the covering head."""
    segments: tuple[dict[str, Any], ...]
    """Sealed segments over the exported rows (``segments.segment_dict``)."""
    pruned: tuple[dict[str, Any], ...] = ()
    """Pruned segments of the month's days, and the one the month's first row follows; with their signed
    prune records (``prune_us``, ``prune_key_id``, ``prune_signature``)."""

    @property
    def covering(self) -> TreeHead | None:
        return self.heads[-1].head if self.heads else None

    def to_dict(self) -> dict[str, Any]:
        return {"frontier_size": self.frontier_size, "frontier": self.frontier,
                "heads": [h.to_dict() for h in self.heads],
                "previous": self.previous.to_dict() if self.previous else None,
                "consistency": list(self.consistency), "segments": list(self.segments), "pruned": list(self.pruned)}

    @classmethod
    def from_dict(cls, d: Any) -> ChainTree:
        if not isinstance(d, dict):
            raise ValueError("tree is not a JSON object")
        size, frontier = d["frontier_size"], d["frontier"]
        if type(size) is not int or size < 0 or not (frontier is None or isinstance(frontier, str)):
            raise ValueError("frontier_size is a count and frontier hex text")
        return cls(size, frontier, tuple(WitnessedHead.from_dict(h) for h in d["heads"]),
                   WitnessedHead.from_dict(d["previous"]) if d["previous"] is not None else None,
                   tuple(str(p) for p in d["consistency"]), tuple(dict(s) for s in d["segments"]),
                   tuple(dict(s) for s in d["pruned"]))

    def pruned_anchor(self, first_seq: int, trusted: Mapping[str, Ed25519PublicKey]) -> str | None:
        """The signed last hash of the pruned segment right before ``first_seq``: what the month's first row
        follows when the entries before it were pruned under the retention policy."""
        for s in self.pruned:
            if s.get("last_seq") == first_seq - 1 and not segment_problem(s, trusted, pruned=True):
                return str(s["last_hash"])
        return None

    def watched_sizes(self) -> set[int]:
        heads = [h.head for h in self.heads] + ([self.previous.head] if self.previous else [])
        return {h.size for h in heads}

    def watched_ranges(self, first_seq: int, end_seq: int) -> set[tuple[int, int]]:
        """Leaf ranges [lo, hi) of the sealed segments wholly inside the streamed seqs first_seq..end_seq."""
        return {(s["first_seq"] - 1, s["last_seq"]) for s in self.segments
                if first_seq <= s["first_seq"] and s["last_seq"] <= end_seq}


def segment_problem(s: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey], *, pruned: bool = False) -> str:
    """What is wrong with a segment's signature (and, if ``pruned``, its prune record); '' if nothing."""
    try:
        key = trusted.get(s["key_id"])
        message = segment_message(s["chain_id"], date.fromisoformat(s["day"]), s["first_seq"], s["last_seq"],
                                  s["size"], s["root"], s["prev_segment_last_hash"], s["last_hash"])
        if key is None:
            return f"the segment of {s['day']} is signed by key {s['key_id']}, which is not a trusted key"
        if not verify_signature(key, s["signature"], message):
            return f"the signature of the segment of {s['day']} does not verify (the segment was altered)"
        if pruned:
            pkey = trusted.get(s.get("prune_key_id") or "")
            record = prune_message(s["chain_id"], s["first_seq"], s["last_seq"], s["last_hash"], s.get("pruned_us") or 0)
            if pkey is None or not verify_signature(pkey, s.get("prune_signature") or "", record):
                return f"the segment of {s['day']} is marked pruned without a valid signed prune record"
    except (KeyError, TypeError, ValueError) as exc:
        return f"a segment is unreadable ({exc!r}) (modified)"
    return ""


def _head_problems(what: str, wh: WitnessedHead, chain_id: str, trusted: Mapping[str, Ed25519PublicKey],
                   witnesses: Mapping[str, Ed25519PublicKey]) -> list[str]:
    head = wh.head
    if head.chain_id != chain_id:
        return [f"{what} is a head of chain {head.chain_id} (moved)"]
    if head.key_id not in trusted:
        return [f"{what} is signed by key {head.key_id}, which is not a trusted key"]
    if not head.signed_by(dict(trusted)):
        return [f"{what}: the bridge's signature does not verify (the head was altered)"]
    return [f"{what} has no valid cosignature by witness {wid}" for wid in witnesses
            if not any(c.witness_key_id == wid and c.valid_for(head, {wid: witnesses[wid]}) for c in wh.cosignatures)]


def _countersigned_after(tree: ChainTree, cover: TreeHead, witnesses: Mapping[str, Ed25519PublicKey],
                         end_us: int) -> bool:
    """A witness countersigned the covering head at or after ``end_us``: it held no longer chain by then (it
    never countersigns a head shorter than one it holds)."""
    return any(wh.head == cover and any(c.cosigned_us >= end_us and c.valid_for(cover, witnesses)
                                        for c in wh.cosignatures) for wh in tree.heads)


def check_tree(chain_id: str, first_seq: int, last_seq: int, tree: ChainTree, trusted: Mapping[str, Ed25519PublicKey],
               witnesses: Mapping[str, Ed25519PublicKey], end_us: int) -> tuple[list[str], list[str]]:
    """The checks that need no row: signatures, cosignatures, the covering rule, the consistency proof.
    Returns (problems, notes)."""
    problems: list[str] = []
    notes: list[str] = []
    where = f"chain {chain_id}"
    for wh in tree.heads:
        problems += _head_problems(f"{where} tree head of size {wh.head.size}", wh, chain_id, trusted, witnesses)
    if tree.previous is not None:
        problems += _head_problems(f"{where} previous month's head (size {tree.previous.head.size})", tree.previous,
                                   chain_id, trusted, witnesses)
    sizes = [wh.head.size for wh in tree.heads]
    if sizes != sorted(set(sizes)):
        problems.append(f"{where}: the tree heads are not in size order (modified)")
    cover = tree.covering
    if cover is None or cover.size < last_seq:
        problems.append(f"{where}: no signed tree head covers the month's last entry (seq {last_seq}): the month may "
                        "have been cut in the database; wait for the bridge's next head, or investigate")
    elif cover.size == last_seq and cover.signed_us < end_us and not _countersigned_after(tree, cover, witnesses,
                                                                                            end_us):
        problems.append(f"{where}: the last tree head (size {cover.size}) was signed before the month's end, covers "
                        "no later entry and no witness key given countersigned it after the end: nothing shows the "
                        f"month's entries end at seq {last_seq} (a cut at the month's end cannot be ruled out)")
    prev = tree.previous
    if prev is None and first_seq - 1 > 0:
        problems.append(f"{where}: no head of the previous month (covering seq {first_seq - 1}) to prove this month "
                        "extends it")
    elif prev is not None and cover is not None:
        if prev.head.size < first_seq - 1:
            problems.append(f"{where}: the previous month's head (size {prev.head.size}) does not cover seq "
                            f"{first_seq - 1}, the entry before the month")
        try:
            proof = [bytes.fromhex(p) for p in tree.consistency]
            consistent = merkle.verify_consistency(prev.head.size, cover.size, bytes.fromhex(prev.head.root),
                                                   bytes.fromhex(cover.root), proof)
        except ValueError:
            consistent = False
        if not consistent:
            problems.append(f"{where}: the consistency proof from the previous month's head (size {prev.head.size}) "
                            f"to the covering head (size {cover.size}) fails: the log was rewritten between them")
    for s in tree.segments:
        if s.get("chain_id") != chain_id:
            problems.append(f"{where}: a segment of chain {s.get('chain_id')} (moved)")
        elif problem := segment_problem(s, trusted):
            problems.append(f"{where}: {problem}")
    for s in tree.pruned:
        if problem := segment_problem(s, trusted, pruned=True):
            problems.append(f"{where}: {problem}")
        else:
            notes.append(f"{where}: {s['day']} (seq {s['first_seq']}..{s['last_seq']}, {s['size']} entries) was pruned "
                         f"under the retention policy (prune record signed by key {s['prune_key_id']})")
    if not witnesses:
        notes.append(f"{where}: witness cosignatures not checked (pass --witness-key)")
    return problems, notes


def _push(nodes: list[bytes], pos: int, digest: bytes) -> None:
    """Append the leaf hash ``digest`` at position ``pos`` of a tree from leaf 0 kept as its complete
    subtrees' hashes (largest first): merge while ``pos`` has trailing ones. ``merkle.CompactRange`` does
    the same for any range; this is the five-times-faster path for the million leaves of a month."""
    while pos & 1:
        digest = _sha256(b"\x01" + nodes.pop() + digest).digest()
        pos >>= 1
    nodes.append(digest)


def _fold(nodes: list[bytes]) -> bytes:
    """The root of the tree whose complete subtrees are ``nodes`` (RFC 9162: fold from the right)."""
    if not nodes:
        return _sha256(b"").digest()
    acc = nodes[-1]
    for digest in reversed(nodes[:-1]):
        acc = _sha256(b"\x01" + digest + acc).digest()
    return acc


def _compact(size: int, nodes: list[bytes]) -> merkle.CompactRange:
    c = merkle.CompactRange()
    c.end = size
    c.nodes = list(zip([bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1], nodes, strict=True))
    return c


class TreeWalk:
    """The chain's tree regrown from the frontier, one leaf (an entry's hash) at a time in seq order: the
    root and the entry hash at each watched size, the frontier at each snapshot size, and the root of each
    watched leaf range [lo, hi) (sealed days, consistency proof nodes)."""

    def __init__(self, frontier: merkle.CompactRange, sizes: Iterable[int] = (),
                 ranges: Iterable[tuple[int, int]] = (), snapshots: Iterable[int] = ()) -> None:
        self.size = frontier.size
        self.nodes = [digest for _level, digest in frontier.nodes]
        self.sizes = {s for s in sizes if s > frontier.size}
        self.snapshot_sizes = set(snapshots)
        self.roots: dict[int, str] = {frontier.size: frontier.root().hex()}
        self.hashes: dict[int, str] = {}
        self.frontiers: dict[int, merkle.CompactRange] = {frontier.size: frontier.copy()}
        self.pending = sorted(((lo, hi) for lo, hi in ranges if lo >= frontier.size and hi > lo), reverse=True)
        self.active: list[tuple[int, int, list[bytes]]] = []
        self.range_roots: dict[tuple[int, int], str] = {}
        self.broken = False
        """A leaf came out of order: the roots from here on mean nothing (the rows' walk says what broke)."""

    def leaf(self, seq: int, entry_hash: str) -> None:
        pos = self.size
        if seq != pos + 1 or self.broken:
            self.broken = True
            return
        digest = _sha256(b"\x00" + bytes.fromhex(entry_hash)).digest()
        _push(self.nodes, pos, digest)
        self.size = seq
        pending = self.pending
        while pending and pending[-1][0] == pos:
            lo, hi = pending.pop()
            self.active.append((lo, hi, []))
        if self.active:
            for lo, hi, nodes in self.active:
                _push(nodes, pos - lo, digest)
                if seq == hi:
                    self.range_roots[(lo, hi)] = _fold(nodes).hex()
            if any(hi == seq for _lo, hi, _nodes in self.active):
                self.active = [a for a in self.active if a[1] != seq]
        if seq in self.sizes:
            self.roots[seq] = _fold(self.nodes).hex()
            self.hashes[seq] = entry_hash
        if seq in self.snapshot_sizes:
            self.frontiers[seq] = _compact(seq, self.nodes)


def root_problems(chain_id: str, tree: ChainTree, walk: TreeWalk, last_seq: int) -> list[str]:
    """After every row (the month's and the tail's) went through ``walk``: the heads' and the segments'
    roots and hashes against what the rows give."""
    where = f"chain {chain_id}"
    if walk.broken:
        return []  # the rows' own checks said what is wrong
    problems = []
    heads = [wh.head for wh in tree.heads] + ([tree.previous.head] if tree.previous else [])
    for head in heads:
        if head.size < tree.frontier_size:
            continue  # the previous month's head before the frontier: its export checked it
        if head.size > walk.size:
            if head.size == (tree.covering.size if tree.covering else -1):
                problems.append(f"{where}: the entries {walk.size + 1}..{head.size} the covering head signs are not in "
                                "the export: the log was cut after the month's last exported entry")
            continue
        if walk.roots.get(head.size) != head.root:
            problems.append(f"{where}: the Merkle root recomputed from the rows differs from the signed tree head of "
                            f"size {head.size} (rows, frontier or head changed)")
        elif head.size in walk.hashes and walk.hashes[head.size] != head.head_hash:
            problems.append(f"{where}: the entry at seq {head.size} is not the one the tree head signs")
    for s in tree.segments:
        lo, hi = s["first_seq"] - 1, s["last_seq"]
        got = walk.range_roots.get((lo, hi))
        if got is not None and (got != s["root"] or s["size"] != hi - lo):
            problems.append(f"{where}: the rows of {s['day']} (seq {lo + 1}..{hi}) do not give the root of their "
                            "sealed segment (rewritten after sealing)")
    return problems


def consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes make PROOF(m, D[0:n]) (RFC 9162 section 2.1.4.1), in proof order."""
    if not 0 < m <= n:
        raise ValueError(f"no consistency proof from {m} leaves to {n}")

    def sub(size: int, lo: int, hi: int, complete: bool) -> list[tuple[int, int]]:
        if size == hi - lo:
            return [] if complete else [(lo, hi)]
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if size <= k:
            return sub(size, lo, lo + k, complete) + [(lo + k, hi)]
        return sub(size - k, lo + k, hi, False) + [(lo, lo + k)]

    return sub(m, 0, n, True)


def consistency_proof(old: merkle.CompactRange, n: int, range_roots: Mapping[tuple[int, int], str]) -> list[str]:
    """PROOF(old.size, D[0:n]) from the frontier at the old size and the roots of the ranges after it
    (``TreeWalk.range_roots`` over ``consistency_ranges``)."""
    known = {span: digest.hex() for span, digest in old.spans().items()}
    return [known[r] if r[1] <= old.size else range_roots[r] for r in consistency_ranges(old.size, n)]


@dataclass
class TreeResult:
    """What the exporter's tree pass found for one chain (picklable: it comes back from a worker process)."""

    frontier: str | None = None
    consistency: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
