"""Signed tree heads of the real chains, as the bridge's publisher and a witness make them: the chain's RFC
9162 root at a size signed with tree_head.sign_head, countersigned with tree_head.cosign, stored in
tree_head and witness_cosignature. Shared by the export and verify tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, insert, text

from badge_bridge.audit import merkle
from badge_bridge.audit.tree_head import cosign, sign_head
from badge_bridge.keys import KeyStore, Signer
from badge_bridge.models import TreeHead, WitnessCosignature


def witness_keys(tmp_path: Path, name: str = "witness") -> KeyStore:
    store = KeyStore(tmp_path / name)
    store.ensure()
    return store


def public_key_file(store: KeyStore) -> Path:
    return next((store.dir / "signing").glob("*.pub"))


def publish_heads(engine: Engine, signer: Signer, witness: Signer | None, sizes: Iterable[int] | None = None,
                  chain: str | None = None) -> int:
    """A head after each entry of every chain (or at ``sizes``), signed a millisecond after the entry was
    received, cosigned by ``witness`` (None: not cosigned) a millisecond later. Heads already stored are
    skipped. Returns how many were made."""
    made = 0
    with engine.begin() as conn:
        chains = [chain] if chain else list(conn.scalars(text("SELECT DISTINCT chain_id FROM audit_entry")))
        for c in chains:
            have = set(conn.scalars(text("SELECT size FROM tree_head WHERE chain_id = :c"), dict(c=c)))
            rows = conn.execute(text("SELECT seq, hash, received_us FROM audit_entry WHERE chain_id = :c ORDER BY seq"),
                                dict(c=c)).all()
            wanted = set(sizes) if sizes is not None else {r[0] for r in rows}
            tree = merkle.CompactRange()
            for seq, entry_hash, received_us in rows:
                assert seq == tree.size + 1, "the test's chain has no holes"
                tree.append(bytes.fromhex(entry_hash))
                if seq not in wanted or seq in have:
                    continue
                head = sign_head(signer, c, seq, tree.root().hex(), entry_hash, received_us + 1000)
                conn.execute(insert(TreeHead).values(chain_id=c, size=seq, root=head.root, head_hash=head.head_hash,
                                                     signed_us=head.signed_us, key_id=head.key_id,
                                                     signature=head.signature))
                if witness is not None:
                    co = cosign(witness, head, head.signed_us + 1000)
                    conn.execute(insert(WitnessCosignature).values(chain_id=c, size=seq, witness_key_id=co.witness_key_id,
                                                                   cosigned_us=co.cosigned_us, signature=co.signature))
                made += 1
    return made
