"""Framing of the message protocol without I/O: frames, the hello and the accept."""

from __future__ import annotations

import itertools
import json
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.messaging import ErrorCode
from pywebtransport.messaging.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CHANNEL_NAME,
    MAX_HELLO_SIZE,
    PREAMBLE,
    Accept,
    FrameDecoder,
    FramingError,
    Hello,
    encode_accept,
    encode_frame,
    encode_hello,
    parse_accept,
    parse_hello,
)

SAMPLE = [b"first", b"", b"\x00\x01\x02", b"x" * 300, b"", b'{"json": true}']


def frames(payloads: list[bytes]) -> bytes:
    return b"".join(encode_frame(p) for p in payloads)


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


# ------------------------------------------------------------------------------ frames


def test_encode_frame_is_a_big_endian_length_then_the_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"y" * 0x010203)[:4] == b"\x00\x01\x02\x03"


def test_whole_input() -> None:
    decoder = FrameDecoder(1000)
    assert decoder.feed(frames(SAMPLE)) == SAMPLE
    assert decoder.pending == 0
    decoder.end()  # at a frame boundary: no error


def test_byte_by_byte() -> None:
    decoder = FrameDecoder(1000)
    data = frames(SAMPLE)
    seen: list[list[bytes]] = [decoder.feed(data[i : i + 1]) for i in range(len(data))]
    assert [p for batch in seen for p in batch] == SAMPLE
    # Every frame comes out on the feed of its own last byte, and alone.
    ends = list(itertools.accumulate(4 + len(p) for p in SAMPLE))
    assert [i + 1 for i, batch in enumerate(seen) if batch] == ends
    assert all(len(batch) <= 1 for batch in seen)
    assert decoder.pending == 0
    decoder.end()


def test_several_frames_in_one_feed_after_a_partial_one() -> None:
    decoder = FrameDecoder(1000)
    data = frames(SAMPLE)
    assert decoder.feed(data[:2]) == []
    assert decoder.pending == 2
    assert decoder.feed(data[2:]) == SAMPLE
    assert decoder.pending == 0


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 9])
def test_trailing_partial_frame_is_held(cut: int) -> None:
    decoder = FrameDecoder(1000)
    tail = encode_frame(b"012345")  # 10 bytes
    assert decoder.feed(frames([b"a", b"bc"]) + tail[:cut]) == [b"a", b"bc"]
    assert decoder.pending == cut
    assert decoder.feed(tail[cut:]) == [b"012345"]
    assert decoder.pending == 0


def test_zero_length_frames() -> None:
    decoder = FrameDecoder(0)  # a limit of 0 still allows empty messages
    assert decoder.feed(encode_frame(b"") * 5) == [b""] * 5
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.feed(b"\x00\x00") == [b""]
    assert decoder.pending == 0


def test_empty_feed() -> None:
    decoder = FrameDecoder(10)
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\x00\x00\x00\x02a") == []
    assert decoder.feed(b"") == []
    assert decoder.pending == 5
    assert decoder.feed(b"b") == [b"ab"]


def test_payloads_are_independent_bytes() -> None:
    decoder = FrameDecoder(100)
    decoder.feed(b"\x00\x00\x00\x03ab")
    (payload,) = decoder.feed(b"c" + b"\x00\x00\x00\x01")
    assert type(payload) is bytes and payload == b"abc"
    assert decoder.feed(b"z") == [b"z"]
    assert payload == b"abc"


def test_exactly_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(16)
    assert decoder.feed(encode_frame(b"L" * 16)) == [b"L" * 16]
    decoder = FrameDecoder(16)
    data = encode_frame(b"L" * 16)
    assert feed_all(decoder, [data[i : i + 1] for i in range(len(data))]) == [b"L" * 16]


@pytest.mark.parametrize("length", [17, 1000, DEFAULT_MAX_MESSAGE_SIZE, 0xFFFFFFFF])
def test_over_the_limit_is_refused_from_the_length_alone(length: int) -> None:
    decoder = FrameDecoder(16)
    header = struct.pack(">I", length)
    assert decoder.feed(header[:3]) == []
    with pytest.raises(FramingError) as caught:
        decoder.feed(header[3:])  # the fourth length byte: no payload byte has arrived
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert str(length) in str(caught.value)
    assert decoder.pending == 0  # nothing kept


def test_over_the_limit_after_good_frames_in_the_same_feed() -> None:
    decoder = FrameDecoder(4)
    with pytest.raises(FramingError) as caught:
        decoder.feed(encode_frame(b"ok") + struct.pack(">I", 5) + b"12345")
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert decoder.pending == 0


def test_over_the_limit_when_the_length_completes_a_held_prefix() -> None:
    decoder = FrameDecoder(1 << 20)
    assert decoder.feed(encode_frame(b"x") + b"\x00\x10") == [b"x"]
    assert decoder.pending == 2
    with pytest.raises(FramingError) as caught:
        decoder.feed(b"\x00\x01")  # 0x00100001 = 1 MiB + 1
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert decoder.pending == 0


def test_default_limit_boundary() -> None:
    decoder = FrameDecoder(DEFAULT_MAX_MESSAGE_SIZE)
    assert decoder.feed(struct.pack(">I", DEFAULT_MAX_MESSAGE_SIZE)) == []
    with pytest.raises(FramingError):
        FrameDecoder(DEFAULT_MAX_MESSAGE_SIZE).feed(struct.pack(">I", DEFAULT_MAX_MESSAGE_SIZE + 1))


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 7])
def test_truncated_at_the_end(cut: int) -> None:
    decoder = FrameDecoder(100)
    frame = encode_frame(b"1234")  # 8 bytes
    assert decoder.feed(encode_frame(b"whole") + frame[:cut]) == [b"whole"]
    with pytest.raises(FramingError) as caught:
        decoder.end()
    assert caught.value.code == ErrorCode.TRUNCATED
    assert str(cut) in str(caught.value)
    assert decoder.pending == 0
    decoder.end()  # reported once; the decoder is empty now


def test_end_at_a_boundary_is_fine() -> None:
    decoder = FrameDecoder(100)
    decoder.end()
    decoder.feed(frames([b"a", b""]))
    decoder.end()


payloads_strategy = st.lists(st.binary(max_size=200), max_size=15)


@given(payloads_strategy, st.data())
def test_any_split_decodes_to_the_same_payloads(payloads: list[bytes], data: st.DataObject) -> None:
    raw = frames(payloads)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=30)))
    chunks = [raw[a:b] for a, b in itertools.pairwise([0, *cuts, len(raw)])]
    decoder = FrameDecoder(200)
    assert feed_all(decoder, chunks) == payloads
    assert decoder.pending == 0
    decoder.end()


@given(payloads_strategy, st.binary(min_size=1, max_size=3))
def test_trailing_partial_length_is_held_then_truncated(payloads: list[bytes], tail: bytes) -> None:
    decoder = FrameDecoder(200)
    assert decoder.feed(frames(payloads) + tail) == payloads
    assert decoder.pending == len(tail)
    with pytest.raises(FramingError) as caught:
        decoder.end()
    assert caught.value.code == ErrorCode.TRUNCATED


# ------------------------------------------------------------------------------ hello


def hello_frame(payload: bytes) -> bytes:
    """The payload of the hello frame inside ``encode_hello``'s output."""
    assert payload[:4] == PREAMBLE
    decoder = FrameDecoder(MAX_HELLO_SIZE)
    (frame,) = decoder.feed(payload[4:])
    assert decoder.pending == 0
    return frame


def test_preamble() -> None:
    assert PREAMBLE == b"\x50\x57\x4d\x01"


def test_encode_hello_round_trip() -> None:
    hello = Hello("chat", "msgpack", 12345)
    wire = encode_hello(hello)
    payload = hello_frame(wire)
    assert json.loads(payload) == {"channel": "chat", "codec": "msgpack", "max_message_size": 12345}
    assert wire == PREAMBLE + encode_frame(payload)
    assert parse_hello(payload) == hello


def test_encode_hello_non_ascii_name_round_trips() -> None:
    hello = Hello("é" * MAX_CHANNEL_NAME, "json")
    assert parse_hello(hello_frame(encode_hello(hello))) == hello


def test_parse_hello_minimal_and_defaults() -> None:
    hello = parse_hello(b'{"channel":"chat","codec":"json"}')
    assert hello == Hello("chat", "json", DEFAULT_MAX_MESSAGE_SIZE)
    assert hello.max_message_size == 1 << 20


def test_parse_hello_ignores_unknown_keys() -> None:
    payload = as_json({"codec": "bytes", "future": [1, {"x": None}], "channel": "c", "v": 2})
    assert parse_hello(payload) == Hello("c", "bytes")


@pytest.mark.parametrize("limit", [0, 1, 0xFFFFFFFF])
def test_parse_hello_size_limits_in_range(limit: int) -> None:
    payload = as_json({"channel": "c", "codec": "json", "max_message_size": limit})
    assert parse_hello(payload).max_message_size == limit


def test_parse_hello_name_at_the_length_limit() -> None:
    name = "n" * MAX_CHANNEL_NAME
    assert parse_hello(as_json({"channel": name, "codec": "json"})).channel == name


def test_parse_hello_at_max_hello_size() -> None:
    base = {"channel": "c", "codec": "json", "pad": ""}
    room = MAX_HELLO_SIZE - len(as_json(base))
    payload = as_json({**base, "pad": "p" * room})
    assert len(payload) == MAX_HELLO_SIZE
    assert parse_hello(payload) == Hello("c", "json")
    too_long = as_json({**base, "pad": "p" * (room + 1)})
    assert len(too_long) == MAX_HELLO_SIZE + 1
    with pytest.raises(FramingError) as caught:
        parse_hello(too_long)
    assert caught.value.code == ErrorCode.BAD_HELLO
    assert "too long" in str(caught.value)


BAD_HELLOS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"channel": "c", "codec": "json"', id="unterminated-json"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b'{"channel":"c","codec":"json"} extra', id="trailing-data"),
    pytest.param(b'["c", "json"]', id="array"),
    pytest.param(b'"chat"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b"42", id="number"),
    pytest.param(as_json({"codec": "json"}), id="channel-missing"),
    pytest.param(as_json({"channel": "", "codec": "json"}), id="channel-empty"),
    pytest.param(as_json({"channel": None, "codec": "json"}), id="channel-null"),
    pytest.param(as_json({"channel": 7, "codec": "json"}), id="channel-number"),
    pytest.param(as_json({"channel": ["c"], "codec": "json"}), id="channel-array"),
    pytest.param(
        as_json({"channel": "n" * (MAX_CHANNEL_NAME + 1), "codec": "json"}), id="channel-too-long"
    ),
    pytest.param(as_json({"channel": "c"}), id="codec-missing"),
    pytest.param(as_json({"channel": "c", "codec": ""}), id="codec-empty"),
    pytest.param(as_json({"channel": "c", "codec": 1}), id="codec-number"),
    pytest.param(as_json({"channel": "c", "codec": None}), id="codec-null"),
    pytest.param(
        as_json({"channel": "c", "codec": "json", "max_message_size": True}), id="size-bool-true"
    ),
    pytest.param(
        as_json({"channel": "c", "codec": "json", "max_message_size": False}), id="size-bool-false"
    ),
    pytest.param(
        as_json({"channel": "c", "codec": "json", "max_message_size": -1}), id="size-negative"
    ),
    pytest.param(
        as_json({"channel": "c", "codec": "json", "max_message_size": 1 << 32}), id="size-2**32"
    ),
    pytest.param(
        as_json({"channel": "c", "codec": "json", "max_message_size": 1024.0}), id="size-float"
    ),
    pytest.param(
        as_json({"channel": "c", "codec": "json", "max_message_size": "1024"}), id="size-string"
    ),
    pytest.param(
        as_json({"channel": "c", "codec": "json", "max_message_size": None}), id="size-null"
    ),
    pytest.param(b'{"channel":"c","codec":"json","max_message_size":NaN}', id="size-nan"),
    pytest.param(b"{" + b" " * MAX_HELLO_SIZE + b"}", id="over-max-hello-size"),
]


@pytest.mark.parametrize("payload", BAD_HELLOS)
def test_bad_hello(payload: bytes) -> None:
    with pytest.raises(FramingError) as caught:
        parse_hello(payload)
    assert caught.value.code == ErrorCode.BAD_HELLO
    assert str(caught.value).startswith("hello")


def test_bad_hello_message_is_bounded() -> None:
    name = "n" * 100_000
    with pytest.raises(FramingError) as caught:
        parse_hello(as_json({"channel": name}))  # over MAX_HELLO_SIZE: refused unparsed
    assert len(str(caught.value)) < 200
    with pytest.raises(FramingError) as caught:
        parse_hello(as_json({"channel": "n" * (MAX_CHANNEL_NAME + 1), "codec": "json"}))
    assert len(str(caught.value)) <= 200


# ------------------------------------------------------------------------------ accept


def test_encode_accept_round_trip() -> None:
    accept = Accept("json", 777)
    wire = encode_accept(accept)
    decoder = FrameDecoder(MAX_HELLO_SIZE)
    (payload,) = decoder.feed(wire)
    assert json.loads(payload) == {"codec": "json", "max_message_size": 777}
    assert parse_accept(payload) == accept
    assert not wire.startswith(PREAMBLE)  # no preamble on the acceptor's side


def test_parse_accept_defaults_and_unknown_keys() -> None:
    assert parse_accept(b'{"codec":"bytes"}') == Accept("bytes", DEFAULT_MAX_MESSAGE_SIZE)
    assert parse_accept(as_json({"codec": "json", "channel": 5, "x": []})) == Accept("json")


BAD_ACCEPTS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="not-json"),
    pytest.param(b"\x80", id="not-utf8"),
    pytest.param(b"[]", id="array"),
    pytest.param(b"true", id="bool"),
    pytest.param(b"{}", id="codec-missing"),
    pytest.param(as_json({"codec": ""}), id="codec-empty"),
    pytest.param(as_json({"codec": ["json"]}), id="codec-array"),
    pytest.param(as_json({"codec": "json", "max_message_size": True}), id="size-bool"),
    pytest.param(as_json({"codec": "json", "max_message_size": -5}), id="size-negative"),
    pytest.param(as_json({"codec": "json", "max_message_size": 2.5}), id="size-float"),
    pytest.param(as_json({"codec": "json", "max_message_size": 1 << 40}), id="size-huge"),
    pytest.param(as_json({"codec": "json", "pad": "p" * MAX_HELLO_SIZE}), id="too-long"),
]


@pytest.mark.parametrize("payload", BAD_ACCEPTS)
def test_bad_accept(payload: bytes) -> None:
    with pytest.raises(FramingError) as caught:
        parse_accept(payload)
    assert caught.value.code == ErrorCode.BAD_HELLO
    assert str(caught.value).startswith("accept")
