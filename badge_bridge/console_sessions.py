"""Console sessions kept on the server (table console_session), so that logout, a password change or
reset, disabling a user and changing a role end them at once, whatever copies of the cookie exist.

The browser holds a random token; the table holds only its SHA-256 (``token_sha256``), so reading the table
does not let anyone in. The bridge checks a signed console command against the same row (live: not ended,
not expired, user matches). Here, not in ``web``, so the CLI ends sessions the same way as the console.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from badge_bridge.models import ConsoleSession, ConsoleUser

TOUCH_EVERY = timedelta(seconds=30)
"""last_seen_at is written at most this often per session: no write per request."""
WALL_LINK_LIFETIME = timedelta(hours=24)
"""How long a wall display's one-time link may wait to be opened on the screen."""
WALL_LINK_AGENT = "(wall link, not yet opened)"
"""The user agent of a wall link's session: it stands for no screen yet."""
WALL_LIFETIME = timedelta(days=365)
"""A wall display's session: no idle end (nobody touches a wall); it ends when an administrator revokes it."""


def digest(token: str) -> str:
    """The stored form of a session token (hex SHA-256): what ``web.auth.current_session_ref`` returns."""
    return hashlib.sha256(token.encode()).hexdigest()


def start(session: Session, user_id: int, *, now: datetime, lifetime: timedelta, address: str,
          user_agent: str) -> str:
    """A new session for ``user_id``; returns the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    session.add(ConsoleSession(token_sha256=digest(token), user_id=user_id, created_at=now, last_seen_at=now,
                               expires_at=now + lifetime, address=address[:64], user_agent=user_agent[:256]))
    return token


@dataclass(frozen=True)
class Verdict:
    """A session checked for one request: it may go on when ``ended`` is None."""
    user: ConsoleUser | None
    ended: str | None = None
    """Why not: the reason it was ended with, or ``unknown``."""
    lapsed_now: bool = False
    """This check found it idle, expired or its user disabled, and ended it (worth an audit event)."""


def check(session: Session, token_sha256: str, user_id: int, *, now: datetime, idle: timedelta) -> Verdict:
    """Whether the session may serve a request now; a session found idle, past its absolute end or of a
    disabled user is ended here, so it stays refused even if the clock is set back."""
    row = session.get(ConsoleSession, token_sha256)
    if row is None or row.user_id != user_id:
        return Verdict(None, "unknown")
    user = session.get(ConsoleUser, user_id)
    if row.ended_at is not None:
        return Verdict(user, row.ended_reason or "ended")
    idles = user is None or user.role != "wall"  # a wall is watched, never touched
    lapsed = ("expired" if now >= row.expires_at else "idle" if idles and now - row.last_seen_at >= idle
              else "user_disabled" if user is None or not user.active else None)
    if lapsed is not None:
        row.ended_at, row.ended_reason = now, lapsed
        return Verdict(user, lapsed, lapsed_now=True)
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    return Verdict(user)


def exchange_wall_link(session: Session, token: str, *, now: datetime, address: str,
                       user_agent: str) -> tuple[ConsoleUser | None, str, str | None]:
    """A wall display's one-time link for the screen's own session: (wall, new token, None), or (wall or None,
    "", why not). The link's session ends as it is used ("exchanged"), so the link never works twice, and the
    token the cookie carries never appears in a URL."""
    row = session.get(ConsoleSession, digest(token), with_for_update=True)
    user = session.get(ConsoleUser, row.user_id) if row is not None else None
    if row is None or user is None or user.role != "wall":
        return None, "", "unknown"
    if row.ended_at is not None:
        return user, "", row.ended_reason or "ended"
    if now >= row.expires_at:
        row.ended_at, row.ended_reason = now, "expired"
        return user, "", "expired"
    if not user.active:
        return user, "", "user_disabled"
    row.ended_at, row.ended_reason = now, "exchanged"
    return user, start(session, user.id, now=now, lifetime=WALL_LIFETIME, address=address,
                       user_agent=user_agent), None


def end(session: Session, token_sha256: str, reason: str, now: datetime) -> int:
    """End one session (logout); returns 1 if it was open."""
    return _end(session, ConsoleSession.token_sha256 == token_sha256, reason, now)


def end_all(session: Session, user_id: int, reason: str, now: datetime) -> int:
    """End every open session of a user (password changed, user disabled, role changed, log out everywhere);
    returns how many were open."""
    return _end(session, ConsoleSession.user_id == user_id, reason, now)


def _end(session: Session, where: object, reason: str, now: datetime) -> int:
    result = session.execute(update(ConsoleSession).where(where, ConsoleSession.ended_at.is_(None))  # type: ignore[arg-type]
                             .values(ended_at=now, ended_reason=reason).execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]

