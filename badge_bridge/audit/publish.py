"""The bridge's publisher: every ``audit.publish_seconds`` it signs a tree head of each chain and hands it to
the witnesses (``witness_api``), so a database cut, rolled back or rewritten after a head was countersigned
no longer matches what a witness holds.

Each chain's RFC 9162 tree is kept incrementally (``merkle.CompactRange``) over the entries a valid
checkpoint signature of a trusted key covers: an entry walks (``ChainWalk``) to a checkpoint whose hash and
signature hold, or it waits. Each witness gets the newest head with the consistency proof from the size it
holds; the publisher keeps that size's frontier per witness and the leaves since the oldest held size (up to
``leaf_cap``; beyond, a witness that comes back is proven from leaf hashes reread from the database).

The publisher runs on its own thread and never holds up the doors: a witness that is away gets the newest
head when it is back (one proof covers the gap), and after ``UNREACHABLE_PERIODS`` periods without a
countersignature ``audit.witness_unreachable`` is raised, cleared on the next countersignature. A fork
answer raises ``audit.fork_detected``. A frontier is stored hourly and at stop (``tree_frontier``), so a
restart takes up the tree from it instead of rereading every entry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from badge_bridge.audit import merkle
from badge_bridge.audit.chain import GENESIS, ChainWalk, checkpoint_message
from badge_bridge.audit.tree_head import TreeHead, sign_head
from badge_bridge.audit.witness_api import Behind, Fork, Held, WitnessClient, WitnessError
from badge_bridge.audit.writer import Effect
from badge_bridge.config import SiteConfig
from badge_bridge.db import describe
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import (
    KeyStore,
    Signer,
    key_id_of,
    read_public_key,
    verify_signature,
)
from badge_bridge.models import AuditEntry, Checkpoint, TreeFrontier, WitnessCosignature
from badge_bridge.models import TreeHead as TreeHeadRow
from badge_bridge.records import alarm_cleared, alarm_raised

log = logging.getLogger(__name__)

UNREACHABLE_PERIODS = 3
FRONTIER_EVERY_S = 3600.0
LEAF_CAP = 200_000
"""Leaves kept for witnesses that are behind (32 bytes each, about 15 MB with list overhead)."""
READ_CHUNK = 20_000
"""Entries read per query: a chain taken up from its first entry is read in pieces."""

Alarm = Callable[[Event, Effect], None]
WALK_COLUMNS = (AuditEntry.seq, AuditEntry.event_id, AuditEntry.ts_us, AuditEntry.received_us, AuditEntry.source,
                AuditEntry.door, AuditEntry.kind, AuditEntry.subject, AuditEntry.detail, AuditEntry.prev_hash,
                AuditEntry.hash)


REFRESH_US = 3_600_000_000
"""An unchanged head is sent again after this long, for a fresh countersignature: an idle chain (the CLI's)
shows within an hour of a month's end that it had not grown, so that month can be exported and signed."""


@dataclass
class ChainTree:
    """One chain's tree at ``size`` and the leaves kept for witnesses that hold an older size."""

    chain_id: str
    tree: merkle.CompactRange
    head_hash: str
    head: TreeHead | None = None
    """The newest signed head; its size is the tree's once a round has signed it."""
    window_base: merkle.CompactRange = field(default_factory=merkle.CompactRange)
    window: list[bytes] = field(default_factory=list)
    """Raw leaves from ``window_base.size`` to the tree's size."""

    @property
    def size(self) -> int:
        return self.tree.size

    def append(self, leaves: list[bytes]) -> None:
        for leaf in leaves:
            self.tree.append(leaf)
        self.window.extend(leaves)

    def keep_from(self, size: int, cap: int) -> None:
        """Drop the leaves before ``size`` (or all but the last ``cap``), folding them into the window's base."""
        start = max(size, self.size - cap)
        drop = start - self.window_base.size
        if start == self.size:  # every witness is up to date: nothing to fold
            self.window_base, self.window = self.tree.copy(), []
        elif drop > 0:
            for leaf in self.window[:drop]:
                self.window_base.append(leaf)
            del self.window[:drop]

    def frontier_at(self, size: int) -> merkle.CompactRange | None:
        """The frontier at ``size`` from memory, or None when its leaves were dropped."""
        if size == self.size:
            return self.tree.copy()
        start = self.window_base.size
        if not start <= size <= self.size:
            return None
        frontier = self.window_base.copy()
        for leaf in self.window[: size - start]:
            frontier.append(leaf)
        return frontier

    def leaves(self, after: int) -> list[bytes] | None:
        start = self.window_base.size
        return self.window[after - start:] if after >= start else None


@dataclass
class Witness:
    """One configured witness and what the publisher knows it holds."""

    url: str
    key_id: str
    key: Ed25519PublicKey
    client: WitnessClient
    held: dict[str, Held] | None = None
    """By chain; None until the witness has been asked."""
    frontiers: dict[str, merkle.CompactRange] = field(default_factory=dict)
    """The frontier at each held size (computed when needed)."""
    last_ok: float = field(default_factory=time.monotonic)
    down_since_us: int | None = None
    alarmed: bool = False
    forks: set[str] = field(default_factory=set)

    @property
    def source(self) -> str:
        return f"witness:{self.key_id}"


def witnesses_of(config: SiteConfig) -> list[Witness]:
    """The site file's witnesses, their public keys read from the files it names."""
    out = []
    for i, ref in enumerate(config.audit.witnesses):
        key = read_public_key(config.path(ref.public_key), f"audit.witnesses[{i}].public_key")
        timeout = min(5.0, config.audit.publish_seconds)
        out.append(Witness(ref.url, key_id_of(key), key, WitnessClient(ref.url, timeout)))
    return out


class Publisher:
    """Start with ``start()``, stop with ``stop()`` (stores the frontiers); ``publish_once()`` is one round."""

    def __init__(self, engine: Engine, signer: Signer, trusted: dict[str, Ed25519PublicKey],
                 witnesses: list[Witness], alarm: Alarm, source: str, period: float = 10.0,
                 leaf_cap: int = LEAF_CAP) -> None:
        self.engine = engine
        self.signer = signer
        self.trusted = trusted
        self.witnesses = witnesses
        self.alarm = alarm
        self.source = source
        self.period = period
        self.leaf_cap = leaf_cap
        self.chains: dict[str, ChainTree] = {}
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._frontiers_at = time.monotonic()
        self.rounds = 0
        """Rounds done (the tests wait on it; the metrics may show it)."""
        self._breaks: set[tuple[str, int]] = set()
        """Where a chain's entries stopped following one another (logged once each)."""

    @classmethod
    def for_site(cls, config: SiteConfig, engine: Engine, keys: KeyStore, alarm: Alarm) -> Publisher:
        return cls(engine, keys.signer(), keys.trusted_public_keys(), witnesses_of(config), alarm,
                   config.site.instance, config.audit.publish_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tree-head-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.store_frontiers()
        except SQLAlchemyError as exc:
            log.error("could not store the tree frontiers at stop: %s", describe(exc))

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.publish_once()
                if time.monotonic() - self._frontiers_at >= FRONTIER_EVERY_S:
                    self.store_frontiers()
            except SQLAlchemyError as exc:  # the database is away: the next round tries again
                log.error("tree heads not published this round: %s", describe(exc))
            except Exception:
                log.exception("tree head publication failed; will retry")
            if self.stopping.wait(max(0.0, self.period - (time.monotonic() - started))):
                return

    # --- one round -----------------------------------------------------------------------------------

    def publish_once(self) -> None:
        """Extend every chain's tree, sign the heads that changed, send them to every witness."""
        with self.engine.connect() as conn:
            names = set(_chain_names(conn))
            for w in self.witnesses:
                if w.held is not None:
                    names.update(w.held)
            for name in sorted(names):
                chain = self.chains.get(name)
                if chain is None or not self._still_stored(conn, chain):
                    chain = self.chains[name] = self._take_up(conn, name)
                self._extend(conn, chain)
        for chain in self.chains.values():
            self._sign(chain)
        for w in self.witnesses:
            self._send(w)
        for chain in self.chains.values():
            held = [w.held[chain.chain_id].head.size for w in self.witnesses
                    if w.held is not None and chain.chain_id in w.held]
            chain.keep_from(min([*held, chain.size]), self.leaf_cap)
        self.rounds += 1

    def _still_stored(self, conn: Connection, chain: ChainTree) -> bool:
        """The entry the tree ends at is still in the database: a cut or rewritten tail makes the tree be taken
        up again from the database, and the witnesses then refuse its heads as a fork."""
        if chain.size == 0:
            return True
        stored = conn.scalar(select(AuditEntry.hash).where(AuditEntry.chain_id == chain.chain_id,
                                                           AuditEntry.seq == chain.size))
        if stored == chain.head_hash:
            return True
        log.critical("chain %s: entry %d, published as %s, is %s in the database: taking up the tree again",
                     chain.chain_id, chain.size, chain.head_hash, "missing" if stored is None else "changed")
        return False

    def _take_up(self, conn: Connection, chain_id: str) -> ChainTree:
        """The chain's tree from its latest stored frontier that the database still bears out, else empty."""
        last = conn.scalar(select(AuditEntry.seq).where(AuditEntry.chain_id == chain_id)
                           .order_by(AuditEntry.seq.desc()).limit(1)) or 0
        tree, head_hash = self._stored_frontier(conn, chain_id, last)
        chain = ChainTree(chain_id, tree, head_hash, window_base=tree.copy())
        head = _stored_head(conn, chain_id, tree.size)
        if head is not None and tree.size and head.signed_by(self.trusted) and head.root == tree.root().hex():
            chain.head = head
        return chain

    def _stored_frontier(self, conn: Connection, chain_id: str, limit: int) -> tuple[merkle.CompactRange, str]:
        """The latest tree_frontier of at most ``limit`` leaves whose last entry is still stored and whose root
        is that of the signed head of its size (when there is one); else the empty tree."""
        rows = conn.execute(select(TreeFrontier.size, TreeFrontier.nodes)
                            .where(TreeFrontier.chain_id == chain_id, TreeFrontier.size <= limit)
                            .order_by(TreeFrontier.size.desc()))
        for size, nodes in rows:
            try:
                tree = merkle.CompactRange.from_text(size, nodes)
            except ValueError as exc:
                log.error("chain %s: stored frontier of size %d unreadable: %s", chain_id, size, exc)
                continue
            head_hash = conn.scalar(select(AuditEntry.hash).where(AuditEntry.chain_id == chain_id,
                                                                  AuditEntry.seq == size))
            signed = _stored_head(conn, chain_id, size)
            matches = (signed is not None and signed.signed_by(self.trusted)
                       and (signed.root, signed.head_hash) == (tree.root().hex(), head_hash))
            # Unsigned, a frontier is only taken where nothing else can be (the entries before it pruned): a
            # planted one would have the bridge sign heads over a tree it never computed.
            pruned_before = conn.scalar(select(AuditEntry.seq).where(AuditEntry.chain_id == chain_id,
                                                                     AuditEntry.seq < size).limit(1)) is None
            if head_hash is None or not (matches or (signed is None and pruned_before)):
                log.error("chain %s: the stored frontier of size %d does not match the database or its signed "
                          "head; using an older one", chain_id, size)
                continue
            return tree, head_hash
        return merkle.CompactRange(), GENESIS

    def _extend(self, conn: Connection, chain: ChainTree) -> None:
        """Append the entries that walk, unbroken, to a checkpoint signed by a trusted key."""
        checkpoints = {seq: (hash_, signed_us, key_id, signature) for seq, hash_, signed_us, key_id, signature in
                       conn.execute(select(Checkpoint.seq, Checkpoint.hash, Checkpoint.signed_us, Checkpoint.key_id,
                                           Checkpoint.signature)
                                    .where(Checkpoint.chain_id == chain.chain_id, Checkpoint.seq > chain.size))}
        if not checkpoints:
            return
        end = max(checkpoints)
        walk = ChainWalk(chain.chain_id, chain.size + 1, chain.head_hash)
        pending: list[bytes] = []
        broken = False
        while walk.expected <= end and not broken:
            rows = conn.execute(select(*WALK_COLUMNS)
                                .where(AuditEntry.chain_id == chain.chain_id, AuditEntry.seq >= walk.expected,
                                       AuditEntry.seq <= end)
                                .order_by(AuditEntry.seq).limit(READ_CHUNK)).all()
            if not rows:
                return
            matched: list[tuple[int, int]] = []  # (leaves pending up to it, seq): checkpoints the walk reached
            for row in rows:
                if _broken(walk, row):
                    if (chain.chain_id, row[0]) not in self._breaks:
                        self._breaks.add((chain.chain_id, row[0]))
                        log.error("chain %s: entry %d does not follow from entry %d; not published past it",
                                  chain.chain_id, row[0], walk.expected - 1)
                    broken = True
                    break
                pending.append(bytes.fromhex(row[-1]))
                cp = checkpoints.get(row[0])
                if cp is not None and cp[0] == row[-1]:
                    matched.append((len(pending), row[0]))
            for count, seq in reversed(matched):  # one signature checked per read, the latest that holds
                if self._signed(chain.chain_id, seq, *checkpoints[seq]):
                    chain.append(pending[:count])
                    chain.head_hash = checkpoints[seq][0]
                    del pending[:count]
                    break

    def _signed(self, chain_id: str, seq: int, hash_: str, signed_us: int, key_id: str, signature: str) -> bool:
        key = self.trusted.get(key_id)
        return key is not None and verify_signature(key, signature, checkpoint_message(chain_id, seq, hash_, signed_us))

    def _sign(self, chain: ChainTree) -> None:
        """Sign and store a head when the tree's size changed (or a witness holds a chain now empty here)."""
        if chain.head is not None and chain.head.size == chain.size:
            return
        if chain.size == 0 and not any(w.held and chain.chain_id in w.held for w in self.witnesses):
            return
        head = sign_head(self.signer, chain.chain_id, chain.size, chain.tree.root().hex(), chain.head_hash)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(TreeHeadRow).values(**head.to_dict()))
        except IntegrityError:  # another bridge publishing the same chain signed this size first
            with self.engine.connect() as conn:
                stored = _stored_head(conn, chain.chain_id, chain.size)
            if stored is not None and stored.root == head.root and stored.signed_by(self.trusted):
                head = stored
            else:
                log.critical("chain %s: a head of size %d with another root is stored; the witnesses decide",
                             chain.chain_id, chain.size)
        chain.head = head

    # --- witnesses ---------------------------------------------------------------------------------------

    def _send(self, w: Witness) -> None:
        try:
            if w.held is None:
                self._ask(w)
            assert w.held is not None
            for chain in self.chains.values():
                self._publish_to(w, chain)
        except (WitnessError, ValueError) as exc:
            self._unreachable(w, exc)

    def _ask(self, w: Witness) -> None:
        answer = w.client.heads()
        heads = answer.get("heads") if isinstance(answer, dict) else None
        if not isinstance(heads, dict):
            raise WitnessError(f"the witness at {w.url} sent no list of heads")
        if answer.get("witness_key_id") != w.key_id:
            raise WitnessError(f"the witness at {w.url} has key {answer.get('witness_key_id')}, the site file names "
                               f"{w.key_id}")
        w.held = {}
        for chain, h in heads.items():
            held = Held.from_dict(h)
            # Believe only what the witness signed over a head we signed: a hostile answer (a forged witness,
            # a man in the middle) must not invent chains or sizes for the bridge to work on.
            if (held.head.chain_id == chain and held.head.signed_by(self.trusted)
                    and held.cosignature.valid_for(held.head, {w.key_id: w.key})):
                w.held[chain] = held
            else:
                log.warning("witness %s: ignoring its head of %r, not countersigned by it over a head of ours",
                            w.url, chain[:80])
        w.frontiers.clear()

    def _publish_to(self, w: Witness, chain: ChainTree) -> None:
        assert w.held is not None
        head = chain.head
        held = w.held.get(chain.chain_id)
        if head is None or (held is None and head.size == 0):
            return
        if held is not None and (held.head.size, held.head.root) == (head.size, head.root) and (
                time.time_ns() // 1000 - held.cosignature.cosigned_us < REFRESH_US):
            return
        for _attempt in range(2):
            from_size = 0 if held is None else held.head.size
            try:
                cosignature = w.client.publish(head, from_size, self._proof(w, chain, from_size))
            except Behind as behind:
                held = behind.held
                self._held(w, chain.chain_id, held)
                continue
            except Fork as fork:
                self._forked(w, chain, fork)
                return
            if not cosignature.valid_for(head, {w.key_id: w.key}):
                raise WitnessError(f"the witness at {w.url} answered a cosignature that does not verify")
            self._store_cosignature(head, cosignature.witness_key_id, cosignature.cosigned_us, cosignature.signature)
            self._held(w, chain.chain_id, Held(head, cosignature))
            w.frontiers[chain.chain_id] = chain.tree.copy()
            self._reachable(w)
            return

    def _held(self, w: Witness, chain_id: str, held: Held | None) -> None:
        assert w.held is not None
        w.frontiers.pop(chain_id, None)
        if held is None:
            w.held.pop(chain_id, None)
        else:
            w.held[chain_id] = held

    def _proof(self, w: Witness, chain: ChainTree, from_size: int) -> list[bytes]:
        """The consistency proof from ``from_size`` to the chain's size (none from 0; none when the witness is
        ahead: it will answer a fork)."""
        if not 0 < from_size < chain.size:
            return []
        frontier = w.frontiers.get(chain.chain_id)
        if frontier is None or frontier.size != from_size:
            frontier = chain.frontier_at(from_size) or self._frontier_from_db(chain.chain_id, from_size)
            w.frontiers[chain.chain_id] = frontier
        leaves = chain.leaves(from_size)
        if leaves is None:
            leaves = self._leaves_from_db(chain.chain_id, from_size, chain.size)
        return merkle.consistency_proof_from(frontier, leaves)

    def _frontier_from_db(self, chain_id: str, size: int) -> merkle.CompactRange:
        with self.engine.connect() as conn:
            tree, _ = self._stored_frontier(conn, chain_id, size)
        for leaf in self._leaves_from_db(chain_id, tree.size, size):
            tree.append(leaf)
        return tree

    def _leaves_from_db(self, chain_id: str, after: int, upto: int) -> list[bytes]:
        """Leaf hashes reread for a witness further behind than the leaves kept in memory."""
        with self.engine.connect() as conn:
            return [bytes.fromhex(h) for h in conn.scalars(
                select(AuditEntry.hash).where(AuditEntry.chain_id == chain_id, AuditEntry.seq > after,
                                              AuditEntry.seq <= upto).order_by(AuditEntry.seq))]

    def _store_cosignature(self, head: TreeHead, witness_key_id: str, cosigned_us: int, signature: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(WitnessCosignature).values(
                    chain_id=head.chain_id, size=head.size, witness_key_id=witness_key_id, cosigned_us=cosigned_us,
                    signature=signature))
        except IntegrityError:
            pass  # this size's cosignature by this witness is stored already (the same head sent again)

    # --- alarms ------------------------------------------------------------------------------------------

    def _forked(self, w: Witness, chain: ChainTree, fork: Fork) -> None:
        held = fork.held
        if held is not None:
            self._held(w, chain.chain_id, held)
        assert chain.head is not None
        cause = (f"{w.key_id}:{chain.chain_id}:{held.head.size}:{held.head.root[:16]}" if held
                 else f"{w.key_id}:{chain.chain_id}:{chain.head.size}")
        self._reachable(w)
        if cause in w.forks:
            return
        detail: dict[str, object] = {
            "severity": "critical", "witness": w.url, "witness_key_id": w.key_id, "chain": chain.chain_id,
            "reason": fork.reason, "size": chain.head.size, "root": chain.head.root}
        if held is not None:
            detail.update(held_size=held.head.size, held_root=held.head.root, held_signed_us=held.head.signed_us)
        log.critical("FORK: witness %s refuses chain %s at size %d: %s", w.url, chain.chain_id, chain.head.size,
                     fork.reason)
        if self._raise(*alarm_raised(EventKind.AUDIT_FORK_DETECTED, door=None, source=w.source, cause=cause,
                                     ts=datetime.now(UTC), detail=detail)):
            w.forks.add(cause)

    def _unreachable(self, w: Witness, exc: Exception) -> None:
        if w.down_since_us is None:
            w.down_since_us = time.time_ns() // 1000
            log.warning("witness %s: %s; heads wait for it", w.url, exc)
        w.held = None  # asked again when it is back: it may have restarted from its backup
        if w.alarmed or time.monotonic() - w.last_ok < UNREACHABLE_PERIODS * self.period:
            return
        w.alarmed = self._raise(*alarm_raised(
            EventKind.AUDIT_WITNESS_UNREACHABLE, door=None, source=w.source, cause=f"{w.key_id}:{w.down_since_us}",
            ts=datetime.now(UTC), detail={"witness": w.url, "reason": str(exc)[:500]}))

    def _reachable(self, w: Witness) -> None:
        w.last_ok = time.monotonic()
        if w.alarmed and self._raise(*alarm_cleared(
                EventKind.AUDIT_WITNESS_UNREACHABLE, door=None, source=w.source,
                cause=f"{w.key_id}:{w.down_since_us}", ts=datetime.now(UTC))):
            w.alarmed = False
            log.info("witness %s countersigns again", w.url)
        if not w.alarmed:
            w.down_since_us = None

    def _raise(self, event: Event, effect: Effect) -> bool:
        try:
            self.alarm(event, effect)
        except Exception as exc:  # the writer's queue is full: the next round tries again
            log.error("could not raise %s: %s", event.id, exc)
            return False
        return True

    # --- frontiers ---------------------------------------------------------------------------------------

    def store_frontiers(self, chains: Iterable[ChainTree] | None = None) -> None:
        """Store each chain's frontier at its signed size (new sizes only: the table is append-only)."""
        self._frontiers_at = time.monotonic()
        for chain in list(self.chains.values()) if chains is None else chains:
            if chain.head is None or chain.head.size != chain.size or chain.size == 0:
                continue
            with self.engine.begin() as conn:
                if conn.scalar(select(TreeFrontier.size).where(TreeFrontier.chain_id == chain.chain_id,
                                                               TreeFrontier.size == chain.size)) is None:
                    conn.execute(insert(TreeFrontier).values(chain_id=chain.chain_id, size=chain.size,
                                                             nodes=chain.tree.to_text()))


def _chain_names(conn: Connection) -> list[str]:
    """The chains with a checkpoint, one index seek each (a DISTINCT would read the whole table, which grows by
    a row per committed batch)."""
    names: list[str] = []
    while (name := conn.scalar(select(func.min(Checkpoint.chain_id))
                               .where(Checkpoint.chain_id > (names[-1] if names else "")))) is not None:
        names.append(name)
    return names


def _broken(walk: ChainWalk, row: tuple) -> bool:
    try:
        return bool(walk.step(*row))
    except TypeError:  # a column set to NULL behind the writer's back
        return True


def _stored_head(conn: Connection, chain_id: str, size: int) -> TreeHead | None:
    row = conn.execute(select(TreeHeadRow.chain_id, TreeHeadRow.size, TreeHeadRow.root, TreeHeadRow.head_hash,
                              TreeHeadRow.signed_us, TreeHeadRow.key_id, TreeHeadRow.signature)
                       .where(TreeHeadRow.chain_id == chain_id, TreeHeadRow.size == size)).first()
    return None if row is None else TreeHead(*row)
