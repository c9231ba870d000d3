"""What the console accepts from a URL: database ids and digests in paths, bounded query parameters, no
control characters anywhere. Bad input is refused here, as a 404 (path) or a 400 with the reason (query,
form), before it can reach a view or the database: SQLite fails on integers beyond 64 bits, PostgreSQL
on an INTEGER beyond 32 bits and on NUL in text, each as a 500.

Patterns are matched whole (``fullmatch``): ``$`` also matches before a final newline. Digits are ASCII
``[0-9]``: ``\\d`` and ``str.isdigit`` take "１２" and "١٢", which ``int()`` then reads as 12.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import abort, request
from werkzeug.routing import BaseConverter, Map

from badge_bridge.events import to_us

ID_MAX = 2**31 - 1
"""The largest INTEGER key on both databases (PostgreSQL's integer is 32 bits; SQLite's are 64)."""
BIG_ID_MAX = 2**63 - 1
"""The largest BIGINT key (audit_entry.id)."""


def _decimal_up_to(limit: int) -> str:
    """A pattern for 1 .. ``limit`` in canonical decimal. The route's pattern itself refuses a larger id:
    refused later by the converter, werkzeug would answer 405 where another method shares the path."""
    digits = str(limit)
    shorter = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"]
    same_length_below = [f"{digits[:i]}[{low}-{int(d) - 1}][0-9]{{{len(digits) - i - 1}}}"
                         for i, d in enumerate(digits) for low in ("1" if i == 0 else "0",) if int(d) > int(low)]
    return f"(?:{'|'.join([*shorter, *same_length_below, digits])})"


ID_PATTERNS = {32: _decimal_up_to(ID_MAX), 64: _decimal_up_to(BIG_ID_MAX)}
_IDS = {bits: re.compile(pattern) for bits, pattern in ID_PATTERNS.items()}
_CURSOR = re.compile(r"(-?[0-9]{1,19}):([1-9][0-9]{0,18})")
QUERY_MAX = 200
"""The longest query parameter a view reads, unless it says otherwise."""
FORM_CONTROLS_ALLOWED = frozenset("\t\n\r")
"""Line breaks and tabs belong in a comment box; no other control character belongs in any field."""


def db_id(text: str, bits: int = 32) -> int:
    """A database key of an INTEGER (``bits`` 32) or BIGINT (64) column: 1 to its largest value in canonical
    decimal (no sign, no leading zero, ASCII digits only)."""
    if not _IDS[bits].fullmatch(text):
        raise ValueError(f"expected a record number from 1 to {2 ** (bits - 1) - 1}")
    return int(text)


def cursor(text: str) -> tuple[int, int]:
    """A page cursor ``<device time in µs>:<id>``, as the event log's "Older" link carries it."""
    match = _CURSOR.fullmatch(text)
    if not match or not -BIG_ID_MAX - 1 <= int(match.group(1)) <= BIG_ID_MAX or int(match.group(2)) > BIG_ID_MAX:
        raise ValueError("expected TIME:ID from the event log's Older link")
    return int(match.group(1)), int(match.group(2))


def instant(text: str) -> int:
    """A date and time in UTC (``2026-03-01T08:00``), as microseconds since the epoch."""
    try:
        return to_us(datetime.fromisoformat(text).replace(tzinfo=UTC))
    except ValueError:
        raise ValueError("expected a date and time like 2026-03-01T08:00") from None


def control_character(values: Iterable[str], allowed: frozenset[str] = frozenset()) -> bool:
    """Whether any of ``values`` holds a control character (Unicode Cc: C0, DEL, C1) not in ``allowed``."""
    return any(unicodedata.category(c) == "Cc" and c not in allowed for value in values for c in value)


def query_text(name: str, parse: Callable[[str], Any] | None = None) -> str:
    """The query parameter ``name`` as sent ('' when absent or empty), once ``parse`` accepts it (it raises
    ValueError with the reason); anything else is a 400 that names the parameter and says why."""
    value = request.args.get(name, "")
    if not value:
        return ""
    if len(value) > QUERY_MAX:  # control characters never get here: refuse_control_characters runs first
        abort(400, f"{name}: longer than {QUERY_MAX} characters.")
    if parse is not None:
        try:
            parse(value)
        except ValueError as exc:
            abort(400, f"{name}: {exc}.")
    return value


def refuse_control_characters() -> None:
    """Before any view: no control character in a query parameter, nor (but tab and line breaks) in a form
    field, names included. Views then never pass NUL to PostgreSQL, nor a line break where one is unseen."""
    if control_character(_texts(request.args.items(multi=True))):
        abort(400, "The address contains a control character.")
    if request.method == "POST" and control_character(_texts(request.form.items(multi=True)), FORM_CONTROLS_ALLOWED):
        abort(400, "The form contains a control character.")


def _texts(pairs: Iterable[tuple[str, str]]) -> Iterable[str]:
    for key, value in pairs:
        yield key
        yield value


class DbIdConverter(BaseConverter):
    """``<id:name>``: the key of an INTEGER column, ``<id(bits=64):name>`` of a BIGINT one, else 404.
    (Werkzeug's ``int`` takes "１２", "0012" and 10**23, which either database then fails on.)"""

    def __init__(self, map: Map, bits: int = 32) -> None:
        super().__init__(map)
        self.bits = bits
        self.regex = ID_PATTERNS[bits]

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: Any) -> str:
        return str(int(value))


class Sha256Converter(BaseConverter):
    """``<sha256:name>``: 64 lowercase hex digits, the name of a piece of evidence, else 404."""

    regex = r"[0-9a-f]{64}"


CONVERTERS: dict[str, type[BaseConverter]] = {"id": DbIdConverter, "sha256": Sha256Converter}


def same_site_path(target: str) -> str | None:
    """``target`` if it is a path on this site, else None: ``//host`` and ``/\\host`` are other hosts to a
    browser, and a control character (a tab) is dropped on the way, leaving ``//host``."""
    parts = urlsplit(target)
    local = (target.startswith("/") and not target.startswith("//") and "\\" not in target and target.isprintable()
             and not parts.scheme and not parts.netloc)
    return target if local else None
