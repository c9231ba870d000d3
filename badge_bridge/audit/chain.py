"""The hash chain: how an audit entry is hashed, what a checkpoint signs, and the one walk that checks a
chain entry by entry.

Entry hash: ``SHA-256(prev_hash_hex || entry_body)`` where the body is the netstring encoding of the fields
(see ``entry_body``); the first entry of a chain follows ``GENESIS``. See docs/design-notes.md for why
netstrings rather than JSON.

Every reader of a chain (``audit verify``, sealing, the monthly export and its offline verifier, an event's
proof) walks it with ``ChainWalk``: the walk knows the seq the next entry must have and the hash it must
follow, and says what breaks at each entry. What a break means (a finding, a line for the auditor, a refusal
to sign) is the caller's: their words differ, the arithmetic does not. This module imports nothing but
hashlib, so the processes that verify long chains and big exports start quickly.
"""

from __future__ import annotations

import hashlib

GENESIS = "0" * 64

# What can break at an entry, as bits of ChainWalk.step's answer (plain ints: the step runs per entry).
AHEAD = 1
"""Its seq is past the expected one: the entries between are missing."""
BEHIND = 2
"""Its seq was already passed: a second entry with that seq, or one moved back."""
LINK = 4
"""Its stored ``prev_hash`` is not the hash of the entry before it."""
CONTENT = 8
"""Its hash does not follow from the hash before it and its fields: the entry was modified."""
OUT_OF_PLACE = AHEAD | BEHIND


def entry_body(
    chain_id: str, event_id: str, ts_us: int, received_us: int, source: str, door: str, kind: str,
    subject: str, detail: str,
) -> str:
    """Netstrings (``len:text``) of the fields in a fixed order: unambiguous for any content and about
    three times faster to build than canonical JSON, which matters when verifying millions of entries."""
    t, r = str(ts_us), str(received_us)
    return (
        f"{len(chain_id)}:{chain_id}{len(event_id)}:{event_id}{len(t)}:{t}{len(r)}:{r}{len(source)}:{source}"
        f"{len(door)}:{door}{len(kind)}:{kind}{len(subject)}:{subject}{len(detail)}:{detail}"
    )


def entry_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def checkpoint_message(chain_id: str, seq: int, head: str, signed_us: int) -> bytes:
    """What a checkpoint signature covers."""
    return f"badge-bridge-checkpoint/1\n{chain_id}\n{seq}\n{head}\n{signed_us}".encode()


class ChainWalk:
    """One chain read in seq order. ``step`` takes an entry as the next one: when nothing breaks there the
    walk moves past it; after a break it stays, and the caller either ``follow``s the entry (taking up the
    chain again from it, so each break is reported once) or skips it (an entry standing behind the walk)."""

    __slots__ = ("chain_id", "expected", "last")

    def __init__(self, chain_id: str, expected: int = 1, last: str = GENESIS) -> None:
        self.chain_id = chain_id
        self.expected = expected
        """The seq the next entry must have."""
        self.last = last
        """The hash it must follow: GENESIS at a chain's start, else the hash of the entry before."""

    def step(
        self, seq: int, event_id: str, ts_us: int, received_us: int, source: str, door: str | None, kind: str,
        subject: str, detail: str, prev_hash: str | None, stored: str,
    ) -> int:
        """The breaks at this entry (bits AHEAD, BEHIND, LINK, CONTENT), or 0 and the walk moves past it.
        A stored ``prev_hash`` must equal the walk's last hash, and the entry is hashed from it; without one
        (``audit verify`` trusts only the hashes) the entry is hashed from the walk's last hash, so a broken
        link shows as CONTENT. Runs once per entry, so the happy path comes first and entry_hash is inlined."""
        last = self.last
        # door: NULL is stored for no door and hashed as "" (a NULL planted elsewhere must not crash a reader)
        body = entry_body(self.chain_id, event_id, ts_us, received_us, source, door or "", kind, subject, detail)
        digest = hashlib.sha256(((last if prev_hash is None else prev_hash) + body).encode()).hexdigest()
        if digest == stored and seq == self.expected and (prev_hash is None or prev_hash == last):
            self.expected, self.last = seq + 1, stored
            return 0
        breaks = CONTENT if digest != stored else 0
        if prev_hash is not None and prev_hash != last:
            breaks |= LINK
        if seq != self.expected:
            breaks |= AHEAD if seq > self.expected else BEHIND
        return breaks

    def follow(self, seq: int, stored: str) -> None:
        """Move past the entry ``seq`` whose hash is ``stored``, whatever broke there."""
        self.expected, self.last = seq + 1, stored
