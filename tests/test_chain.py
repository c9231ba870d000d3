"""The one chain walk (badge_bridge.audit.chain.ChainWalk) on a small chain built by hand: what it says
breaks at each kind of damaged entry, and where it stands afterwards."""

from __future__ import annotations

from badge_bridge.audit.chain import AHEAD, BEHIND, CONTENT, GENESIS, LINK, ChainWalk, entry_body, entry_hash

CHAIN = "bridge-1"
Entry = tuple[int, str, int, int, str, str, str, str, str, str, str]
"""seq, the hashed fields after the chain id, prev_hash, hash: what ChainWalk.step takes."""


def chain(n: int) -> list[Entry]:
    entries, head = [], GENESIS
    for seq in range(1, n + 1):
        fields = (f"ctl:{seq}", 1_000_000 * seq, 1_000_000 * seq + 5, "ctl-1", "main", "access.granted",
                  f'{{"credential":{seq}}}', "{}")
        prev, head = head, entry_hash(head, entry_body(CHAIN, *fields))
        entries.append((seq, *fields, prev, head))
    return entries


def test_an_intact_chain_follows_entry_by_entry() -> None:
    walk = ChainWalk(CHAIN)
    entries = chain(5)
    assert [walk.step(*e) for e in entries] == [0] * 5
    assert (walk.expected, walk.last) == (6, entries[-1][-1])


def test_a_chain_starts_from_an_anchor() -> None:
    entries = chain(5)
    walk = ChainWalk(CHAIN, 4, entries[2][-1])
    assert [walk.step(*e) for e in entries[3:]] == [0, 0]


def test_each_break_is_named_and_the_walk_waits_for_the_caller() -> None:
    entries = chain(5)
    modified = (*entries[1][:7], '{"credential":99}', *entries[1][8:])
    walk = ChainWalk(CHAIN)
    assert walk.step(*entries[0]) == 0
    assert walk.step(*modified) == CONTENT
    assert walk.expected == 2  # stays: the caller decides
    walk.follow(2, modified[-1])
    assert walk.step(*entries[3]) == AHEAD | LINK  # entry 3 is missing
    walk.follow(4, entries[3][-1])
    assert walk.step(*entries[1]) == BEHIND | LINK


def test_without_a_stored_link_a_broken_one_shows_as_content() -> None:
    """How audit verify walks: it trusts only the hashes, not the prev_hash column."""
    entries = chain(3)
    walk = ChainWalk(CHAIN)
    assert walk.step(*entries[0][:-2], None, entries[0][-1]) == 0
    assert walk.step(*entries[2][:-2], None, entries[2][-1]) == AHEAD | CONTENT
    relinked = (*entries[1][:-2], "f" * 64, entries[1][-1])
    assert walk.step(*relinked) == LINK | CONTENT
    assert walk.step(*relinked[:-2], None, relinked[-1]) == 0  # the stored link is not read
