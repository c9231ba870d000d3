"""Signed tree heads and witness countersignatures: what they say, and the exact bytes each signature covers.

A tree head says "chain C has ``size`` entries, their RFC 9162 Merkle root is R and the last entry's chain
hash is H", signed by the bridge. A witness (``badge-bridge witness serve``, on another host under another
operator) countersigns a head only if it extends the last head it holds for that chain, so a database
rolled back, cut short or rewritten no longer matches what the witness countersigned. The bridge, the
witness, ``audit verify --witness`` and the export all take the formats from here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from badge_bridge.audit import merkle
from badge_bridge.audit.chain import GENESIS
from badge_bridge.keys import Signer, verify_signature

EMPTY_ROOT = merkle.Tree([]).root.hex()


def tree_head_message(chain_id: str, size: int, root: str, head_hash: str, signed_us: int) -> bytes:
    return f"badge-bridge-tree-head/1\n{chain_id}\n{size}\n{root}\n{head_hash}\n{signed_us}".encode()


@dataclass(frozen=True)
class TreeHead:
    chain_id: str
    size: int
    root: str
    head_hash: str
    signed_us: int
    key_id: str
    signature: str

    def message(self) -> bytes:
        return tree_head_message(self.chain_id, self.size, self.root, self.head_hash, self.signed_us)

    def signed_by(self, trusted: Mapping[str, Ed25519PublicKey]) -> bool:
        key = trusted.get(self.key_id)
        return key is not None and verify_signature(key, self.signature, self.message())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> TreeHead:
        """From JSON; ValueError naming what is wrong (the input may come from anyone)."""
        if not isinstance(d, dict):
            raise ValueError("a tree head is a JSON object")
        try:
            head = cls(str(d["chain_id"]), d["size"], str(d["root"]), str(d["head_hash"]), d["signed_us"],
                       str(d["key_id"]), str(d["signature"]))
        except KeyError as exc:
            raise ValueError(f"a tree head needs {exc.args[0]}") from None
        if type(head.size) is not int or head.size < 0 or type(head.signed_us) is not int:
            raise ValueError("size and signed_us are non-negative integers")
        if not (_hex(head.root, 64) and _hex(head.head_hash, 64) and _hex(head.signature, 128)):
            raise ValueError("root and head_hash are 64 hex digits, the signature 128")
        if not 0 < len(head.chain_id) <= 64 or not 0 < len(head.key_id) <= 64:
            raise ValueError("chain_id and key_id are 1 to 64 characters")
        if head.size == 0 and (head.root != EMPTY_ROOT or head.head_hash != GENESIS):
            raise ValueError("an empty chain's root is SHA-256 of nothing and its head hash is the genesis hash")
        return head


def sign_head(signer: Signer, chain_id: str, size: int, root: str, head_hash: str,
              signed_us: int | None = None) -> TreeHead:
    signed_us = time.time_ns() // 1000 if signed_us is None else signed_us
    return TreeHead(chain_id, size, root, head_hash, signed_us, signer.key_id,
                    signer.sign(tree_head_message(chain_id, size, root, head_hash, signed_us)))


def cosign_message(head: TreeHead, witness_key_id: str, cosigned_us: int) -> bytes:
    """What a witness signs: the whole head, the bridge's signature included, and when it saw it."""
    return (f"badge-bridge-witness-cosign/1\n{witness_key_id}\n{head.chain_id}\n{head.size}\n{head.root}\n"
            f"{head.head_hash}\n{head.signed_us}\n{head.key_id}\n{head.signature}\n{cosigned_us}").encode()


@dataclass(frozen=True)
class Cosignature:
    witness_key_id: str
    cosigned_us: int
    signature: str

    def valid_for(self, head: TreeHead, witness_keys: Mapping[str, Ed25519PublicKey]) -> bool:
        key = witness_keys.get(self.witness_key_id)
        return key is not None and verify_signature(key, self.signature,
                                                    cosign_message(head, self.witness_key_id, self.cosigned_us))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Cosignature:
        if not isinstance(d, dict):
            raise ValueError("a cosignature is a JSON object")
        try:
            c = cls(str(d["witness_key_id"]), d["cosigned_us"], str(d["signature"]))
        except KeyError as exc:
            raise ValueError(f"a cosignature needs {exc.args[0]}") from None
        if type(c.cosigned_us) is not int or not _hex(c.signature, 128):
            raise ValueError("cosigned_us is an integer and the signature 128 hex digits")
        return c


def cosign(signer: Signer, head: TreeHead, cosigned_us: int | None = None) -> Cosignature:
    cosigned_us = time.time_ns() // 1000 if cosigned_us is None else cosigned_us
    return Cosignature(signer.key_id, cosigned_us, signer.sign(cosign_message(head, signer.key_id, cosigned_us)))


def _hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value)
