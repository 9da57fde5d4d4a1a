"""The incremental type-length-value reader shared by HTTP/3 frames and capsules."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.protocol.codec import encode_frame, encode_varint
from pywebtransport.protocol.errors import ProtocolViolation, Scope
from pywebtransport.protocol.tlv import Record, TLVReader

BUFFERED = 0x04  # SETTINGS-like: delivered whole
STREAMED = 0x00  # DATA-like: delivered in pieces
TOO_LARGE = 0x107


def is_buffered(rtype: int) -> bool:
    """Even types other than 0 are read whole; the rest are streamed."""
    return rtype % 2 == 0 and rtype != STREAMED


def make_reader(max_buffered: int = 1000, scope: Scope = Scope.CONNECTION) -> TLVReader:
    return TLVReader(
        is_buffered=is_buffered,
        max_buffered=max_buffered,
        too_large_code=TOO_LARGE,
        scope=scope,
    )


def feed_chunks(reader: TLVReader, chunks: list[bytes]) -> list[Record]:
    out: list[Record] = []
    for chunk in chunks:
        out += reader.feed(chunk)
    return out


def coalesce(pieces: list[Record]) -> list[tuple[int, bytes]]:
    """Join the pieces of each streamed record; check pieces never interleave."""
    records: list[tuple[int, bytes]] = []
    current: tuple[int, bytearray] | None = None
    for rtype, data, end in pieces:
        if current is None:
            current = (rtype, bytearray())
        assert current[0] == rtype, "pieces of two records interleaved"
        current[1].extend(data)
        if end:
            records.append((rtype, bytes(current[1])))
            current = None
    assert current is None, "a record was left unfinished"
    return records


def encode_records(records: list[tuple[int, bytes]]) -> bytes:
    return b"".join(encode_frame(t, p) for t, p in records)


SAMPLE = [
    (BUFFERED, b"settings!"),
    (STREAMED, b"some data bytes"),
    (0x21, b"grease"),  # odd: streamed
    (BUFFERED, b""),
    (STREAMED, b""),
    (0x2C7CF000, b"x" * 70),  # even, 4-byte type, 2-byte length: buffered
    (0x41, b"y" * 200),  # odd: streamed, 2-byte length
]


def test_whole_buffer() -> None:
    reader = make_reader()
    pieces = reader.feed(encode_records(SAMPLE))
    assert coalesce(pieces) == SAMPLE
    # Fed in one go, every record comes out in exactly one piece.
    assert [(t, d) for t, d, _ in pieces] == SAMPLE
    assert all(end for _, _, end in pieces)
    assert reader.at_boundary


def test_byte_by_byte() -> None:
    reader = make_reader()
    data = encode_records(SAMPLE)
    pieces = feed_chunks(reader, [data[i : i + 1] for i in range(len(data))])
    assert coalesce(pieces) == SAMPLE
    for rtype, payload, end in pieces:
        if is_buffered(rtype):
            assert end, "a buffered record is delivered whole"
        elif payload == b"":
            assert end, "only a zero-length record yields an empty piece"
        else:
            assert len(payload) == 1
    assert reader.at_boundary


def test_streamed_payload_is_handed_out_as_it_arrives() -> None:
    reader = make_reader()
    frame = encode_frame(STREAMED, b"0123456789")
    assert reader.feed(frame[:5]) == [(STREAMED, b"012", False)]
    assert not reader.at_boundary
    assert reader.feed(frame[5:9]) == [(STREAMED, b"3456", False)]
    assert reader.feed(frame[9:]) == [(STREAMED, b"789", True)]
    assert reader.at_boundary


def test_buffered_record_waits_until_complete() -> None:
    reader = make_reader()
    frame = encode_frame(BUFFERED, b"0123456789")
    assert reader.feed(frame[:-1]) == []
    assert not reader.at_boundary
    assert reader.feed(frame[-1:]) == [(BUFFERED, b"0123456789", True)]
    assert reader.at_boundary


@pytest.mark.parametrize("cut", [1, 2, 3, 5])
def test_trailing_partial_record(cut: int) -> None:
    reader = make_reader()
    first = encode_frame(STREAMED, b"abc")
    second = encode_frame(BUFFERED, b"0123456789")
    pieces = reader.feed(first + second[:cut])
    assert pieces == [(STREAMED, b"abc", True)]
    assert not reader.at_boundary
    assert reader.feed(second[cut:]) == [(BUFFERED, b"0123456789", True)]
    assert reader.at_boundary


def test_trailing_partial_header_of_streamed_record() -> None:
    reader = make_reader()
    payload = b"p" * 100  # two-byte length
    frame = encode_frame(0x21, payload)
    assert reader.feed(encode_frame(BUFFERED, b"s") + frame[:2]) == [(BUFFERED, b"s", True)]
    assert not reader.at_boundary
    assert coalesce(reader.feed(frame[2:])) == [(0x21, payload)]
    assert reader.at_boundary


@pytest.mark.parametrize("rtype", [BUFFERED, STREAMED, 0x21])
def test_zero_length_records(rtype: int) -> None:
    reader = make_reader()
    assert reader.feed(encode_frame(rtype, b"") * 3) == [(rtype, b"", True)] * 3
    assert reader.at_boundary


def test_at_boundary() -> None:
    reader = make_reader()
    seen = [reader.at_boundary]
    assert reader.feed(b"") == []
    seen.append(reader.at_boundary)
    reader.feed(encode_varint(STREAMED))  # type only
    seen.append(reader.at_boundary)
    reader.feed(encode_varint(2))  # length: header complete, payload pending
    seen.append(reader.at_boundary)
    reader.feed(b"a")
    seen.append(reader.at_boundary)
    assert reader.feed(b"b") == [(STREAMED, b"b", True)]
    seen.append(reader.at_boundary)
    reader.feed(encode_varint(BUFFERED) + encode_varint(3) + b"ab")  # buffered, incomplete
    seen.append(reader.at_boundary)
    assert reader.feed(b"c") == [(BUFFERED, b"abc", True)]
    seen.append(reader.at_boundary)
    assert seen == [True, True, False, False, False, True, False, True]


@pytest.mark.parametrize("scope", [Scope.CONNECTION, Scope.SESSION, Scope.STREAM])
def test_oversized_buffered_record_raises(scope: Scope) -> None:
    reader = make_reader(max_buffered=10, scope=scope)
    # The header alone is enough to refuse: nothing of the payload is held.
    header = encode_varint(BUFFERED) + encode_varint(11)
    with pytest.raises(ProtocolViolation) as info:
        reader.feed(header)
    assert info.value.code == TOO_LARGE
    assert info.value.scope is scope


def test_buffered_record_at_the_limit_is_accepted() -> None:
    reader = make_reader(max_buffered=10)
    assert reader.feed(encode_frame(BUFFERED, b"0123456789")) == [(BUFFERED, b"0123456789", True)]


def test_oversized_streamed_record_is_fine() -> None:
    reader = make_reader(max_buffered=10)
    payload = b"d" * 5000
    assert coalesce(reader.feed(encode_frame(STREAMED, payload))) == [(STREAMED, payload)]


record_types = st.one_of(
    st.sampled_from([BUFFERED, STREAMED, 0x01, 0x21, 0x41, 0x2843, 0x2C7CF000]),
    st.integers(min_value=0, max_value=2**62 - 1),
)
records_strategy = st.lists(
    st.tuples(record_types, st.binary(max_size=300)),
    max_size=12,
)


@given(records_strategy, st.data())
def test_any_split_gives_the_same_records(
    records: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    raw = encode_records(records)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=20)))
    bounds = [0, *cuts, len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    reader = make_reader(max_buffered=1000)
    pieces = feed_chunks(reader, chunks)
    assert coalesce(pieces) == records
    assert reader.at_boundary
    for rtype, payload, end in pieces:
        if is_buffered(rtype):
            assert end
        if not payload:
            assert end  # no empty pieces in the middle of a record


@given(records_strategy, st.integers(min_value=1, max_value=50))
def test_trailing_partial_record_is_held(records: list[tuple[int, bytes]], keep: int) -> None:
    tail = encode_frame(BUFFERED, b"t" * 60)
    cut = min(keep, len(tail) - 1)
    reader = make_reader()
    pieces = reader.feed(encode_records(records) + tail[:cut])
    assert coalesce(pieces) == records
    assert not reader.at_boundary
    assert reader.feed(tail[cut:]) == [(BUFFERED, b"t" * 60, True)]
    assert reader.at_boundary
