"""The coverage-guided fuzzer: atheris (libFuzzer) over one target, bounded in time.

``python -m fuzz.coverage TARGET --seconds N --out FILE`` (``make fuzz`` runs every target in turn). Targets:
the parsers of fuzz/targets.py (``contract``, ``esp_rfid``, ``cards``, ``records``) and ``message``, one MQTT
message through the bridge's whole pipeline on a real SQLite database (fuzz/oracle.py; the first byte picks
the topic). A finding does not stop the run: each new signature is checked again on its own (a ``message``
finding in a fresh database), shrunk, and kept in fuzz/crashers/; FILE is rewritten as the run goes (libFuzzer
ends the process when the time is up) with executions and findings per signature.

The corpus the fuzzer grows goes to ``--work``, the seeds in fuzz/corpus/TARGET stay as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["badge_bridge", "fuzz"]):
    from fuzz import store, targets
    from fuzz.oracle import Judge, signature
    from fuzz.payloads import ESP_TOPIC, PREFIX, printable
    from fuzz.scratch import Scratch
    from fuzz.site import write_site

CORPUS = Path(__file__).with_name("corpus")
TOPICS = [f"{PREFIX}/controllers/ctl-lobby/events", f"{PREFIX}/controllers/ctl-lobby/status",
          f"{PREFIX}/console/commands", f"{PREFIX}/cameras/cam-lobby/events", f"{PREFIX}/cameras/cam-lobby/status",
          ESP_TOPIC, f"{PREFIX}/controllers/esp-noc/events", f"{PREFIX}/controllers/ctl-hall-a/events"]
"""``message`` inputs: the first byte (modulo) picks one."""
WRITE_EVERY_S = 5.0


def split(data: bytes) -> tuple[str, bytes]:
    return TOPICS[data[0] % len(TOPICS)] if data else TOPICS[0], data[1:]


class Run:
    def __init__(self, target: str, out: Path, crashers: Path, workdir: Path) -> None:
        self.target, self.out, self.crashers = target, out, crashers
        self.judge: Judge | None = None
        if target == "message":
            scratch = Scratch("sqlite", workdir / "dbs")
            self.judge = Judge(write_site(workdir, scratch.template), scratch, stall_s=1.0)
        self.execs, self.started, self.written = 0, time.monotonic(), 0.0
        self.findings: dict[str, dict[str, object]] = {}

    def problems(self, data: bytes) -> list[str]:
        """What the target makes of ``data`` (``message``: in the running oracle, state and all)."""
        if self.judge is not None:
            return self.judge.check(*split(data)).problems
        try:
            targets.TARGETS[self.target](data)
        except targets.Finding as finding:
            return [str(p) for p in finding.args]
        return []

    def one(self, data: bytes) -> None:
        self.execs += 1
        problems = self.problems(data)
        others = len({signature(p) for p in problems}) - 1
        for problem in problems:
            self.record(data, problem, others)
        if time.monotonic() - self.written > WRITE_EVERY_S:
            self.write()

    def record(self, data: bytes, problem: str, others: int) -> None:
        """Count it; keep the input if it is the first of its signature or has fewer other problems than the
        one kept (so each crasher shows its own finding)."""
        sig = signature(problem)
        entry = self.findings.setdefault(sig, {"count": 0})
        entry["count"] = int(entry["count"]) + 1  # type: ignore[call-overload]
        if others >= int(entry.get("kept_with_others", others + 1)):  # type: ignore[call-overload]
            return
        entry["kept_with_others"] = others
        found = f"fuzz.coverage {self.target} {datetime.now(UTC):%Y-%m-%d}"
        if self.judge is not None:
            judge, (topic, payload) = self.judge, split(data)
            crasher = store.keep("message", payload, sig, lambda p: judge.alone(topic, p), topic=topic,
                                 databases=["sqlite"], found=found, directory=self.crashers)
        else:
            crasher = store.keep(self.target, data, sig, self.problems, found=found, directory=self.crashers)
        entry["kept"] = crasher is not None  # not when it depends on the inputs before it
        if crasher is not None:
            entry.update(id=crasher.id, example=printable(crasher.input))
        self.write()

    def write(self) -> None:
        self.written = time.monotonic()
        self.out.write_text(json.dumps({"target": self.target, "execs": self.execs,
                                        "seconds": round(self.written - self.started, 1),
                                        "findings": self.findings}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=[*targets.TARGETS, "message"])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="grown corpus and scratch databases")
    parser.add_argument("--crashers", type=Path, default=store.CRASHERS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # a stuck writer logs every retry
    work = args.work or Path(tempfile.mkdtemp(prefix="fuzz-coverage-"))
    grown = work / "corpus" / args.target
    grown.mkdir(parents=True, exist_ok=True)
    run = Run(args.target, args.out, args.crashers, work)
    run.write()
    atheris.Setup([sys.argv[0], f"-max_total_time={args.seconds}", "-timeout=60", "-rss_limit_mb=4096",
                   "-max_len=20000", f"-artifact_prefix={work}/", str(grown), str(CORPUS / args.target)], run.one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
