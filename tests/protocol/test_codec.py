"""Variable-length integers (RFC 9000 section 16) and the frame / capsule encoders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.protocol.codec import (
    NeedMoreData,
    decode_varint,
    encode_capsule,
    encode_frame,
    encode_varint,
    varint_size,
)
from pywebtransport.protocol.wire import MAX_VARINT

# (value, encoded length): the last value of each size class and the first of the next.
BOUNDARIES = [
    (0, 1),
    (63, 1),
    (64, 2),
    (16383, 2),
    (16384, 4),
    (2**30 - 1, 4),
    (2**30, 8),
    (2**62 - 1, 8),
]


@pytest.mark.parametrize(("value", "size"), BOUNDARIES)
def test_varint_round_trip_at_size_boundaries(value: int, size: int) -> None:
    raw = encode_varint(value)
    assert len(raw) == size
    assert varint_size(value) == size
    # The two top bits of the first byte carry log2 of the length.
    assert raw[0] >> 6 == {1: 0, 2: 1, 4: 2, 8: 3}[size]
    assert decode_varint(raw) == (value, size)


def test_varint_known_encodings() -> None:
    # The examples of RFC 9000 appendix A.1.
    assert encode_varint(151288809941952652) == bytes.fromhex("c2197c5eff14e88c")
    assert encode_varint(494878333) == bytes.fromhex("9d7f3e7d")
    assert encode_varint(15293) == bytes.fromhex("7bbd")
    assert encode_varint(37) == bytes.fromhex("25")
    assert decode_varint(bytes.fromhex("c2197c5eff14e88c")) == (151288809941952652, 8)
    assert decode_varint(bytes.fromhex("9d7f3e7d")) == (494878333, 4)
    assert decode_varint(bytes.fromhex("7bbd")) == (15293, 2)


def test_varint_decodes_non_minimal_encoding() -> None:
    # RFC 9000 A.1: "4025" is a valid (two-byte) encoding of 37.
    assert decode_varint(bytes.fromhex("4025")) == (37, 2)
    assert decode_varint(bytes.fromhex("8000002a")) == (42, 4)


@pytest.mark.parametrize("value", [-1, 2**62, 2**64])
def test_varint_out_of_range_raises(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)


@pytest.mark.parametrize("value", [v for v, _ in BOUNDARIES])
def test_varint_byte_by_byte(value: int) -> None:
    raw = encode_varint(value)
    for cut in range(len(raw)):
        with pytest.raises(NeedMoreData):
            decode_varint(raw[:cut])
    assert decode_varint(raw) == (value, len(raw))


@pytest.mark.parametrize("value", [v for v, _ in BOUNDARIES])
def test_varint_with_trailing_data_stops_at_its_end(value: int) -> None:
    raw = encode_varint(value)
    data = b"\xff\xee" + raw + b"\x01\x02trailing"
    assert decode_varint(data, 2) == (value, 2 + len(raw))
    # A decoder that walks a buffer of several integers finds each one in turn.
    seq = encode_varint(value) + encode_varint(7) + encode_varint(value)
    first, pos = decode_varint(seq)
    second, pos = decode_varint(seq, pos)
    third, pos = decode_varint(seq, pos)
    assert (first, second, third, pos) == (value, 7, value, len(seq))


def test_varint_decode_position_at_end_needs_more() -> None:
    raw = encode_varint(300)
    with pytest.raises(NeedMoreData):
        decode_varint(raw, len(raw))
    with pytest.raises(NeedMoreData):
        decode_varint(b"")


def test_varint_decodes_from_bytearray_and_memoryview() -> None:
    raw = b"\x00" + encode_varint(2**30 + 5)
    assert decode_varint(bytearray(raw), 1) == (2**30 + 5, 9)
    assert decode_varint(memoryview(raw), 1) == (2**30 + 5, 9)


@given(st.integers(min_value=0, max_value=MAX_VARINT), st.binary(max_size=16))
def test_varint_round_trip_any_value(value: int, trailing: bytes) -> None:
    raw = encode_varint(value)
    assert len(raw) == varint_size(value)
    assert decode_varint(raw + trailing) == (value, len(raw))


@given(st.lists(st.integers(min_value=0, max_value=MAX_VARINT), max_size=20))
def test_varint_sequence_round_trip(values: list[int]) -> None:
    data = b"".join(encode_varint(v) for v in values)
    out: list[int] = []
    pos = 0
    while pos < len(data):
        value, pos = decode_varint(data, pos)
        out.append(value)
    assert out == values


def test_encode_frame_layout() -> None:
    assert encode_frame(0x04, b"abc") == b"\x04\x03abc"
    assert encode_frame(0x00, b"") == b"\x00\x00"
    # Type 0x41 needs two bytes; a 64-byte payload needs a two-byte length.
    assert encode_frame(0x41, b"x" * 64) == b"\x40\x41\x40\x40" + b"x" * 64
    big_type = 0x2C7CF000
    assert encode_frame(big_type, b"") == encode_varint(big_type) + b"\x00"


def test_encode_capsule_layout() -> None:
    value = (7).to_bytes(4, "big") + b"bye"
    assert encode_capsule(0x2843, value) == b"\x68\x43\x07" + value
    assert encode_capsule(0x78AE, b"") == b"\x80\x00\x78\xae\x00"
    assert encode_capsule(0x00, b"z" * 300) == b"\x00\x41\x2c" + b"z" * 300
