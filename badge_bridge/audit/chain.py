"""The hash chain: how an audit entry is hashed, what a checkpoint signs, and the one walk that checks a
chain entry by entry.

Entry hash: ``SHA-256(prev_hash_hex || entry_body)`` where the body is the netstring encoding of the fields
(see ``entry_body``); the first entry of a chain follows ``GENESIS``. See docs/audit-log.md for why
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

# What can break at an entry, as bits of ChainWalk.check's answer (plain ints: the check runs per entry).
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
    """One chain read in seq order. ``check`` says what breaks at an entry taken as the next one; ``follow``
    moves past it. The caller chooses when to move on: most follow every entry, so the walk resynchronises
    after a break and each break is reported once; ``audit verify`` and the export verifier skip an entry
    that stands behind the walk."""

    __slots__ = ("chain_id", "expected", "last")

    def __init__(self, chain_id: str, expected: int = 1, last: str = GENESIS) -> None:
        self.chain_id = chain_id
        self.expected = expected
        """The seq the next entry must have."""
        self.last = last
        """The hash it must follow: GENESIS at a chain's start, else the hash of the entry before."""

    def check(
        self, seq: int, event_id: str, ts_us: int, received_us: int, source: str, door: str, kind: str,
        subject: str, detail: str, prev_hash: str | None, stored: str,
    ) -> int:
        """The breaks at this entry (bits AHEAD, BEHIND, LINK, CONTENT; 0 when it follows), without moving on.
        A stored ``prev_hash`` must equal the walk's last hash, and the entry is hashed from it; without one
        (``audit verify`` trusts only the hashes) it is hashed from the walk's last hash, so a broken link
        shows as CONTENT."""
        last = self.last
        if prev_hash is None:
            prev_hash, breaks = last, 0
        else:
            breaks = LINK if prev_hash != last else 0
        body = entry_body(self.chain_id, event_id, ts_us, received_us, source, door, kind, subject, detail)
        if hashlib.sha256((prev_hash + body).encode()).hexdigest() != stored:
            breaks |= CONTENT
        if seq != self.expected:
            breaks |= AHEAD if seq > self.expected else BEHIND
        return breaks

    def follow(self, seq: int, stored: str) -> None:
        """Move past the entry ``seq`` whose hash is ``stored``."""
        self.expected, self.last = seq + 1, stored
