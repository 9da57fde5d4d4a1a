"""Header sections: RFC 9114 section 4.3 checks and the QPACK codec wrapper."""

from __future__ import annotations

import pytest

from pywebtransport.protocol.errors import ProtocolViolation, Scope
from pywebtransport.protocol.events import Headers
from pywebtransport.protocol.headers import (
    MAX_HEADER_COUNT,
    HeaderCodec,
    parse_request,
    parse_response,
)
from pywebtransport.protocol.wire import H3ErrorCode

EXTENDED_CONNECT: Headers = [
    (b":method", b"CONNECT"),
    (b":protocol", b"webtransport-h3"),
    (b":scheme", b"https"),
    (b":authority", b"example.com:4433"),
    (b":path", b"/chat?room=1"),
]


def malformed(headers: Headers, *, response: bool = False) -> None:
    with pytest.raises(ProtocolViolation) as info:
        if response:
            parse_response(headers)
        else:
            parse_request(headers)
    assert info.value.code == H3ErrorCode.H3_MESSAGE_ERROR
    assert info.value.scope is Scope.STREAM


# -------------------------------------------------------------------- requests


def test_extended_connect() -> None:
    regular = [(b"origin", b"https://example.com"), (b"sec-webtransport-http3-draft02", b"1")]
    request = parse_request([*EXTENDED_CONNECT, *regular])
    assert request.method == "CONNECT"
    assert request.protocol == "webtransport-h3"
    assert request.scheme == "https"
    assert request.authority == "example.com:4433"
    assert request.path == "/chat?room=1"
    assert request.headers == regular


def test_pseudo_headers_in_any_order() -> None:
    request = parse_request(list(reversed(EXTENDED_CONNECT)))
    assert (request.method, request.protocol, request.path) == (
        "CONNECT",
        "webtransport-h3",
        "/chat?room=1",
    )


def test_ordinary_get() -> None:
    request = parse_request(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"h")]
    )
    assert (request.method, request.protocol, request.path) == ("GET", "", "/")


def test_plain_connect_needs_only_authority() -> None:
    # RFC 9114 4.4: a CONNECT request omits :scheme and :path.
    request = parse_request([(b":method", b"CONNECT"), (b":authority", b"proxy.example:443")])
    assert (request.method, request.authority, request.protocol) == (
        "CONNECT",
        "proxy.example:443",
        "",
    )


def test_te_trailers_is_allowed() -> None:
    # RFC 9114 4.2: TE MAY be present in a request header when its value is "trailers".
    request = parse_request([*EXTENDED_CONNECT, (b"te", b"trailers")])
    assert request.headers == [(b"te", b"trailers")]


def without(name: bytes) -> Headers:
    return [(n, v) for n, v in EXTENDED_CONNECT if n != name]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([*EXTENDED_CONNECT, (b"Origin", b"x")], id="uppercase-name"),
        pytest.param([(b":METHOD", b"CONNECT"), *EXTENDED_CONNECT[1:]], id="uppercase-pseudo"),
        pytest.param(
            [*EXTENDED_CONNECT[:2], (b"origin", b"x"), *EXTENDED_CONNECT[2:]],
            id="pseudo-after-regular",
        ),
        pytest.param([*EXTENDED_CONNECT, (b":path", b"/other")], id="duplicate-pseudo"),
        pytest.param([*EXTENDED_CONNECT, (b":status", b"200")], id="response-pseudo"),
        pytest.param([*EXTENDED_CONNECT, (b":foo", b"bar")], id="unknown-pseudo"),
        pytest.param(without(b":method"), id="missing-method"),
        pytest.param(
            [(b":method", b"GET"), *EXTENDED_CONNECT[1:]],
            id="protocol-on-get",
        ),
        pytest.param(without(b":path"), id="extended-connect-missing-path"),
        pytest.param(without(b":scheme"), id="extended-connect-missing-scheme"),
        pytest.param(without(b":authority"), id="extended-connect-missing-authority"),
        pytest.param([(b":method", b"CONNECT")], id="connect-without-authority"),
        pytest.param(
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"h")],
            id="get-missing-path",
        ),
        pytest.param([*EXTENDED_CONNECT, (b"connection", b"close")], id="connection"),
        pytest.param([*EXTENDED_CONNECT, (b"keep-alive", b"300")], id="keep-alive"),
        pytest.param(
            [*EXTENDED_CONNECT, (b"transfer-encoding", b"chunked")], id="transfer-encoding"
        ),
        pytest.param([*EXTENDED_CONNECT, (b"upgrade", b"websocket")], id="upgrade"),
        # RFC 9114 4.2 names Proxy-Connection among the connection-specific fields, and
        # allows TE only with the value "trailers".
        pytest.param([*EXTENDED_CONNECT, (b"proxy-connection", b"close")], id="proxy-connection"),
        pytest.param([*EXTENDED_CONNECT, (b"te", b"gzip")], id="te-not-trailers"),
    ],
)
def test_malformed_request(headers: Headers) -> None:
    malformed(headers)


# -------------------------------------------------------------------- responses


@pytest.mark.parametrize("status", [b"200", b"404", b"101", b"599"])
def test_response(status: bytes) -> None:
    regular = [(b"sec-webtransport-http3-draft", b"draft02"), (b"wt-protocol", b'"chat"')]
    assert parse_response([(b":status", status), *regular]) == (int(status), regular)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="no-status"),
        pytest.param([(b"server", b"x")], id="only-regular"),
        pytest.param([(b":status", b"20")], id="two-digits"),
        pytest.param([(b":status", b"2000")], id="four-digits"),
        pytest.param([(b":status", b"abc")], id="letters"),
        pytest.param([(b":status", b"")], id="empty"),
        pytest.param([(b":status", b"+20")], id="sign"),
        pytest.param([(b":status", b"200"), (b":status", b"200")], id="duplicate"),
        pytest.param([(b":status", b"200"), (b":path", b"/")], id="request-pseudo"),
        pytest.param([(b"server", b"x"), (b":status", b"200")], id="pseudo-after-regular"),
        pytest.param([(b":status", b"200"), (b"Server", b"x")], id="uppercase-name"),
        pytest.param([(b":status", b"200"), (b"connection", b"close")], id="connection"),
    ],
)
def test_malformed_response(headers: Headers) -> None:
    malformed(headers, response=True)


# -------------------------------------------------------------------- QPACK


def test_codec_round_trip() -> None:
    sender, receiver = HeaderCodec(), HeaderCodec()
    assert isinstance(sender.encoder_stream_data, bytes)
    for stream_id, section in [
        (0, [*EXTENDED_CONNECT, (b"origin", b"https://example.com")]),
        (4, [(b":status", b"200"), (b"wt-protocol", b'"chat"')]),
        (8, [(b"x-empty", b""), (b"x-binary", bytes(range(32, 127)))]),
    ]:
        headers, control = receiver.decode(stream_id, sender.encode(stream_id, section))
        assert headers == section
        # No dynamic table: a decoder never has to acknowledge anything.
        assert control == b""


def test_codec_accepts_max_header_count() -> None:
    sender, receiver = HeaderCodec(), HeaderCodec()
    section = [(b"x-%d" % i, b"v") for i in range(MAX_HEADER_COUNT)]
    headers, _ = receiver.decode(0, sender.encode(0, section))
    assert headers == section


def test_codec_too_many_fields() -> None:
    sender, receiver = HeaderCodec(), HeaderCodec()
    section = [(b"x-%d" % i, b"v") for i in range(MAX_HEADER_COUNT + 1)]
    with pytest.raises(ProtocolViolation) as info:
        receiver.decode(0, sender.encode(0, section))
    assert info.value.code == H3ErrorCode.H3_EXCESSIVE_LOAD
    assert info.value.scope is Scope.STREAM


@pytest.mark.parametrize(
    "block",
    [b"", b"\x00", b"\xff", b"\xff\xff\xff\xff", b"\x00\x00\xff", b"\x00\x00\x51", b"\x05\x00"],
)
def test_codec_garbage_block(block: bytes) -> None:
    with pytest.raises(ProtocolViolation) as info:
        HeaderCodec().decode(0, block)
    assert info.value.code == H3ErrorCode.QPACK_DECOMPRESSION_FAILED
    assert info.value.scope is Scope.CONNECTION


def test_codec_survives_a_garbage_block_on_another_stream() -> None:
    sender, receiver = HeaderCodec(), HeaderCodec()
    with pytest.raises(ProtocolViolation):
        receiver.decode(0, b"\xff\xff")
    headers, _ = receiver.decode(4, sender.encode(4, [(b":status", b"200")]))
    assert headers == [(b":status", b"200")]
