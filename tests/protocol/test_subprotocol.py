"""Subprotocol header codec (wt-available-protocols / wt-protocol) and GOAWAY in the core."""

from __future__ import annotations

from pathlib import Path

import pytest

from pywebtransport.protocol import ProtocolUsageError
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.subprotocol import (
    chosen_protocol,
    decode_protocol,
    decode_protocol_list,
    encode_protocol,
    encode_protocol_list,
    encode_string,
    is_valid_protocol,
    offered_protocols,
    select_protocol,
)
from tests.protocol.pair import Pair


def test_encode_list_and_single() -> None:
    assert encode_protocol_list(["chat", "json"]) == b'"chat", "json"'
    assert encode_protocol("json") == b'"json"'
    assert encode_string('a"b\\c') == b'"a\\"b\\\\c"'
    with pytest.raises(ValueError):
        encode_string("caf\u00e9")
    with pytest.raises(ValueError):
        encode_string("a\nb")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'"chat", "json"', ["chat", "json"]),
        (b'"chat","json"', ["chat", "json"]),
        (b'  "chat" ,\t"json"', ["chat", "json"]),
        (b'"a\\"b"', ['a"b']),
        (b"chat, json", ["chat", "json"]),  # bare tokens accepted (drafts 10 to 12 peers)
        (b'"chat";q=1;x, "json";v="2";f=?1;n=-1.5', ["chat", "json"]),  # parameters ignored
        (b'"chat", "chat"', ["chat"]),
        (b"", []),
        (b'"chat", ', []),  # trailing comma: malformed
        (b'"chat" "json"', []),
        (b'"unterminated', []),
        (b'"bad\\escape"', []),
        (b"1abc", []),
        (b'"chat", @', []),
        (b'"ctl\x01"', []),
        (b'"x";=1', []),
    ],
)
def test_decode_protocol_list(raw: bytes, expected: list[str]) -> None:
    assert decode_protocol_list([raw]) == expected


def test_decode_list_joins_header_lines() -> None:
    assert decode_protocol_list([b'"a"', b'"b", "c"']) == ["a", "b", "c"]
    headers = [(b"wt-available-protocols", b'"a"'), (b"x", b"y"), (b"wt-available-protocols", b"b")]
    assert offered_protocols(headers) == ["a", "b"]
    assert offered_protocols([(b"x", b"y")]) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'"json"', "json"),
        (b"json", "json"),
        (b' "json" ', "json"),
        (b'"json";p=1', "json"),
        (b'"json", "chat"', None),  # a list is not one protocol
        (b"", None),
        (b'"json', None),
    ],
)
def test_decode_protocol(raw: bytes, expected: str | None) -> None:
    assert decode_protocol(raw) == expected


def test_chosen_protocol_requires_exactly_one_header() -> None:
    assert chosen_protocol([(b"wt-protocol", b'"a"')]) == "a"
    assert chosen_protocol([]) is None
    assert chosen_protocol([(b"wt-protocol", b'"a"'), (b"wt-protocol", b'"b"')]) is None


def test_select_and_validate() -> None:
    assert select_protocol(["chat", "json"], ["json", "chat"]) == "json"
    assert select_protocol(["chat"], ["json"]) is None
    assert select_protocol([], ["json"]) is None
    assert is_valid_protocol("v1.chat")
    for bad in ("", "a b", 'a"', "caf\u00e9", "a,b"):
        assert not is_valid_protocol(bad)


# --------------------------------------------------------------------------------- GOAWAY


def test_server_goaway_carries_next_request_id_and_drains(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    assert sid == 0
    goaway_id = pair.server.goaway()
    assert goaway_id == 4  # the next client-initiated bidirectional stream ID
    assert pair.server.goaway() == 4  # idempotent
    pair.roundtrip()
    assert pair.client.goaway_received
    (drain,) = pair.take("client", ev.SessionDraining)
    assert isinstance(drain, ev.SessionDraining) and drain.session_id == sid
    # The session stays usable; new sessions on this connection are refused locally.
    stream = pair.client.create_stream(sid, bidirectional=False)
    pair.client.send_stream_data(stream, b"still here", end_stream=True)
    pair.roundtrip()
    data = [e for e in pair.take("server", ev.StreamData) if isinstance(e, ev.StreamData)]
    assert b"".join(e.data for e in data) == b"still here"
    with pytest.raises(ProtocolUsageError):
        pair.client.open_session(authority="localhost:4433", path="/x")


def test_goaway_without_requests_is_zero_and_client_sends_zero(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.roundtrip()
    assert pair.server.goaway() == 0
    assert pair.client.goaway() == 0
    pair.roundtrip()
    assert pair.client.goaway_received and pair.server.goaway_received


def test_request_beyond_goaway_is_rejected(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.open_session()
    pair.server.goaway()  # ID 4: the client has not seen it yet
    late = pair.client.open_session(authority="localhost:4433", path="/late")
    assert late == 4
    pair.roundtrip()
    assert not pair.take("server", ev.SessionRequested)
    (rejected,) = pair.take("client", ev.SessionRejected)
    assert isinstance(rejected, ev.SessionRejected) and rejected.session_id == late
