"""The witness: time to countersign a head with its consistency proof, over HTTP with the fsync, as the bridge's
client sees it, on two servers around the same ``Witness``: the standard library's ThreadingHTTPServer (what
`badge-bridge witness serve` runs) and Flask's own server. The disk's bare fsync time is measured beside them:
it is the floor of every answer (the witness answers only once the head is on disk).

Prints one JSON object.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from badge_bridge.audit import merkle
from badge_bridge.audit.tree_head import TreeHead, sign_head
from badge_bridge.audit.witness import Refusal, Witness, WitnessServer, init_dir, load_bridge_keys
from badge_bridge.audit.witness_api import HEADS_PATH, WitnessClient
from badge_bridge.keys import KeyStore

HEADS = int(os.environ.get("BENCH_WITNESS_HEADS", "1000"))
STEP = 200
"""Entries per head: 20,000 entries a second published every 10 s would be 200,000; the proof's length grows
with the logarithm only, so this is close enough and keeps the set-up short."""
GOAL_P99_MS = 5.0


def workload(keys: KeyStore) -> list[tuple[TreeHead, int, list[bytes]]]:
    """The heads of a chain growing by STEP entries each, with each one's proof from the one before."""
    signer, tree, out = keys.signer(), merkle.CompactRange(), []
    for i in range(HEADS):
        old = tree.copy()
        leaves = [(i * STEP + j).to_bytes(32, "big") for j in range(STEP)]
        for leaf in leaves:
            tree.append(leaf)
        head = sign_head(signer, "bench-1", tree.size, tree.root().hex(), leaves[-1].hex())
        out.append((head, old.size, merkle.consistency_proof_from(old, leaves) if old.size else []))
    return out


def serve_stdlib(directory: str, key_file: str, ready: multiprocessing.Queue) -> None:
    server = WitnessServer(("127.0.0.1", 0), Witness(Path(directory), load_bridge_keys([Path(key_file)])))
    ready.put(server.server_address[1])
    server.serve_forever()


def serve_flask(directory: str, key_file: str, ready: multiprocessing.Queue) -> None:
    import logging

    from flask import Flask, request
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request, as `witness serve`

    witness = Witness(Path(directory), load_bridge_keys([Path(key_file)]))
    app = Flask("witness")

    @app.post(HEADS_PATH)
    def publish() -> tuple[dict[str, object], int]:
        try:
            return witness.publish(request.get_data()).to_dict(), 200
        except Refusal as refusal:
            return refusal.body(), refusal.status

    server = make_server("127.0.0.1", 0, app, threaded=True)
    ready.put(server.server_port)
    server.serve_forever()


def measure(target, keys: KeyStore, work: list[tuple[TreeHead, int, list[bytes]]], tmp: Path) -> dict[str, float]:
    directory = tmp / target.__name__
    init_dir(directory)
    spawn = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue = spawn.Queue()
    key_file = next(keys.signing_dir.glob("*.pub"))
    proc = spawn.Process(target=target, args=(str(directory), str(key_file), ready),
                                                         daemon=True)
    proc.start()
    try:
        client = WitnessClient(f"http://127.0.0.1:{ready.get(timeout=60)}")
        times = []
        for head, from_size, proof in work:
            started = time.perf_counter()
            client.publish(head, from_size, proof)
            times.append(time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.join(10)
    return _summary(times)


def in_process(keys: KeyStore, work: list[tuple[TreeHead, int, list[bytes]]], tmp: Path) -> dict[str, float]:
    """``Witness.publish`` alone (parse, both signatures, the proof, the fsync'd line): the server's share."""
    directory = tmp / "in-process"
    init_dir(directory)
    witness = Witness(directory, load_bridge_keys(keys.signing_dir.glob("*.pub")))
    times = []
    for head, from_size, proof in work:
        body = json.dumps({"head": head.to_dict(), "from_size": from_size, "proof": [p.hex() for p in proof]}).encode()
        started = time.perf_counter()
        witness.publish(body)
        times.append(time.perf_counter() - started)
    witness.close()
    return _summary(times)


def fsync_floor(tmp: Path, n: int = 500) -> dict[str, float]:
    fd = os.open(tmp / "fsync", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        os.write(fd, b"x" * 1000 + b"\n")
        os.fsync(fd)
        times.append(time.perf_counter() - started)
    os.close(fd)
    return _summary(times)


def _summary(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 3),
            "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3), "max_ms": round(ms[-1], 3)}


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as name:
        tmp = Path(name)
        keys = KeyStore(tmp / "keys")
        keys.ensure()
        work = workload(keys)
        proof_hashes = max(len(p) for _, _, p in work)
        out: dict[str, object] = {"bench": "witness", "goals": {"cosign_p99_ms": GOAL_P99_MS},
                                  "heads": HEADS, "entries_per_head": STEP, "longest_proof": proof_hashes}
        out["disk_fsync"] = fsync_floor(tmp)
        stdlib = measure(serve_stdlib, keys, work, tmp)
        flask = measure(serve_flask, keys, work, tmp)
        out["servers"] = {"http.server (witness serve)": stdlib, "flask (werkzeug)": flask}
        out["witness_publish_in_process"] = in_process(keys, work, tmp)
        if Path("/dev/shm").is_dir():  # memory, where fsync costs nothing: the witness's own work
            with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
                out["witness_publish_in_process_no_disk"] = in_process(keys, work, Path(shm))
        floor = out["disk_fsync"]["p99_ms"]  # type: ignore[index]
        out["meets_goals"] = {"cosign_p99": stdlib["p99_ms"] <= GOAL_P99_MS,
                              "cosign_p99_above_the_disks_fsync": round(stdlib["p99_ms"] - floor, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
