"""Codecs: one value <-> one payload, their errors, and looking them up by name or id."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.exceptions import ConfigurationError
from pywebtransport.messaging import (
    BytesCodec,
    DecodeError,
    EncodeError,
    JsonCodec,
    MessagingError,
    MsgpackCodec,
    available_codecs,
    get_codec,
)

# Values every codec but bytes carries unchanged (JSON has no bytes, no int keys, no tuples).
JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    1.5,
    -0.25,
    "",
    "text",
    "é漢字\U0001f600\x00",
    [],
    {},
    [1, "two", None, [3.0, {"four": [5]}]],
    {"nested": {"list": [True, False], "empty": ""}, "k": -7},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)

# ------------------------------------------------------------------------------ bytes


def test_bytes_codec() -> None:
    codec = get_codec("bytes")
    assert (codec.name, codec.id) == ("bytes", 0)
    for value in (b"", b"\x00\xff raw", bytes(range(256))):
        assert codec.encode(value) == value
        assert codec.decode(value) == value
    assert codec.encode(bytearray(b"ba")) == b"ba"
    assert codec.encode(memoryview(b"mv")) == b"mv"
    assert type(codec.encode(bytearray(b"x"))) is bytes
    assert codec.decode(b"\xff\xfe not utf-8") == b"\xff\xfe not utf-8"  # never fails


@pytest.mark.parametrize("value", ["text", 1, None, [b"x"], {"a": b"b"}])
def test_bytes_codec_refuses_other_types(value: Any) -> None:
    with pytest.raises(EncodeError) as caught:
        BytesCodec().encode(value)
    assert type(value).__name__ in str(caught.value)


# ------------------------------------------------------------------------------ json


@pytest.mark.parametrize("value", JSON_VALUES)
def test_json_round_trip(value: Any) -> None:
    codec = get_codec("json")
    payload = codec.encode(value)
    assert type(payload) is bytes
    assert codec.decode(payload) == value


def test_json_payload_is_compact_utf8() -> None:
    codec = JsonCodec()
    assert codec.encode({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'.encode()
    assert codec.decode(b' { "a" : [ 1 , 2 ] } \n') == {"a": [1, 2]}
    assert (codec.name, codec.id) == ("json", 1)


def test_json_tuples_become_arrays() -> None:
    codec = JsonCodec()
    assert codec.decode(codec.encode((1, (2, 3)))) == [1, [2, 3]]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param(-math.inf, id="-inf"),
        pytest.param([1.0, math.nan], id="nan-in-list"),
        pytest.param({"x": math.inf}, id="inf-in-object"),
        pytest.param({1, 2}, id="set"),
        pytest.param(frozenset(), id="frozenset"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(object(), id="object"),
        pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
        pytest.param(1 + 2j, id="complex"),
    ],
)
def test_json_encode_errors(value: Any) -> None:
    with pytest.raises(EncodeError) as caught:
        JsonCodec().encode(value)
    assert isinstance(caught.value, ValueError)  # also a ValueError, as documented
    assert isinstance(caught.value, MessagingError)


def test_json_encode_circular_reference() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        JsonCodec().encode(loop)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("codec", [JsonCodec, MsgpackCodec])
def test_encoding_a_too_deep_value_is_an_encode_error(
    codec: type[JsonCodec | MsgpackCodec],
) -> None:
    with pytest.raises(EncodeError):
        codec().encode(nested(100_000))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="unterminated"),
        pytest.param(b"{'a': 1}", id="single-quotes"),
        pytest.param(b"[1,]", id="trailing-comma"),
        pytest.param(b"1 2", id="two-values"),
        pytest.param(b"\xff", id="invalid-utf8"),
        pytest.param(b'"\xc3"', id="truncated-utf8"),
        pytest.param(b"\xed\xa0\x80", id="utf8-surrogate"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b"-Infinity", id="-infinity"),
        pytest.param(b'{"x": [1, NaN]}', id="nested-nan"),
        pytest.param(b"undefined", id="undefined"),
        pytest.param(b"[" * 100_000, id="deeply-nested-array"),
        pytest.param(b'{"a":' * 100_000, id="deeply-nested-object"),
    ],
)
def test_json_decode_errors(payload: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        JsonCodec().decode(payload)
    assert "invalid JSON" in str(caught.value)


def test_json_decode_errors_do_not_poison_the_codec() -> None:
    codec = get_codec("json")
    with pytest.raises(DecodeError):
        codec.decode(b"[" * 100_000)
    assert codec.decode(b"[[[]]]") == [[[]]]


@given(json_values)
def test_json_any_value_round_trips(value: Any) -> None:
    codec = get_codec("json")
    assert codec.decode(codec.encode(value)) == value


# ------------------------------------------------------------------------------ msgpack


@pytest.mark.parametrize("value", JSON_VALUES)
def test_msgpack_round_trip(value: Any) -> None:
    codec = get_codec("msgpack")
    payload = codec.encode(value)
    assert type(payload) is bytes
    assert codec.decode(payload) == value


def test_msgpack_carries_bytes_and_int_keys() -> None:
    codec = MsgpackCodec()
    assert (codec.name, codec.id) == ("msgpack", 2)
    value = {"bin": b"\x00\xff", 1: [b""]}
    assert codec.decode(codec.encode(value)) == value
    assert codec.encode(None) == b"\xc0"
    assert codec.encode([1, "a"]) == b"\x92\x01\xa1a"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param(2**64, id="int-too-big"),
        pytest.param(-(2**63) - 1, id="int-too-small"),
        pytest.param({"k": [object()]}, id="nested-object"),
        pytest.param(1 + 2j, id="complex"),
    ],
)
def test_msgpack_encode_errors(value: Any) -> None:
    with pytest.raises(EncodeError):
        MsgpackCodec().encode(value)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\x92\x01", id="truncated-array"),
        pytest.param(b"\xd9\x05ab", id="truncated-string"),
        pytest.param(b"\x01\x02", id="trailing-data"),
        pytest.param(b"\xa2\xff\xfe", id="invalid-utf8-string"),
        pytest.param(b"\x91" * 100_000, id="deeply-nested"),
    ],
)
def test_msgpack_decode_errors(payload: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        MsgpackCodec().decode(payload)
    assert "invalid MessagePack" in str(caught.value)


@given(json_values | st.binary(max_size=30))
def test_msgpack_any_value_round_trips(value: Any) -> None:
    codec = get_codec("msgpack")
    assert codec.decode(codec.encode(value)) == value


# ------------------------------------------------------------------------------ lookup


@pytest.mark.parametrize(("name", "codec_id"), [("bytes", 0), ("json", 1), ("msgpack", 2)])
def test_get_codec_by_name_and_id(name: str, codec_id: int) -> None:
    codec = get_codec(name)
    assert (codec.name, codec.id) == (name, codec_id)
    assert get_codec(codec_id) is codec  # one shared instance
    assert get_codec(name) is codec


@pytest.mark.parametrize("name", ["yaml", "", "JSON", "json ", "cbor"])
def test_unknown_codec_name(name: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        get_codec(name)
    assert caught.value.field == "codec"
    assert "bytes, json, msgpack" in str(caught.value)


@pytest.mark.parametrize("codec_id", [3, 255, -1, 256])
def test_unknown_codec_id(codec_id: int) -> None:
    with pytest.raises(ConfigurationError) as caught:
        get_codec(codec_id)
    assert caught.value.field == "codec"


def test_available_codecs() -> None:
    assert available_codecs() == ["bytes", "json", "msgpack"]


def test_msgpack_without_msgspec(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "msgspec", None)  # import fails
    with pytest.raises(ConfigurationError) as caught:
        MsgpackCodec()
    assert "pip install pywebtransport[msgpack]" in str(caught.value)
