"""The sans-I/O core, two of them back to back: sessions, streams, datagrams and bad peers.

Every byte goes through ``WebTransportProtocol.receive_datagram`` (``Pair.transfer``), so a
test that finishes proves the core raised nothing into its caller. Misbehaving peers are made
by writing raw bytes with the engine (``engine.send_stream_data`` / ``send_datagram``), below
the core's own framing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pywebtransport.protocol import AioquicEngine, WebTransportProtocol
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.codec import encode_capsule, encode_frame, encode_varint
from pywebtransport.protocol.errors import DatagramTooLarge, ProtocolUsageError
from pywebtransport.protocol.headers import HeaderCodec
from pywebtransport.protocol.quic import (
    EngineDatagram,
    EngineEvent,
    EngineStopSending,
    EngineStreamData,
    EngineStreamReset,
)
from pywebtransport.protocol.settings import LocalLimits, build_settings, encode_settings
from pywebtransport.protocol.wire import Dialect, H3ErrorCode, app_code_to_h3
from tests.protocol.pair import CLIENT_ADDR, SERVER_ADDR, Pair, engine_class

NOISE = (ev.ConnectionIdIssued, ev.ConnectionIdRetired, ev.HandshakeCompleted, ev.SettingsReceived)
SESSION_GONE = 0x170D7B68
BUFFERED_STREAM_REJECTED = 0x3994BD84
AUTHORITY = "localhost:4433"
SETTINGS_FRAME = encode_frame(0x04, encode_settings(build_settings(LocalLimits())))

Side = str  # "client" or "server"


# ----------------------------------------------------------------------------- helpers


def other(side: Side) -> Side:
    return "server" if side == "client" else "client"


def core(pair: Pair, side: Side) -> WebTransportProtocol:
    return pair.client if side == "client" else pair.server


def events(pair: Pair, side: Side) -> list[ev.ProtocolEvent]:
    """Remove and return the events of ``side``, without handshake and connection-ID noise."""
    queue = pair.client_events if side == "client" else pair.server_events
    out = [e for e in queue if not isinstance(e, NOISE)]
    queue.clear()
    return out


def control_stream(protocol: WebTransportProtocol) -> int:
    """The core opens its control stream first: the first unidirectional stream of its side."""
    return 2 if protocol.is_client else 3


def encoder_stream(protocol: WebTransportProtocol) -> int:
    """The QPACK encoder stream is the second unidirectional stream the core opens."""
    return 6 if protocol.is_client else 7


def settle(pair: Pair) -> None:
    """Step time until both connections are terminated (closing and draining periods end)."""
    for _ in range(100):
        pair.transfer()
        if pair.client.terminated and pair.server.terminated:
            return
        if not pair.step(10.0):
            return


def accept_next(pair: Pair) -> ev.SessionRequested:
    (req,) = pair.take("server", ev.SessionRequested)
    assert isinstance(req, ev.SessionRequested)
    pair.server.accept_session(req.session_id)
    pair.roundtrip()
    return req


def second_session(pair: Pair, path: str = "/second") -> int:
    sid = pair.client.open_session(authority=AUTHORITY, path=path)
    pair.roundtrip()
    accept_next(pair)
    (est,) = pair.take("client", ev.SessionEstablished)
    assert isinstance(est, ev.SessionEstablished) and est.session_id == sid
    return sid


class Tap:
    """Records the QUIC-level events one core's engine hands to it (resets, raw datagrams)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, protocol: WebTransportProtocol) -> None:
        self.events: list[EngineEvent] = []
        self.qh3 = type(protocol.engine).__name__ == "Qh3Engine"
        original = protocol.engine.pop_events

        def pop_events() -> list[EngineEvent]:
            out = original()
            self.events.extend(out)
            return out

        monkeypatch.setattr(protocol.engine, "pop_events", pop_events)

    def resets(self) -> dict[int, int]:
        return {e.stream_id: e.error_code for e in self.events if isinstance(e, EngineStreamReset)}

    def stops(self) -> dict[int, int]:
        return {e.stream_id: e.error_code for e in self.events if isinstance(e, EngineStopSending)}

    def datagrams(self) -> list[bytes]:
        return [e.data for e in self.events if isinstance(e, EngineDatagram)]

    def stopped(self, stream_id: int, code: int) -> bool:
        """The peer asked ``stream_id``'s sender to stop with ``code`` (STOP_SENDING).

        On qh3 a missing STOP_SENDING also counts: qh3 sends none for a stream whose receiving
        side it already completed (FIN or RESET_STREAM received and delivered), and reports
        none that arrives for a stream it completed; there is nothing left to stop then
        (RFC 9000 3.5). Any STOP_SENDING that does arrive must carry ``code``.
        """
        got = self.stops().get(stream_id)
        return got == code or (got is None and self.qh3)

    def stream_bytes(self, stream_id: int) -> tuple[bytes, bool]:
        """Everything received on ``stream_id`` and whether the FIN came."""
        pieces = [e for e in self.events if isinstance(e, EngineStreamData)]
        mine = [e for e in pieces if e.stream_id == stream_id]
        return b"".join(e.data for e in mine), any(e.end_stream for e in mine)


def exchange_on_new_stream(pair: Pair, side: Side, sid: int, payload: bytes) -> None:
    """``side`` opens a bidi stream in ``sid``; the peer sees it and its data arrive."""
    opener = core(pair, side)
    stream_id = opener.create_stream(sid, bidirectional=True)
    opener.send_stream_data(stream_id, payload, end_stream=True)
    pair.roundtrip()
    assert events(pair, other(side)) == [
        ev.StreamOpened(sid, stream_id, True),
        ev.StreamData(stream_id, payload, True),
    ]


def exchange_datagram(pair: Pair, side: Side, sid: int, payload: bytes) -> None:
    core(pair, side).send_datagram(sid, payload)
    pair.roundtrip()
    assert events(pair, other(side)) == [ev.DatagramReceived(sid, payload)]


# ----------------------------------------------------------------------------- sessions


def test_the_servers_settings_come_with_its_handshake_flight(tmp_path: Path) -> None:
    """SETTINGS go as 0.5-RTT data: the client can send its request along with its Finished."""
    pair = Pair(tmp_path)
    for data, _ in pair.server.datagrams_to_send(pair.now):
        pair.client.receive_datagram(data, SERVER_ADDR, pair.now)
    assert any(isinstance(e, ev.HandshakeCompleted) for e in pair.client.pop_events())
    assert pair.client.peer_settings is not None
    sid = pair.client.open_session(authority="localhost:4433", path="/echo")
    for data, _ in pair.client.datagrams_to_send(pair.now):  # Finished and CONNECT together
        pair.server.receive_datagram(data, CLIENT_ADDR, pair.now)
    (request,) = [e for e in pair.server.pop_events() if isinstance(e, ev.SessionRequested)]
    assert request.session_id == sid


def test_session_open_speaks_draft15(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.roundtrip()
    (settings,) = pair.take("client", ev.SettingsReceived)
    assert isinstance(settings, ev.SettingsReceived)
    assert settings.dialect is Dialect.DRAFT15
    assert pair.client.dialect is Dialect.DRAFT15

    sid = pair.client.open_session(
        authority=AUTHORITY, path="/chat?room=1", headers=[(b"origin", b"https://localhost")]
    )
    assert sid == 0  # the first client-initiated bidirectional stream
    pair.roundtrip()
    (req,) = pair.take("server", ev.SessionRequested)
    assert req == ev.SessionRequested(
        session_id=sid,
        path="/chat?room=1",
        authority=AUTHORITY,
        protocol="webtransport-h3",
        headers=[(b"origin", b"https://localhost")],
        dialect=Dialect.DRAFT15,
    )
    assert events(pair, "client") == []  # nothing until the server answers

    pair.server.accept_session(sid, headers=[(b"x-hello", b"1")])
    pair.roundtrip()
    assert events(pair, "client") == [ev.SessionEstablished(sid, [(b"x-hello", b"1")])]
    assert pair.client.session_dialect(sid) is Dialect.DRAFT15
    assert pair.server.session_dialect(sid) is Dialect.DRAFT15
    exchange_on_new_stream(pair, "client", sid, b"works")


def test_a_session_can_be_accepted_with_any_success_status(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.roundtrip()
    sid = pair.client.open_session(authority=AUTHORITY, path="/")
    pair.roundtrip()
    assert len(pair.take("server", ev.SessionRequested)) == 1
    for status in (199, 300, 404):  # not a success: refused, and the request stays pending
        with pytest.raises(ProtocolUsageError):
            pair.server.accept_session(sid, status=status)
    pair.server.accept_session(sid, status=203, headers=[(b"set-cookie", b"id=1")])
    pair.roundtrip()
    assert pair.take("client", ev.SessionEstablished) == [
        ev.SessionEstablished(sid, [(b"set-cookie", b"id=1")])
    ]
    exchange_on_new_stream(pair, "client", sid, b"works")


def test_open_session_before_settings_is_a_usage_error(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    with pytest.raises(ProtocolUsageError):
        pair.client.open_session(authority=AUTHORITY, path="/")
    pair.roundtrip()
    with pytest.raises(ProtocolUsageError):
        pair.server.open_session(authority=AUTHORITY, path="/")


def test_reject_session(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.roundtrip()
    sid = pair.client.open_session(authority=AUTHORITY, path="/missing")
    pair.roundtrip()
    (req,) = pair.take("server", ev.SessionRequested)
    assert isinstance(req, ev.SessionRequested) and req.path == "/missing"
    pair.server.reject_session(sid, status=404)
    pair.roundtrip()
    (rejected,) = events(pair, "client")
    assert isinstance(rejected, ev.SessionRejected)
    assert (rejected.session_id, rejected.status) == (sid, 404)
    with pytest.raises(ProtocolUsageError):
        pair.client.create_stream(sid, bidirectional=True)
    with pytest.raises(ProtocolUsageError):
        pair.server.accept_session(sid)
    # The connection is fine: the next session works.
    other_sid = second_session(pair)
    exchange_on_new_stream(pair, "client", other_sid, b"after a rejection")


@pytest.mark.parametrize("status", [200, 299, 99, 1000])
def test_reject_session_needs_a_rejection_status(tmp_path: Path, status: int) -> None:
    pair = Pair(tmp_path)
    pair.roundtrip()
    sid = pair.client.open_session(authority=AUTHORITY, path="/")
    pair.roundtrip()
    with pytest.raises(ProtocolUsageError):
        pair.server.reject_session(sid, status=status)


@pytest.mark.parametrize("closer", ["client", "server"])
@pytest.mark.parametrize(("code", "reason"), [(42, "bye"), (0xFFFFFFFF, "tschüss " * 100), (0, "")])
def test_close_session_reaches_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closer: Side, code: int, reason: str
) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    peer = other(closer)
    # Streams of every kind, opened by either side, each carrying data.
    mine_bidi = core(pair, closer).create_stream(sid, bidirectional=True)
    mine_uni = core(pair, closer).create_stream(sid, bidirectional=False)
    peers_bidi = core(pair, peer).create_stream(sid, bidirectional=True)
    peers_uni = core(pair, peer).create_stream(sid, bidirectional=False)
    for protocol, stream_id in (
        (core(pair, closer), mine_bidi),
        (core(pair, closer), mine_uni),
        (core(pair, peer), peers_bidi),
        (core(pair, peer), peers_uni),
    ):
        protocol.send_stream_data(stream_id, b"open")
    pair.roundtrip()
    events(pair, "client")
    events(pair, "server")
    tap = Tap(monkeypatch, core(pair, closer))
    peer_tap = Tap(monkeypatch, core(pair, peer))

    core(pair, closer).close_session(sid, code=code, reason=reason)
    pair.roundtrip()
    assert events(pair, peer) == [ev.SessionClosed(sid, code, reason, True)]
    assert events(pair, closer) == [ev.SessionClosed(sid, code, reason, False)]
    # On the wire: the close capsule inside a DATA frame, then FIN; the peer answers with FIN.
    capsule = encode_capsule(0x2843, code.to_bytes(4, "big") + reason.encode())
    assert peer_tap.stream_bytes(sid) == (encode_frame(0x00, capsule), True)
    assert tap.stream_bytes(sid) == (b"", True)

    # The peer refused its streams of the session with WT_SESSION_GONE: it reset what it was
    # sending and stopped what it was receiving.
    resets = tap.resets()
    assert resets[peers_bidi] == resets[peers_uni] == SESSION_GONE
    assert tap.stopped(mine_bidi, SESSION_GONE) and tap.stopped(mine_uni, SESSION_GONE)

    for protocol in (pair.client, pair.server):
        with pytest.raises(ProtocolUsageError):
            protocol.create_stream(sid, bidirectional=True)
        with pytest.raises(ProtocolUsageError):
            protocol.send_datagram(sid, b"late")
    with pytest.raises(ProtocolUsageError):
        core(pair, peer).send_stream_data(peers_bidi, b"late")
    assert not pair.client.engine.is_closed and not pair.server.engine.is_closed


def test_close_reason_longer_than_1024_bytes_is_a_usage_error(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    with pytest.raises(ProtocolUsageError):
        pair.client.close_session(sid, reason="x" * 1025)
    exchange_datagram(pair, "client", sid, b"still open")


# ----------------------------------------------------------------------------- streams


@pytest.mark.parametrize("opener", ["client", "server"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_stream_opened_then_data(tmp_path: Path, opener: Side, bidirectional: bool) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    peer = other(opener)
    stream_id = core(pair, opener).create_stream(sid, bidirectional=bidirectional)
    # Stream IDs say who opened the stream and which kind it is (RFC 9000 2.1).
    assert stream_id & 1 == (opener == "server")
    assert bool(stream_id & 2) is not bidirectional
    core(pair, opener).send_stream_data(stream_id, b"hello", end_stream=True)
    pair.roundtrip()
    assert events(pair, peer) == [
        ev.StreamOpened(sid, stream_id, bidirectional),
        ev.StreamData(stream_id, b"hello", True),
    ]
    if bidirectional:
        core(pair, peer).send_stream_data(stream_id, b"world", end_stream=True)
        pair.roundtrip()
        assert events(pair, opener) == [ev.StreamData(stream_id, b"world", True)]
    else:
        with pytest.raises(ProtocolUsageError):
            core(pair, peer).send_stream_data(stream_id, b"wrong way")
    assert events(pair, "client") == events(pair, "server") == []


@pytest.mark.parametrize("opener", ["client", "server"])
def test_large_stream_payload_arrives_in_order(tmp_path: Path, opener: Side) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    payload = bytes(range(256)) * 800  # 200 KiB: many packets
    stream_id = core(pair, opener).create_stream(sid, bidirectional=False)
    core(pair, opener).send_stream_data(stream_id, payload, end_stream=True)
    pair.roundtrip(limit=2000)  # one packet per transfer step while the window opens
    got = events(pair, other(opener))
    assert got[0] == ev.StreamOpened(sid, stream_id, False)
    pieces = got[1:]
    assert all(isinstance(e, ev.StreamData) and e.stream_id == stream_id for e in pieces)
    assert b"".join(e.data for e in pieces if isinstance(e, ev.StreamData)) == payload
    ends = [e.end_stream for e in pieces if isinstance(e, ev.StreamData)]
    assert ends[-1] and not any(ends[:-1])


@pytest.mark.parametrize("sender", ["client", "server"])
@pytest.mark.parametrize(
    ("code", "h3_code"),
    [(7, 0x52E4A40FA8E2), (0, 0x52E4A40FA8DB), (0xFFFFFFFF, 0x52E5AC983162)],
)
def test_reset_stream_maps_the_code(tmp_path: Path, sender: Side, code: int, h3_code: int) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    stream_id = core(pair, sender).create_stream(sid, bidirectional=True)
    core(pair, sender).send_stream_data(stream_id, b"partial")
    pair.roundtrip()
    events(pair, other(sender))
    core(pair, sender).reset_stream(stream_id, code=code)
    pair.roundtrip()
    assert events(pair, other(sender)) == [ev.StreamReset(stream_id, code, h3_code)]


@pytest.mark.parametrize("receiver", ["client", "server"])
def test_stop_stream_maps_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Side
) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    sender = other(receiver)
    stream_id = core(pair, sender).create_stream(sid, bidirectional=True)
    core(pair, sender).send_stream_data(stream_id, b"unwanted")
    pair.roundtrip()
    events(pair, receiver)
    tap = Tap(monkeypatch, core(pair, receiver))
    core(pair, receiver).stop_stream(stream_id, code=9)
    pair.roundtrip()
    assert events(pair, sender) == [ev.StreamStopped(stream_id, 9, app_code_to_h3(9))]
    # RFC 9000 3.5: STOP_SENDING is answered with RESET_STREAM, carrying the same code.
    assert tap.resets() == {stream_id: app_code_to_h3(9)}
    with pytest.raises(ProtocolUsageError):
        core(pair, sender).send_stream_data(stream_id, b"more")


# ----------------------------------------------------------------------------- datagrams


@pytest.mark.parametrize("sender", ["client", "server"])
def test_datagrams_carry_the_quarter_stream_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sender: Side
) -> None:
    pair = Pair(tmp_path)
    first = pair.open_session()
    second = second_session(pair)
    assert (first, second) == (0, 4)
    receiver = other(sender)
    tap = Tap(monkeypatch, core(pair, receiver))
    core(pair, sender).send_datagram(second, b"to the second")
    core(pair, sender).send_datagram(first, b"to the first")
    pair.roundtrip()
    assert sorted(tap.datagrams()) == sorted([b"\x01to the second", b"\x00to the first"])
    got = events(pair, receiver)
    assert sorted(got, key=repr) == sorted(
        [
            ev.DatagramReceived(second, b"to the second"),
            ev.DatagramReceived(first, b"to the first"),
        ],
        key=repr,
    )


@pytest.mark.parametrize("sender", ["client", "server"])
def test_raw_datagram_is_routed_by_its_quarter_stream_id(tmp_path: Path, sender: Side) -> None:
    pair = Pair(tmp_path)
    pair.open_session()
    second = second_session(pair)
    core(pair, sender).engine.send_datagram(encode_varint(second // 4) + b"raw")
    core(pair, sender).engine.send_datagram(encode_varint(400 // 4) + b"no such session")
    pair.roundtrip()
    assert events(pair, other(sender)) == [ev.DatagramReceived(second, b"raw")]
    assert not pair.client.engine.is_closed and not pair.server.engine.is_closed


@pytest.mark.parametrize("sender", ["client", "server"])
def test_datagram_size_limit(tmp_path: Path, sender: Side) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    protocol = core(pair, sender)
    limit = protocol.max_datagram_size(sid)
    assert limit > 1000  # about 1,150 to 1,200 bytes on a 1,280-byte path
    with pytest.raises(DatagramTooLarge) as info:
        protocol.send_datagram(sid, b"x" * (limit + 1))
    assert (info.value.size, info.value.limit) == (limit + 1, limit)
    # Nothing was queued: the next datagrams, one of them exactly at the limit, arrive.
    protocol.send_datagram(sid, b"y" * limit)
    protocol.send_datagram(sid, b"next")
    pair.roundtrip()
    assert events(pair, other(sender)) == [
        ev.DatagramReceived(sid, b"y" * limit),
        ev.DatagramReceived(sid, b"next"),
    ]


def test_full_size_datagrams_are_not_blocked_by_stream_data(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    limit = pair.client.max_datagram_size(sid)
    stream_id = pair.client.create_stream(sid, bidirectional=False)
    pair.client.send_stream_data(stream_id, b"s" * 50_000, end_stream=True)
    for i in range(5):
        pair.client.send_datagram(sid, bytes([i]) * limit)
    pair.roundtrip()
    got = pair.take("server", ev.DatagramReceived)
    assert got == [ev.DatagramReceived(sid, bytes([i]) * limit) for i in range(5)]


# ----------------------------------------------------------------------------- two sessions


def test_two_sessions_are_independent(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    first = pair.open_session("/one")
    second = second_session(pair, "/two")
    for sid in (first, second):
        for side in ("client", "server"):
            exchange_on_new_stream(pair, side, sid, b"stream in %d" % sid)
            exchange_datagram(pair, side, sid, b"datagram in %d" % sid)

    pair.client.close_session(first, code=3, reason="done with one")
    pair.roundtrip()
    assert events(pair, "server") == [ev.SessionClosed(first, 3, "done with one", True)]
    assert events(pair, "client") == [ev.SessionClosed(first, 3, "done with one", False)]
    for side in ("client", "server"):
        exchange_on_new_stream(pair, side, second, b"second lives on")
        exchange_datagram(pair, side, second, b"second lives on")
    # A datagram for the closed session is dropped, not delivered to the other one.
    pair.client.engine.send_datagram(encode_varint(first // 4) + b"stale")
    pair.roundtrip()
    assert events(pair, "server") == []


# ----------------------------------------------------------------------------- early streams


def send_early_streams(pair: Pair) -> tuple[int, int, int]:
    """CONNECT, then two raw WebTransport streams for it, all in the same flight."""
    pair.roundtrip()
    sid = pair.client.open_session(authority=AUTHORITY, path="/early")
    engine = pair.client.engine
    first = engine.next_stream_id(False)
    engine.send_stream_data(first, encode_varint(0x41) + encode_varint(sid) + b"early1")
    second = engine.next_stream_id(False)
    engine.send_stream_data(second, encode_varint(0x41) + encode_varint(sid) + b"early2", True)
    pair.roundtrip()
    return sid, first, second


def test_early_streams_are_replayed_in_order_after_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path)
    tap = Tap(monkeypatch, pair.client)
    sid, first, second = send_early_streams(pair)
    (req,) = events(pair, "server")
    assert isinstance(req, ev.SessionRequested) and req.session_id == sid
    pair.server.accept_session(sid)
    pair.roundtrip()
    assert events(pair, "server") == [
        ev.StreamOpened(sid, first, True),
        ev.StreamData(first, b"early1", False),
        ev.StreamOpened(sid, second, True),
        ev.StreamData(second, b"early2", True),
    ]
    # The replayed streams are ordinary streams from now on, in both directions.
    pair.client.engine.send_stream_data(first, b" and later", True)
    pair.server.send_stream_data(second, b"reply", end_stream=True)
    pair.roundtrip()
    assert events(pair, "server") == [ev.StreamData(first, b" and later", True)]
    assert tap.stream_bytes(second) == (b"reply", True)
    assert tap.resets() == tap.stops() == {}


def test_stream_before_connect_is_replayed_after_accept(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.roundtrip()
    engine = pair.client.engine
    early = engine.next_stream_id(False)  # 0; the CONNECT will be stream 4
    engine.send_stream_data(early, encode_varint(0x41) + encode_varint(4) + b"first!", True)
    pair.roundtrip()
    assert events(pair, "server") == []
    sid = pair.client.open_session(authority=AUTHORITY, path="/late")
    assert sid == 4
    pair.roundtrip()
    accept_next(pair)
    assert events(pair, "server") == [
        ev.StreamOpened(sid, early, True),
        ev.StreamData(early, b"first!", True),
    ]


def test_early_stream_is_refused_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Early streams are buffered, bounded in count and time."""
    pair = Pair(tmp_path, early_timeout=5.0)
    tap = Tap(monkeypatch, pair.client)
    sid, first, second = send_early_streams(pair)
    deadline = pair.now + 5.0  # the streams arrived at pair.now at the latest
    timer = pair.server.get_timer()
    assert timer is not None and timer <= deadline, "the core must wake up to refuse them"
    pair.now = deadline + 0.001
    pair.server.handle_timer(pair.now)
    pair.roundtrip()
    assert tap.resets().get(first) == BUFFERED_STREAM_REJECTED
    assert tap.stopped(first, BUFFERED_STREAM_REJECTED)
    assert tap.stopped(second, BUFFERED_STREAM_REJECTED)
    # An accept that comes too late does not bring them back.
    events(pair, "server")
    pair.server.accept_session(sid)
    pair.roundtrip()
    assert events(pair, "server") == []


def test_stream_for_unknown_session_is_refused_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path, early_timeout=2.0)
    pair.roundtrip()
    tap = Tap(monkeypatch, pair.client)
    engine = pair.client.engine
    early = engine.next_stream_id(False)
    engine.send_stream_data(early, encode_varint(0x41) + encode_varint(4) + b"waiting")
    pair.roundtrip()
    deadline = pair.now + 2.0
    timer = pair.server.get_timer()
    assert timer is not None and timer <= deadline
    pair.now = deadline - 0.5
    pair.server.handle_timer(pair.now)
    pair.roundtrip()
    assert early not in tap.resets()  # not yet
    pair.now = deadline + 0.001
    pair.server.handle_timer(pair.now)
    pair.roundtrip()
    assert tap.resets().get(early) == BUFFERED_STREAM_REJECTED
    assert tap.stopped(early, BUFFERED_STREAM_REJECTED)
    # The session it named may still come; the refused stream is not replayed into it.
    sid = pair.client.open_session(authority=AUTHORITY, path="/late")
    assert sid == 4
    pair.roundtrip()
    accept_next(pair)
    assert events(pair, "server") == []
    assert not pair.server.engine.is_closed


def test_rejecting_a_session_refuses_its_early_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path)
    tap = Tap(monkeypatch, pair.client)
    sid, first, second = send_early_streams(pair)
    pair.server.reject_session(sid, status=403)
    pair.roundtrip()
    assert tap.stopped(first, BUFFERED_STREAM_REJECTED)
    assert tap.stopped(second, BUFFERED_STREAM_REJECTED)
    assert not any(isinstance(e, ev.StreamOpened | ev.StreamData) for e in events(pair, "server"))


def test_client_replays_what_arrived_before_the_response(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.roundtrip()
    sid = pair.client.open_session(authority=AUTHORITY, path="/push")
    pair.roundtrip()
    pair.take("server", ev.SessionRequested)
    engine = pair.server.engine
    pushed = engine.next_stream_id(False)
    engine.send_stream_data(pushed, encode_varint(0x41) + encode_varint(sid) + b"pushed", True)
    engine.send_datagram(encode_varint(sid // 4) + b"early datagram")
    pair.roundtrip()
    assert events(pair, "client") == []
    pair.server.accept_session(sid)
    pair.roundtrip()
    got = events(pair, "client")
    assert got[0] == ev.SessionEstablished(sid, [])
    assert ev.DatagramReceived(sid, b"early datagram") in got
    streams = [e for e in got if isinstance(e, ev.StreamOpened | ev.StreamData)]
    assert streams == [ev.StreamOpened(sid, pushed, True), ev.StreamData(pushed, b"pushed", True)]


# ----------------------------------------------------------------------------- bad peers

Inject = Callable[[Pair, WebTransportProtocol], None]


def on_control(payload: bytes, fin: bool = False) -> Inject:
    def inject(pair: Pair, protocol: WebTransportProtocol) -> None:
        protocol.engine.send_stream_data(control_stream(protocol), payload, fin)

    return inject


def on_new_uni(payload: bytes) -> Inject:
    def inject(pair: Pair, protocol: WebTransportProtocol) -> None:
        engine = protocol.engine
        engine.send_stream_data(engine.next_stream_id(True), payload)

    return inject


def on_new_bidi(payload: bytes) -> Inject:
    def inject(pair: Pair, protocol: WebTransportProtocol) -> None:
        engine = protocol.engine
        engine.send_stream_data(engine.next_stream_id(False), payload)

    return inject


def raw_datagram(payload: bytes) -> Inject:
    def inject(pair: Pair, protocol: WebTransportProtocol) -> None:
        protocol.engine.send_datagram(payload)

    return inject


def encoder_fin(pair: Pair, protocol: WebTransportProtocol) -> None:
    protocol.engine.send_stream_data(encoder_stream(protocol), b"", True)


def control_reset(pair: Pair, protocol: WebTransportProtocol) -> None:
    protocol.engine.reset_stream(control_stream(protocol), H3ErrorCode.H3_NO_ERROR)


def garbage_header_block(pair: Pair, protocol: WebTransportProtocol) -> None:
    engine = protocol.engine
    engine.send_stream_data(engine.next_stream_id(False), encode_frame(0x01, b"\xff\xff\xff"))


v = encode_varint
E = H3ErrorCode
BOTH = ("client", "server")
CONNECTION_ERRORS: list[tuple[str, tuple[Side, ...], Inject, int]] = [
    (
        "second-control-stream",
        BOTH,
        on_new_uni(v(0x00) + SETTINGS_FRAME),
        E.H3_STREAM_CREATION_ERROR,
    ),
    ("second-encoder-stream", BOTH, on_new_uni(v(0x02)), E.H3_STREAM_CREATION_ERROR),
    ("second-decoder-stream", BOTH, on_new_uni(v(0x03)), E.H3_STREAM_CREATION_ERROR),
    ("data-on-control", BOTH, on_control(encode_frame(0x00, b"x")), E.H3_FRAME_UNEXPECTED),
    ("empty-data-on-control", BOTH, on_control(encode_frame(0x00, b"")), E.H3_FRAME_UNEXPECTED),
    ("headers-on-control", BOTH, on_control(encode_frame(0x01, b"")), E.H3_FRAME_UNEXPECTED),
    ("second-settings", BOTH, on_control(SETTINGS_FRAME), E.H3_FRAME_UNEXPECTED),
    ("empty-second-settings", BOTH, on_control(encode_frame(0x04, b"")), E.H3_FRAME_UNEXPECTED),
    ("control-fin", BOTH, on_control(b"", fin=True), E.H3_CLOSED_CRITICAL_STREAM),
    ("control-reset", BOTH, control_reset, E.H3_CLOSED_CRITICAL_STREAM),
    ("encoder-fin", BOTH, encoder_fin, E.H3_CLOSED_CRITICAL_STREAM),
    ("h2-priority-on-control", BOTH, on_control(encode_frame(0x02, b"")), E.H3_FRAME_UNEXPECTED),
    ("h2-ping-on-control", BOTH, on_control(encode_frame(0x06, b"\0" * 8)), E.H3_FRAME_UNEXPECTED),
    ("h2-window-on-control", BOTH, on_control(encode_frame(0x08, b"")), E.H3_FRAME_UNEXPECTED),
    ("h2-continuation", BOTH, on_control(encode_frame(0x09, b"")), E.H3_FRAME_UNEXPECTED),
    (
        "max-push-id-from-server",
        ("server",),
        on_control(encode_frame(0x0D, v(0))),
        E.H3_FRAME_UNEXPECTED,
    ),
    (
        "server-request-stream",
        ("server",),
        on_new_bidi(encode_frame(0x01, b"")),
        E.H3_STREAM_CREATION_ERROR,
    ),
    ("server-bidi-garbage", ("server",), on_new_bidi(b"\x21junk"), E.H3_STREAM_CREATION_ERROR),
    ("wt-uni-session-5", BOTH, on_new_uni(v(0x54) + v(5) + b"x"), E.H3_ID_ERROR),
    ("wt-uni-session-2", BOTH, on_new_uni(v(0x54) + v(2) + b"x"), E.H3_ID_ERROR),
    ("wt-bidi-session-6", BOTH, on_new_bidi(v(0x41) + v(6) + b"x"), E.H3_ID_ERROR),
    ("wt-bidi-session-1", BOTH, on_new_bidi(v(0x41) + v(1) + b"x"), E.H3_ID_ERROR),
    ("push-from-server", ("server",), on_new_uni(v(0x01) + v(0)), E.H3_ID_ERROR),
    ("push-from-client", ("client",), on_new_uni(v(0x01) + v(0)), E.H3_STREAM_CREATION_ERROR),
    ("empty-datagram", BOTH, raw_datagram(b""), E.H3_DATAGRAM_ERROR),
    ("truncated-quarter-id", BOTH, raw_datagram(b"\x40"), E.H3_DATAGRAM_ERROR),
    ("garbage-header-block", ("client",), garbage_header_block, E.QPACK_DECOMPRESSION_FAILED),
    # RFC 9114 4.1: a DATA frame before any HEADERS frame is H3_FRAME_UNEXPECTED.
    (
        "data-before-headers",
        ("client",),
        on_new_bidi(encode_frame(0x00, b"body")),
        E.H3_FRAME_UNEXPECTED,
    ),
]


APPLICATION_ERROR = 0x0C  # the QUIC transport error code (RFC 9000 section 20.1)


def assert_terminated(
    pair: Pair, offender: Side, code: int, *, in_first_flight: bool = False
) -> None:
    """The peer of ``offender`` closed the connection with ``code``; both sides saw it.

    ``in_first_flight``: the offence travelled in the server's first flight (its SETTINGS go as
    0.5-RTT data), so the client closes before its Finished went out. The aioquic engine then
    closes in the Handshake epoch, where RFC 9000 section 10.2.3 replaces an application code
    with the transport error APPLICATION_ERROR, and that is what the server learns; the qh3
    engine sends the Finished first and closes in 1-RTT.
    """
    detector = other(offender)
    assert core(pair, detector).engine.is_closed
    seen = code
    if in_first_flight and offender == "server" and pair.engine_name == "aioquic":
        seen = APPLICATION_ERROR
    got = [e for e in events(pair, offender) if isinstance(e, ev.ConnectionTerminated)]
    assert [(e.error_code, e.by_peer) for e in got] == [(seen, True)]
    got = [e for e in events(pair, detector) if isinstance(e, ev.ConnectionTerminated)]
    assert [(e.error_code, e.by_peer) for e in got] == [(code, False)]


@pytest.mark.parametrize(
    ("offender", "inject", "code"),
    [
        pytest.param(side, inject, code, id=f"{name}-from-{side}")
        for name, sides, inject, code in CONNECTION_ERRORS
        for side in sides
    ],
)
def test_connection_error(tmp_path: Path, offender: Side, inject: Inject, code: int) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    events(pair, "client")
    events(pair, "server")
    inject(pair, core(pair, offender))
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, offender, code)
    with pytest.raises(ProtocolUsageError):
        pair.client.create_stream(sid, bidirectional=True)


@pytest.mark.parametrize("offender", BOTH)
def test_control_stream_must_start_with_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offender: Side
) -> None:
    engine_type = engine_class()
    original = engine_type.send_stream_data
    first_frame = encode_frame(0x07, v(0))  # GOAWAY before SETTINGS

    def send_stream_data(
        self: AioquicEngine, stream_id: int, data: bytes, end_stream: bool = False
    ) -> bool:
        mine = self.is_client == (offender == "client")
        if mine and stream_id == (2 if self.is_client else 3) and data[:1] == b"\x00":
            data = data[:1] + first_frame + data[1:]
        return bool(original(self, stream_id, data, end_stream))

    with monkeypatch.context() as patch:
        patch.setattr(engine_type, "send_stream_data", send_stream_data)
        pair = Pair(tmp_path)
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, offender, H3ErrorCode.H3_MISSING_SETTINGS, in_first_flight=True)


def test_data_before_the_response_is_a_connection_error(tmp_path: Path) -> None:
    """RFC 9114 4.1: "a DATA frame before any HEADERS frame" is an invalid sequence of frames,
    which "MUST be treated as a connection error of type H3_FRAME_UNEXPECTED"."""
    pair = Pair(tmp_path)
    pair.roundtrip()
    sid = pair.client.open_session(authority=AUTHORITY, path="/")
    pair.roundtrip()
    pair.server.engine.send_stream_data(sid, encode_frame(0x00, b"body first"))
    pair.roundtrip()
    settle(pair)
    assert_terminated(pair, "server", H3ErrorCode.H3_FRAME_UNEXPECTED)


@pytest.mark.parametrize("offender", BOTH)
@pytest.mark.parametrize("stream_type", [0x21, 0x1F * 3 + 0x21, 0x3FFF])
def test_unknown_uni_stream_type_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offender: Side, stream_type: int
) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    tap = Tap(monkeypatch, core(pair, offender))
    engine = core(pair, offender).engine
    stream_id = engine.next_stream_id(True)
    engine.send_stream_data(stream_id, v(stream_type) + b"whatever this is")
    pair.roundtrip()
    # RFC 9114 6.2: abort reading, "SHOULD use the H3_STREAM_CREATION_ERROR error code".
    assert tap.stops() == {stream_id: H3ErrorCode.H3_STREAM_CREATION_ERROR}
    assert events(pair, "client") == events(pair, "server") == []
    assert not pair.client.engine.is_closed and not pair.server.engine.is_closed
    exchange_on_new_stream(pair, offender, sid, b"still fine")
    exchange_datagram(pair, other(offender), sid, b"still fine")


@pytest.mark.parametrize("frame_type", [0x21, 0x1F * 100 + 0x21])
def test_unknown_frame_on_control_stream_is_ignored(tmp_path: Path, frame_type: int) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    pair.client.engine.send_stream_data(2, encode_frame(frame_type, b"grease" * 100))
    pair.roundtrip()
    assert not pair.client.engine.is_closed and not pair.server.engine.is_closed
    exchange_on_new_stream(pair, "client", sid, b"still fine")


@pytest.mark.parametrize("value", [b"", b"\x00", b"\x00\x00\x01"])
def test_short_close_capsule_closes_only_that_session(tmp_path: Path, value: bytes) -> None:
    pair = Pair(tmp_path)
    broken = pair.open_session()
    healthy = second_session(pair)
    capsule = encode_capsule(0x2843, value)
    pair.client.engine.send_stream_data(broken, encode_frame(0x00, capsule))
    pair.roundtrip()
    (closed,) = events(pair, "server")
    assert isinstance(closed, ev.SessionClosed)
    assert (closed.session_id, closed.code) == (broken, H3ErrorCode.H3_MESSAGE_ERROR)
    (closed,) = events(pair, "client")
    assert isinstance(closed, ev.SessionClosed) and closed.session_id == broken
    assert closed.by_peer
    assert not pair.client.engine.is_closed and not pair.server.engine.is_closed
    for side in BOTH:
        exchange_on_new_stream(pair, side, healthy, b"healthy")
        exchange_datagram(pair, side, healthy, b"healthy")


def test_malformed_request_headers_reset_only_that_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    tap = Tap(monkeypatch, pair.client)
    engine = pair.client.engine
    stream_id = engine.next_stream_id(False)
    section = [
        (b":method", b"CONNECT"),
        (b":protocol", b"webtransport-h3"),
        (b":scheme", b"https"),
        (b":authority", AUTHORITY.encode()),
        (b":path", b"/"),
        (b"Upper", b"case"),
    ]
    block = HeaderCodec().encode(stream_id, section)
    engine.send_stream_data(stream_id, encode_frame(0x01, block))
    pair.roundtrip()
    assert tap.resets() == {stream_id: H3ErrorCode.H3_MESSAGE_ERROR}
    assert events(pair, "server") == []
    assert not pair.server.engine.is_closed
    exchange_on_new_stream(pair, "client", sid, b"still fine")
