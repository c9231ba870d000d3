"""What the metrics endpoint reports about processing: plain integers, bumped on the hot path under the
processor's lock and copied out at scrape time."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Counters:
    events_in: dict[str, int] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    retransmitted: dict[str, int] = field(default_factory=dict)
    """By controller: messages sent again because their receipt did not come (ingest.admission)."""

    @staticmethod
    def bump(table: dict, key: object) -> None:
        table[key] = table.get(key, 0) + 1

    def copy(self) -> Counters:
        return Counters(dict(self.events_in), dict(self.decisions), dict(self.dead_letters), dict(self.retransmitted))
