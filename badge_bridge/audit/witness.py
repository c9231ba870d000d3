"""The witness (``badge-bridge witness serve``): countersigns a bridge's tree heads only when each extends the
last one it holds, and keeps what it countersigned in a file of its own, on another host under another
operator. A database administrator can then no longer cut, roll back or rewrite what a witness has seen:
the next head the bridge signs from that database is refused as a fork.

The protocol is in ``witness_api``. Storage: ``DIR/witness.key`` (Ed25519, 0600), ``DIR/witness.pub`` (hex)
and ``DIR/heads.jsonl``, one accepted head and its cosignature per line, fsync'd before the answer, never
rewritten; at start the latest line per chain is what the witness holds. The HTTP server is the standard
library's ThreadingHTTPServer: bench/bench_witness.py measured it ahead of Flask's server (docs/witness.md).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from badge_bridge.audit import merkle
from badge_bridge.audit.tree_head import TreeHead, cosign
from badge_bridge.audit.witness_api import HEADS_PATH, MAX_BODY, Held
from badge_bridge.keys import (
    KeyMaterialError,
    Signer,
    _write_private,
    key_id_of,
    public_hex,
    read_public_key,
)

log = logging.getLogger(__name__)

RECOSIGN_AFTER_US = 600_000_000
"""The same head sent again after this long is countersigned afresh (and stored): a cosignature dated after
a month's end proves the chain had not grown past this head by then, which an idle chain needs for its
monthly export (the publisher re-sends unchanged heads hourly)."""

MAX_PROOF = 64
"""An RFC 9162 consistency proof between trees of up to 2**63 leaves has at most 2 * 63 hashes; a chain of
the audit log stays far below 2**32 entries, whose proofs have at most 64."""
KEY_FILE, PUBLIC_FILE, HEADS_FILE = "witness.key", "witness.pub", "heads.jsonl"
CHAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}\Z")
"""Chain ids are bridge instance names (events.NAME_RE), so they can appear in a URL path and a log line."""
HEAD_TYPES = {"chain_id": str, "size": int, "root": str, "head_hash": str, "signed_us": int, "key_id": str,
              "signature": str}


class Refusal(Exception):
    """A request answered with an error: HTTP status, the protocol's error word and a reason for the operator."""

    def __init__(self, status: int, error: str, reason: str, held: Held | None = None) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason, self.held = status, error, reason, held

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "reason": self.reason}
        if self.status in (409, 412):
            out["held"] = self.held.to_dict() if self.held else None
        return out


# --- keys ----------------------------------------------------------------------------------------------


def init_dir(directory: Path) -> str:
    """Make the witness's key pair in ``directory``; returns its public key, hex (for the bridge's site file)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (directory / KEY_FILE).exists():
        raise KeyMaterialError(f"{directory / KEY_FILE} exists: this witness is already set up (its public key is "
                               f"in {directory / PUBLIC_FILE})")
    private = Ed25519PrivateKey.generate()
    _write_private(directory / KEY_FILE, private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public = public_hex(private.public_key())
    (directory / PUBLIC_FILE).write_text(public + "\n")
    return public


def load_signer(directory: Path) -> Signer:
    path = directory / KEY_FILE
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyMaterialError(f"{path} missing: run `badge-bridge witness init --dir {directory}` first") from None
    except ValueError as exc:
        raise KeyMaterialError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyMaterialError(f"{path} is not an Ed25519 key")
    return Signer(key_id_of(private.public_key()), private)


def load_bridge_keys(files: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """The bridges' public keys (``keys/signing/<key_id>.pub`` of the bridge host): heads signed by them only."""
    keys = {}
    for path in files:
        key = read_public_key(path, "bridge key")
        keys[key_id_of(key)] = key
    return keys


# --- storage -------------------------------------------------------------------------------------------


class HeadLog:
    """``heads.jsonl``: appended, fsync'd, never rewritten. A crash while writing leaves a torn last line; it
    is ignored with a warning (its head was never answered) and ended with a newline before the next append."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Held]:
        held: dict[str, Held] = {}
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return held
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                h = Held.from_dict(json.loads(line))
            except (ValueError, RecursionError) as exc:
                where = "torn last line (a crash while writing)" if number == len(lines) else f"line {number}"
                log.warning("%s: %s ignored: %s", self.path, where, exc)
                continue
            held[h.head.chain_id] = h
        return held

    def open(self) -> int:
        """The file for appending, locked: two witness processes on one folder would each keep their own
        state and could countersign forks of each other's heads."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise KeyMaterialError(f"{self.path} is in use by another witness process: one witness per folder") from None
        size = os.fstat(fd).st_size
        if size:
            with self.path.open("rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(fd, b"\n")  # end the torn line; it stays as it is
                    os.fsync(fd)
        return fd


# --- the witness -----------------------------------------------------------------------------------------


class Witness:
    """What the HTTP handler calls: ``publish`` checks and countersigns, ``held``/``all_held`` read."""

    def __init__(self, directory: Path, bridge_keys: dict[str, Ed25519PublicKey]) -> None:
        if not bridge_keys:
            raise KeyMaterialError("no trusted bridge key: pass --bridge-key FILE (the bridge's signing .pub)")
        self.signer = load_signer(directory)
        self.bridge_keys = bridge_keys
        self.store = HeadLog(directory / HEADS_FILE)
        self.heads = self.store.load()
        self._fd = self.store.open()
        self._lock = threading.Lock()

    def close(self) -> None:
        os.close(self._fd)

    def info(self) -> dict[str, Any]:
        with self._lock:
            heads = {chain: h.to_dict() for chain, h in self.heads.items()}
        return {"witness_key_id": self.signer.key_id, "public_key": public_hex(self.signer.public), "heads": heads}

    def held(self, chain_id: str) -> Held | None:
        with self._lock:
            return self.heads.get(chain_id)

    def publish(self, body: bytes) -> Held:
        """Accept and countersign the head in ``body``, or raise Refusal."""
        head, from_size, proof = parse_publish(body)
        if not head.signed_by(self.bridge_keys):
            if head.key_id not in self.bridge_keys:
                raise Refusal(403, "untrusted", f"key {head.key_id} is not a bridge key this witness trusts")
            raise Refusal(403, "bad_signature", f"the signature of head {head.chain_id}@{head.size} does not verify")
        with self._lock:
            held = self.heads.get(head.chain_id)
            if held is not None:
                old = held.head
                if head.size < old.size:
                    raise Refusal(409, "fork", f"size {head.size} is smaller than the held head's {old.size}", held)
                if head.size == old.size:
                    if head.root != old.root:
                        raise Refusal(409, "fork", f"size {head.size} is held with another root ({old.root})", held)
                    if (time.time_ns() // 1000 - held.cosignature.cosigned_us < RECOSIGN_AFTER_US
                            or head.signed_us < old.signed_us):
                        return held  # the same tree again soon (or an older signing of it): the held cosignature
            held_size = 0 if held is None else held.head.size
            if head.size > held_size and from_size != held_size:
                raise Refusal(412, "behind", f"the proof starts at size {from_size}; this witness holds "
                                             f"{held_size}", held)
            if held is not None and held_size and head.size > held_size and not merkle.verify_consistency(
                    held_size, head.size, bytes.fromhex(held.head.root), bytes.fromhex(head.root), proof):
                raise Refusal(409, "fork", f"the consistency proof from size {held_size} to {head.size} "
                                           "does not verify", held)
            accepted = Held(head, cosign(self.signer, head))
            os.write(self._fd, json.dumps(accepted.to_dict(), separators=(",", ":")).encode() + b"\n")
            os.fsync(self._fd)
            self.heads[head.chain_id] = accepted
            return accepted


def parse_publish(body: bytes) -> tuple[TreeHead, int, list[bytes]]:
    """The request body, every field of the expected JSON type; Refusal(400) naming what is wrong."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Refusal(400, "bad_request", f"the body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(request, dict) or set(request) != {"head", "from_size", "proof"}:
        raise Refusal(400, "bad_request", "the body is an object with exactly head, from_size and proof")
    raw, from_size, proof = request["head"], request["from_size"], request["proof"]
    if not isinstance(raw, dict) or set(raw) != set(HEAD_TYPES):
        raise Refusal(400, "bad_request", f"head is an object with exactly {', '.join(HEAD_TYPES)}")
    for name, kind in HEAD_TYPES.items():
        if type(raw[name]) is not kind:
            raise Refusal(400, "bad_request", f"head.{name} is a JSON {'string' if kind is str else 'integer'}")
    if not CHAIN_RE.match(raw["chain_id"]):
        raise Refusal(400, "bad_request", "head.chain_id is 1 to 64 letters, digits or _.:@- (a bridge instance)")
    if raw["size"] >= 1 << 63 or raw["signed_us"] >= 1 << 63:
        raise Refusal(400, "bad_request", "head.size and head.signed_us are below 2**63")
    try:
        head = TreeHead.from_dict(raw)
    except ValueError as exc:
        raise Refusal(400, "bad_request", f"head: {exc}") from None
    if type(from_size) is not int or not 0 <= from_size < 1 << 63:
        raise Refusal(400, "bad_request", "from_size is a non-negative integer (the size the witness holds)")
    if not isinstance(proof, list) or len(proof) > MAX_PROOF:
        raise Refusal(400, "bad_request", f"proof is a list of at most {MAX_PROOF} hashes")
    hashes = []
    for item in proof:
        if type(item) is not str or len(item) != 64 or item.strip("0123456789abcdef"):
            raise Refusal(400, "bad_request", "each proof hash is 64 lowercase hex digits")
        hashes.append(bytes.fromhex(item))
    return head, from_size, hashes


# --- HTTP --------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: WitnessServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # a client that stops sending mid-request is dropped
    server_version = "badge-bridge-witness"
    sys_version = ""

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, refusal: Refusal) -> None:
        if refusal.status >= 409 or refusal.status == 403:
            log.warning("refused %s from %s: %s", self.path[:100], self.client_address[0], refusal.reason)
        self._answer(refusal.status, refusal.body())

    def do_POST(self) -> None:
        if self.path != HEADS_PATH:
            self.close_connection = True
            return self._refuse(Refusal(404, "not_found", f"POST only to {HEADS_PATH}"))
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None or not (length.isascii() and length.isdigit()):
            self.close_connection = True
            return self._refuse(Refusal(411, "length_required", "send a Content-Length (no chunked bodies)"))
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body is left unread
            return self._refuse(Refusal(413, "too_large", f"the body is {length} bytes; at most {MAX_BODY}"))
        body = self.rfile.read(int(length))
        try:
            held = self.server.witness.publish(body)
        except Refusal as refusal:
            return self._refuse(refusal)
        self._answer(200, held.to_dict())

    def do_GET(self) -> None:
        witness = self.server.witness
        if self.path == HEADS_PATH:
            return self._answer(200, witness.info())
        if self.path.startswith(HEADS_PATH + "/"):
            held = witness.held(unquote(self.path[len(HEADS_PATH) + 1:]))
            if held is None:
                return self._refuse(Refusal(404, "not_found", "this witness holds no head of that chain"))
            return self._answer(200, held.to_dict())
        self._refuse(Refusal(404, "not_found", f"GET {HEADS_PATH} or {HEADS_PATH}/<chain>"))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


class WitnessServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness) -> None:
        self.witness = witness
        super().__init__(address, _Handler)


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT (PORT 0 picks a free one)")
    return host.strip("[]") or "0.0.0.0", int(port)
