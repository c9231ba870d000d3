"""Console door commands as the console makes them, for tests: an operator with a session row as the console
keeps one, and commands signed with the site's console key (or whatever key an attacker has)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import console_signing, people
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore
from badge_bridge.models import ConsoleSession, ConsoleUser


def operator(engine: Engine, username: str = "sam", role: str = "supervisor", *, active: bool = True,
             ended: bool = False, expired: bool = False, now: datetime | None = None) -> str:
    """A console session of ``username`` (created with ``role`` if new); returns its reference, the SHA-256
    hex of its token, as the console names it in a command."""
    now = now or datetime.now(UTC)
    ref = hashlib.sha256(secrets.token_urlsafe(32).encode()).hexdigest()
    with Session(engine) as session, session.begin():
        user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == username))
        if user is None:
            user, _ = people.add_user(session, "test", username, role, "a long test password")
        user.active = active
        session.add(ConsoleSession(token_sha256=ref, user_id=user.id, created_at=now, last_seen_at=now,
                                   expires_at=now + timedelta(hours=-1 if expired else 8),
                                   ended_at=now if ended else None, ended_reason="logout" if ended else None))
    return ref


def command(keys: KeyStore, session: str | None, *, key: Ed25519PrivateKey | None = None,
            **fields: object) -> c.ConsoleCommand:
    """A signed command (an unlock of main-entrance by sam unless ``fields`` say otherwise)."""
    values: dict[str, object] = {"id": f"c-{uuid.uuid4().hex[:20]}", "ts": datetime.now(UTC), "type": "unlock",
                                 "user": "sam", "reason": "fibre delivery", "door": "main-entrance",
                                 "session": session, **fields}
    return console_signing.sign(c.ConsoleCommand(**values), key or keys.console_command_key())  # type: ignore[arg-type]
