"""Inputs that broke something, kept in ``fuzz/crashers/`` as one small JSON file per finding, which the
regression tests replay (tests/test_fuzz_regressions.py).

One input per signature: the one with the fewest other problems, then the shortest, so that each file shows
its own finding and goes green with that finding's fix. Times in an input are replayed at the same distance
from now as when it was found (``Crasher.replay``): a time six minutes ahead stays six minutes ahead.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fuzz.oracle import signature

CRASHERS = Path(__file__).with_name("crashers")
MINIMIZE_TRIES = 40
SMALL = 256
"""Inputs this short are kept as found."""
ISO_TIME = re.compile(rb'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?)(Z|[+-]\d\d:\d\d)?"')
EPOCH = re.compile(rb'("time"\s*:\s*)(1\d{9})\b')
"""esp-rfid's epoch seconds."""
NEAR = timedelta(days=366)
"""Times further than this from the moment of finding are extremes on purpose (year 1, 9999): left as they are."""


@dataclass
class Crasher:
    id: str
    target: str
    """``message`` (the whole pipeline, with ``topic``) or a parser target of fuzz/targets.py."""
    signature: str
    problems: list[str]
    input: bytes
    topic: str | None = None
    databases: list[str] = field(default_factory=list)
    """Where it was seen to break (``message``): a NUL in a field breaks only PostgreSQL."""
    found: str = ""
    found_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def rank(self) -> tuple[int, int]:
        return len({signature(p) for p in self.problems}), len(self.input)

    def replay(self, now: datetime) -> bytes:
        """The input as if found ``now``: its times moved by the time since it was found."""
        delta = now - datetime.fromisoformat(self.found_at)
        found = datetime.fromisoformat(self.found_at)

        def iso(m: re.Match[bytes]) -> bytes:
            text, zone = m.group(1).decode(), (m.group(2) or b"").decode()
            ts = datetime.fromisoformat(text).replace(tzinfo=UTC)
            if abs(ts - found) > NEAR:
                return m.group(0)
            moved = (ts + delta).replace(tzinfo=None)
            digits = len(text.partition(".")[2])
            out = moved.isoformat(timespec="microseconds" if digits else "seconds")[:20 + digits if digits else None]
            return f'"{out}{zone}"'.encode()

        def epoch(m: re.Match[bytes]) -> bytes:
            t = int(m.group(2))
            if abs(t - found.timestamp()) > NEAR.total_seconds():
                return m.group(0)
            return m.group(1) + str(t + int(delta.total_seconds())).encode()

        return EPOCH.sub(epoch, ISO_TIME.sub(iso, self.input))

    def to_json(self) -> str:
        body = {k: v for k, v in asdict(self).items() if k != "input" and v not in (None, [])}
        try:
            body["text"] = self.input.decode("utf-8")
        except UnicodeDecodeError:
            body["hex"] = self.input.hex()
        return json.dumps(body, indent=1, ensure_ascii=True) + "\n"

    @staticmethod
    def from_json(text: str) -> Crasher:
        body = json.loads(text)
        data = body.pop("text").encode("utf-8") if "text" in body else bytes.fromhex(body.pop("hex"))
        return Crasher(input=data, **body)


def crasher_id(target: str, sig: str) -> str:
    return f"{target}-{hashlib.sha256(sig.encode()).hexdigest()[:10]}"


def load(directory: Path = CRASHERS) -> list[Crasher]:
    return [Crasher.from_json(p.read_text()) for p in sorted(directory.glob("*.json"))]


def save(crasher: Crasher, directory: Path = CRASHERS) -> bool:
    """Keep ``crasher`` unless its signature is kept already with a better input; True if written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{crasher.id}.json"
    if path.exists():
        old = Crasher.from_json(path.read_text())
        databases = sorted(set(old.databases) | set(crasher.databases))
        if old.rank <= crasher.rank:
            if databases == old.databases:
                return False
            crasher = old
        crasher.databases = databases
    path.write_text(crasher.to_json())
    return True


def keep(target: str, data: bytes, sig: str, problems_of: Callable[[bytes], list[str]], *, topic: str | None = None,
         databases: Sequence[str] = (), found: str = "", directory: Path = CRASHERS) -> Crasher | None:
    """Check that ``data`` breaks the ``sig`` way on its own, shrink it, and save it; None if it does not
    (a finding that depends on earlier inputs is reported, not kept)."""
    def breaks(d: bytes) -> bool:
        return sig in map(signature, problems_of(d))

    if not breaks(data):
        return None
    if len(data) > SMALL:
        data = minimize(data, breaks)
    crasher = Crasher(id=crasher_id(target, sig), target=target, signature=sig, problems=problems_of(data),
                      input=data, topic=topic, databases=list(databases), found=found)
    save(crasher, directory)
    return crasher


def minimize(data: bytes, still_breaks: Callable[[bytes], bool], tries: int = MINIMIZE_TRIES) -> bytes:
    """A shorter input that still breaks the same way: cut out ever smaller chunks while it does."""
    chunk = len(data) // 2
    while chunk and tries:
        start = 0
        while start < len(data) and tries:
            candidate = data[:start] + data[start + chunk:]
            tries -= 1
            if candidate and still_breaks(candidate):
                data = candidate
            else:
                start += chunk
        chunk //= 2
    return data
