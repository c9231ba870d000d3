"""The monthly access audit export: `badge-bridge export --month 2026-10 --out DIR` and the console download.

What is exported, per chain: the contiguous seq range from the first to the last entry *received* (the
bridge's clock, ``received_us``) in the month, in the site's time zone. Selecting by device time instead
would leave holes wherever a device's clock or an offline replay puts an entry out of order, and a hole
breaks the proof; a contiguous piece of each chain can be checked without the database. Every kind is
exported (access, door, alarm, face, console, admin...): a filtered export could not be proven complete.
The PDF summarises the access-related ones.

Files: events.csv and events.jsonl (one row per entry, every hashed field), report.pdf, proof.json (per
chain: the anchor row before the month, the rows after it up to the covering tree head and the next signed
checkpoint, the checkpoints, and the ``tree``: signed heads, cosignatures, frontier, consistency proof,
segments, pruned days; see ``badge_bridge.export.tree_proof``) and manifest.json (the SHA-256 of every
file) signed in manifest.sig with the current signing key; their names and fields are
``badge_bridge.export.format``. ``badge_bridge.export.verify`` checks all of it, and the exporter runs the
same checks first: a log that does not verify over what is exported gets no manifest.sig. Rows are
streamed from a server-side cursor and written as they come, so memory stays flat at any month size.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import Connection
from tqdm import tqdm

from badge_bridge.audit.chain import GENESIS, ChainWalk, checkpoint_message
from badge_bridge.db import make_engine
from badge_bridge.events import to_us
from badge_bridge.export.format import (
    CSV_NAME,
    FIELDS,
    FORMAT,
    JSONL_NAME,
    MANIFEST_NAME,
    MONTH_RE,
    PDF_NAME,
    PROOF_NAME,
    SIGNATURE_NAME,
    ManifestFile,
    iso_us,
    manifest_message,
    sha256_file,
)
from badge_bridge.export.tree_build import chain_tree, tree_pass
from badge_bridge.export.tree_proof import ChainTree
from badge_bridge.export.verify import VerifyResult, check_proof, load_proof
from badge_bridge.keys import KeyStore, public_hex, verify_signature
from badge_bridge.models import Checkpoint, Site

_enc = json.encoder.encode_basestring  # the C encoder json.dumps itself uses
_COLUMNS = "chain_id, seq, event_id, ts_us, received_us, source, door, kind, subject, detail, prev_hash, hash"


class ExportError(ValueError):
    """The export cannot be made as asked (bad month, folder not empty, nothing to export)."""


@dataclass
class ChainExport:
    chain_id: str
    first_seq: int
    last_seq: int
    first_hash: str = ""
    last_hash: str = ""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    signed_up_to: int = 0
    tree: ChainTree | None = None
    end_seq: int = 0
    """The rows are read through here: the covering tree head's size, at least the month's last seq."""
    anchor_hash: str = GENESIS
    signed_heads: dict[int, str] = field(default_factory=dict)
    """The checkpoints' signed heads by seq over the month's rows: each must be the row's hash."""

    @property
    def rows(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass
class ExportSummary:
    """What the PDF's verification section and the caller report."""

    site: str
    month: str
    timezone: str
    start_us: int
    end_us: int
    generated_us: int
    generated_by: str
    chains: list[ChainExport]
    key_id: str
    public_key: str
    problems: list[str] = field(default_factory=list)
    """Found while streaming: a row whose hash or link is wrong, a checkpoint that does not verify, a
    tree head, cosignature, segment or root that does not match. Any problem: the manifest is not signed."""
    notes: list[str] = field(default_factory=list)
    """Said, not wrong: what was pruned under the retention policy, for instance."""
    files: dict[str, ManifestFile] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chains)

    @property
    def verified(self) -> bool:
        return not self.problems


def month_bounds(month: str, tz: ZoneInfo) -> tuple[int, int]:
    """[start, end) of the month in the site's time zone, as UTC microseconds."""
    match = MONTH_RE.match(month)
    if not match:
        raise ExportError(f"month {month!r}: expected YYYY-MM, like 2026-10")
    year, mon = int(match.group(1)), int(match.group(2))
    start = datetime(year, mon, 1, tzinfo=tz)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=tz)
    return to_us(start), to_us(end)


def _plan(conn: Connection, start_us: int, end_us: int) -> list[ChainExport]:
    rows = conn.execute(text("SELECT chain_id, min(seq), max(seq) FROM audit_entry WHERE received_us >= :s "
                             "AND received_us < :e GROUP BY chain_id ORDER BY chain_id"), dict(s=start_us, e=end_us))
    return [ChainExport(c, lo, hi) for c, lo, hi in rows]


def _row_dict(values: tuple[Any, ...]) -> dict[str, Any]:
    chain, seq, event_id, ts, received, source, door, kind, subject, detail, prev, hsh = values
    return dict(zip(FIELDS, (chain, seq, event_id, iso_us(ts), iso_us(received), source, door or "", kind,
                             subject, detail, prev, hsh), strict=True))


def _rows(conn: Connection, chain: str, lo: int, hi: int) -> Any:
    return conn.execution_options(stream_results=True, yield_per=10_000).execute(
        text(f"SELECT {_COLUMNS} FROM audit_entry WHERE chain_id = :c AND seq BETWEEN :lo AND :hi ORDER BY seq"),
        dict(c=chain, lo=lo, hi=hi))


def _proof(conn: Connection, chain: ChainExport, summary: ExportSummary, keys: KeyStore) -> dict[str, Any]:
    """The anchor row, the tail up to the first checkpoint at or after the month's last row, the checkpoints."""
    after = conn.scalar(select(Checkpoint.seq).where(Checkpoint.chain_id == chain.chain_id,
                                                     Checkpoint.seq >= chain.last_seq).order_by(Checkpoint.seq).limit(1))
    tail_end = max(after if after is not None else chain.last_seq, chain.end_seq)
    anchor = [_row_dict(r) for r in _rows(conn, chain.chain_id, chain.first_seq - 1, chain.first_seq - 1)]
    tail = [_row_dict(r) for r in _rows(conn, chain.chain_id, chain.last_seq + 1, tail_end)]
    trusted = keys.trusted_public_keys()
    for cp in conn.execute(select(Checkpoint.chain_id, Checkpoint.seq, Checkpoint.hash, Checkpoint.signed_us,
                                  Checkpoint.key_id, Checkpoint.signature)
                           .where(Checkpoint.chain_id == chain.chain_id, Checkpoint.seq.between(chain.first_seq - 1, tail_end))
                           .order_by(Checkpoint.seq)):
        key = trusted.get(cp.key_id)  # a bad one is reported by check_proof
        if key is not None and verify_signature(key, cp.signature,
                                                checkpoint_message(cp.chain_id, cp.seq, cp.hash, cp.signed_us)):
            chain.signed_up_to = max(chain.signed_up_to, cp.seq)
        chain.checkpoints.append({"seq": cp.seq, "hash": cp.hash, "signed_us": cp.signed_us, "key_id": cp.key_id,
                                  "signature": cp.signature})
    return {"chain_id": chain.chain_id, "first_seq": chain.first_seq, "last_seq": chain.last_seq,
            "rows": chain.rows, "first_hash": chain.first_hash, "last_hash": chain.last_hash,
            "anchor": anchor[0] if anchor else None, "tail": tail, "checkpoints": chain.checkpoints,
            "tree": chain.tree.to_dict() if chain.tree else None}


def _write_rows(conn: Connection, chains: list[ChainExport], out: Path, summary: ExportSummary,
                progress: bool) -> None:
    """Stream every chain's rows into the CSV, checking each hash and link on the way (the PDF states
    whether the chain verified), while another process writes the same rows as JSON Lines: the two files
    cost about the same, and a million-row month must take seconds, not a coffee break."""
    url = conn.engine.url.render_as_string(hide_password=False)
    spans = [(c.chain_id, c.first_seq, c.last_seq) for c in chains]
    spawn = mp.get_context("spawn")
    jsonl = spawn.Process(target=_write_jsonl, args=(url, spans, out / JSONL_NAME), name="export-jsonl")
    jsonl.start()
    # A third process regrows each chain's Merkle tree from the entries' hashes and checks every exported
    # head and segment against it (tree_build.tree_pass), so the CSV loop does not pay for it.
    jobs = [(c.chain_id, c.first_seq, c.last_seq, c.end_seq, c.tree.to_dict()) for c in chains if c.tree]
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        trees = pool.submit(tree_pass, url, jobs)
        try:
            _write_csv(conn, chains, out, summary, progress)
        finally:
            jsonl.join()
        results = trees.result()
    if jsonl.exitcode != 0:
        raise ExportError(f"writing {JSONL_NAME} failed (exit code {jsonl.exitcode}); see the log above")
    for chain, result in zip([c for c in chains if c.tree], results, strict=True):
        assert chain.tree is not None
        chain.tree = replace(chain.tree, frontier_size=chain.first_seq - 1, frontier=result.frontier,
                             consistency=tuple(result.consistency))
        summary.problems += result.problems


def _write_csv(conn: Connection, chains: list[ChainExport], out: Path, summary: ExportSummary,
               progress: bool) -> None:
    bar = tqdm(total=summary.rows, unit="row", unit_scale=True, disable=not progress, file=sys.stderr,
               desc=f"export {summary.month}")
    with (out / CSV_NAME).open("w", encoding="utf-8", newline="") as fcsv:
        write = fcsv.write
        write(",".join(FIELDS) + "\n")
        for chain in chains:
            walk, done = ChainWalk(chain.chain_id, chain.first_seq, chain.anchor_hash), 0
            step, signed = walk.step, chain.signed_heads
            for chain_id, seq, event_id, ts, received, source, door, kind, subject, detail, prev, hsh in _rows(
                    conn, chain.chain_id, chain.first_seq, chain.last_seq):
                door = door or ""
                if step(seq, event_id, ts, received, source, door, kind, subject, detail, prev, hsh):
                    if len(summary.problems) < 100:
                        summary.problems.append(f"chain {chain_id} seq {seq}: does not verify (run `badge-bridge "
                                                "audit verify` for the details)")
                    walk.follow(seq, hsh)
                if seq == chain.first_seq:
                    chain.first_hash = hsh
                if seq in signed and signed[seq] != hsh:
                    summary.problems.append(f"chain {chain_id} seq {seq}: differs from its signed checkpoint (entries "
                                            "up to it were rewritten)")
                write(f"{_csv(chain_id)},{seq},{_csv(event_id)},{iso_us(ts)},{iso_us(received)},{_csv(source)},"
                      f"{_csv(door)},{_csv(kind)},{_csv(subject)},{_csv(detail)},{prev},{hsh}\n")
                done += 1
                if done % 10_000 == 0:
                    bar.update(10_000)
            bar.update(done % 10_000)
            chain.last_hash = walk.last
            if walk.expected != chain.last_seq + 1:
                summary.problems.append(f"chain {chain.chain_id}: seq {walk.expected}..{chain.last_seq} missing in the "
                                        "database")
    bar.close()


def _csv(text: str) -> str:
    """One CSV field, quoted where csv.writer's QUOTE_MINIMAL quotes, and on a carriage return too (which
    csv.reader would otherwise take for the end of the line). By hand because csv.writer costs 4 µs a row,
    a third of a million-row export; numbers, times and hex hashes never need quoting."""
    if '"' in text or "," in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _write_jsonl(url: str, spans: list[tuple[str, int, int]], path: Path) -> None:
    """The JSON Lines file, in a process of its own (see _write_rows): the same rows, the same order."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn, path.open("w", encoding="utf-8", newline="\n") as fjson:
            for chain, lo, hi in spans:
                for chain_id, seq, event_id, ts, received, source, door, kind, subject, detail, prev, hsh in _rows(
                        conn, chain, lo, hi):
                    fjson.write(f'{{"chain_id":{_enc(chain_id)},"seq":{seq},"event_id":{_enc(event_id)},'
                                f'"ts":"{iso_us(ts)}","received":"{iso_us(received)}","source":{_enc(source)},'
                                f'"door":{_enc(door or "")},"kind":{_enc(kind)},"subject":{_enc(subject)},'
                                f'"detail":{_enc(detail)},"prev_hash":"{prev}","hash":"{hsh}"}}\n')
    finally:
        engine.dispose()


def export_month(engine: Engine, keys: KeyStore, month: str, out: Path, *, actor: str,
                 progress: bool = False, pdf: bool = True,
                 witnesses: Mapping[str, Ed25519PublicKey] | None = None) -> ExportSummary:
    """Write the month's export into ``out`` (created; must be empty). ``pdf`` False skips the report,
    for callers that only want the data (the bench times the two apart). ``witnesses``: the configured
    witnesses' keys, every exported head must carry a valid cosignature by each. The manifest is signed
    only if the log verifies over everything exported (``summary.problems`` empty)."""
    from badge_bridge.export.pdf import write_report

    signer = keys.signer()
    with engine.connect() as conn:
        site = conn.execute(select(Site.name, Site.timezone)).first()
        site_name, tz_name = (site[0], site[1]) if site else ("", "UTC")
        start_us, end_us = month_bounds(month, ZoneInfo(tz_name))
        chains = _plan(conn, start_us, end_us)
        if not chains:
            raise ExportError(f"no audit entries were received in {month} ({tz_name})")
        out.mkdir(parents=True, exist_ok=True)
        if any(out.iterdir()):
            raise ExportError(f"{out} is not empty; export into a new folder")
        summary = ExportSummary(site_name, month, tz_name, start_us, end_us, to_us(datetime.now(UTC)), actor,
                                chains, signer.key_id, public_hex(signer.public))
        for chain in chains:
            chain.tree, chain.end_seq = chain_tree(conn, chain.chain_id, chain.first_seq, chain.last_seq, start_us,
                                                   end_us)
            anchor = conn.scalar(text("SELECT hash FROM audit_entry WHERE chain_id = :c AND seq = :s"),
                                 dict(c=chain.chain_id, s=chain.first_seq - 1))
            chain.anchor_hash = anchor or chain.tree.pruned_anchor(chain.first_seq, keys.trusted_public_keys()) or GENESIS
            chain.signed_heads = dict(conn.execute(select(Checkpoint.seq, Checkpoint.hash).where(
                Checkpoint.chain_id == chain.chain_id, Checkpoint.seq.between(chain.first_seq, chain.last_seq))).all())
        _write_rows(conn, chains, out, summary, progress)
        proof = {"format": FORMAT, "chains": [_proof(conn, c, summary, keys) for c in chains],
                 "keys": {kid: public_hex(k) for kid, k in sorted(keys.trusted_public_keys().items())}}
        (out / PROOF_NAME).write_text(json.dumps(proof, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        checked = VerifyResult()
        check_proof(load_proof(proof)[0], keys.trusted_public_keys(), witnesses or {}, start_us, end_us, checked)
        summary.problems += checked.problems
        summary.notes += checked.notes
        if pdf:
            write_report(conn, summary, out / PDF_NAME)
    write_manifest(out, summary, keys)
    return summary


def write_manifest(out: Path, summary: ExportSummary, keys: KeyStore) -> None:
    """List every file with its SHA-256 and size, and sign the list."""
    signer = keys.signer()
    summary.files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                     for p in sorted(out.iterdir()) if p.is_file() and p.name not in (MANIFEST_NAME, SIGNATURE_NAME)}
    manifest = {"format": FORMAT, "site": summary.site, "month": summary.month, "timezone": summary.timezone,
                "start_us": summary.start_us, "end_us": summary.end_us, "generated_us": summary.generated_us,
                "generated_by": summary.generated_by, "rows": summary.rows,
                "chains": {c.chain_id: [c.first_seq, c.last_seq] for c in summary.chains},
                "signing_key": signer.key_id, "public_key": public_hex(signer.public), "files": summary.files}
    raw = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode()
    (out / MANIFEST_NAME).write_bytes(raw)
    if summary.verified:  # never vouch for a log that does not verify over what is exported
        (out / SIGNATURE_NAME).write_text(signer.sign(manifest_message(raw)) + "\n")


def progress_wanted(quiet: bool, stream: TextIO = sys.stderr) -> bool:
    return not quiet and stream.isatty()
