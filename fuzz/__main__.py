"""``make fuzz``: the live run against the bridge process (fuzz/harness.py), then the coverage-guided fuzzer
over each target (fuzz/coverage.py), bounded in count and time; one JSON report on stdout (and in
``--out``/report.json), a human summary on stderr. Exit status 1 if any target figure is missed."""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fuzz import store
from fuzz.harness import Harness, Settings
from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]
COVERAGE_TARGETS = [*TARGETS, "message"]
QUICK = {"messages": 20_000, "bus_bytes": 300_000, "max_seconds": 600, "coverage_seconds": 20, "audit_every": 10_000}
FULL = {"messages": 1_000_000, "bus_bytes": 10_000_000, "max_seconds": 3 * 3600, "coverage_seconds": 300,
        "audit_every": 100_000}


def coverage(targets: list[str], seconds: int, out: Path) -> dict[str, Any]:
    """One atheris process per target, one after the other (they share two cores with the bridge)."""
    results = {}
    for target in targets:
        result = out / f"coverage-{target}.json"
        work = out / "coverage" / target
        with (out / f"coverage-{target}.log").open("wb") as log:
            subprocess.run([sys.executable, "-m", "fuzz.coverage", target, "--seconds", str(seconds), "--out",
                            str(result), "--work", str(work)], cwd=ROOT, stdout=log, stderr=log,
                           timeout=seconds * 4 + 120, check=False)
        results[target] = json.loads(result.read_text()) if result.exists() else {"error": "no result"}
    return results


def human(report: dict[str, Any]) -> str:
    lines = []
    live = report.get("live")
    if live:
        s = live["summary"]
        lines += [f"live run ({live['seconds']}s, {live['settings']['db']}, seed {live['settings']['seed']}): "
                  f"{live['mqtt']['payloads_sent']:,} MQTT payloads, {live['bus']['bytes_sent']:,} bytes on the bus"
                  + (f"; stopped early: {live['stopped_early']}" if live["stopped_early"] else ""),
                  f"  crashes {s['crashes']}, stalls {s['stalls']}, unacked {s['unacked']}, garbage grants "
                  f"{s['garbage_grants']}, rejections uncounted {s['rejections_uncounted']}, final probes "
                  f"{'answered' if s['final_probes_answered'] else 'NOT all answered'}, chain "
                  f"{'verified' if s['chain_verified'] else 'NOT verified'}, RSS {s['rss_kib_before']} -> "
                  f"{s['rss_kib_after']} KiB",
                  f"  dead letters by code: {live['audit_log']['rejections_audited_by_code']}",
                  f"  bus: {live['bus']['probe_grants']} genuine grants, {live['bus']['probe_failures']} probe "
                  f"failures; grants: {live['audit_log']['grants']}"]
        for sig, f in live["findings"].items():
            example = f["examples"][0]
            lines.append(f"  finding {sig} x{f['count']}: {example['topic']} {example['payload'][:90]}")
    for target, result in report.get("coverage", {}).items():
        lines.append(f"coverage {target}: {result.get('execs', 0):,} inputs in {result.get('seconds', 0)}s, "
                     f"{len(result.get('findings', {}))} findings")
        for sig, f in result.get("findings", {}).items():
            kept = f" -> {f['id']}" if "id" in f else " (not kept: needs the inputs before it)"
            lines.append(f"  {sig} x{f['count']}{kept}")
    lines.append(f"crashers in fuzz/crashers: {report['crashers']}; targets met: {report['targets_met']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke check of a few minutes")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--messages", type=int, help="MQTT payloads (full: 1,000,000)")
    parser.add_argument("--bus-bytes", type=int, help="bytes on the RS-485 bus (full: 10,000,000)")
    parser.add_argument("--max-seconds", type=float, help="time limit of the live run")
    parser.add_argument("--coverage-seconds", type=int, help="time per coverage-guided target")
    parser.add_argument("--targets", default=",".join(COVERAGE_TARGETS), help="coverage targets (empty: none)")
    parser.add_argument("--no-live", action="store_true", help="only the coverage-guided fuzzer")
    parser.add_argument("--max-incidents", type=int, default=25, help="stop the live run after this many")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default var/fuzz/<time>)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the run stops its bridge, broker and bus rather than orphaning them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("badge_bridge").setLevel(logging.CRITICAL)  # the oracle's own bridge code, refusing input
    preset = QUICK if args.quick else FULL
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    out = (args.out or ROOT / "var" / "fuzz" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {"quick": args.quick, "seed": seed}
    if not args.no_live:
        settings = Settings(messages=args.messages or preset["messages"],
                            bus_bytes=args.bus_bytes or preset["bus_bytes"],
                            max_seconds=args.max_seconds or preset["max_seconds"], out=out / "live", db=args.db,
                            seed=seed, audit_every=preset["audit_every"], max_incidents=args.max_incidents)
        report["live"] = Harness(settings).run()
    targets = [t for t in args.targets.split(",") if t]
    report["coverage"] = coverage(targets, args.coverage_seconds or preset["coverage_seconds"], out)
    report["crashers"] = len(store.load())
    coverage_clean = not any(r.get("findings") for r in report["coverage"].values())
    report["targets_met"] = coverage_clean and (args.no_live or report["live"]["targets_met"])
    report["seconds"] = round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(human(report), file=sys.stderr)
    print(json.dumps(report, default=str))
    sys.exit(0 if report["targets_met"] else 1)


if __name__ == "__main__":
    main()
