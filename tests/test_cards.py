"""Card numbers: canonical forms, and Wiegand frames whose parity catches any single flipped bit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from badge_bridge.cards import WIEGAND, CardFormatError, WiegandFormat, canonical, decode_wiegand, encode_wiegand


@pytest.mark.parametrize(
    "fmt, typed, expected",
    [
        ("wiegand26", "12:3456", "12:3456"),
        ("wiegand26", "012:0034", "12:34"),  # leading zeros are not part of the number
        ("wiegand26", "255:65535", "255:65535"),
        ("wiegand34", "65535:65535", "65535:65535"),
        ("wiegand37", "65535:524287", "65535:524287"),
        ("wiegand37", "0:0", "0:0"),
        ("ascii", "ABC-123", "ABC-123"),
        ("ascii", "x" * 64, "x" * 64),
    ],
)
def test_canonical(fmt: str, typed: str, expected: str) -> None:
    assert canonical(fmt, typed) == expected


@pytest.mark.parametrize(
    "fmt, typed, says",
    [
        ("wiegand26", "12-1001", "expected FACILITY:CARD in decimal"),
        ("wiegand26", "12:", "expected FACILITY:CARD in decimal"),
        ("wiegand26", "0x0c:1001", "expected FACILITY:CARD in decimal"),
        ("wiegand26", "-1:5", "expected FACILITY:CARD in decimal"),
        ("wiegand26", "256:1", "wiegand26: facility code 256 is over 255"),
        ("wiegand26", "1:65536", "wiegand26: card number 65536 is over 65535"),
        ("wiegand34", "65536:1", "wiegand34: facility code 65536 is over 65535"),
        ("wiegand37", "1:524288", "wiegand37: card number 524288 is over 524287"),
        ("ascii", "", "expected 1-64 printable characters"),
        ("ascii", "AB C", "expected 1-64 printable characters"),
        ("ascii", "x" * 65, "expected 1-64 printable characters"),
        ("ascii", "caf\u00e9", "expected 1-64 printable characters"),
        ("ascii", "ABC123\n", "expected 1-64 printable characters"),
        ("wiegand26", " 12:34 ", "expected FACILITY:CARD in decimal"),  # an operator's blanks: people strips them
        ("wiegand26", "\u0661\u0662:\u0661\u0660\u0660\u0661", "expected FACILITY:CARD in decimal"),
        ("wiegand26", "12:1001\n:", "expected FACILITY:CARD in decimal"),
        ("wiegand99", "1:1",
         "unknown card format 'wiegand99' (expected one of: wiegand26, wiegand34, wiegand37, ascii)"),
    ],
)
def test_canonical_refuses(fmt: str, typed: str, says: str) -> None:
    with pytest.raises(CardFormatError) as raised:
        canonical(fmt, typed)
    assert says in str(raised.value)


def cards(spec: WiegandFormat) -> st.SearchStrategy[tuple[str, int, int]]:
    return st.tuples(st.just(spec.name), st.integers(0, (1 << spec.facility_bits) - 1),
                     st.integers(0, (1 << spec.card_bits) - 1))


ANY_CARD = st.one_of(*(cards(spec) for spec in WIEGAND.values()))


def frame_bits(data: bytes) -> int:
    return len(data) * 8


def flip(data: bytes, bit: int) -> bytes:
    """Flip bit ``bit`` counted from the most significant bit of the first byte (the first bit on the wire)."""
    value = int.from_bytes(data, "big") ^ (1 << (frame_bits(data) - 1 - bit))
    return value.to_bytes(len(data), "big")


@given(ANY_CARD)
def test_encode_decode_round_trip(card: tuple[str, int, int]) -> None:
    fmt, facility, number = card
    data, bit_count = encode_wiegand(fmt, f"{facility}:{number}")
    assert bit_count == WIEGAND[fmt].bits and len(data) == -(-bit_count // 8)
    assert decode_wiegand(data, bit_count) == (fmt, f"{facility}:{number}")


@given(ANY_CARD)
def test_any_single_flipped_bit_is_refused(card: tuple[str, int, int]) -> None:
    """Every bit of each format is covered by a parity bit (both halves in wiegand37, whose halves share bit
    18, so flipping that one breaks both parities): one flipped bit anywhere in the frame is never a card.
    Every position is tried for each drawn card."""
    fmt, facility, number = card
    frame, bit_count = encode_wiegand(fmt, f"{facility}:{number}")
    for bit in range(bit_count):
        with pytest.raises(CardFormatError, match="parity check failed"):
            decode_wiegand(flip(frame, bit), bit_count)


@given(ANY_CARD)
def test_padding_bits_are_ignored(card: tuple[str, int, int]) -> None:
    """Bits after the frame in the last byte are not part of the read."""
    fmt, facility, number = card
    frame, bit_count = encode_wiegand(fmt, f"{facility}:{number}")
    for bit in range(bit_count, frame_bits(frame)):
        assert decode_wiegand(flip(frame, bit), bit_count) == (fmt, f"{facility}:{number}")


@pytest.mark.parametrize("spec", WIEGAND.values(), ids=WIEGAND.keys())
def test_parity_halves_cover_every_bit(spec: WiegandFormat) -> None:
    """The layout itself: the two parity ranges together cover the frame, overlapping only in wiegand37."""
    even, odd = set(range(0, spec.even_end)), set(range(spec.odd_start, spec.bits))
    assert even | odd == set(range(spec.bits))
    assert (even & odd) == ({18} if spec.name == "wiegand37" else set())
    assert 1 + spec.facility_bits + spec.card_bits + 1 == spec.bits


def test_known_frame() -> None:
    """H10301 facility 12, card 1001, worked out by hand: even parity over the first 12 data bits (two ones:
    0), odd parity over the last 12 (seven ones: 0), padded with zeros to 32 bits."""
    bits = "0" + "00001100" + "0000001111101001" + "0"
    data = int(bits + "000000", 2).to_bytes(4, "big")
    assert encode_wiegand("wiegand26", "12:1001") == (data, 26)
    assert decode_wiegand(data, 26) == ("wiegand26", "12:1001")


@pytest.mark.parametrize("bit_count", [0, 25, 27, 32, 35, 40])
def test_a_read_of_no_known_length_is_refused(bit_count: int) -> None:
    with pytest.raises(CardFormatError, match=f"{bit_count}-bit read: no Wiegand format of that length"):
        decode_wiegand(b"\x00" * 5, bit_count)


@pytest.mark.parametrize("spec", WIEGAND.values(), ids=WIEGAND.keys())
def test_a_read_shorter_than_its_bit_count_is_refused(spec: WiegandFormat) -> None:
    data, bit_count = encode_wiegand(spec.name, "1:1")
    with pytest.raises(CardFormatError, match=f"{bit_count}-bit read carries only"):
        decode_wiegand(data[:-1], bit_count)
