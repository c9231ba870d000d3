"""One way for every view that changes the database: make the change and its audit entry on the console's
chain in one transaction (badge_bridge.audited), and turn a refused change into a message on the page
rather than an error page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import flash
from flask_login import current_user
from sqlalchemy.orm import Session

from badge_bridge.audited import AuditUnavailable, commit_change
from badge_bridge.events import Event
from badge_bridge.people import AdminError
from web import current_services
from web.services import AuditFailed

T = TypeVar("T")


def actor() -> str:
    return f"console:{current_user.username}"


def admin_change(change: Callable[..., tuple[T, Event]], *args: Any, done: str, **kwargs: Any) -> T | None:
    """``change(session, actor, *args, **kwargs)`` from badge_bridge.people; flashes ``done`` or the reason."""
    who = actor()
    try:
        result, _ = commit_change(current_services().audit.writer, who, lambda session: change(session, who, *args, **kwargs))
    except AdminError as exc:
        flash(str(exc), "error")
        return None
    except AuditUnavailable as exc:
        raise AuditFailed(str(exc)) from None
    flash(done, "info")
    return result


def read(query: Callable[[Session], T]) -> T:
    with current_services().session() as session:
        return query(session)


def form_errors(form: Any) -> None:
    """Each validation error as a message naming its field."""
    for field, errors in form.errors.items():
        label = getattr(getattr(form, field, None), "label", None)
        for error in errors:
            flash(f"{label.text if label else field}: {error}", "error")
