"""Bad input from a peer: every case gets its wire code, closes the right scope, stays bounded.

Each test names the row of docs/security.md it backs. Where the scope is a stream or a session,
a second session on the same connection must keep working; where it is the connection, both
sides must see the same code. Memory is checked through the core's own tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from fuzz.receive_path import MemoryEngine

from pywebtransport.protocol import AioquicEngine, WebTransportProtocol
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.codec import (
    decode_varint,
    encode_capsule,
    encode_frame,
    encode_varint,
)
from pywebtransport.protocol.headers import HeaderCodec
from pywebtransport.protocol.quic import EngineEvent, EngineStreamData, EngineStreamReset
from pywebtransport.protocol.settings import LocalLimits
from pywebtransport.protocol.wire import CapsuleType, H3ErrorCode, SettingId
from tests.protocol import test_core
from tests.protocol.pair import Pair
from tests.protocol.test_core import (
    AUTHORITY,
    BOTH,
    BUFFERED_STREAM_REJECTED,
    SESSION_GONE,
    SETTINGS_FRAME,
    Tap,
    assert_terminated,
    events,
    exchange_datagram,
    exchange_on_new_stream,
    second_session,
    settle,
)

v = encode_varint
E = H3ErrorCode
FINAL_SIZE_ERROR = 0x06  # QUIC transport error (RFC 9000 20.1), raised by aioquic


def footprint(protocol: WebTransportProtocol) -> dict[str, int]:
    """The sizes of every per-peer table the core keeps."""
    return {
        "streams": len(protocol._streams),
        "sessions": len(protocol._sessions),
        "early": protocol._early_count,
        "unknown_early": len(protocol._unknown_early),
        "gone": len(protocol._gone),
        "held": len(protocol._held_requests),
    }


def two_sessions(pair: Pair) -> tuple[int, int]:
    """The session the bad peer targets and a healthy one on the same connection."""
    bad = pair.open_session("/bad")
    good = second_session(pair, "/good")
    events(pair, "client")
    events(pair, "server")
    return bad, good


def assert_healthy(pair: Pair, sid: int) -> None:
    """Both connections are up and ``sid`` carries streams and datagrams both ways."""
    events(pair, "client")
    events(pair, "server")
    assert not pair.client.engine.is_closed and not pair.server.engine.is_closed
    for side in BOTH:
        exchange_on_new_stream(pair, side, sid, b"still working")
        exchange_datagram(pair, side, sid, b"still working")


def new_bidi(pair: Pair, payload: bytes, fin: bool = False) -> int:
    engine = pair.client.engine
    stream_id = engine.next_stream_id(False)
    engine.send_stream_data(stream_id, payload, fin)
    return stream_id


def new_uni(pair: Pair, payload: bytes, fin: bool = False) -> int:
    engine = pair.client.engine
    stream_id = engine.next_stream_id(True)
    engine.send_stream_data(stream_id, payload, fin)
    return stream_id


def assert_session_error(pair: Pair, tap: Tap, bad: int, code: int) -> None:
    """The server closed ``bad`` with ``code`` (CONNECT stream reset and stopped); both know."""
    closed = [e for e in events(pair, "server") if isinstance(e, ev.SessionClosed)]
    assert [(e.session_id, e.code, e.by_peer) for e in closed] == [(bad, code, True)]
    assert tap.resets().get(bad) == code
    assert tap.stopped(bad, code)
    closed = [e for e in events(pair, "client") if isinstance(e, ev.SessionClosed)]
    assert [e.session_id for e in closed] == [bad]
    assert bad not in pair.server._sessions


# ----------------------------------------------------------------------------- HTTP/3 frames


# A frame that the end of the stream cuts short. RFC 9114 section 7.1: "When a stream
# terminates cleanly, if the last frame on the stream was truncated, this MUST be treated as a
# connection error of type H3_FRAME_ERROR."
TRUNCATED_AT_FIN = [
    pytest.param(encode_frame(0x01, b"x" * 40)[:12], id="headers-cut-by-fin"),
    pytest.param(encode_frame(0x21, b"") + b"\x40", id="truncated-frame-type"),
    pytest.param(v(0x21) + b"\x80\x00", id="truncated-frame-length"),
    pytest.param(v(0x21) + v(1000) + b"grease", id="grease-cut-by-fin"),
    pytest.param(b"\x40", id="first-type-1-of-2"),
    pytest.param(b"\x80\x00", id="first-type-2-of-4"),
    pytest.param(v(0x00) + b"\x80", id="first-length-cut"),
]


@pytest.mark.parametrize("payload", TRUNCATED_AT_FIN)
def test_a_request_stream_ending_inside_a_frame_closes_the_connection(
    tmp_path: Path, payload: bytes
) -> None:
    pair = Pair(tmp_path)
    two_sessions(pair)
    new_bidi(pair, payload, fin=True)
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, "client", E.H3_FRAME_ERROR)


def test_truncated_stream_type_varint_is_ignored(tmp_path: Path) -> None:
    """A unidirectional stream may end before its type (RFC 9114 section 6.2): forgotten."""
    pair = Pair(tmp_path)
    _, good = two_sessions(pair)
    before = footprint(pair.server)
    new_uni(pair, b"\xc0\x00\x00", fin=True)
    new_uni(pair, v(0x54) + b"\x80", fin=True)  # WebTransport type, session ID cut short
    pair.roundtrip()
    assert events(pair, "server") == []
    assert footprint(pair.server) == before
    assert_healthy(pair, good)


def test_a_connect_stream_ending_inside_a_frame_closes_the_connection(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    bad, _ = two_sessions(pair)
    pair.client.engine.send_stream_data(bad, v(0x00) + v(50) + b"short", True)
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, "client", E.H3_FRAME_ERROR)


CONTROL_ERRORS = [
    pytest.param(encode_frame(0x07, v(0) + b"x"), E.H3_FRAME_ERROR, id="goaway-trailing-byte"),
    pytest.param(encode_frame(0x07, b""), E.H3_FRAME_ERROR, id="goaway-empty"),
    pytest.param(encode_frame(0x07, b"\x40"), E.H3_FRAME_ERROR, id="goaway-truncated-varint"),
    pytest.param(v(0x07) + v(20_000), E.H3_EXCESSIVE_LOAD, id="goaway-huge-length"),
    pytest.param(v(0x04) + v(1 << 40), E.H3_EXCESSIVE_LOAD, id="settings-huge-length"),
]


@pytest.mark.parametrize(("payload", "code"), CONTROL_ERRORS)
def test_malformed_frame_on_control_stream_closes_the_connection(
    tmp_path: Path, payload: bytes, code: int
) -> None:
    pair = Pair(tmp_path)
    two_sessions(pair)
    pair.client.engine.send_stream_data(2, payload)
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, "client", code)


@pytest.mark.parametrize(
    "payload",
    [v(0x07) + v(8) + b"cut", b"\x40", v(0x21) + b"\x80"],
    ids=["frame-cut", "truncated-type", "truncated-length"],
)
def test_control_stream_ending_anywhere_closes_the_connection(
    tmp_path: Path, payload: bytes
) -> None:
    pair = Pair(tmp_path)
    two_sessions(pair)
    pair.client.engine.send_stream_data(2, payload, True)
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, "client", E.H3_CLOSED_CRITICAL_STREAM)


def test_large_grease_frame_on_control_stream_is_streamed_not_buffered(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    _, good = two_sessions(pair)
    pair.client.engine.send_stream_data(2, encode_frame(0x21, b"g" * 200_000))
    pair.roundtrip(limit=2000)
    reader = pair.server._streams[2].reader
    assert reader is not None and len(reader._buf) < 64  # never held the 200 KB payload
    assert_healthy(pair, good)


# ----------------------------------------------------------------------------- HEADERS


def connect_section(extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"webtransport-h3"),
        (b":scheme", b"https"),
        (b":authority", AUTHORITY.encode()),
        (b":path", b"/"),
        *(extra or []),
    ]


def headers_frame(stream_id: int, section: list[tuple[bytes, bytes]]) -> bytes:
    return encode_frame(0x01, HeaderCodec().encode(stream_id, section))


@pytest.mark.parametrize(
    ("make", "code"),
    [
        pytest.param(
            lambda sid: headers_frame(sid, connect_section([(b"x-big", b"v" * 20_000)])),
            E.H3_EXCESSIVE_LOAD,
            id="huge-field-section",
        ),
        pytest.param(
            lambda sid: v(0x01) + v(16 * 1024 + 1) + b"start",
            E.H3_EXCESSIVE_LOAD,
            id="length-over-max-header-size",
        ),
        pytest.param(
            lambda sid: headers_frame(
                sid, connect_section([(b"x-%d" % i, b"1") for i in range(130)])
            ),
            E.H3_EXCESSIVE_LOAD,
            id="too-many-fields",
        ),
        pytest.param(
            lambda sid: headers_frame(sid, [*connect_section()[:3], (b":path", b"/")]),
            E.H3_MESSAGE_ERROR,
            id="connect-without-authority",
        ),
        pytest.param(
            lambda sid: headers_frame(sid, [*connect_section(), (b":path", b"/again")]),
            E.H3_MESSAGE_ERROR,
            id="duplicate-pseudo-header",
        ),
    ],
)
def test_bad_request_headers_reset_only_that_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: object, code: int
) -> None:
    pair = Pair(tmp_path)
    bad, good = two_sessions(pair)
    before = footprint(pair.server)
    tap = Tap(monkeypatch, pair.client)
    engine = pair.client.engine
    stream_id = engine.next_stream_id(False)
    build = cast("type[bytes]", make)  # a callable: stream ID -> frame bytes
    engine.send_stream_data(stream_id, build(stream_id))
    pair.roundtrip(limit=400)
    assert tap.resets() == {stream_id: code}
    assert events(pair, "server") == []
    # The refused stream is ignored (late bytes are not a new stream) until the peer ends it.
    engine.send_stream_data(stream_id, b"late bytes")
    pair.roundtrip()
    assert tap.resets() == {stream_id: code}
    engine.reset_stream(stream_id, E.H3_REQUEST_CANCELLED)
    pair.roundtrip()
    assert footprint(pair.server) == before
    assert_healthy(pair, bad)
    assert_healthy(pair, good)


def test_qpack_garbage_on_connect_stream_closes_the_connection(tmp_path: Path) -> None:
    """QPACK state is per connection: a block that cannot be decoded is a connection error."""
    pair = Pair(tmp_path)
    bad, _ = two_sessions(pair)
    pair.client.engine.send_stream_data(bad, encode_frame(0x01, b"\x00\x00\xff\xff\xff\xff"))
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, "client", E.QPACK_DECOMPRESSION_FAILED)


# ----------------------------------------------------------------------------- SETTINGS


def bad_settings(monkeypatch: pytest.MonkeyPatch, offender: str, payload: bytes) -> None:
    """Make the ``offender``'s core (the client is built first) send ``payload`` as SETTINGS."""
    from pywebtransport.protocol import http3 as connection  # where SETTINGS are sent
    from pywebtransport.protocol.settings import encode_settings as original

    calls = [0]
    mine = 0 if offender == "client" else 1

    def encode(settings: dict[int, int]) -> bytes:
        calls[0] += 1
        return payload if calls[0] - 1 == mine else original(settings)

    monkeypatch.setattr(connection, "encode_settings", encode)


GOOD = v(SettingId.WT_ENABLED) + v(1) + v(SettingId.H3_DATAGRAM) + v(1) + v(0x08) + v(1)


@pytest.mark.parametrize("offender", BOTH)
@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(GOOD + v(0x33) + v(1), E.H3_SETTINGS_ERROR, id="duplicate"),
        pytest.param(GOOD + v(0x02) + v(0), E.H3_SETTINGS_ERROR, id="http2-setting"),
        pytest.param(GOOD[:-1] + v(2), E.H3_SETTINGS_ERROR, id="connect-protocol-2"),
        pytest.param(v(SettingId.WT_ENABLED) + v(7), E.H3_SETTINGS_ERROR, id="wt-enabled-7"),
        pytest.param(GOOD + v(0x21), E.H3_FRAME_ERROR, id="value-missing"),
        pytest.param(GOOD + b"\x80\x00", E.H3_FRAME_ERROR, id="truncated-varint"),
        pytest.param(
            b"".join(v(0x21 + 0x1F * i) + v(i) for i in range(4000)),
            E.H3_EXCESSIVE_LOAD,
            id="over-max-header-size",
        ),
    ],
)
def test_invalid_settings_close_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offender: str, payload: bytes, code: int
) -> None:
    bad_settings(monkeypatch, offender, payload)
    pair = Pair(tmp_path)
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, offender, code, in_first_flight=True)


@pytest.mark.parametrize("offender", BOTH)
def test_unknown_and_grease_settings_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offender: str
) -> None:
    grease = [0x21, 0x1F * 1000 + 0x21, 0x3FFF_FFFF]
    extra = b"".join(v(key) + v(12345) for key in grease)
    bad_settings(monkeypatch, offender, GOOD + extra)
    pair = Pair(tmp_path)
    sid = pair.open_session()
    victim = test_core.core(pair, test_core.other(offender))
    assert victim.peer_settings is not None
    assert all(victim.peer_settings[key] == 12345 for key in grease)
    assert_healthy(pair, sid)


# ----------------------------------------------------------------------------- capsules


def capsule(ctype: int, value: bytes) -> bytes:
    return encode_frame(0x00, encode_capsule(ctype, value))


CAPSULE_ERRORS = [
    pytest.param(capsule(0x2843, b"\0\0"), E.H3_MESSAGE_ERROR, id="close-too-short"),
    pytest.param(
        capsule(0x2843, b"\0\0\0\1" + b"r" * 1025), E.H3_MESSAGE_ERROR, id="close-reason-1025"
    ),
    pytest.param(
        capsule(0x2843, b"\0\0\0\1" + b"r" * 1040), E.H3_MESSAGE_ERROR, id="close-reason-1040"
    ),
    pytest.param(
        capsule(0x2843, b"\0\0\0\1" + b"r" * 5000), E.H3_MESSAGE_ERROR, id="close-reason-5000"
    ),
    pytest.param(v(0x00) + v(10) + v(0x2843) + v(1 << 30), E.H3_MESSAGE_ERROR, id="close-huge"),
    pytest.param(capsule(CapsuleType.WT_MAX_DATA, b""), E.H3_MESSAGE_ERROR, id="max-data-empty"),
    pytest.param(
        capsule(CapsuleType.WT_MAX_DATA, b"\x80"), E.H3_MESSAGE_ERROR, id="max-data-truncated"
    ),
    pytest.param(
        capsule(CapsuleType.WT_MAX_STREAMS_BIDI, v(500) + b"x"),
        E.H3_MESSAGE_ERROR,
        id="max-streams-trailing",
    ),
    pytest.param(
        capsule(CapsuleType.WT_MAX_DATA, v(1)), E.WT_FLOW_CONTROL_ERROR, id="max-data-decreased"
    ),
    pytest.param(
        capsule(CapsuleType.WT_MAX_STREAMS_UNI, v(0)),
        E.WT_FLOW_CONTROL_ERROR,
        id="max-streams-decreased",
    ),
]


@pytest.mark.parametrize(("payload", "code"), CAPSULE_ERRORS)
def test_bad_capsule_closes_only_that_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes, code: int
) -> None:
    pair = Pair(tmp_path)
    bad, good = two_sessions(pair)
    tap = Tap(monkeypatch, pair.client)
    pair.client.engine.send_stream_data(bad, payload)
    pair.roundtrip()
    assert_session_error(pair, tap, bad, code)
    assert_healthy(pair, good)


def test_capsule_cut_by_fin_closes_only_that_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 9297 3.3: a stream that ends inside a capsule is a malformed message."""
    pair = Pair(tmp_path)
    bad, good = two_sessions(pair)
    tap = Tap(monkeypatch, pair.client)
    piece = v(0x2843) + v(50) + b"\0\0\0\1partial"
    pair.client.engine.send_stream_data(bad, encode_frame(0x00, piece), True)
    pair.roundtrip()
    assert_session_error(pair, tap, bad, E.H3_MESSAGE_ERROR)
    assert_healthy(pair, good)


def test_close_reason_of_exactly_1024_bytes_is_accepted(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    bad, good = two_sessions(pair)
    reason = "é" * 512  # 1024 bytes of UTF-8
    pair.client.engine.send_stream_data(bad, capsule(0x2843, b"\0\0\0\7" + reason.encode()), True)
    pair.roundtrip()
    assert events(pair, "server") == [ev.SessionClosed(bad, 7, reason, True)]
    assert_healthy(pair, good)


# ----------------------------------------------------------------------------- WebTransport streams


@pytest.mark.parametrize("bidirectional", [True, False])
def test_stream_for_a_closed_session_is_refused_with_session_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bidirectional: bool
) -> None:
    pair = Pair(tmp_path)
    bad, good = two_sessions(pair)
    pair.server.close_session(bad, code=1)
    pair.roundtrip()
    events(pair, "client")
    events(pair, "server")
    before = footprint(pair.server)
    tap = Tap(monkeypatch, pair.client)
    head = v(0x41 if bidirectional else 0x54) + v(bad)
    opener = new_bidi if bidirectional else new_uni
    stream_id = opener(pair, head + b"late")
    pair.roundtrip()
    assert tap.stops() == {stream_id: SESSION_GONE}
    assert tap.resets() == ({stream_id: SESSION_GONE} if bidirectional else {})
    pair.client.engine.send_stream_data(stream_id, b"more", True)  # the peer finishes it
    # A second one, whole in one packet (data and FIN), is forgotten at once.
    opener(pair, head + b"whole", True)
    pair.roundtrip()
    assert events(pair, "server") == []
    assert footprint(pair.server) == before
    assert_healthy(pair, good)


@pytest.mark.parametrize("fin", [True, False], ids=["with-fin", "open"])
def test_stream_flood_for_an_unknown_session_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fin: bool
) -> None:
    pair = Pair(tmp_path, max_early_streams=8, early_timeout=2.0)
    _, good = two_sessions(pair)
    base = footprint(pair.server)
    tap = Tap(monkeypatch, pair.client)
    flood = [new_uni(pair, v(0x54) + v(400) + b"x" * 100, fin) for _ in range(60)]
    pair.roundtrip(limit=400)
    assert pair.server._early_count == 8
    assert sum(len(ids) for ids in pair.server._unknown_early.values()) == 8
    refused = {sid for sid, code in tap.stops().items() if code == BUFFERED_STREAM_REJECTED}
    if not fin:  # (a stream received whole needs no STOP_SENDING)
        assert refused == set(flood[8:])  # the first ones wait, the rest are refused at once
    assert events(pair, "server") == []
    # After early_timeout the waiting ones are refused too and every table is back to normal.
    pair.now += 2.5
    pair.server.handle_timer(pair.now)
    pair.roundtrip(limit=400)
    refused = {sid for sid, code in tap.stops().items() if code == BUFFERED_STREAM_REJECTED}
    if not fin:
        assert refused == set(flood)
        for stream_id in flood:  # the peer ends the refused streams
            pair.client.engine.send_stream_data(stream_id, b"", True)
        pair.roundtrip(limit=400)
    assert footprint(pair.server) == base
    assert_healthy(pair, good)


def test_stream_flood_for_a_pending_session_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path, max_early_streams=4)
    good = pair.open_session("/good")
    events(pair, "server")
    tap = Tap(monkeypatch, pair.client)
    pending = pair.client.open_session(authority=AUTHORITY, path="/pending")
    flood = [new_bidi(pair, v(0x41) + v(pending) + b"early", True) for _ in range(20)]
    pair.roundtrip()
    session = pair.server._sessions[pending]
    assert session.early_streams == pair.server._early_count == 4
    assert all(tap.stopped(sid, BUFFERED_STREAM_REJECTED) for sid in flood[4:])
    assert not set(tap.stops()) & set(flood[:4])
    assert_healthy(pair, good)
    events(pair, "server")
    pair.server.accept_session(pending)
    pair.roundtrip()
    opened = [e.stream_id for e in events(pair, "server") if isinstance(e, ev.StreamOpened)]
    assert opened == flood[:4]
    assert pair.server._early_count == 0


def test_early_stream_over_max_early_bytes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path)
    _, good = two_sessions(pair)
    pair.server.max_early_bytes = 4096
    tap = Tap(monkeypatch, pair.client)
    stream_id = new_uni(pair, v(0x54) + v(400) + b"x" * 10_000)
    pair.roundtrip(limit=400)
    assert tap.stops() == {stream_id: BUFFERED_STREAM_REJECTED}
    waiting = pair.server._streams.get(stream_id)
    assert waiting is None or len(waiting.buf) <= 4096 + 1500
    assert_healthy(pair, good)


def test_refused_early_stream_of_a_pending_session_is_not_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path, max_early_streams=4)
    pair.server.max_early_bytes = 1000  # a pending session may hold 4 x 1000 early bytes
    good = pair.open_session("/good")
    events(pair, "server")
    tap = Tap(monkeypatch, pair.client)
    pending = pair.client.open_session(authority=AUTHORITY, path="/pending")
    small = new_bidi(pair, v(0x41) + v(pending) + b"small", True)
    big = new_bidi(pair, v(0x41) + v(pending) + b"x" * 5000, True)
    pair.roundtrip()
    assert tap.stopped(big, BUFFERED_STREAM_REJECTED)
    assert pair.server._early_count == 1
    events(pair, "server")
    pair.server.accept_session(pending)
    pair.roundtrip()
    # Only the stream that was kept reaches the application, with its data.
    got = events(pair, "server")
    assert [e.stream_id for e in got if isinstance(e, ev.StreamOpened)] == [small]
    assert [e.data for e in got if isinstance(e, ev.StreamData)] == [b"small"]
    assert pair.server._early_count == 0
    assert_healthy(pair, good)


def test_refused_stream_for_an_unknown_session_is_not_attached_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path)
    pair.server.max_early_bytes = 4096
    good = pair.open_session("/good")
    events(pair, "server")
    tap = Tap(monkeypatch, pair.client)
    future = pair.client.engine.next_stream_id(False)  # the next CONNECT stream's ID
    big = new_uni(pair, v(0x54) + v(future) + b"x" * 10_000)
    kept = new_uni(pair, v(0x54) + v(future) + b"kept", True)
    pair.roundtrip(limit=400)
    assert tap.stopped(big, BUFFERED_STREAM_REJECTED)
    assert pair.server._early_count == 1
    assert pair.client.open_session(authority=AUTHORITY, path="/late") == future
    pair.roundtrip()
    events(pair, "server")
    pair.server.accept_session(future)
    pair.roundtrip(limit=400)
    got = events(pair, "server")
    assert [e.stream_id for e in got if isinstance(e, ev.StreamOpened)] == [kept]
    assert pair.server._early_count == 0
    assert_healthy(pair, good)


# ----------------------------------------------------------------------------- data after FIN


def test_data_after_fin_is_a_final_size_error(tmp_path: Path) -> None:
    """The engine enforces the final size: data beyond it closes the connection.

    The bad peer is an aioquic client (a test can make it write past its FIN).
    """
    pair = Pair(tmp_path, client_engine="aioquic")
    bad, _ = two_sessions(pair)
    engine = cast(AioquicEngine, pair.client.engine)
    stream_id = new_bidi(pair, v(0x41) + v(bad) + b"done", True)
    pair.roundtrip()
    sender = engine._quic._streams[stream_id].sender
    sender._buffer_fin = None  # let the sender write past its own FIN, as a bad peer would
    engine.send_stream_data(stream_id, b"after the end")
    pair.roundtrip()
    settle(pair)
    assert pair.server.engine.is_closed
    for side in BOTH:
        got = [e for e in events(pair, side) if isinstance(e, ev.ConnectionTerminated)]
        assert [e.error_code for e in got] == [FINAL_SIZE_ERROR]


# ----------------------------------------------------------------------------- flow control


def stingy_session(pair: Pair, **limits: int) -> tuple[int, int]:
    """A healthy session, then one whose server side grants less than it advertised."""
    good = pair.open_session("/good")
    pair.server.limits = LocalLimits(**limits)
    bad = second_session(pair, "/stingy")
    events(pair, "client")
    events(pair, "server")
    return bad, good


@pytest.mark.parametrize(
    ("limits", "bidirectional", "payload"),
    [
        pytest.param({"initial_max_data": 512}, True, b"d" * 8000, id="too-much-data"),
        pytest.param({"initial_max_streams_bidi": 0}, True, b"", id="too-many-bidi"),
        pytest.param({"initial_max_streams_uni": 0}, False, b"", id="too-many-uni"),
    ],
)
def test_flow_control_violation_closes_only_that_session(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    limits: dict[str, int],
    bidirectional: bool,
    payload: bytes,
) -> None:
    pair = Pair(tmp_path)
    bad, good = stingy_session(pair, **limits)
    tap = Tap(monkeypatch, pair.client)
    stream_id = pair.client.create_stream(bad, bidirectional=bidirectional)
    pair.client.send_stream_data(stream_id, payload + b"!")
    pair.roundtrip()
    assert_session_error(pair, tap, bad, E.WT_FLOW_CONTROL_ERROR)
    assert tap.stopped(stream_id, SESSION_GONE)
    assert stream_id not in pair.server._streams
    assert_healthy(pair, good)


# ----------------------------------------------------------------------------- datagrams


def test_datagram_flood_for_unknown_sessions_is_dropped(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    _, good = two_sessions(pair)
    before = footprint(pair.server)
    for i in range(2000):
        pair.client.engine.send_datagram(v(100 + i) + b"who?")
    pair.roundtrip(limit=1000)
    assert events(pair, "server") == []
    assert footprint(pair.server) == before
    assert_healthy(pair, good)


def test_datagram_flood_for_a_pending_session_is_bounded(tmp_path: Path) -> None:
    pair = Pair(tmp_path, max_early_streams=5)
    good = pair.open_session("/good")
    pending = pair.client.open_session(authority=AUTHORITY, path="/pending")
    pair.roundtrip()
    events(pair, "server")
    for i in range(500):
        pair.client.engine.send_datagram(v(pending // 4) + b"%d" % i)
    pair.roundtrip(limit=1000)
    assert len(pair.server._sessions[pending].early) == 5
    assert events(pair, "server") == []
    pair.server.accept_session(pending)
    pair.roundtrip()
    got = [e for e in events(pair, "server") if isinstance(e, ev.DatagramReceived)]
    assert got == [ev.DatagramReceived(pending, b"%d" % i) for i in range(5)]
    assert_healthy(pair, good)


def test_second_control_stream_flood_does_not_survive(tmp_path: Path) -> None:
    """A peer opening control streams again and again is stopped at the first duplicate."""
    pair = Pair(tmp_path)
    two_sessions(pair)
    for _ in range(5):
        new_uni(pair, v(0x00) + SETTINGS_FRAME)
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, "client", E.H3_STREAM_CREATION_ERROR)


@pytest.mark.parametrize("unidirectional", [True, False], ids=["uni", "bidi"])
@pytest.mark.parametrize("first_bytes", [b"\x40", v(0x21)], ids=["cut-varint", "grease-frame"])
def test_flood_of_streams_reset_before_they_say_what_they_are_is_bounded(
    tmp_path: Path, first_bytes: bytes, unidirectional: bool
) -> None:
    """Streams opened with a partial header (or frame), then reset: nothing stays behind."""
    pair = Pair(tmp_path)
    _, good = two_sessions(pair)
    before = footprint(pair.server)
    engine = pair.client.engine
    for _ in range(6 if unidirectional else 2):  # uni: more than the QUIC stream limit in all
        for _ in range(50):
            stream_id = engine.next_stream_id(unidirectional)
            engine.send_stream_data(stream_id, first_bytes)
            pair.transfer()
            engine.reset_stream(stream_id, 0x100)
        pair.roundtrip(limit=400)
    assert footprint(pair.server) == before
    assert_healthy(pair, good)


# ----------------------------------------------------------------- requests before SETTINGS


def memory_server() -> tuple[WebTransportProtocol, MemoryEngine]:
    engine = MemoryEngine()
    return WebTransportProtocol(engine), engine


def feed(protocol: WebTransportProtocol, engine: MemoryEngine, event: EngineEvent) -> None:
    engine.pending.append(event)
    protocol.receive_datagram(b"", ("192.0.2.1", 1), 0.0)


def client_settings() -> EngineStreamData:
    return EngineStreamData(2, v(0x00) + SETTINGS_FRAME, False)


def test_malformed_request_held_until_settings_resets_its_own_stream() -> None:
    """A request that waited for SETTINGS is judged when they come; its fault stays its own."""
    protocol, engine = memory_server()
    section = [*connect_section(), (b"Upper", b"case")]
    feed(protocol, engine, EngineStreamData(0, headers_frame(0, section), False))
    feed(protocol, engine, EngineStreamData(4, headers_frame(4, connect_section()), False))
    assert protocol.pop_events() == []  # held: the client's SETTINGS are not there yet
    feed(protocol, engine, client_settings())
    assert engine.resets == {0: E.H3_MESSAGE_ERROR}  # not the control stream
    assert engine.closed_with is None
    requested = [e for e in protocol.pop_events() if isinstance(e, ev.SessionRequested)]
    assert [e.session_id for e in requested] == [4]


def test_request_reset_while_held_for_settings_is_dropped() -> None:
    protocol, engine = memory_server()
    feed(protocol, engine, EngineStreamData(0, headers_frame(0, connect_section()), False))
    feed(protocol, engine, EngineStreamReset(0, E.H3_REQUEST_CANCELLED))
    feed(protocol, engine, client_settings())
    assert not [e for e in protocol.pop_events() if isinstance(e, ev.SessionRequested)]
    assert protocol._sessions == {} and 0 not in protocol._streams


# ----------------------------------------------------------------------------- slow clients


def response_status(data: bytes, stream_id: int) -> bytes:
    """The :status of the one HEADERS frame ``data`` holds."""
    frame_type, pos = decode_varint(data)
    length, pos = decode_varint(data, pos)
    assert frame_type == 0x01 and pos + length == len(data)
    headers, _ = HeaderCodec().decode(stream_id, data[pos:])
    return dict(headers)[b":status"]


def test_a_request_whose_headers_never_complete_is_answered_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path, request_timeout=10.0)
    _, good = two_sessions(pair)
    tap = Tap(monkeypatch, pair.client)
    slow = new_bidi(pair, v(0x01) + v(50) + b"cut")  # a HEADERS frame that never completes
    pair.roundtrip()
    pair.now += 9.9
    pair.server.handle_timer(pair.now)
    pair.roundtrip()
    assert tap.stream_bytes(slow) == (b"", False)  # not yet
    pair.now += 0.1
    pair.server.handle_timer(pair.now)
    pair.roundtrip()
    data, fin = tap.stream_bytes(slow)
    assert fin and response_status(data, slow) == b"408"
    assert tap.stopped(slow, E.H3_NO_ERROR)
    pair.client.engine.send_stream_data(slow, b"the rest, too late" * 4, True)
    pair.roundtrip()
    assert slow not in pair.server._streams  # ignored until it ended, then forgotten
    assert pair.server._request_deadlines == {}
    assert_healthy(pair, good)


def test_requests_and_streams_that_arrive_whole_have_no_deadline(tmp_path: Path) -> None:
    pair = Pair(tmp_path, request_timeout=10.0)
    sid = pair.open_session()
    exchange_on_new_stream(pair, "client", sid, b"a WebTransport stream")
    assert pair.server._request_deadlines == {}


def test_a_connection_without_a_session_is_closed_after_no_session_timeout(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path, no_session_timeout=20.0)
    pair.roundtrip()  # handshake done, no session yet
    started = pair.now
    pair.now = started + 19.0
    pair.server.handle_timer(pair.now)
    pair.roundtrip()
    assert not pair.server.engine.is_closed
    sid = pair.client.open_session(authority=AUTHORITY, path="/late")
    pair.roundtrip()
    (request,) = pair.take("server", ev.SessionRequested)
    assert isinstance(request, ev.SessionRequested)
    pair.server.accept_session(request.session_id)
    pair.roundtrip()
    pair.now = started + 40.0  # a session is open: no limit
    pair.server.handle_timer(pair.now)
    pair.roundtrip()
    assert not pair.server.engine.is_closed
    pair.client.close_session(sid, code=0, reason="")
    pair.roundtrip()  # the last session ended: the clock starts again
    ended = pair.now
    pair.now = ended + 19.0
    pair.server.handle_timer(pair.now)
    assert not pair.server.engine.is_closed
    pair.now = ended + 20.0
    pair.server.handle_timer(pair.now)
    pair.roundtrip()
    settle(pair)
    got = [e for e in events(pair, "client") if isinstance(e, ev.ConnectionTerminated)]
    assert [(e.error_code, e.by_peer) for e in got] == [(E.H3_NO_ERROR, True)]
