"""The witness protocol, both ends' view of it: paths, bodies, answers, and the client the bridge and
``audit verify --witness`` use. The server is ``badge_bridge.audit.witness`` (``badge-bridge witness serve``).

    POST /v1/heads          {"head": TreeHead, "from_size": m, "proof": [hex, ...]}
        200 {"head": ..., "cosignature": Cosignature}       accepted (or the same head again) and countersigned
        409 {"error": "fork", "reason": ..., "held": Held}   the head contradicts what the witness holds
        412 {"error": "behind", "reason": ..., "held": Held} the proof starts from another size than the held one
        400 bad request, 403 untrusted or bad signature, 413 too large: {"error": ..., "reason": ...}
    GET  /v1/heads          {"witness_key_id": ..., "public_key": hex, "heads": {chain_id: Held}}
    GET  /v1/heads/<chain>  Held, or 404

``Held`` is ``{"head": TreeHead, "cosignature": Cosignature}``: the latest head the witness countersigned.
``proof`` is the RFC 9162 consistency proof from the held head's size (``from_size``) to the new one;
the first head of a chain needs none (``from_size`` 0).
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from badge_bridge.audit.tree_head import Cosignature, TreeHead

HEADS_PATH = "/v1/heads"
MAX_BODY = 64 * 1024
"""A head with a proof of up to 64 hashes is about 5 KB; anything much larger is refused unread."""


@dataclass(frozen=True)
class Held:
    head: TreeHead
    cosignature: Cosignature

    def to_dict(self) -> dict[str, Any]:
        return {"head": self.head.to_dict(), "cosignature": self.cosignature.to_dict()}

    @classmethod
    def from_dict(cls, d: Any) -> Held:
        if not isinstance(d, dict):
            raise ValueError("a held head is a JSON object")
        return cls(TreeHead.from_dict(d.get("head")), Cosignature.from_dict(d.get("cosignature")))


class WitnessError(Exception):
    """The witness could not be asked, or answered something this client does not understand."""


class WitnessUnreachable(WitnessError):
    """No answer (connection refused, timeout, a 5xx): try again later; the doors never wait for it."""


class WitnessRefused(WitnessError):
    """A 4xx other than a fork: the head or its proof is wrong (``status`` and ``reason`` say why)."""

    def __init__(self, status: int, reason: str, held: Held | None = None) -> None:
        super().__init__(f"witness refused the head ({status}): {reason}")
        self.status, self.reason, self.held = status, reason, held


class Fork(WitnessRefused):
    """The witness holds a head this one contradicts: the log was rewritten, rolled back or cut."""


class Behind(WitnessRefused):
    """The witness holds another size than the proof starts from: prove again from ``held``."""


class WitnessClient:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return reply.status, json.loads(reply.read(MAX_BODY * 64))
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise WitnessUnreachable(f"witness {self.url}: HTTP {exc.code}") from None
            try:
                return exc.code, json.loads(exc.read(MAX_BODY))
            except (ValueError, RecursionError):
                return exc.code, {"error": "http", "reason": f"HTTP {exc.code}"}
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # HTTPException: cut mid-answer
            raise WitnessUnreachable(f"witness {self.url}: {getattr(exc, 'reason', exc)}") from None
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested past Python's stack
            raise WitnessError(f"witness {self.url} answered something that is not JSON: {str(exc)[:200]}") from None

    def publish(self, head: TreeHead, from_size: int, proof: list[bytes]) -> Cosignature:
        status, answer = self._call("POST", HEADS_PATH, {"head": head.to_dict(), "from_size": from_size,
                                                         "proof": [p.hex() for p in proof]})
        try:
            if status == 200:
                return Cosignature.from_dict(answer.get("cosignature"))
            reason = str(answer.get("reason", ""))[:500]
            held = Held.from_dict(answer["held"]) if isinstance(answer, dict) and answer.get("held") else None
        except (AttributeError, ValueError) as exc:
            raise WitnessError(f"witness {self.url}: unreadable answer: {exc}") from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if status == 409 and error == "fork":
            raise Fork(status, reason, held)
        if status == 412 and error == "behind":
            raise Behind(status, reason, held)
        raise WitnessRefused(status, reason or str(error), held)

    def latest(self, chain_id: str) -> Held | None:
        status, answer = self._call("GET", f"{HEADS_PATH}/{quote(chain_id, safe='')}")
        if status == 404:
            return None
        if status != 200:
            raise WitnessError(f"witness {self.url}: HTTP {status} for the head of {chain_id}")
        try:
            return Held.from_dict(answer)
        except ValueError as exc:
            raise WitnessError(f"witness {self.url}: unreadable head of {chain_id}: {exc}") from None

    def heads(self) -> dict[str, Any]:
        status, answer = self._call("GET", HEADS_PATH)
        if status != 200:
            raise WitnessError(f"witness {self.url}: HTTP {status} for its heads")
        return answer


def load_heads(source: str, timeout: float = 10.0) -> tuple[str, dict[str, Held]]:
    """The heads a witness holds, from its URL or from a file holding its ``GET /v1/heads`` answer (an
    auditor's saved copy): (witness key id, {chain: Held}). ValueError/WitnessError if unreadable."""
    if source.startswith(("http://", "https://")):
        answer = WitnessClient(source, timeout).heads()
    else:
        answer = json.loads(Path(source).read_text(encoding="utf-8"))
    if not isinstance(answer, dict) or not isinstance(answer.get("heads"), dict):
        raise ValueError(f"{source}: not a witness's list of heads")
    return str(answer.get("witness_key_id", "")), {c: Held.from_dict(h) for c, h in answer["heads"].items()}
