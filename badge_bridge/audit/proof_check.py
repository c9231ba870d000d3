"""`audit check-proof`: an inclusion proof (`audit prove`) or a consistency proof (`audit consistency`)
checked with nothing but the file and the auditor's own public key: no database, no keys folder.

Why not trust the keys folder: whoever can write it can add a key and sign what they like; the auditor's
copy of the key, handed over out of band, is the only one that vouches for anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from badge_bridge.audit.segments import ProofError, verify_consistency, verify_proof


def check_proof(proof: Any, trusted: Mapping[str, Ed25519PublicKey], old_root: str | None = None) -> str:
    """What the proof proves, in one line; ProofError if it does not verify against ``trusted`` (and, for a
    consistency proof, the ``old_root`` the auditor kept)."""
    if not trusted:
        raise ProofError("no trusted public key: pass --public-key with your own copy of the bridge's key")
    if not isinstance(proof, dict):
        raise ProofError("not a proof: expected the JSON object `audit prove` or `audit consistency` prints")
    if "inclusion_proof" in proof:
        if old_root is not None:
            raise ProofError("--old-root is for a consistency proof; this is an inclusion proof")
        verify_proof(proof, trusted)
        seg, ev = proof["segment"], proof["event"]
        return (f"event {ev['event_id']} is entry {proof['leaf_index'] + 1} of {seg['size']} in chain "
                f"{seg['chain_id']}'s segment of {seg['day']}, signed by key {seg['key_id']}: verified")
    if "consistency_proof" in proof:
        verify_consistency(proof, trusted, old_root)
        seg = proof["segment"]
        held = "the root you hold" if old_root is not None else "the root in the proof (pass --old-root with yours)"
        return (f"chain {seg['chain_id']} {seg['day']}: the tree of {proof['old_size']} entries with {held} is a prefix "
                f"of the sealed {seg['size']}, signed by key {seg['key_id']}: verified")
    raise ProofError("not a proof: it has neither inclusion_proof nor consistency_proof")
