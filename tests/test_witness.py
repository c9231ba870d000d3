"""The witness as its operator runs it (`badge-bridge witness init|serve`, a real process on a free port), and as
an attacker meets it: malformed and oversized requests, forged or foreign signatures, rollbacks, forks, replays,
and a SIGKILL in the middle of a run."""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from badge_bridge.audit import merkle
from badge_bridge.audit import witness as witness_module
from badge_bridge.audit.tree_head import TreeHead, sign_head
from badge_bridge.audit.witness import HEADS_FILE, Witness
from badge_bridge.audit.witness_api import MAX_BODY, Behind, Fork, WitnessClient, WitnessError
from badge_bridge.keys import KeyStore, key_id_of, public_from_hex
from tests.bridge_proc import CLI
from tests.waiting import wait_until
from tests.witness_proc import WitnessProcess

CHAIN = "bridge-1"
LEAVES = [bytes([i % 256, i // 256]) * 16 for i in range(2000)]


def head(keys: KeyStore, size: int, leaves: list[bytes] = LEAVES, chain: str = CHAIN) -> TreeHead:
    return sign_head(keys.signer(), chain, size, merkle.root(leaves[:size]).hex(), (leaves[size - 1] * 2).hex()[:64])


def body(h: TreeHead, from_size: int = 0, proof: list[bytes] | None = None) -> dict[str, Any]:
    return {"head": h.to_dict(), "from_size": from_size, "proof": [p.hex() for p in proof or []]}


def proof(m: int, n: int, leaves: list[bytes] = LEAVES) -> list[bytes]:
    return merkle.consistency_proof(m, leaves[:n])


def post(witness: WitnessProcess, payload: bytes | dict[str, Any], headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, Any]]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    conn = http.client.HTTPConnection("127.0.0.1", witness.port, timeout=10)
    try:
        conn.request("POST", "/v1/heads", data, {"Content-Type": "application/json",
                                                 **({"Content-Length": str(len(data))} if headers is None else headers)})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()



def heads_file(witness: WitnessProcess) -> list[str]:
    return (witness.dir / "heads.jsonl").read_text().splitlines()


# --- the operator's view ---------------------------------------------------------------------------------


def test_init_makes_a_private_key_and_prints_the_public_one(tmp_path: Path, keys: KeyStore) -> None:
    w = WitnessProcess(tmp_path / "w", keys.signing_dir / f"{keys.signer().key_id}.pub")
    key_file = tmp_path / "w" / "witness.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert public_from_hex(w.public_key)  # hex, the format of keys.public_hex
    again = subprocess.run([*CLI, "witness", "init", "--dir", str(tmp_path / "w")], capture_output=True, text=True)
    assert again.returncode != 0 and "already set up" in again.stderr and "Traceback" not in again.stderr
    no_key = subprocess.run([*CLI, "witness", "serve", "--dir", str(tmp_path / "none"), "--listen", "127.0.0.1:0",
                             "--bridge-key", str(keys.signing_dir / f"{keys.signer().key_id}.pub")],
                            capture_output=True, text=True, timeout=60)
    assert no_key.returncode != 0 and "witness init" in no_key.stderr and "Traceback" not in no_key.stderr
    bad = tmp_path / "bad.pub"
    bad.write_text("not hex\n")
    bad_key = subprocess.run([*CLI, "witness", "serve", "--dir", str(tmp_path / "w"), "--listen", "127.0.0.1:0",
                              "--bridge-key", str(bad)], capture_output=True, text=True, timeout=60)
    assert bad_key.returncode != 0 and "bad.pub" in bad_key.stderr and "Traceback" not in bad_key.stderr


def test_countersigns_heads_that_extend_the_held_one(witness: WitnessProcess, keys: KeyStore) -> None:
    client = WitnessClient(witness.url)
    witness_keys = {key_id_of(public_from_hex(witness.public_key)): public_from_hex(witness.public_key)}
    first = head(keys, 5)
    assert client.publish(first, 0, []).valid_for(first, witness_keys)
    second = head(keys, 1000)
    cosignature = client.publish(second, 5, proof(5, 1000))
    assert cosignature.valid_for(second, witness_keys)
    held = client.latest(CHAIN)
    assert held is not None and held.head == second and held.cosignature == cosignature
    assert client.latest("bridge-2") is None
    info = client.heads()
    assert info["public_key"] == witness.public_key and set(info["heads"]) == {CHAIN}
    other = head(keys, 3, chain="bridge-1.cli")
    client.publish(other, 0, [])
    assert set(client.heads()["heads"]) == {CHAIN, "bridge-1.cli"}
    assert len(heads_file(witness)) == 3


def test_the_same_head_later_gets_a_fresh_countersignature(tmp_path: Path, keys: KeyStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle chain's unchanged head, sent again after RECOSIGN_AFTER_US, is countersigned afresh and stored:
    proof, dated after a month's end, that the chain had not grown (the export needs it)."""
    subprocess.run([*CLI, "witness", "init", "--dir", str(tmp_path / "w")], check=True, capture_output=True)
    w = Witness(tmp_path / "w", keys.trusted_public_keys())
    h = head(keys, 5)
    first = w.publish(json.dumps(body(h)).encode())
    assert w.publish(json.dumps(body(h, 5)).encode()) == first  # soon after: the same countersignature
    monkeypatch.setattr(witness_module, "RECOSIGN_AFTER_US", 0)
    later = w.publish(json.dumps(body(h, 5)).encode())
    assert later.head == h and later.cosignature.cosigned_us > first.cosignature.cosigned_us
    assert len((tmp_path / "w" / HEADS_FILE).read_text().splitlines()) == 2


def test_a_second_witness_on_the_same_folder_is_refused(witness: WitnessProcess, keys: KeyStore) -> None:
    """Two processes on one heads file would each hold their own state and could countersign forks."""
    second = subprocess.run([*CLI, "witness", "serve", "--dir", str(witness.dir), "--listen", "127.0.0.1:0",
                             *[a for k in witness.bridge_keys for a in ("--bridge-key", str(k))]],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0 and "in use by another witness process" in second.stderr, second.stderr


# --- hostile requests ------------------------------------------------------------------------------------


def _with(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(d))
    target = out
    *parents, last = path.split(".")
    for p in parents:
        target = target[p]
    target[last] = value
    return out


def test_refuses_malformed_requests_with_a_reason(witness: WitnessProcess, keys: KeyStore) -> None:
    WitnessClient(witness.url).publish(head(keys, 10), 0, [])
    good = body(head(keys, 20), 10, proof(10, 20))
    cases: list[tuple[bytes | dict[str, Any], str]] = [
        (b"{not json", "not JSON"),
        (b"[" * 50_000, "not JSON"),
        (b'"a string"', "exactly head, from_size and proof"),
        ({**good, "extra": 1}, "exactly head, from_size and proof"),
        (_with(good, "head.size", "20"), "head.size is a JSON integer"),
        (_with(good, "head.size", True), "head.size is a JSON integer"),
        (_with(good, "head.size", 20.0), "head.size is a JSON integer"),
        (_with(good, "head.size", -1), "non-negative"),
        (_with(good, "head.size", 2**70), "below 2**63"),
        (_with(good, "head.chain_id", 7), "head.chain_id is a JSON string"),
        (_with(good, "head.chain_id", "../../etc"), "head.chain_id is 1 to 64"),
        (_with(good, "head.chain_id", "x" * 65), "head.chain_id is 1 to 64"),
        (_with(good, "head.root", "zz" * 32), "64 hex digits"),
        (_with(good, "head.signature", "ab"), "128"),
        (_with(good, "from_size", "10"), "from_size is a non-negative integer"),
        (_with(good, "from_size", -1), "from_size is a non-negative integer"),
        (_with(good, "proof", "abc"), "proof is a list"),
        (_with(good, "proof", ["00" * 32] * 65), "at most 64"),
        (_with(good, "proof", ["AB" * 32]), "64 lowercase hex"),
        (_with(good, "proof", [12]), "64 lowercase hex"),
        (_with(good, "proof", ["0" * 63]), "64 lowercase hex"),
    ]
    for payload, reason in cases:
        status, answer = post(witness, payload)
        assert (status, answer["error"]) == (400, "bad_request"), (payload, answer)
        assert reason in answer["reason"], (reason, answer)
    status, answer = post(witness, b"x" * (MAX_BODY + 1))
    assert status == 413 and answer["error"] == "too_large"
    status, answer = post(witness, json.dumps(good).encode(), headers={"Transfer-Encoding": "chunked"})
    assert status == 411
    held = WitnessClient(witness.url).latest(CHAIN)
    assert held is not None and held.head.size == 10 and len(heads_file(witness)) == 1
    assert post(witness, good)[0] == 200  # and the witness still works


def test_refuses_forged_and_foreign_signatures(witness: WitnessProcess, keys: KeyStore, tmp_path: Path) -> None:
    h = head(keys, 10)
    forged = _with(body(h), "head.root", merkle.root(LEAVES[1:11]).hex())
    status, answer = post(witness, forged)
    assert (status, answer["error"]) == (403, "bad_signature")
    stranger = KeyStore(tmp_path / "stranger")
    stranger.ensure()
    status, answer = post(witness, body(head(stranger, 10)))
    assert (status, answer["error"]) == (403, "untrusted") and stranger.signer().key_id in answer["reason"]
    assert WitnessClient(witness.url).latest(CHAIN) is None
    assert not (witness.dir / "heads.jsonl").read_text()


def test_refuses_rollbacks_forks_and_proofs_from_another_size(witness: WitnessProcess, keys: KeyStore) -> None:
    client = WitnessClient(witness.url)
    client.publish(head(keys, 100), 0, [])
    latest = head(keys, 500)
    accepted = client.publish(latest, 100, proof(100, 500))
    rewritten = [*LEAVES[:300], b"\xff" * 32, *LEAVES[301:]]

    with pytest.raises(Fork) as rollback:  # the database restored from an older backup
        client.publish(head(keys, 100), 0, [])
    assert rollback.value.held is not None and rollback.value.held.head == latest
    with pytest.raises(Fork):  # the same size, another root: entry 301 rewritten
        client.publish(head(keys, 500, rewritten), 500, [])
    with pytest.raises(Fork):  # a longer log whose first 500 entries are not the held ones
        client.publish(head(keys, 800, rewritten), 500, proof(500, 800, rewritten))
    with pytest.raises(Fork):  # a proof that does not prove it
        client.publish(head(keys, 800), 500, proof(500, 800)[:-1] + [b"\x00" * 32])
    with pytest.raises(Behind) as behind:
        client.publish(head(keys, 800), 100, proof(100, 800))
    assert behind.value.held is not None and behind.value.held.head == latest

    # A replay of the last accepted request is answered with the cosignature held; an older one is a rollback.
    status, answer = post(witness, body(latest, 100, proof(100, 500)))
    assert status == 200 and answer["cosignature"] == accepted.to_dict()
    status, answer = post(witness, body(head(keys, 100)))
    assert (status, answer["error"]) == (409, "fork")
    assert len(heads_file(witness)) == 2
    assert client.publish(head(keys, 800), 500, proof(500, 800))  # the true log goes on


def test_sigkill_mid_run_keeps_the_latest_head(witness: WitnessProcess, keys: KeyStore) -> None:
    """Heads go in from a thread until the witness is killed; after a restart it holds at least the last head
    it answered for, refuses to go back to an older one, ignores the torn line a crash can leave, and goes on."""
    client = WitnessClient(witness.url, timeout=5)
    acknowledged: list[TreeHead] = []
    stop = threading.Event()

    def publish_forever() -> None:
        size = 0
        while not stop.is_set() and size < len(LEAVES) - 1:
            new = size + 1
            try:
                client.publish(h := head(keys, new), size, proof(size, new) if size else [])
            except WitnessError:
                return
            acknowledged.append(h)
            size = new

    thread = threading.Thread(target=publish_forever)
    thread.start()
    wait_until(lambda: len(acknowledged) >= 20, what="heads countersigned")
    witness.kill()
    stop.set()
    thread.join(10)
    last = acknowledged[-1]
    torn = b'{"head":{"chain_id":"bridge-1","size":99'
    with (witness.dir / "heads.jsonl").open("ab") as f:
        f.write(torn)
    before = (witness.dir / "heads.jsonl").read_bytes()

    witness.start()
    assert "torn last line" in witness.output()
    held = client.latest(CHAIN)
    assert held is not None and held.head.size >= last.size
    with pytest.raises(Fork):
        client.publish(acknowledged[len(acknowledged) // 2], 0, [])
    size = held.head.size
    client.publish(head(keys, size + 5), size, proof(size, size + 5))
    assert (witness.dir / "heads.jsonl").read_bytes().startswith(before)  # never rewritten

    witness.close()
    witness.start()  # the torn line, now ended, is only a warning
    held = client.latest(CHAIN)
    assert held is not None and held.head.size == size + 5


def test_concurrent_publishers_never_split_a_chain(witness: WitnessProcess, keys: KeyStore) -> None:
    """Two bridges racing (a split brain) with conflicting logs: whatever the order, the witness holds one
    consistent history, and every countersigned head of the loser is a prefix of the winner's."""
    client = WitnessClient(witness.url)
    other = [*LEAVES[:50], *(bytes([7]) * 32 for _ in range(1000))]
    results: dict[str, list[int]] = {"a": [], "b": []}

    def run(name: str, leaves: list[bytes]) -> None:
        size = 0
        for new in range(50, 400, 25):
            try:
                client.publish(head(keys, new, leaves), size, proof(size, new, leaves) if size else [])
                results[name].append(new)
                size = new
            except Behind as behind:
                assert behind.held is not None
                size = behind.held.head.size if behind.held.head.size < new else size
            except Fork:
                return

    threads = [threading.Thread(target=run, args=("a", LEAVES)), threading.Thread(target=run, args=("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    held = client.latest(CHAIN)
    assert held is not None
    winner = LEAVES if held.head.root == merkle.root(LEAVES[:held.head.size]).hex() else other
    assert held.head.root == merkle.root(winner[:held.head.size]).hex()
    lines = [json.loads(line)["head"] for line in heads_file(witness)]
    sizes = [h["size"] for h in lines]
    assert sizes == sorted(sizes) and all(h["root"] == merkle.root(winner[:h["size"]]).hex() or h["size"] <= 50
                                          for h in lines)
    assert os.path.getsize(witness.dir / "heads.jsonl") > 0
