"""Card numbers: the formats readers send and the one canonical form the database keys on.

Wiegand formats carry a facility code and a card number with parity bits; a read with wrong parity is line
noise or a cloned card, never a credential. The canonical number is ``"FC:CARD"`` (decimal) for Wiegand and
the text itself for ASCII readers, so the same card enrolled by hand and read at a door compares equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class CardFormatError(ValueError):
    """A card number or raw read that does not fit its format; says what was expected."""


@dataclass(frozen=True, slots=True)
class WiegandFormat:
    name: str
    bits: int
    facility_bits: int
    card_bits: int
    even_end: int
    """The leading even parity bit covers bits [0, even_end)."""
    odd_start: int
    """The trailing odd parity bit covers bits [odd_start, bits)."""


WIEGAND = {
    f.name: f
    for f in (
        WiegandFormat("wiegand26", 26, 8, 16, 13, 13),  # H10301
        WiegandFormat("wiegand34", 34, 16, 16, 17, 17),
        WiegandFormat("wiegand37", 37, 16, 19, 19, 18),  # H10304: the two halves share bit 18
    )
}
FORMATS = (*WIEGAND, "ascii")
ASCII_RE = re.compile(r"^[\x21-\x7e]{1,64}$")


def canonical(fmt: str, number: str) -> str:
    """Validate a number typed by an operator (``"12:3456"`` or ``"ABC123"``) and return its canonical form."""
    if fmt == "ascii":
        if not ASCII_RE.fullmatch(number):  # match() with $ lets a trailing newline through
            raise CardFormatError(f"ascii card number {number!r}: expected 1-64 printable characters, no spaces")
        return number
    spec = WIEGAND.get(fmt)
    if spec is None:
        raise CardFormatError(f"unknown card format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    match = re.fullmatch(r"([0-9]{1,10}):([0-9]{1,10})", number)  # ASCII: \d also takes "١٢"
    if not match:
        raise CardFormatError(f"{fmt} card number {number!r}: expected FACILITY:CARD in decimal, e.g. 12:3456")
    facility, card = int(match.group(1)), int(match.group(2))
    _check_ranges(spec, facility, card)
    return f"{facility}:{card}"


def _check_ranges(spec: WiegandFormat, facility: int, card: int) -> None:
    if facility >= 1 << spec.facility_bits:
        raise CardFormatError(f"{spec.name}: facility code {facility} is over {(1 << spec.facility_bits) - 1}")
    if card >= 1 << spec.card_bits:
        raise CardFormatError(f"{spec.name}: card number {card} is over {(1 << spec.card_bits) - 1}")


def _parity(bits: str) -> int:
    return bits.count("1") % 2


def decode_wiegand(data: bytes, bit_count: int) -> tuple[str, str]:
    """Decode a raw read (bits MSB first, as OSDP sends them) into (format, canonical number).

    Both parity bits are checked: the leading even parity over the first half, the trailing odd parity over
    the second half (the halves overlap by one bit in the 37-bit format).
    """
    spec = next((f for f in WIEGAND.values() if f.bits == bit_count), None)
    if spec is None:
        raise CardFormatError(f"{bit_count}-bit read: no Wiegand format of that length (expected 26, 34 or 37)")
    if len(data) * 8 < bit_count:
        raise CardFormatError(f"{bit_count}-bit read carries only {len(data) * 8} bits")
    bits = bin(int.from_bytes(data, "big"))[2:].zfill(len(data) * 8)[:bit_count]
    if _parity(bits[: spec.even_end]) != 0 or _parity(bits[spec.odd_start :]) != 1:
        raise CardFormatError(f"{spec.name} read {bits}: parity check failed (noise on the line or a bad card)")
    payload = bits[1:-1]
    facility = int(payload[: spec.facility_bits], 2)
    card = int(payload[spec.facility_bits :], 2)
    return spec.name, f"{facility}:{card}"


def encode_wiegand(fmt: str, number: str) -> tuple[bytes, int]:
    """The raw read a reader would send for a card (used by the simulated readers and tests)."""
    spec = WIEGAND[fmt]
    facility, card = (int(p) for p in canonical(fmt, number).split(":"))
    payload = format(facility, f"0{spec.facility_bits}b") + format(card, f"0{spec.card_bits}b")
    even = _parity(payload[: spec.even_end - 1])
    odd = 1 - _parity(payload[spec.odd_start - 1 :])
    bits = f"{even}{payload}{odd}"
    padded = bits + "0" * (-len(bits) % 8)
    return int(padded, 2).to_bytes(len(padded) // 8, "big"), spec.bits
