"""RFC 9162 (Certificate Transparency 2.0) Merkle trees: roots, inclusion and consistency proofs.

Why this exact construction: auditors can check a sealed day of the audit log with any CT library, and a
proof is O(log n) hashes instead of the whole day. Leaf hash ``SHA-256(0x00 || leaf)``, node hash
``SHA-256(0x01 || left || right)``, and the tree over n leaves splits at the largest power of two k < n
(section 2.1.1). The verifiers follow sections 2.1.3.2 and 2.1.4.2 step by step.

The tree is built level by level, an unpaired last node moving up unchanged: that gives the same hashes as
the recursive definition (every node of level l covers leaves ``[i * 2**l, min((i + 1) * 2**l, n))``), and
lets a proof read its O(log n) nodes instead of rehashing whole subtrees.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


class Tree:
    """All node hashes of the tree over ``leaves`` (raw leaf data, hashed here)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        level = [_sha256(b"\x00" + leaf).digest() for leaf in leaves]
        self.size = len(level)
        self.levels = [level]
        while len(level) > 1:
            up = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)
            level = up

    @property
    def root(self) -> bytes:
        """MTH of all leaves; the empty tree's is SHA-256 of nothing (section 2.1.1)."""
        return self.levels[-1][0] if self.size else _sha256(b"").digest()

    def _node(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range the recursive split produces (lo aligned, hi a full step or the end)."""
        height = (hi - lo - 1).bit_length()
        return self.levels[height][lo >> height]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """PATH(index, D[0:n]) of section 2.1.3.1, leaf's sibling first."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} is not in a tree of {self.size}")
        path: list[bytes] = []
        lo, hi = 0, self.size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._node(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._node(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def consistency_proof(self, m: int) -> list[bytes]:
        """PROOF(m, D[0:n]) of section 2.1.4.1: empty for m == n."""
        if not 0 < m <= self.size:
            raise ValueError(f"no consistency proof from {m} leaves to {self.size}")
        path: list[bytes] = []
        lo, hi, complete = 0, self.size, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                path.append(self._node(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._node(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            path.append(self._node(lo, hi))
        path.reverse()
        return path


class CompactRange:
    """The tree over leaves ``[begin, end)`` kept as its O(log n) maximal complete subtrees, left to right:
    what a chain's writer keeps instead of every leaf. Leaves are appended one at a time, or a whole
    neighbouring range at once (``extend``: ranges checked in parallel are joined this way). With ``begin``
    0 it is the tree's frontier and gives the root; ``to_text``/``from_text`` store it (models.TreeFrontier).
    """

    __slots__ = ("begin", "end", "nodes")

    def __init__(self, begin: int = 0) -> None:
        self.begin = self.end = begin
        self.nodes: list[tuple[int, bytes]] = []
        """(level, hash): the subtree of 2**level leaves; they cover [begin, end) in order."""

    def append(self, leaf: bytes) -> None:
        """Append one leaf (raw data, hashed here: for the audit log, an entry's hash bytes)."""
        self._push(self.end, 0, _sha256(b"\x00" + leaf).digest())
        self.end += 1

    def _push(self, pos: int, level: int, digest: bytes) -> None:
        nodes = self.nodes
        while nodes and nodes[-1][0] == level and (pos >> level) & 1 and pos - (1 << level) >= self.begin:
            digest = _sha256(b"\x01" + nodes.pop()[1] + digest).digest()
            pos -= 1 << level
            level += 1
        nodes.append((level, digest))

    def extend(self, other: CompactRange) -> None:
        """Append the range that starts where this one ends."""
        if other.begin != self.end:
            raise ValueError(f"range [{other.begin}, {other.end}) does not start at {self.end}")
        pos = other.begin
        for level, digest in other.nodes:
            self._push(pos, level, digest)
            pos += 1 << level
        self.end = other.end

    def copy(self) -> CompactRange:
        c = CompactRange(self.begin)
        c.end, c.nodes = self.end, list(self.nodes)
        return c

    @property
    def size(self) -> int:
        return self.end - self.begin

    def root(self) -> bytes:
        """MTH of leaves [0, end): folded from the right, which is the RFC's split at the largest power of two."""
        if self.begin:
            raise ValueError("only a range from the first leaf has a root")
        if not self.nodes:
            return _sha256(b"").digest()
        acc = self.nodes[-1][1]
        for _level, digest in reversed(self.nodes[:-1]):
            acc = _sha256(b"\x01" + digest + acc).digest()
        return acc

    def spans(self) -> dict[tuple[int, int], bytes]:
        """Each node by the leaf range [lo, hi) it covers."""
        out, pos = {}, self.begin
        for level, digest in self.nodes:
            out[(pos, pos + (1 << level))] = digest
            pos += 1 << level
        return out

    def to_text(self) -> str:
        if self.begin:
            raise ValueError("only a frontier (a range from the first leaf) is stored")
        return "".join(digest.hex() for _level, digest in self.nodes)

    @classmethod
    def from_text(cls, size: int, text: str) -> CompactRange:
        """The frontier of ``size`` leaves stored by ``to_text``; ValueError if it does not fit that size."""
        levels = [bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]
        if len(text) != 64 * len(levels):
            raise ValueError(f"a frontier of {size} leaves has {len(levels)} nodes, not {len(text) / 64:g}")
        c = cls()
        c.end = size
        c.nodes = [(level, bytes.fromhex(text[64 * i: 64 * i + 64])) for i, level in enumerate(levels)]
        return c


def stored_frontier(size: int, text: str | None) -> CompactRange | None:
    """A frontier read back (``CompactRange.to_text``), or None when absent or not one of ``size`` leaves."""
    if text is None:
        return None
    try:
        return CompactRange.from_text(size, text)
    except ValueError:
        return None


def consistency_proof_from(old: CompactRange, new_leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[0:n]) (RFC 9162 section 2.1.4.1) from the frontier of the first m leaves and the raw leaves
    m..n-1 alone: every node the proof needs lies wholly before m (a frontier node) or wholly after it."""
    m, n = old.size, old.size + len(new_leaves)
    if old.begin or not 0 < m <= n:
        raise ValueError(f"no consistency proof from {m} leaves to {n}")
    known = old.spans()

    def mth(lo: int, hi: int) -> bytes:
        if hi <= m:
            return known[(lo, hi)]
        return Tree(new_leaves[lo - m: hi - m]).root

    def sub(size: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        if size == hi - lo:
            return [] if complete else [mth(lo, hi)]
        k = _split(hi - lo)
        if size <= k:
            return sub(size, lo, lo + k, complete) + [mth(lo + k, hi)]
        return sub(size - k, lo + k, hi, False) + [mth(lo, lo + k)]

    return sub(m, 0, n, True)


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    return Tree(leaves).root


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    return Tree(leaves).inclusion_proof(index)


def consistency_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Proof that the tree of ``leaves[:m]`` is a prefix of the tree of all ``leaves``."""
    return Tree(leaves).consistency_proof(m)


def _shift_until_lsb_set_or_zero(fn: int, sn: int) -> tuple[int, int]:
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """Section 2.1.3.2: ``leaf`` is the leaf *hash* (``leaf_hash(data)``)."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                fn, sn = _shift_until_lsb_set_or_zero(fn, sn)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(r, root_hash)


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]) -> bool:
    """Section 2.1.4.2. The RFC's algorithm starts from 0 < m < n; m == n (the same tree, an empty proof)
    is accepted when the roots are equal, as section 2.1.4.1 defines PROOF(n, D[n]) as empty."""
    if m <= 0 or m > n:
        return False
    if m == n:
        return not proof and hmac.compare_digest(root_m, root_n)
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                fn, sn = _shift_until_lsb_set_or_zero(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(fr, root_m) and hmac.compare_digest(sr, root_n)
