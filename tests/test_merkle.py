"""badge_bridge.audit.merkle against the RFC 9162 definitions and the Certificate Transparency test vectors."""

from __future__ import annotations

import hashlib
import random

import pytest

from badge_bridge.audit import merkle

# The CT reference implementation's test vectors (certificate-transparency testonly/constants.go).
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             b"\x50\x51\x52\x53\x54\x55\x56\x57", bytes(range(0x60, 0x70))]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}
CT_CONSISTENCY = {
    (1, 1): [],
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, word for word."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


def leaves_of(n: int) -> list[bytes]:
    return [hashlib.sha256(str(i).encode()).digest() for i in range(n)]


def flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def test_ct_vectors() -> None:
    assert merkle.root([]).hex() == hashlib.sha256(b"").hexdigest()
    for n, expected in enumerate(CT_ROOTS, start=1):
        assert merkle.root(CT_LEAVES[:n]).hex() == expected
    for (index, size), proof in CT_INCLUSION.items():
        assert [p.hex() for p in merkle.inclusion_proof(index, CT_LEAVES[:size])] == proof
        assert merkle.verify_inclusion(merkle.leaf_hash(CT_LEAVES[index]), index, size,
                                       [bytes.fromhex(p) for p in proof], bytes.fromhex(CT_ROOTS[size - 1]))
    for (m, n), proof in CT_CONSISTENCY.items():
        assert [p.hex() for p in merkle.consistency_proof(m, CT_LEAVES[:n])] == proof
        assert merkle.verify_consistency(m, n, bytes.fromhex(CT_ROOTS[m - 1]), bytes.fromhex(CT_ROOTS[n - 1]),
                                         [bytes.fromhex(p) for p in proof])


def test_roots_match_the_recursive_definition() -> None:
    leaves = leaves_of(70)
    for n in range(71):
        assert merkle.root(leaves[:n]) == reference_mth(leaves[:n]), n


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 16, 31, 33, 64, 70])
def test_every_inclusion_proof_verifies_and_tampering_fails(size: int) -> None:
    leaves = leaves_of(size)
    tree = merkle.Tree(leaves)
    good_root = reference_mth(leaves)
    for index in range(size):
        proof = tree.inclusion_proof(index)
        leaf = merkle.leaf_hash(leaves[index])
        assert merkle.verify_inclusion(leaf, index, size, proof, good_root)
        assert not merkle.verify_inclusion(merkle.leaf_hash(flip(leaves[index])), index, size, proof, good_root)
        assert not merkle.verify_inclusion(leaf, index, size, proof, flip(good_root))
        assert not merkle.verify_inclusion(leaf, size, size, proof, good_root)
        for other in range(size):
            if other != index and leaves[other] != leaves[index]:
                assert not merkle.verify_inclusion(leaf, other, size, proof, good_root)
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = flip(bad[i])
            assert not merkle.verify_inclusion(leaf, index, size, bad, good_root)
        if proof:
            assert not merkle.verify_inclusion(leaf, index, size, proof[:-1], good_root)
        assert not merkle.verify_inclusion(leaf, index, size, [*proof, proof[0] if proof else leaf], good_root)


def test_every_consistency_proof_verifies_and_tampering_fails() -> None:
    leaves = leaves_of(40)
    for n in range(1, 41):
        tree = merkle.Tree(leaves[:n])
        root_n = tree.root
        for m in range(1, n + 1):
            root_m = reference_mth(leaves[:m])
            proof = tree.consistency_proof(m)
            assert merkle.verify_consistency(m, n, root_m, root_n, proof), (m, n)
            assert not merkle.verify_consistency(m, n, flip(root_m), root_n, proof), (m, n)
            assert not merkle.verify_consistency(m, n, root_m, flip(root_n), proof), (m, n)
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = flip(bad[i])
                assert not merkle.verify_consistency(m, n, root_m, root_n, bad), (m, n, i)
            if m < n:
                assert not merkle.verify_consistency(m, n, root_m, root_n, proof[:-1]), (m, n)
                # A tree whose first m leaves differ is not an extension of the first tree.
                forked = merkle.Tree([flip(leaves[0]), *leaves[1:n]])
                assert not merkle.verify_consistency(m, n, root_m, forked.root, forked.consistency_proof(m))


def test_out_of_range_requests_are_refused() -> None:
    tree = merkle.Tree(leaves_of(5))
    with pytest.raises(IndexError):
        tree.inclusion_proof(5)
    with pytest.raises(ValueError):
        tree.consistency_proof(0)
    with pytest.raises(ValueError):
        tree.consistency_proof(6)
    assert not merkle.verify_consistency(0, 5, tree.root, tree.root, [])
    assert not merkle.verify_consistency(6, 5, tree.root, tree.root, [])


@pytest.mark.parametrize("n", [*range(1, 70), 255, 256, 257, 1000, 1025])
def test_compact_range_gives_the_tree_root_split_anywhere_and_stored(n: int) -> None:
    rnd = random.Random(n)
    leaves = [rnd.randbytes(32) for _ in range(n)]
    tree = merkle.Tree(leaves)
    whole = merkle.CompactRange()
    for leaf in leaves:
        whole.append(leaf)
    assert whole.root() == tree.root
    assert merkle.CompactRange.from_text(n, whole.to_text()).root() == tree.root
    cut = rnd.randrange(0, n + 1)
    left, right = merkle.CompactRange(), merkle.CompactRange(cut)
    for leaf in leaves[:cut]:
        left.append(leaf)
    for leaf in leaves[cut:]:
        right.append(leaf)
    left.extend(right)
    assert left.root() == tree.root and left.size == n


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 513])
def test_consistency_from_a_frontier_is_the_rfc_proof(n: int) -> None:
    rnd = random.Random(n)
    leaves = [rnd.randbytes(32) for _ in range(n)]
    tree = merkle.Tree(leaves)
    for m in range(1, n + 1):
        old = merkle.CompactRange()
        for leaf in leaves[:m]:
            old.append(leaf)
        proof = merkle.consistency_proof_from(old, leaves[m:])
        assert proof == tree.consistency_proof(m)
        assert merkle.verify_consistency(m, n, old.root(), tree.root, proof)


def test_a_frontier_of_the_wrong_size_or_a_gap_is_refused() -> None:
    c = merkle.CompactRange()
    for i in range(5):
        c.append(bytes([i]))
    with pytest.raises(ValueError):
        merkle.CompactRange.from_text(7, c.to_text())
    with pytest.raises(ValueError):
        c.extend(merkle.CompactRange(7))
    with pytest.raises(ValueError):
        merkle.CompactRange(3).root()
