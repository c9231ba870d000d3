"""`audit verify-export`: prove a monthly export on its own, with no database.

The export (see ``badge_bridge.export.write``) is a contiguous piece of each hash chain: the rows in
events.csv and events.jsonl, the row before them (the anchor), the rows after them up to the next signed
checkpoint (the tail), the checkpoints and the public keys in proof.json, and manifest.json listing every
file's SHA-256, signed in manifest.sig. This module recomputes every row's hash and the linkage from the
anchor, checks each checkpoint's signature and that its head equals the hash of the row at its seq, and
checks the manifest against the files present and its signature. Every problem is one line naming the
file, the line and the chain and seq, so an auditor knows exactly what was edited, removed or added. The
file format is ``badge_bridge.export.format``; the chain is walked with ``badge_bridge.audit.chain``.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from badge_bridge.audit import merkle
from badge_bridge.audit.chain import AHEAD, CONTENT, GENESIS, LINK, OUT_OF_PLACE, ChainWalk, checkpoint_message
from badge_bridge.export.format import (
    CSV_NAME,
    FIELDS,
    FORMAT,
    MANIFEST_NAME,
    PROOF_NAME,
    ROW_FILES,
    SIGNATURE_NAME,
    manifest_message,
    sha256_file,
    us_from_iso,
)
from badge_bridge.export.tree_proof import ChainTree, TreeWalk, check_tree, root_problems
from badge_bridge.keys import verify_signature

MAX_PROBLEMS_PER_FILE = 200
"""A wholesale rewrite would otherwise print a million lines; the first ones say what happened."""
PARALLEL_BYTES = 64 << 20
"""Row files larger than this together are scanned one process each: a million-row month takes half the
time on two cores, while a small export does not pay for starting a process."""


@dataclass(frozen=True)
class Row:
    chain_id: str
    seq: int
    event_id: str
    ts_us: int
    received_us: int
    source: str
    door: str
    kind: str
    subject: str
    detail: str
    prev_hash: str
    hash: str

    @staticmethod
    def parse(values: Mapping[str, Any]) -> Row:
        """From a CSV row or a JSON object; raises ValueError naming the bad field."""
        missing = [f for f in FIELDS if f not in values]
        if missing:
            raise ValueError(f"missing field {', '.join(missing)}")
        for name in FIELDS:
            if name != "seq" and not isinstance(values[name], str):
                raise ValueError(f"field {name} is not text")
        seq = values["seq"]
        if isinstance(seq, str):
            if not seq.isdigit():
                raise ValueError(f"seq {seq[:20]!r} is not a number")
            seq = int(seq)
        elif type(seq) is not int:
            raise ValueError("seq is not a number")
        return Row(values["chain_id"], seq, values["event_id"], us_from_iso(values["ts"]),
                   us_from_iso(values["received"]), values["source"], values["door"], values["kind"],
                   values["subject"], values["detail"], values["prev_hash"], values["hash"])

    def step(self, walk: ChainWalk) -> int:
        """Take this row as the next one of ``walk``: its breaks, or 0 and the walk moves past it."""
        return walk.step(self.seq, self.event_id, self.ts_us, self.received_us, self.source, self.door, self.kind,
                         self.subject, self.detail, self.prev_hash, self.hash)


@dataclass(frozen=True)
class ChainProof:
    """What proof.json says about one chain."""

    chain_id: str
    first_seq: int
    last_seq: int
    rows: int
    first_hash: str
    last_hash: str
    anchor: Row | None
    tail: list[Row]
    checkpoints: list[dict[str, Any]]
    tree: ChainTree

    @property
    def anchor_hash(self) -> str:
        """The row before the month's hash; or, where it was pruned, the last hash its pruned segment signs
        (whose signatures ``_check_proof`` checks)."""
        if self.anchor is not None:
            return self.anchor.hash
        pruned = [s["last_hash"] for s in self.tree.pruned if s.get("last_seq") == self.first_seq - 1]
        return str(pruned[0]) if pruned else GENESIS

    def tree_walk(self) -> TreeWalk | None:
        """The tree regrown from the exported frontier; None when the frontier does not fit (``_check_proof``
        reports it)."""
        frontier = merkle.stored_frontier(self.tree.frontier_size, self.tree.frontier)
        if frontier is None or frontier.size != self.first_seq - 1:
            return None
        return TreeWalk(frontier, self.tree.watched_sizes(), self.tree.watched_ranges(
            self.first_seq, self.tail[-1].seq if self.tail else self.last_seq))


@dataclass
class VerifyResult:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    """File -> rows read."""
    chains: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Chain -> (first, last) seq of the month."""

    @property
    def ok(self) -> bool:
        return not self.problems


class _ChainState(ChainWalk):
    """One chain walked through a row file, from the proof's anchor, with the seq ranges it skipped."""

    __slots__ = ("at_checkpoint", "gaps")

    def __init__(self, proof: ChainProof) -> None:
        super().__init__(proof.chain_id, proof.first_seq, proof.anchor_hash)
        self.gaps: list[list[int]] = []
        """[first, last, line] of seq ranges skipped so far: a row found later in one was moved, not lost."""
        self.at_checkpoint: dict[int, str] = {}


class _FileScan:
    """Checks the rows of one file against the proof, keeping only a few values per chain (flat memory)."""

    def __init__(self, name: str, chains: Mapping[str, ChainProof], result: VerifyResult, trees: bool) -> None:
        self.name = name
        self.chains = chains
        self.result = result
        self.count = 0
        self.reported = 0
        self.state = {c: _ChainState(p) for c, p in chains.items()}
        self.trees = {c: p.tree_walk() for c, p in chains.items()} if trees else {}
        """Each chain's Merkle tree regrown from its rows (in one row file: the other's rows chain to the
        same hashes)."""
        self.cp_seqs = {c: {cp["seq"] for cp in p.checkpoints if p.first_seq <= cp["seq"] <= p.last_seq}
                        for c, p in chains.items()}

    def problem(self, text: str) -> None:
        self.reported += 1
        if self.reported <= MAX_PROBLEMS_PER_FILE:
            self.result.problems.append(text)
        elif self.reported == MAX_PROBLEMS_PER_FILE + 1:
            self.result.problems.append(f"{self.name}: more problems not listed")

    def row(self, line: int, values: Mapping[str, Any] | None, error: str | None = None) -> None:
        self.count += 1
        where = f"{self.name} line {line}"
        if values is None:
            self.problem(f"{where}: unreadable ({error}) (modified)")
            return
        try:
            row = Row.parse(values)
        except ValueError as exc:
            self.problem(f"{where}: {exc} (modified)")
            return
        where += f" (chain {row.chain_id} seq {row.seq})"
        proof = self.chains.get(row.chain_id)
        if proof is None:
            self.problem(f"{where}: chain {row.chain_id} is not in the export's proof (added)")
            return
        st = self.state[row.chain_id]
        in_range = proof.first_seq <= row.seq <= proof.last_seq
        # A row outside the range is only checked against its own link: the chain's walk does not take it.
        breaks = row.step(st if in_range else ChainWalk(row.chain_id, row.seq, row.prev_hash))
        content_ok = not breaks & CONTENT
        if not content_ok:
            self.problem(f"{where}: hash does not match its content (modified)")
        if not in_range:
            self.problem(f"{where}: outside the exported range {proof.first_seq}..{proof.last_seq} (added)")
            return
        if not breaks & OUT_OF_PLACE:
            if content_ok and breaks & LINK:
                before = "the anchor" if row.seq == proof.first_seq else f"seq {row.seq - 1}"
                self.problem(f"{where}: does not link to {before} (prev_hash differs: a row was rewritten)")
        elif breaks & AHEAD:
            st.gaps.append([st.expected, row.seq - 1, line])
        elif not self._take_from_gap(st, row.seq):
            self.problem(f"{where}: a second row numbered {row.seq} (added)")
            return
        else:
            self.problem(f"{where}: out of order, it stands after seq {st.expected - 1} (reordered)")
            return
        if breaks:
            st.follow(row.seq, row.hash)  # take up the chain again from this row
        if row.seq in self.cp_seqs[row.chain_id]:
            st.at_checkpoint[row.seq] = row.hash
        if row.seq == proof.last_seq and row.hash != proof.last_hash:
            self.problem(f"{where}: the month's last row differs from the proof's (modified)")
        if (walk := self.trees.get(row.chain_id)) is not None:
            walk.leaf(row.seq, row.hash)

    @staticmethod
    def _take_from_gap(st: _ChainState, seq: int) -> bool:
        for i, (lo, hi, line) in enumerate(st.gaps):
            if lo <= seq <= hi:
                st.gaps[i:i + 1] = [g for g in ([lo, seq - 1, line], [seq + 1, hi, line]) if g[0] <= g[1]]
                return True
        return False

    def finish(self) -> None:
        self.result.rows[self.name] = self.count
        for chain_id, proof in self.chains.items():
            st = self.state[chain_id]
            gaps = st.gaps + ([[st.expected, proof.last_seq, 0]] if st.expected <= proof.last_seq else [])
            for lo, hi, _ in gaps:
                what = f"seq {lo}" if lo == hi else f"seq {lo}..{hi}"
                self.problem(f"{self.name}: chain {chain_id} rows missing between seq {lo - 1} and {hi + 1} "
                             f"({what} deleted)")
            for cp in proof.checkpoints:
                seq = cp["seq"]
                found = st.at_checkpoint.get(seq)
                if found is not None and found != cp["hash"]:
                    self.problem(f"{self.name}: chain {chain_id} seq {seq}: the row's hash differs from the signed "
                                 "checkpoint's head (rows up to it were rewritten)")
            if (walk := self.trees.get(chain_id)) is not None:
                for row in proof.tail:
                    walk.leaf(row.seq, row.hash)
                for problem in root_problems(chain_id, proof.tree, walk, proof.last_seq):
                    self.problem(f"{self.name}: {problem}")


def _json_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | None, str | None]]:
    with path.open(encoding="utf-8", newline="\n") as f:
        for line, text in enumerate(f, 1):
            try:
                value = json.loads(text)
            except ValueError as exc:
                yield line, None, f"not JSON: {exc}"
                continue
            yield (line, value, None) if isinstance(value, dict) else (line, None, "not a JSON object")


def _csv_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | None, str | None]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != list(FIELDS):
            yield 1, None, f"header is not {','.join(FIELDS)}"
            return
        for values in reader:
            line = reader.line_num
            if len(values) != len(FIELDS):
                yield line, None, f"{len(values)} fields instead of {len(FIELDS)}"
                continue
            yield line, dict(zip(FIELDS, values, strict=True)), None


def _row_from_proof(value: Any) -> Row | None:
    return None if value is None else Row.parse(value)


def load_proof(data: Mapping[str, Any]) -> tuple[dict[str, ChainProof], dict[str, str]]:
    if data.get("format") != FORMAT:
        raise ValueError(f"format {str(data.get('format'))[:40]!r}: this verifier reads {FORMAT}")
    chains = {}
    for c in data["chains"]:
        chains[c["chain_id"]] = ChainProof(
            c["chain_id"], c["first_seq"], c["last_seq"], c["rows"], c["first_hash"], c["last_hash"],
            _row_from_proof(c["anchor"]), [Row.parse(r) for r in c["tail"]], list(c["checkpoints"]),
            ChainTree.from_dict(c["tree"]))
    return chains, dict(data["keys"])


def _check_manifest(directory: Path, trusted: Mapping[str, Ed25519PublicKey], result: VerifyResult,
                    message: Callable[[bytes], bytes] = manifest_message) -> dict[str, Any] | None:
    """Files present versus listed, their SHA-256, and the manifest's signature (over ``message``: a tenant's
    review signs under a prefix of its own, export.tenant_review)."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        result.problems.append(f"{MANIFEST_NAME} is missing: nothing in this folder is vouched for")
        return None
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
        files: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        result.problems.append(f"{MANIFEST_NAME}: unreadable ({exc}) (modified)")
        return None
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    present -= {MANIFEST_NAME, SIGNATURE_NAME}
    for name in sorted(present - files.keys()):
        result.problems.append(f"extra file {name} not in manifest (added)")
    for name in sorted(files.keys() - present):
        result.problems.append(f"file {name} listed in the manifest is missing (deleted)")
    for name in sorted(files.keys() & present):
        if sha256_file(directory / name) != files[name].get("sha256"):
            result.problems.append(f"file {name}: sha256 mismatch (modified)")
    sig_path = directory / SIGNATURE_NAME
    key_id = manifest.get("signing_key")
    if not sig_path.is_file():
        result.problems.append(f"{SIGNATURE_NAME} is missing: the manifest is not signed")
        return manifest
    key = trusted.get(str(key_id))
    if key is None:
        result.problems.append(f"manifest signed by key {key_id}, which is not a trusted key")
    elif not verify_signature(key, sig_path.read_text().strip(), message(raw)):
        result.problems.append("manifest signature invalid (the manifest or its signature was changed)")
    return manifest


def check_proof(chains: Mapping[str, ChainProof], trusted: Mapping[str, Ed25519PublicKey],
                witnesses: Mapping[str, Ed25519PublicKey], start_us: int, end_us: int, result: VerifyResult) -> None:
    """Anchor, tail, checkpoint and tree head signatures, cosignatures, segments, the consistency proof:
    what does not depend on the row files. The exporter runs it too, before it signs."""
    for chain_id, p in sorted(chains.items()):
        where = f"{PROOF_NAME} chain {chain_id}"
        result.chains[chain_id] = (p.first_seq, p.last_seq)
        if p.rows != p.last_seq - p.first_seq + 1:
            result.problems.append(f"{where}: {p.rows} rows claimed for seq {p.first_seq}..{p.last_seq} (modified)")
        known: dict[int, str] = {}
        if p.anchor is None:
            if p.first_seq != 1 and p.tree.pruned_anchor(p.first_seq, trusted) is None:
                result.problems.append(f"{where}: no anchor row before seq {p.first_seq} (deleted)")
        else:
            if p.anchor.chain_id != chain_id or p.anchor.step(ChainWalk(chain_id, p.first_seq - 1, p.anchor.prev_hash)):
                result.problems.append(f"{where} anchor seq {p.anchor.seq}: hash does not match its content (modified)")
            if p.anchor.received_us >= start_us:
                result.problems.append(f"{where}: the row before the export (seq {p.anchor.seq}) was received in the "
                                       "month: rows of the month are missing at its start")
            known[p.anchor.seq] = p.anchor.hash
        walk = ChainWalk(chain_id, p.last_seq + 1, p.last_hash)
        for row in p.tail:
            if row.chain_id != chain_id or row.step(walk):
                result.problems.append(f"{where} tail seq {row.seq}: does not follow seq {walk.expected - 1} (modified)")
                walk.follow(row.seq, row.hash)
            known[row.seq] = row.hash
        for row in p.tail:
            if row.received_us < end_us:
                result.problems.append(f"{where} tail seq {row.seq}: received in the month, yet not exported with it "
                                       "(the month's rows were cut short)")
        frontier = merkle.stored_frontier(p.tree.frontier_size, p.tree.frontier)
        if frontier is None or p.tree.frontier_size != p.first_seq - 1:
            result.problems.append(f"{where}: no usable frontier of the tree before seq {p.first_seq}: the heads' "
                                   "roots cannot be recomputed")
        problems, notes = check_tree(chain_id, p.first_seq, p.last_seq, p.tree, trusted, witnesses, end_us)
        result.problems += [f"{PROOF_NAME} {x}" for x in problems]
        result.notes += notes
        signed_up_to = 0
        for cp in p.checkpoints:
            cps = f"{where} checkpoint seq {cp['seq']}"
            key = trusted.get(cp["key_id"])
            if key is None:
                result.problems.append(f"{cps}: signed by key {cp['key_id']}, which is not a trusted key")
                continue
            message = checkpoint_message(chain_id, cp["seq"], cp["hash"], cp["signed_us"])
            if not verify_signature(key, cp["signature"], message):
                result.problems.append(f"{cps}: signature invalid (the checkpoint was changed)")
                continue
            if cp["seq"] in known and known[cp["seq"]] != cp["hash"]:
                result.problems.append(f"{cps}: the signed head differs from the row's hash (rows were rewritten)")
            signed_up_to = max(signed_up_to, cp["seq"])
        if signed_up_to < p.last_seq:
            result.notes.append(f"chain {chain_id}: seq {max(signed_up_to + 1, p.first_seq)}..{p.last_seq} are not "
                                "covered by a signed checkpoint yet; only the export's signature vouches for them")


def verify_export(directory: Path, trusted: Mapping[str, Ed25519PublicKey] | None,
                  witnesses: Mapping[str, Ed25519PublicKey] | None = None, previous: Path | None = None) -> VerifyResult:
    """Verify the export in ``directory`` against the auditor's own public keys (``trusted``: the bridge's
    signing keys; ``witnesses``: witness keys, each head must carry a valid cosignature by every one).
    Keys shipped inside an export are never trusted: with no key, nothing is vouched for and that is the
    one problem. ``previous``: last month's export, to check the two months meet with no gap or overlap."""
    result = VerifyResult()
    if not trusted:
        result.problems.append("no trusted public key: pass --public-key with your own copy of the bridge's key "
                               "(the keys shipped in an export vouch for nothing: anyone can make an export with "
                               "their own)")
        return result
    from badge_bridge.export import tenant_review

    if tenant_review.is_review(directory):  # a customer's review: signed files, no chain proof of its own
        return tenant_review.verify_review(directory, dict(trusted))
    manifest = _check_manifest(directory, trusted, result)
    proof_path = directory / PROOF_NAME
    if manifest is None or not proof_path.is_file():
        if manifest is not None:
            result.problems.append(f"{PROOF_NAME} is missing: the rows cannot be proven")
        return result
    try:
        chains, _shipped = load_proof(json.loads(proof_path.read_bytes()))
        start_us, end_us = int(manifest["start_us"]), int(manifest["end_us"])
    except (ValueError, KeyError, TypeError) as exc:
        result.problems.append(f"{PROOF_NAME}: unreadable ({exc}) (modified)")
        return result
    check_proof(chains, trusted, witnesses or {}, start_us, end_us, result)
    files = [directory / name for name in ROW_FILES if (directory / name).is_file()]  # a missing one: see manifest
    trees = [i == 0 for i in range(len(files))]
    if len(files) > 1 and sum(f.stat().st_size for f in files) > PARALLEL_BYTES:
        with ProcessPoolExecutor(len(files), mp_context=mp.get_context("spawn")) as pool:
            scans = list(pool.map(_scan_file, files, [chains] * len(files), trees))
    else:
        scans = [_scan_file(f, chains, t) for f, t in zip(files, trees, strict=True)]
    for scan in scans:
        result.problems += scan.problems
        result.rows.update(scan.rows)
    if previous is not None:
        _check_previous(previous, chains, trusted, start_us, end_us, result)
    return result


def _check_previous(previous: Path, chains: Mapping[str, ChainProof], trusted: Mapping[str, Ed25519PublicKey],
                    start_us: int, end_us: int, result: VerifyResult) -> None:
    """Last month's export (its manifest and signature checked, with the same keys) must end where this one
    starts: per chain, its last seq and hash meet this month's anchor, and its covering head is the head
    this month's consistency proof starts from."""
    before = VerifyResult()
    manifest = _check_manifest(previous, trusted, before)
    result.problems += [f"previous export {previous}: {p}" for p in before.problems]
    if manifest is None or before.problems:
        return
    try:
        earlier, _ = load_proof(json.loads((previous / PROOF_NAME).read_bytes()))
        if int(manifest["end_us"]) != start_us:
            result.problems.append(f"previous export {previous} is of {manifest.get('month')}, which does not end "
                                   "where this month starts")
            return
    except (OSError, ValueError, KeyError, TypeError) as exc:
        result.problems.append(f"previous export {previous}: {PROOF_NAME} unreadable ({exc})")
        return
    for chain_id, p in sorted(chains.items()):
        e = earlier.get(chain_id)
        if e is None:
            if p.anchor is not None and p.anchor.received_us >= int(manifest["start_us"]):
                result.problems.append(f"chain {chain_id}: seq {p.anchor.seq}, received in the previous month, is in "
                                       "neither export (gap)")
            continue
        if e.last_seq + 1 < p.first_seq:
            result.problems.append(f"chain {chain_id}: seq {e.last_seq + 1}..{p.first_seq - 1} are in neither export "
                                   "(gap between the months)")
        elif e.last_seq + 1 > p.first_seq:
            result.problems.append(f"chain {chain_id}: seq {p.first_seq}..{e.last_seq} are in both exports (overlap "
                                   "between the months)")
        elif e.last_hash != p.anchor_hash:
            result.problems.append(f"chain {chain_id}: the previous export's last entry (seq {e.last_seq}) is not the "
                                   "one this month follows (the chains do not meet)")
        prev_cover, this_prev = e.tree.covering, p.tree.previous
        if prev_cover is not None and (this_prev is None or this_prev.head != prev_cover):
            result.problems.append(f"chain {chain_id}: this month's consistency proof does not start from the previous "
                                   f"export's covering head (size {prev_cover.size})")
    for chain_id in sorted(earlier.keys() - chains.keys()):
        e = earlier[chain_id]
        if e.tail and e.tail[0].received_us < end_us:
            # The previous month saw this chain go on into this one: this month's entries are missing.
            result.problems.append(f"chain {chain_id}: the previous export shows entries after seq {e.last_seq}, "
                                   "but this export has none of the chain (deleted from the month)")
        else:
            result.notes.append(f"chain {chain_id}: in the previous export, no entry this month")


def _scan_file(path: Path, chains: Mapping[str, ChainProof], trees: bool = False) -> VerifyResult:
    """One row file checked against the proof; its problems and row count (a process of its own for big files)."""
    result = VerifyResult()
    scan = _FileScan(path.name, chains, result, trees)
    for line, values, error in (_csv_rows if path.name == CSV_NAME else _json_rows)(path):
        scan.row(line, values, error)
    scan.finish()
    return result
