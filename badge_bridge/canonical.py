"""The one byte form of a JSON message that a signature or a MAC covers: RFC 8785 (JSON Canonicalization
Scheme), so a controller's firmware can compute it with any JCS library and no knowledge of the schema.

Members sorted by key (UTF-16 code units, which for the contract's ASCII keys is plain byte order), no
whitespace, strings with only ``"``, ``\\`` and control characters escaped, numbers as ECMAScript prints
them (``5.0`` is ``5``, ``0.5`` is ``0.5``, ``1e-7`` is ``1e-7``), UTF-8.
"""

from __future__ import annotations

import json.encoder
import math
from decimal import Decimal

_string = json.encoder.encode_basestring
"""Escapes exactly what RFC 8785 escapes: ``"``, ``\\``, \\b \\f \\n \\r \\t and other controls as \\u00xx."""


class NotCanonical(ValueError):
    """A value JSON cannot carry (NaN, infinity, a non-string key, a type that is not JSON)."""


def canonical(value: object) -> bytes:
    """RFC 8785 bytes of a JSON value (as ``json.loads`` gives it, or a model's ``model_dump(mode="json")``)."""
    return _encode(value).encode("utf-8", "surrogatepass")


def _encode(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (int, float)):
        return _number(float(value) if isinstance(value, int) and abs(value) > 2**53 else value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotCanonical("object keys must be strings")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(f"{_string(k)}:{_encode(value[k])}" for k in keys) + "}"
    raise NotCanonical(f"{type(value).__name__} is not a JSON value")


def _number(value: int | float) -> str:
    """ECMAScript's Number.prototype.toString, which RFC 8785 prescribes."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise NotCanonical("NaN and infinity are not JSON")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    digits = repr(value)  # the shortest digits that read back as the same double, as ECMAScript picks
    exponent = Decimal(digits).adjusted()
    if -7 < exponent < 21:
        return format(Decimal(digits), "f")
    mantissa = digits.partition("e")[0]  # repr's exponent form has one digit before the point, as ECMAScript's
    return f"{mantissa}e{'+' if exponent > 0 else '-'}{abs(exponent)}"
