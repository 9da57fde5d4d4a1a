"""Session endings, draining, dialect choice, stateless reset and session flow control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aioquic import tls

from pywebtransport.protocol import CreditExhausted, WebTransportProtocol
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.codec import encode_capsule, encode_frame, encode_varint
from pywebtransport.protocol.packets import stateless_reset, stateless_reset_token
from pywebtransport.protocol.settings import LocalLimits
from pywebtransport.protocol.wire import CapsuleType, Dialect, FrameType, H3ErrorCode
from tests.protocol.pair import Pair


def closed(pair: Pair, side: str) -> ev.SessionClosed:
    (event,) = pair.take(side, ev.SessionClosed)
    assert isinstance(event, ev.SessionClosed)
    return event


def test_fin_on_connect_stream_without_capsule_ends_the_session(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    pair.client.engine.send_stream_data(sid, b"", True)
    pair.roundtrip()
    event = closed(pair, "server")
    assert (event.session_id, event.code, event.by_peer) == (sid, 0, True)
    # The server answers with its own FIN; the client learns the session is over too.
    assert closed(pair, "client").session_id == sid


def test_reset_of_connect_stream_ends_the_session(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    pair.client.engine.reset_stream(sid, H3ErrorCode.H3_REQUEST_CANCELLED)
    pair.roundtrip()
    event = closed(pair, "server")
    assert event.by_peer and "reset" in event.reason
    with pytest.raises(Exception, match="not open"):
        pair.server.create_stream(sid, bidirectional=True)


def test_drain_capsule_is_reported_and_session_stays_usable(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    pair.server.drain_session(sid)
    pair.roundtrip()
    (drain,) = pair.take("client", ev.SessionDraining)
    assert isinstance(drain, ev.SessionDraining) and drain.session_id == sid
    stream = pair.client.create_stream(sid, bidirectional=True)
    pair.client.send_stream_data(stream, b"after drain", end_stream=True)
    pair.roundtrip()
    data = [e for e in pair.server_events if isinstance(e, ev.StreamData)]
    assert data and data[-1].data == b"after drain"


def test_unknown_and_grease_capsules_are_ignored(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    grease = encode_capsule(0x1F * 7 + 0x21, b"\x01" * 300) + encode_capsule(0x00, b"")
    pair.client.engine.send_stream_data(sid, encode_frame(FrameType.DATA, grease))
    pair.roundtrip()
    assert not pair.take("server", ev.SessionClosed)
    pair.client.close_session(sid, code=3, reason="after grease")
    pair.roundtrip()
    event = closed(pair, "server")
    assert (event.code, event.reason) == (3, "after grease")


def test_client_speaks_draft02_when_server_offers_only_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pywebtransport.protocol import http3 as core_module  # where SETTINGS are built
    from pywebtransport.protocol.wire import SettingId

    def draft02_only(limits: LocalLimits) -> dict[int, int]:
        return {
            SettingId.ENABLE_CONNECT_PROTOCOL: 1,
            SettingId.H3_DATAGRAM: 1,
            SettingId.ENABLE_WEBTRANSPORT_DRAFT02: 1,
        }

    monkeypatch.setattr(core_module, "build_settings", draft02_only)
    pair = Pair(tmp_path)
    pair.roundtrip()
    assert pair.client.dialect is Dialect.DRAFT02
    sid = pair.client.open_session(authority="localhost:4433", path="/echo")
    pair.roundtrip()
    (request,) = pair.take("server", ev.SessionRequested)
    assert isinstance(request, ev.SessionRequested)
    assert request.dialect is Dialect.DRAFT02 and request.protocol == "webtransport"
    assert (b"sec-webtransport-http3-draft02", b"1") in request.headers
    pair.server.accept_session(sid)
    pair.roundtrip()
    (est,) = pair.take("client", ev.SessionEstablished)
    assert isinstance(est, ev.SessionEstablished)
    assert (b"sec-webtransport-http3-draft", b"draft02") in est.headers


def test_stateless_reset_terminates_the_connection(tmp_path: Path) -> None:
    key = b"r" * 32
    pair = Pair(tmp_path, reset_key=key)
    pair.open_session()
    # The token of the server's first connection ID (the transport parameter) is derived.
    token = stateless_reset_token(key, pair.server.engine.host_cid)  # type: ignore[attr-defined]
    packet = bytes([0x40]) + b"\x55" * 30 + token
    pair.client.receive_datagram(packet, ("127.0.0.1", 4433), pair.now)
    terminated = pair.client.pop_events()
    assert any(
        isinstance(e, ev.ConnectionTerminated) and e.by_peer and "stateless" in e.reason
        for e in terminated
    )
    assert pair.client.datagrams_to_send(pair.now) == []


@pytest.mark.aioquic_only("qh3 draws the tokens of the connection IDs after the first at random")
def test_reset_tokens_are_derived_from_the_key_for_every_connection_id(tmp_path: Path) -> None:
    key = b"k" * 32
    pair = Pair(tmp_path, reset_key=key)
    pair.open_session()
    issued = pair.server.engine._quic._host_cids  # type: ignore[attr-defined]
    assert len(issued) > 1  # the first CID and those announced in NEW_CONNECTION_ID
    for cid in issued:
        assert cid.stateless_reset_token == stateless_reset_token(key, cid.cid)
    # A server that lost the connection (a restart with the same key) builds a reset that the
    # client recognises for any CID it may be using.
    lost = issued[-1].cid
    reset = stateless_reset(stateless_reset_token(key, lost), b"\x9c" * 20)
    assert (
        len(reset) == 36
        and reset[0] & 0xC0 == 0x40
        and reset.endswith(issued[-1].stateless_reset_token)
    )
    pair.client.receive_datagram(reset, ("127.0.0.1", 4433), pair.now)
    assert any(isinstance(e, ev.ConnectionTerminated) for e in pair.client.pop_events())


def test_reset_tokens_depend_on_key_and_connection_id() -> None:
    token = stateless_reset_token(b"a" * 16, b"12345678")
    assert len(token) == 16 and token == stateless_reset_token(b"a" * 16, b"12345678")
    assert token != stateless_reset_token(b"b" * 16, b"12345678")
    assert token != stateless_reset_token(b"a" * 16, b"12345679")
    with pytest.raises(ValueError):
        stateless_reset(token, b"1234")  # 21 bytes at least: 5 unpredictable + 16


def test_flow_control_limits_data_and_grants_more(tmp_path: Path) -> None:
    pair = Pair(tmp_path, limits=LocalLimits(initial_max_data=1000, initial_max_streams_bidi=2))
    sid = pair.open_session()
    stream = pair.client.create_stream(sid, bidirectional=True)
    assert pair.client.send_capacity(stream) == 1000
    with pytest.raises(CreditExhausted):
        pair.client.send_stream_data(stream, b"x" * 1001)
    pair.client.send_stream_data(stream, b"x" * 1000)
    assert pair.client.send_capacity(stream) == 0
    pair.roundtrip()
    # Nothing was read on the server: no credit comes back, however long we wait.
    assert not pair.take("client", ev.CreditAvailable)
    assert pair.client.send_capacity(stream) == 0
    pair.server.stream_consumed(stream, 600)
    pair.roundtrip()
    # The server's application read 600 bytes: credit follows what it consumed.
    assert pair.take("client", ev.CreditAvailable)
    assert pair.client.send_capacity(stream) == 600


def test_a_writer_out_of_session_credit_tells_the_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path, limits=LocalLimits(initial_max_data=1000))
    sid = pair.open_session()
    stream = pair.client.create_stream(sid, bidirectional=True)
    received: list[tuple[int, bytes]] = []
    on_capsule = pair.server._on_capsule

    def spy(session: Any, ctype: int, value: bytes) -> None:
        received.append((ctype, value))
        on_capsule(session, ctype, value)

    monkeypatch.setattr(pair.server, "_on_capsule", spy)
    pair.client.send_blocked(stream)  # credit left: nothing to tell
    pair.client.send_stream_data(stream, b"x" * 1000)
    pair.client.send_blocked(stream)  # the application has more: WT_DATA_BLOCKED at 1000
    pair.client.send_blocked(stream)  # once until new credit arrives
    pair.roundtrip()
    assert received == [(CapsuleType.WT_DATA_BLOCKED, encode_varint(1000))]
    pair.server.stream_consumed(stream, 1000)
    pair.roundtrip()
    assert pair.take("client", ev.CreditAvailable)
    pair.client.send_blocked(stream)  # credit again: nothing to tell
    pair.roundtrip()
    assert [ctype for ctype, _ in received] == [CapsuleType.WT_DATA_BLOCKED]


def test_flow_control_limits_streams(tmp_path: Path) -> None:
    pair = Pair(tmp_path, limits=LocalLimits(initial_max_streams_bidi=2))
    sid = pair.open_session()
    pair.client.create_stream(sid, bidirectional=True)
    pair.client.create_stream(sid, bidirectional=True)
    with pytest.raises(CreditExhausted):
        pair.client.create_stream(sid, bidirectional=True)
    pair.roundtrip()
    # Both streams are still open: no stream credit comes back.
    assert not pair.take("client", ev.CreditAvailable)
    first = sid + 4  # the client's first stream after the CONNECT stream
    pair.client.send_stream_data(first, b"", end_stream=True)
    pair.roundtrip()
    pair.server.send_stream_data(first, b"", end_stream=True)
    assert not pair.take("client", ev.CreditAvailable)  # not read to its end yet
    pair.server.stream_released(first)
    pair.roundtrip()
    # One stream is finished both ways and released by the server application: one more.
    assert pair.take("client", ev.CreditAvailable)
    pair.client.create_stream(sid, bidirectional=True)
    with pytest.raises(CreditExhausted):
        pair.client.create_stream(sid, bidirectional=True)


def test_peer_exceeding_data_credit_closes_only_its_session(tmp_path: Path) -> None:
    pair = Pair(tmp_path, limits=LocalLimits(initial_max_data=1000))
    sid = pair.open_session()
    stream = pair.client.create_stream(sid, bidirectional=True)
    # Bypass the client's flow control, as a misbehaving peer would.
    pair.client.engine.send_stream_data(stream, b"y" * 1500)
    pair.roundtrip()
    event = closed(pair, "server")
    assert event.code == H3ErrorCode.WT_FLOW_CONTROL_ERROR
    client_side = closed(pair, "client")
    assert f"0x{H3ErrorCode.WT_FLOW_CONTROL_ERROR:x}" in client_side.reason
    assert not pair.server.terminated


def test_decreasing_max_data_is_a_flow_control_error(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    capsule = encode_capsule(CapsuleType.WT_MAX_DATA, encode_varint(10))
    pair.client.engine.send_stream_data(sid, encode_frame(FrameType.DATA, capsule))
    pair.roundtrip()
    assert closed(pair, "server").code == H3ErrorCode.WT_FLOW_CONTROL_ERROR


def test_credit_grants_stay_half_a_window_apart(tmp_path: Path) -> None:
    window = 4000
    pair = Pair(tmp_path, limits=LocalLimits(initial_max_data=window))
    sid = pair.open_session()
    stream = pair.client.create_stream(sid, bidirectional=True)
    grants = 0
    sent = 0
    # Send 25 windows' worth in small pieces; each grant must cover half a window at least.
    while sent < 25 * window:
        room = pair.client.send_capacity(stream)
        assert room > 0, f"stalled after {sent} bytes"
        piece = min(room, 500)
        pair.client.send_stream_data(stream, b"d" * piece)
        sent += piece
        pair.roundtrip()
        pair.server.stream_consumed(stream, piece)  # the application keeps up
        grants += len(pair.take("client", ev.CreditAvailable))
    assert 25 <= grants <= 2 * 25 + 2


def stream_data(pair: Pair) -> list[tuple[int, bytes]]:
    """The server's StreamData events so far, as (stream ID, bytes)."""
    events = pair.take("server", ev.StreamData)
    return [(e.stream_id, e.data) for e in events if isinstance(e, ev.StreamData) and e.data]


@pytest.mark.parametrize("how", ["stop", "release"])
def test_bytes_after_the_receiving_side_was_given_up_are_dropped(tmp_path: Path, how: str) -> None:
    """Stopped (or released early) and our side finished: late bytes are not a new stream."""
    pair = Pair(tmp_path)
    sid = pair.open_session()
    stream = pair.client.create_stream(sid, bidirectional=True)
    pair.client.send_stream_data(stream, b"first")
    pair.roundtrip()
    assert stream_data(pair) == [(stream, b"first")]
    if how == "stop":
        pair.server.stop_stream(stream, code=5)
    else:
        pair.server.stream_consumed(stream, 5)
        pair.server.stream_released(stream)  # before its end: a STOP_SENDING goes out
    pair.server.send_stream_data(stream, b"", end_stream=True)
    # The client keeps writing before it hears the STOP_SENDING; read as a new stream, these
    # bytes would be a HEADERS frame of bad QPACK (a connection error).
    pair.client.send_stream_data(stream, b"\x01\x03\xff\xff\xff" * 80)
    pair.roundtrip()
    assert not pair.server.engine.is_closed and not pair.client.engine.is_closed
    assert stream_data(pair) == []
    stopped = [e for e in pair.take("client", ev.StreamStopped) if isinstance(e, ev.StreamStopped)]
    assert [e.app_code for e in stopped] == [5 if how == "stop" else 0]
    # The client answered with RESET_STREAM: nothing more arrives, so the server forgets it.
    assert stream not in pair.server._streams
    second = pair.client.create_stream(sid, bidirectional=True)
    pair.client.send_stream_data(second, b"ok", end_stream=True)
    pair.roundtrip()
    assert stream_data(pair) == [(second, b"ok")]


@pytest.mark.aioquic_only("the aioquic engine's trimmed 1-RTT TLS buffer (qh3 keeps none)")
def test_tls_message_from_a_client_after_the_handshake_is_a_clean_crypto_error(
    tmp_path: Path,
) -> None:
    """The server keeps only a 64-byte 1-RTT TLS buffer: nothing valid can arrive there."""
    pair = Pair(tmp_path)
    pair.open_session()
    pair.roundtrip()
    server_quic = pair.server.engine._quic  # type: ignore[attr-defined]
    assert server_quic._crypto_buffers[tls.Epoch.ONE_RTT].capacity == 64
    client_quic = pair.client.engine._quic  # type: ignore[attr-defined]
    ticket_like = bytes([4, 0, 1, 0]) + bytes(256)  # a 260-byte NewSessionTicket, client-sent
    client_quic._crypto_streams[tls.Epoch.ONE_RTT].sender.write(ticket_like)
    pair.roundtrip()
    pair.now += 5.0  # past the client's draining period, when it reports the termination
    pair.client.handle_timer(pair.now)
    pair.client_events += pair.client.pop_events()
    terminated = [e for e in pair.client_events if isinstance(e, ev.ConnectionTerminated)]
    assert pair.server.engine.is_closed and terminated
    assert terminated[0].error_code == 0x100 + 10  # CRYPTO_ERROR: unexpected_message alert


# ----------------------------------------------------------------------------- keep-alive, liveness


def test_keep_alive_pings_while_a_session_is_open(tmp_path: Path) -> None:
    pair = Pair(tmp_path, keep_alive_interval=5.0)
    pair.roundtrip()  # handshake: no session yet
    start = pair.now
    pair.now = start + 5.0
    pair.client.handle_timer(pair.now)
    assert pair.client.datagrams_to_send(pair.now) == []  # no session: nothing to keep alive
    sid = pair.open_session()
    pair.roundtrip()
    due = pair.client.get_timer()
    assert due is not None and due <= pair.now + 5.0
    pair.now = max(pair.now, due)
    pair.client.handle_timer(pair.now)
    assert pair.client.datagrams_to_send(pair.now) != []  # the PING
    pair.client.close_session(sid)
    pair.roundtrip()


def test_a_silent_peer_is_declared_lost_after_the_liveness_timeout(tmp_path: Path) -> None:
    pair = Pair(tmp_path, liveness_timeout=10.0)
    pair.open_session()
    pair.roundtrip()
    heard = pair.now
    pair.client_events.clear()
    pair.now = heard + 9.9
    pair.client.handle_timer(pair.now)
    assert not pair.client.terminated
    pair.now = heard + 10.0
    pair.client.handle_timer(pair.now)
    (lost,) = [e for e in pair.client.pop_events() if isinstance(e, ev.ConnectionTerminated)]
    assert (lost.reason, lost.by_peer) == ("no packet from the peer in 10 s", False)
    assert pair.client.get_timer() != heard + 10.0  # the deadline is gone with the connection


def is_closing(core: WebTransportProtocol) -> bool:
    return core.closing


def test_a_connection_closes_once_its_last_close_capsule_is_delivered(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    pair.client.close_session(sid, code=7, reason="bye")
    pair.client.close_when_delivered(sid, linger=2.0, now=pair.now)
    pair.transfer()  # the capsule and FIN go out; nothing is acknowledged yet
    assert not is_closing(pair.client)
    pair.roundtrip()  # the server's ACK arrives: the next pass closes
    assert is_closing(pair.client)
    closed = [e for e in pair.server_events if isinstance(e, ev.SessionClosed)]
    assert [(e.code, e.reason) for e in closed] == [(7, "bye")]  # the capsule came first


def test_an_undelivered_close_capsule_waits_at_most_the_linger(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    pair.client.close_session(sid, code=7, reason="bye")
    start = pair.now
    pair.client.close_when_delivered(sid, linger=2.0, now=start)
    pair.transfer(drop=True)  # lost
    pair.now = start + 1.9
    pair.client.handle_timer(pair.now)
    assert not is_closing(pair.client)
    pair.now = start + 2.0
    pair.client.handle_timer(pair.now)
    assert is_closing(pair.client)
