"""The sans-I/O WebTransport-over-HTTP/3 connection.

Theory of operation. :class:`WebTransportProtocol` owns one QUIC engine. Bytes from the network go
in through :meth:`receive_datagram`, timers through :meth:`handle_timer`; both only change state
and queue :mod:`events`. The layer above drains events with :meth:`pop_events` and asks for the
bytes to send with :meth:`datagrams_to_send`. The clock is always an argument.

Every incoming QUIC stream gets a :class:`_Stream` that says what it is: HTTP/3 control or QPACK
stream, a request (CONNECT) stream, a WebTransport stream bound to a session, or ignored. The
first bytes of a peer's stream decide (stream type / 0x41 signal). WebTransport stream payload
is passed through without copying. Peer protocol violations raise :class:`ProtocolViolation`
inside; the one boundary in :meth:`_dispatch` turns them into the wire error of the scope they
name (stream, session, connection) and never lets them out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum

from . import events as ev
from .codec import (
    NeedMoreData,
    decode_varint,
    encode_capsule,
    encode_frame,
    encode_varint,
    varint_size,
)
from .errors import (
    CreditExhausted,
    DatagramTooLarge,
    ProtocolUsageError,
    ProtocolViolation,
    Scope,
)
from .headers import HeaderCodec, parse_request, parse_response
from .quic import (
    Address,
    EngineConnectionIdIssued,
    EngineConnectionIdRetired,
    EngineDatagram,
    EngineEvent,
    EngineHandshakeCompleted,
    EngineStopSending,
    EngineStreamData,
    EngineStreamReset,
    EngineTerminated,
    QuicEngine,
)
from .session import FlowControl, SessionPhase, SessionState
from .settings import (
    LocalLimits,
    build_settings,
    client_dialect,
    decode_settings,
    encode_settings,
    flow_control_enabled,
    peer_supports_datagrams,
    server_dialect,
)
from .tlv import TLVReader
from .wire import (
    HTTP2_ONLY_FRAME_TYPES,
    MAX_CLOSE_REASON,
    PROTOCOL_TOKENS,
    CapsuleType,
    Dialect,
    FrameType,
    H3ErrorCode,
    SettingId,
    StreamType,
    app_code_to_h3,
    h3_to_app_code,
)

logger = logging.getLogger(__name__)

_CONTROL_FRAMES_WHOLE = frozenset(
    {FrameType.SETTINGS, FrameType.GOAWAY, FrameType.MAX_PUSH_ID, FrameType.CANCEL_PUSH}
)
_REQUEST_FRAMES_WHOLE = frozenset({FrameType.HEADERS, FrameType.PUSH_PROMISE})
_FORBIDDEN_ON_REQUEST = frozenset(
    {FrameType.SETTINGS, FrameType.GOAWAY, FrameType.MAX_PUSH_ID, FrameType.CANCEL_PUSH}
    | HTTP2_ONLY_FRAME_TYPES
)


_FLOW_CAPSULES = frozenset(
    {
        CapsuleType.WT_MAX_DATA,
        CapsuleType.WT_MAX_STREAMS_BIDI,
        CapsuleType.WT_MAX_STREAMS_UNI,
        CapsuleType.WT_DATA_BLOCKED,
        CapsuleType.WT_STREAMS_BLOCKED_BIDI,
        CapsuleType.WT_STREAMS_BLOCKED_UNI,
    }
)


class _Kind(Enum):
    UNKNOWN = "unknown"
    CONTROL = "control"
    QPACK_ENCODER = "qpack-encoder"
    QPACK_DECODER = "qpack-decoder"
    REQUEST = "request"
    WEBTRANSPORT = "webtransport"
    IGNORED = "ignored"


class _Stream:
    """What the core knows about one QUIC stream."""

    __slots__ = (
        "buf",
        "consumed",
        "counted",
        "delivered",
        "early_since",
        "fin",
        "kind",
        "reader",
        "released",
        "session",
        "session_id",
        "unidir",
    )

    def __init__(self, kind: _Kind, unidir: bool) -> None:
        self.kind = kind
        self.unidir = unidir  # also: our sending side is finished
        self.buf = b""
        self.reader: TLVReader | None = None
        self.session: SessionState | None = None
        self.session_id = -1
        self.fin = False  # nothing more arrives (FIN or reset received, or we stopped it)
        self.released = False  # the application is done with the receiving side
        self.counted = False  # counted against the session's stream credit
        self.delivered = 0  # payload bytes counted against the session's data credit
        self.consumed = 0  # of those, what the application consumed
        self.early_since: float | None = None


class WebTransportProtocol:
    """One HTTP/3 connection carrying WebTransport sessions, without I/O.

    Args:
        engine: the QUIC connection (see quic.py).
        limits: what this endpoint grants the peer.
        max_header_size: largest encoded header section accepted.
        max_early_streams: streams (per connection) and datagrams (per session) held for a
            session that is not open yet.
        early_timeout: seconds such a stream may wait before it is refused.
        stream_send_buffer: unacknowledged bytes one stream may have queued in the engine.
        max_pending_datagrams: datagrams queued for sending (congestion control may hold them);
            beyond it the oldest are dropped, as a full network queue would.
        request_timeout: server: seconds a peer's request stream may take, from its first
            byte, to deliver its whole HEADERS frame; a late one is answered 408 (Request
            Timeout) and the rest of it refused. None: no deadline.
        no_session_timeout: server: seconds the connection may carry no session (from its
            first packet, or since its last session ended) before it is closed with
            H3_NO_ERROR. None: no limit.
    """

    def __init__(
        self,
        engine: QuicEngine,
        *,
        limits: LocalLimits | None = None,
        max_header_size: int = 16 * 1024,
        max_early_streams: int = 32,
        early_timeout: float = 5.0,
        stream_send_buffer: int = 1024 * 1024,
        max_pending_datagrams: int = 1024,
        request_timeout: float | None = None,
        no_session_timeout: float | None = None,
    ) -> None:
        self.engine = engine
        self.is_client = engine.is_client
        self.limits = limits or LocalLimits()
        self.max_header_size = max_header_size
        self.max_early_streams = max_early_streams
        self.early_timeout = early_timeout
        self.stream_send_buffer = stream_send_buffer
        self.max_pending_datagrams = max_pending_datagrams
        self.max_early_bytes = 64 * 1024
        self.peer_settings: dict[int, int] | None = None
        self.dialect: Dialect | None = None  # client: chosen from the server's SETTINGS
        self.goaway_received = False
        self.goaway_sent: int | None = None  # the ID our GOAWAY carried
        self._max_peer_request = -4  # highest client-initiated bidi stream seen (-4: none)
        self._peer_datagrams = False
        self.terminated = False
        self._events: list[ev.ProtocolEvent] = []
        self._streams: dict[int, _Stream] = {}
        self._sessions: dict[int, SessionState] = {}
        self._gone: set[int] = set()  # session IDs that ended (bounded by request-stream count)
        self._unknown_early: dict[int, list[int]] = {}  # session id -> waiting stream ids
        self._early_count = 0
        self._held_requests: list[tuple[int, ev.Headers]] = []  # requests before SETTINGS
        self.request_timeout = None if engine.is_client else request_timeout
        self.no_session_timeout = None if engine.is_client else no_session_timeout
        # Request streams whose HEADERS have not arrived -> their deadline (in insertion order,
        # which is deadline order: one timeout for all).
        self._request_deadlines: dict[int, float] = {}
        self._sessionless_since: float | None = None  # when the last session went (server)
        self._codec = HeaderCodec()
        self._init_local_streams()

    # ----------------------------------------------------------------------------- I/O side

    def connect(self, addr: Address, now: float) -> None:
        """Client: start the QUIC handshake."""
        self.engine.connect(addr, now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Process one UDP payload from ``addr``."""
        self.engine.receive_datagram(data, addr, now)
        self._process_engine_events(now)

    def receive_datagrams(self, batch: list[tuple[bytes, Address]], now: float) -> None:
        """Process several UDP payloads at once (cheaper than one call each)."""
        self.engine.receive_datagrams(batch, now)
        self._process_engine_events(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """UDP payloads to send now.

        What sending produced is processed at once, too: a connection ID announced in these
        packets (ConnectionIdIssued) must be routable before the peer can use it.
        """
        out = self.engine.datagrams_to_send(now)
        self._process_engine_events(now)
        return out

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        deadlines = [
            t
            for t in (self.engine.get_timer(), self._early_deadline(), self._request_deadline())
            if t is not None
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run timers due at ``now``."""
        engine_timer = self.engine.get_timer()
        if engine_timer is not None and engine_timer <= now:
            self.engine.handle_timer(now)
        self._expire_early(now)
        self._expire_requests(now)
        self._process_engine_events(now)
        since = self._sessionless_since
        timeout = self.no_session_timeout
        if since is not None and timeout is not None and since + timeout <= now:
            self._sessionless_since = None
            self.close(code=H3ErrorCode.H3_NO_ERROR, reason=f"no session for {timeout:g} s")
            self._process_engine_events(now)

    def pop_events(self) -> list[ev.ProtocolEvent]:
        """Events produced since the last call, oldest first."""
        out = self._events
        self._events = []
        return out

    def close(self, *, code: int = H3ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        """Close the whole connection (CONNECTION_CLOSE with an HTTP/3 code)."""
        self.engine.close(code, reason)

    # ----------------------------------------------------------------------------- sessions

    def open_session(
        self, *, authority: str, path: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> int:
        """Client: send an extended CONNECT. Returns the session ID.

        Raises:
            ProtocolUsageError: the server's SETTINGS have not arrived or offer no WebTransport.
        """
        if not self.is_client:
            raise ProtocolUsageError("only a client opens sessions")
        if self.dialect is None:
            raise ProtocolUsageError("the server's SETTINGS offer no WebTransport (yet)")
        if self.goaway_received:
            raise ProtocolUsageError("the server sent GOAWAY: no new sessions on this connection")
        dialect = self.dialect
        sid = self.engine.next_stream_id(False)
        token = b"webtransport-h3" if dialect is Dialect.DRAFT15 else b"webtransport"
        section: ev.Headers = [
            (b":method", b"CONNECT"),
            (b":protocol", token),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        if dialect is Dialect.DRAFT02:
            section.append((b"sec-webtransport-http3-draft02", b"1"))
        section.extend(headers)
        session = SessionState(sid, dialect, SessionPhase.CONNECTING)
        self._sessions[sid] = session
        stream = _Stream(_Kind.REQUEST, False)
        stream.session = session
        stream.session_id = sid
        stream.reader = self._request_reader()
        self._streams[sid] = stream
        self._send_headers(sid, section)
        return sid

    def accept_session(
        self, session_id: int, *, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Server: answer a requested session with 200 and open it."""
        session = self._pending_session(session_id, SessionPhase.REQUESTED)
        section: ev.Headers = [(b":status", b"200")]
        if session.dialect is Dialect.DRAFT02:
            section.append((b"sec-webtransport-http3-draft", b"draft02"))
        section.extend(headers)
        self._send_headers(session_id, section)
        self._open(session)

    def reject_session(
        self, session_id: int, *, status: int, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Server: answer a requested session with a non-2xx status and end the request."""
        session = self._pending_session(session_id, SessionPhase.REQUESTED)
        if 200 <= status < 300 or not 100 <= status <= 999:
            raise ProtocolUsageError(f"{status} is not a rejection status")
        self._send_headers(session_id, [(b":status", str(status).encode()), *headers], fin=True)
        session.set_phase(SessionPhase.REJECTED)
        self._end_session(session, H3ErrorCode.WT_BUFFERED_STREAM_REJECTED)

    def close_session(self, session_id: int, *, code: int = 0, reason: str = "") -> None:
        """Close a session: close capsule and FIN (or cancel a pending CONNECT)."""
        session = self._sessions.get(session_id)
        if session is None or session.phase is SessionPhase.CLOSED:
            return
        raw = reason.encode()
        if len(raw) > MAX_CLOSE_REASON:
            raise ProtocolUsageError(f"close reason is {len(raw)} bytes, limit {MAX_CLOSE_REASON}")
        if session.phase is SessionPhase.OPEN and not session.close_sent:
            capsule = encode_capsule(
                CapsuleType.CLOSE_SESSION, (code & 0xFFFFFFFF).to_bytes(4, "big") + raw
            )
            self.engine.send_stream_data(session_id, encode_frame(FrameType.DATA, capsule), True)
            session.close_sent = True
        elif session.phase is SessionPhase.CONNECTING:
            self.engine.reset_stream(session_id, H3ErrorCode.H3_REQUEST_CANCELLED)
            self.engine.stop_stream(session_id, H3ErrorCode.H3_REQUEST_CANCELLED)
        elif session.phase is SessionPhase.REQUESTED:
            self._send_headers(session_id, [(b":status", b"404")], fin=True)
        self._finish_session(session, code, reason, by_peer=False)

    def drain_session(self, session_id: int) -> None:
        """Ask the peer to wind the session down (DRAIN capsule); the session stays usable."""
        session = self._sessions.get(session_id)
        if session is not None and session.is_open and not session.close_sent:
            self._send_capsule(session, CapsuleType.DRAIN_SESSION, b"")

    def goaway(self) -> int:
        """Send GOAWAY on our control stream (graceful shutdown). Returns the ID it carries.

        A server sends the next client-initiated bidirectional stream ID it would accept: every
        request below it is (or will be) processed, later ones are refused with
        H3_REQUEST_REJECTED. A client carries a push ID; it never allows push, so 0. Sending it
        again is a no-op (the ID could only stay the same).
        """
        if self.goaway_sent is not None:
            return self.goaway_sent
        goaway_id = 0 if self.is_client else self._max_peer_request + 4
        self.goaway_sent = goaway_id
        self.engine.send_stream_data(
            self._control_stream, encode_frame(FrameType.GOAWAY, encode_varint(goaway_id))
        )
        return goaway_id

    @property
    def peer_max_sessions(self) -> int:
        """Sessions the peer accepts on this connection at once (its SETTINGS; 1 if it says none).

        0 until the peer's SETTINGS have arrived.
        """
        settings = self.peer_settings
        if settings is None:
            return 0
        advertised = [
            settings.get(SettingId.WT_MAX_SESSIONS_DRAFT13, 0),
            settings.get(SettingId.WT_MAX_SESSIONS_DRAFT07, 0),
        ]
        return max(1, *advertised)

    def open_session_count(self) -> int:
        """Sessions on this connection that are not closed (pending ones included)."""
        return len(self._sessions)

    def session_dialect(self, session_id: int) -> Dialect | None:
        """The dialect a session speaks."""
        session = self._sessions.get(session_id)
        return None if session is None else session.dialect

    # ----------------------------------------------------------------------------- streams

    def create_stream(self, session_id: int, *, bidirectional: bool) -> int:
        """Open a WebTransport stream in an open session. Returns its stream ID.

        Raises:
            CreditExhausted: session flow control allows no more streams of this kind now.
            ProtocolUsageError: the session is not open.
        """
        session = self._open_session(session_id)
        fc = session.fc
        if fc is not None:
            if fc.stream_credit(bidirectional) <= 0:
                self._blocked_streams(session, fc, bidirectional)
                raise CreditExhausted("no stream credit")
            fc.we_opened[bidirectional] += 1
        stream_id = self.engine.next_stream_id(not bidirectional)
        signal = FrameType.WEBTRANSPORT_STREAM if bidirectional else StreamType.WEBTRANSPORT
        stream = _Stream(_Kind.WEBTRANSPORT, not bidirectional)
        stream.session = session
        stream.session_id = session_id
        stream.fin = stream.released = not bidirectional  # nothing arrives on our uni stream
        self._streams[stream_id] = stream
        session.streams.add(stream_id)
        self.engine.send_stream_data(stream_id, encode_varint(signal) + encode_varint(session_id))
        if bidirectional:
            self.engine.track_consumption(stream_id, 0)
        return stream_id

    def stream_consumed(self, stream_id: int, size: int) -> None:
        """The application read ``size`` bytes of a WebTransport stream: credit may follow.

        Receive credit (the stream's and connection's MAX_*_DATA, the session's WT_MAX_DATA)
        is raised as data is consumed, not as it arrives, so what nobody reads stays bounded
        by the receive windows.
        """
        self.engine.consume(stream_id, size)
        stream = self._streams.get(stream_id)
        if stream is not None and stream.session is not None and stream.session.fc is not None:
            size = min(size, stream.delivered - stream.consumed)  # never more than arrived
            stream.consumed += size
            self._credit_consumed(stream.session, size)

    def stream_released(self, stream_id: int) -> None:
        """The application is done with a stream's receiving side (read to its end, or reset).

        Until then the stream holds one of the peer's stream slots (QUIC MAX_STREAMS, session
        WT_MAX_STREAMS) and its unread bytes count against the receive windows. Unread bytes
        left at release are discarded and their credit given back.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            self.engine.untrack_consumption(stream_id)
            return
        if not stream.fin:  # released before its end: the peer should stop sending
            self.engine.stop_stream(stream_id, app_code_to_h3(0))
        self._release_receive(stream_id, stream)
        self._forget_if_done(stream_id, stream)

    def send_capacity(self, stream_id: int) -> int:
        """Bytes :meth:`send_stream_data` accepts now (local buffer and session credit)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.session is None or not stream.session.is_open:
            return 0
        room = self.stream_send_buffer - self.engine.send_buffered(stream_id)
        fc = stream.session.fc
        if fc is not None:
            room = min(room, fc.data_credit())
        return max(room, 0)

    def send_stream_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send payload on a WebTransport stream.

        Raises:
            CreditExhausted: ``data`` exceeds the session's flow-control credit.
            ProtocolUsageError: the stream is unknown or its session is not open.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.kind is not _Kind.WEBTRANSPORT or stream.session is None:
            raise ProtocolUsageError(f"stream {stream_id} is not an open WebTransport stream")
        session = stream.session
        if not session.is_open:
            raise ProtocolUsageError(f"session {session.session_id} is not open")
        fc = session.fc
        if fc is not None and data:
            if len(data) > fc.data_credit():
                self._blocked_data(session, fc)
                raise CreditExhausted("no session data credit")
            fc.sent += len(data)
        if not self.engine.send_stream_data(stream_id, data, end_stream):
            raise ProtocolUsageError(f"stream {stream_id} can no longer send")
        if end_stream:
            self._local_send_done(stream_id, stream)

    def reset_stream(self, stream_id: int, *, code: int = 0) -> None:
        """Abort our sending side with a 32-bit application code (RESET_STREAM)."""
        stream = self._streams.get(stream_id)
        self.engine.reset_stream(stream_id, app_code_to_h3(code))
        if stream is not None:
            self._local_send_done(stream_id, stream)

    def stop_stream(self, stream_id: int, *, code: int = 0) -> None:
        """Ask the peer to stop sending, with a 32-bit application code (STOP_SENDING)."""
        self.engine.stop_stream(stream_id, app_code_to_h3(code))
        stream = self._streams.get(stream_id)
        if stream is None:
            self.engine.untrack_consumption(stream_id)
            return
        # The stream is kept until the peer's RESET_STREAM (or FIN) says nothing more arrives:
        # late bytes must be dropped, not read as a new stream.
        self._release_receive(stream_id, stream)
        self._forget_if_done(stream_id, stream)

    def send_buffered(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` handed to QUIC and not yet acknowledged (0: all delivered)."""
        return self.engine.send_buffered(stream_id)

    # ----------------------------------------------------------------------------- connection

    def send_ping(self) -> None:
        """Queue a PING (keep-alive, liveness probe)."""
        self.engine.send_ping()

    def smoothed_rtt(self) -> float:
        """The connection's smoothed round-trip time, in seconds."""
        return self.engine.smoothed_rtt()

    def peer_certificate_der(self) -> bytes | None:
        """The peer's certificate (DER) once the handshake is done; None before or without."""
        return self.engine.peer_certificate_der()

    # ----------------------------------------------------------------------------- datagrams

    def max_datagram_size(self, session_id: int) -> int:
        """The largest datagram payload one packet carries for this session (0: none)."""
        if not self._peer_datagrams:
            return 0
        return max(0, self.engine.max_datagram_payload() - varint_size(session_id >> 2))

    def send_datagram(self, session_id: int, data: bytes) -> int:
        """Send a datagram in an open session. Returns how many older queued ones were dropped.

        Raises:
            DatagramTooLarge: ``data`` does not fit in one packet; nothing was queued.
            ProtocolUsageError: the session is not open.
        """
        session = self._sessions.get(session_id)
        if session is None or session.phase is not SessionPhase.OPEN:
            raise ProtocolUsageError(f"session {session_id} is not open")
        prefix = session.datagram_prefix
        limit = self.engine.max_datagram_payload() - len(prefix) if self._peer_datagrams else 0
        if len(data) > limit:
            raise DatagramTooLarge(len(data), max(limit, 0))
        self.engine.send_datagram(prefix + data)
        return self.engine.trim_datagrams(self.max_pending_datagrams)

    # ------------------------------------------------------------------------ internals: set-up

    def _init_local_streams(self) -> None:
        settings = build_settings(self.limits)
        control = self._control_stream = self.engine.next_stream_id(True)
        self.engine.send_stream_data(
            control,
            encode_varint(StreamType.CONTROL)
            + encode_frame(FrameType.SETTINGS, encode_settings(settings)),
        )
        self._encoder_stream = self.engine.next_stream_id(True)
        self.engine.send_stream_data(
            self._encoder_stream,
            encode_varint(StreamType.QPACK_ENCODER) + self._codec.encoder_stream_data,
        )
        self._decoder_stream = self.engine.next_stream_id(True)
        self.engine.send_stream_data(self._decoder_stream, encode_varint(StreamType.QPACK_DECODER))

    def _request_reader(self) -> TLVReader:
        return TLVReader(
            is_buffered=_REQUEST_FRAMES_WHOLE.__contains__,
            max_buffered=self.max_header_size,
            too_large_code=H3ErrorCode.H3_EXCESSIVE_LOAD,
            scope=Scope.STREAM,
        )

    def _send_headers(self, stream_id: int, section: ev.Headers, *, fin: bool = False) -> None:
        block = self._codec.encode(stream_id, section)
        self.engine.send_stream_data(stream_id, encode_frame(FrameType.HEADERS, block), fin)

    def _send_capsule(self, session: SessionState, ctype: int, value: bytes) -> None:
        frame = encode_frame(FrameType.DATA, encode_capsule(ctype, value))
        self.engine.send_stream_data(session.session_id, frame)

    def _pending_session(self, session_id: int, phase: SessionPhase) -> SessionState:
        session = self._sessions.get(session_id)
        if session is None or session.phase is not phase:
            raise ProtocolUsageError(f"session {session_id} is not {phase.value}")
        return session

    def _open_session(self, session_id: int) -> SessionState:
        session = self._sessions.get(session_id)
        if session is None or not session.is_open:
            raise ProtocolUsageError(f"session {session_id} is not open")
        return session

    def _open(self, session: SessionState) -> None:
        """Move a session to OPEN, set up flow control and replay what waited for it."""
        session.set_phase(SessionPhase.OPEN)
        assert self.peer_settings is not None
        if flow_control_enabled(session.dialect, self.peer_settings):
            session.fc = FlowControl(
                {
                    "data": self.limits.initial_max_data,
                    "bidi": self.limits.initial_max_streams_bidi,
                    "uni": self.limits.initial_max_streams_uni,
                },
                {
                    "data": self.peer_settings.get(SettingId.WT_INITIAL_MAX_DATA, 0),
                    "bidi": self.peer_settings.get(SettingId.WT_INITIAL_MAX_STREAMS_BIDI, 0),
                    "uni": self.peer_settings.get(SettingId.WT_INITIAL_MAX_STREAMS_UNI, 0),
                },
            )
        early, session.early = session.early, []
        session.early_bytes = 0
        try:
            self._replay(session, early)
        except ProtocolViolation as exc:
            self._session_error(session, exc.code, exc.reason)

    def _replay(self, session: SessionState, early: list[ev.ProtocolEvent]) -> None:
        for event in early:
            if isinstance(event, ev.StreamOpened):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    self._drop_early(event.stream_id, stream)
                    self._count_peer_stream(session, stream)
            elif isinstance(event, ev.StreamData) and session.fc is not None:
                session.fc.received += len(event.data)
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.delivered += len(event.data)
            self._events.append(event)

    # ----------------------------------------------------------------------------- engine events

    def _process_engine_events(self, now: float) -> None:
        for event in self.engine.pop_events():
            try:
                self._dispatch(event, now)
            except ProtocolViolation as exc:
                self._violation(exc, getattr(event, "stream_id", None))
        if self.no_session_timeout is not None:
            if self._sessions or self.terminated:
                self._sessionless_since = None
            elif self._sessionless_since is None:
                self._sessionless_since = now

    def _dispatch(self, event: EngineEvent, now: float) -> None:
        if isinstance(event, EngineStreamData):
            self._on_stream_data(event.stream_id, event.data, event.end_stream, now)
        elif isinstance(event, EngineDatagram):
            self._on_datagram(event.data)
        elif isinstance(event, EngineStreamReset):
            self._on_stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, EngineStopSending):
            self._on_stop_sending(event.stream_id, event.error_code)
        elif isinstance(event, EngineHandshakeCompleted):
            self._events.append(ev.HandshakeCompleted(event.alpn_protocol))
        elif isinstance(event, EngineTerminated):
            self._on_terminated(event)
        elif isinstance(event, EngineConnectionIdIssued):
            self._events.append(ev.ConnectionIdIssued(event.connection_id))
        elif isinstance(event, EngineConnectionIdRetired):
            self._events.append(ev.ConnectionIdRetired(event.connection_id))

    def _violation(self, exc: ProtocolViolation, stream_id: int | None) -> None:
        """The one boundary where a peer's protocol violation becomes a wire error."""
        logger.info("protocol violation (%s, 0x%x): %s", exc.scope.value, exc.code, exc.reason)
        stream = self._streams.get(stream_id) if stream_id is not None else None
        if exc.scope is Scope.CONNECTION or stream_id is None:
            self._connection_error(exc.code, exc.reason)
        elif exc.scope is Scope.SESSION and stream is not None and stream.session is not None:
            self._session_error(stream.session, exc.code, exc.reason)
        else:
            session = stream.session if stream is not None else None
            if session is not None and session.session_id == stream_id:
                self._session_error(session, exc.code, exc.reason)
                return
            # Keep the stream, ignored, until its FIN or reset arrives: late bytes must not be
            # read as a new stream, and the entry must not outlive the stream.
            self.engine.reset_stream(stream_id, exc.code)
            self.engine.stop_stream(stream_id, exc.code)
            if stream is not None:
                self._ignore(stream_id, stream)
            else:
                self.engine.untrack_consumption(stream_id)

    def _connection_error(self, code: int, reason: str) -> None:
        if not self.terminated:
            self.engine.close(code, reason)

    def _session_error(self, session: SessionState, code: int, reason: str) -> None:
        """Tear one session down for a violation its peer committed; others keep going."""
        if session.phase is SessionPhase.CLOSED:
            return
        self.engine.reset_stream(session.session_id, code)
        self.engine.stop_stream(session.session_id, code)
        self._finish_session(session, code, reason, by_peer=True)

    def _on_terminated(self, event: EngineTerminated) -> None:
        if self.terminated:
            return
        self.terminated = True
        for session in list(self._sessions.values()):
            if session.phase is not SessionPhase.CLOSED:
                session.set_phase(SessionPhase.CLOSED)
        self._events.append(ev.ConnectionTerminated(event.error_code, event.reason, event.by_peer))

    # ----------------------------------------------------------------------------- stream data

    def _on_stream_data(self, stream_id: int, data: bytes, fin: bool, now: float) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.kind is _Kind.WEBTRANSPORT:
            self._on_wt_data(stream_id, stream, data, fin)
            return
        if stream is None:
            stream = self._new_peer_stream(stream_id)
            if self.request_timeout is not None and not stream_id & 2 and stream_id & 1 == 0:
                self._request_deadlines[stream_id] = now + self.request_timeout
        if stream.kind is _Kind.UNKNOWN:
            self._classify(stream_id, stream, data, fin, now)
            return
        self._on_typed_data(stream_id, stream, data, fin)

    def _new_peer_stream(self, stream_id: int) -> _Stream:
        peer_initiated = bool(stream_id & 1) == self.is_client
        # A local stream we no longer track (refused, finished): late bytes are dropped.
        kind = _Kind.UNKNOWN if peer_initiated else _Kind.IGNORED
        if peer_initiated and not stream_id & 2 and stream_id > self._max_peer_request:
            self._max_peer_request = stream_id
        stream = _Stream(kind, bool(stream_id & 2))
        self._streams[stream_id] = stream
        return stream

    def _classify(
        self, stream_id: int, stream: _Stream, data: bytes, fin: bool, now: float
    ) -> None:
        """Read a new peer stream's first bytes to learn what it is."""
        buf = stream.buf + data if stream.buf else data
        try:
            first, pos = decode_varint(buf)
            if first in (StreamType.WEBTRANSPORT, FrameType.WEBTRANSPORT_STREAM) and (
                stream.unidir == (first == StreamType.WEBTRANSPORT)
            ):
                session_id, pos = decode_varint(buf, pos)
            else:
                session_id = -1
        except NeedMoreData:
            if fin and not stream.unidir:
                # A request stream whose first frame is cut short (RFC 9114 section 7.1).
                raise ProtocolViolation(
                    H3ErrorCode.H3_FRAME_ERROR, "request stream ended inside a frame"
                ) from None
            if fin:  # RFC 9114 6.2: a unidirectional stream may end before its type
                stream.kind = _Kind.IGNORED
                self._forget(stream_id)
                return
            stream.buf = buf
            if len(buf) > 16:
                raise ProtocolViolation(
                    H3ErrorCode.H3_FRAME_ERROR, "endless stream header"
                ) from None
            return
        stream.buf = b""
        if session_id >= 0:
            self._request_deadlines.pop(stream_id, None)
            stream.kind = _Kind.WEBTRANSPORT
            # Receive credit follows what the application reads (the header is read already).
            self.engine.track_consumption(stream_id, pos)
            self._attach(stream_id, stream, session_id, now)
            if stream.kind is _Kind.WEBTRANSPORT and (pos < len(buf) or fin):
                self._on_wt_data(stream_id, stream, buf[pos:], fin)
            elif stream.kind is _Kind.IGNORED and fin:
                self._forget(stream_id)  # refused, and nothing more will arrive on it
            return
        if stream.unidir:
            self._typed_uni(stream_id, stream, first)
            rest = buf[pos:]
        else:
            if self.is_client:
                raise ProtocolViolation(
                    H3ErrorCode.H3_STREAM_CREATION_ERROR, "server-initiated request stream"
                )
            stream.kind = _Kind.REQUEST
            stream.reader = self._request_reader()
            rest = buf
        if rest or fin:
            self._on_typed_data(stream_id, stream, rest, fin)

    def _typed_uni(self, stream_id: int, stream: _Stream, stype: int) -> None:
        kinds = {
            StreamType.CONTROL: _Kind.CONTROL,
            StreamType.QPACK_ENCODER: _Kind.QPACK_ENCODER,
            StreamType.QPACK_DECODER: _Kind.QPACK_DECODER,
        }
        kind = kinds.get(stype)  # type: ignore[call-overload]
        if kind is not None:
            # RFC 9114 6.2.1: "Only one control stream per peer is permitted".
            if any(s.kind is kind for sid, s in self._streams.items() if sid != stream_id):
                raise ProtocolViolation(
                    H3ErrorCode.H3_STREAM_CREATION_ERROR, f"second {kind.value} stream"
                )
            stream.kind = kind
            if kind is _Kind.CONTROL:
                stream.reader = TLVReader(
                    is_buffered=_CONTROL_FRAMES_WHOLE.__contains__,
                    max_buffered=self.max_header_size,
                    too_large_code=H3ErrorCode.H3_EXCESSIVE_LOAD,
                )
            return
        if stype == StreamType.PUSH:
            if self.is_client:
                raise ProtocolViolation(H3ErrorCode.H3_ID_ERROR, "push without MAX_PUSH_ID")
            raise ProtocolViolation(H3ErrorCode.H3_STREAM_CREATION_ERROR, "client push stream")
        # RFC 9114 6.2: unknown stream types: "the recipient MUST either abort reading ...".
        stream.kind = _Kind.IGNORED
        self.engine.stop_stream(stream_id, H3ErrorCode.H3_STREAM_CREATION_ERROR)

    def _on_typed_data(self, stream_id: int, stream: _Stream, data: bytes, fin: bool) -> None:
        kind = stream.kind
        if kind is _Kind.REQUEST:
            self._on_request_data(stream_id, stream, data, fin)
        elif kind is _Kind.CONTROL:
            self._on_control_data(stream, data, fin)
        elif kind is _Kind.QPACK_ENCODER:
            if data:
                self._codec.feed_encoder_stream(data)
            if fin:
                raise ProtocolViolation(H3ErrorCode.H3_CLOSED_CRITICAL_STREAM, "encoder stream")
        elif kind is _Kind.QPACK_DECODER:
            if data:
                self._codec.feed_decoder_stream(data)
            if fin:
                raise ProtocolViolation(H3ErrorCode.H3_CLOSED_CRITICAL_STREAM, "decoder stream")
        elif kind is _Kind.IGNORED and fin:
            self._forget(stream_id)

    # ----------------------------------------------------------------------------- control stream

    def _on_control_data(self, stream: _Stream, data: bytes, fin: bool) -> None:
        assert stream.reader is not None
        for ftype, payload, _end in stream.reader.feed(data):
            if self.peer_settings is None and ftype != FrameType.SETTINGS:
                raise ProtocolViolation(H3ErrorCode.H3_MISSING_SETTINGS, "first frame not SETTINGS")
            if ftype == FrameType.SETTINGS:
                if self.peer_settings is not None:
                    raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, "second SETTINGS")
                self._on_settings(decode_settings(payload))
            elif ftype in (FrameType.DATA, FrameType.HEADERS, FrameType.PUSH_PROMISE):
                raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, "frame on control stream")
            elif ftype in HTTP2_ONLY_FRAME_TYPES:
                raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, "HTTP/2 frame type")
            elif ftype == FrameType.GOAWAY:
                self._on_goaway(payload)
            elif ftype == FrameType.MAX_PUSH_ID and self.is_client:
                raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, "MAX_PUSH_ID from server")
        if fin:
            raise ProtocolViolation(H3ErrorCode.H3_CLOSED_CRITICAL_STREAM, "control stream closed")

    def _on_settings(self, settings: dict[int, int]) -> None:
        self.peer_settings = settings
        self._peer_datagrams = peer_supports_datagrams(settings)
        if self.is_client:
            self.dialect = server_dialect(settings)
        self._events.append(ev.SettingsReceived(settings, self.dialect))
        held, self._held_requests = self._held_requests, []
        for stream_id, headers in held:
            stream = self._streams.get(stream_id)
            if stream is None or stream.kind is not _Kind.REQUEST:
                continue  # reset or refused while it waited
            try:
                self._on_request_headers(stream_id, headers)
            except ProtocolViolation as exc:  # the request's fault, not the control stream's
                self._violation(exc, stream_id)

    def _on_goaway(self, payload: bytes) -> None:
        try:
            goaway_id, end = decode_varint(payload)
        except NeedMoreData:
            goaway_id, end = -1, 0
        if goaway_id < 0 or end != len(payload):
            raise ProtocolViolation(H3ErrorCode.H3_FRAME_ERROR, "malformed GOAWAY")
        # RFC 9114 5.2: from a server, the ID is a client-initiated bidirectional stream ID.
        if self.is_client and goaway_id & 3:
            raise ProtocolViolation(H3ErrorCode.H3_ID_ERROR, f"GOAWAY with stream ID {goaway_id}")
        self.goaway_received = True
        for session in self._sessions.values():
            if session.is_open:
                self._events.append(ev.SessionDraining(session.session_id))

    # ----------------------------------------------------------------------------- request streams

    def _on_request_data(self, stream_id: int, stream: _Stream, data: bytes, fin: bool) -> None:
        assert stream.reader is not None
        stream.fin = stream.fin or fin
        session = stream.session
        if session is not None and session.phase is SessionPhase.CLOSED:
            if fin:
                self._forget(stream_id)
            return
        for ftype, payload, _end in stream.reader.feed(data):
            if ftype in _FORBIDDEN_ON_REQUEST or (
                ftype == FrameType.PUSH_PROMISE and not self.is_client
            ):
                raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, f"frame 0x{ftype:x}")
            if ftype == FrameType.HEADERS:
                self._on_request_frame_headers(stream_id, stream, payload)
            elif ftype == FrameType.DATA:
                self._on_request_frame_data(stream_id, stream, payload)
            session = stream.session
            if session is not None and session.phase is SessionPhase.CLOSED:
                return
        if fin:
            self._on_request_fin(stream_id, stream)

    def _on_request_frame_headers(self, stream_id: int, stream: _Stream, payload: bytes) -> None:
        self._request_deadlines.pop(stream_id, None)
        headers, control = self._codec.decode(stream_id, payload)
        if control:
            self.engine.send_stream_data(self._decoder_stream, control)
        session = stream.session
        if self.is_client:
            if session is not None and session.phase is SessionPhase.CONNECTING:
                self._on_response(session, headers)
            # trailers or a second response: nothing to do for WebTransport
            return
        if session is None and stream.session_id < 0:
            stream.session_id = stream_id  # marks "request seen"
            if self.peer_settings is None:
                self._held_requests.append((stream_id, headers))
            else:
                self._on_request_headers(stream_id, headers)

    def _on_request_frame_data(self, stream_id: int, stream: _Stream, payload: bytes) -> None:
        session = stream.session
        # RFC 9114 4.1: DATA before the first HEADERS is an invalid frame sequence, "a
        # connection error of type H3_FRAME_UNEXPECTED".
        if self.is_client and session is not None and session.phase is SessionPhase.CONNECTING:
            raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, "DATA before the response")
        if session is None:
            if not self.is_client and stream.session_id < 0:
                raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, "DATA before HEADERS")
            return  # request body of a request that is not a session: ignored
        for ctype, value, _end in session.capsules.feed(payload):
            self._on_capsule(session, ctype, value)
            if session.phase is SessionPhase.CLOSED:
                return

    def _on_request_fin(self, stream_id: int, stream: _Stream) -> None:
        session = stream.session
        if not stream.reader or not stream.reader.at_boundary:
            # RFC 9114 section 7.1: a truncated last frame is a connection error.
            raise ProtocolViolation(
                H3ErrorCode.H3_FRAME_ERROR, "request stream ended inside a frame"
            )
        if session is None:
            self._forget(stream_id)
            return
        if session.is_pending:
            if self.is_client:
                self._reject(session, 0, [], "request stream ended without a response")
            else:
                self._finish_session(session, 0, "client cancelled the request", by_peer=True)
            return
        # RFC 9297 3.3: a stream that ends inside a capsule carries a malformed message.
        if not session.capsules.at_boundary:
            raise ProtocolViolation(
                H3ErrorCode.H3_MESSAGE_ERROR, "stream ended inside a capsule", scope=Scope.STREAM
            )
        # A FIN on the CONNECT stream ends the session ("cleanly" when it follows the capsule).
        if not session.close_sent:
            self.engine.send_stream_data(stream_id, b"", True)
            session.close_sent = True
        if session.phase is not SessionPhase.CLOSED:
            self._finish_session(session, 0, "", by_peer=True)
        self._forget(stream_id)

    def _on_response(self, session: SessionState, headers: ev.Headers) -> None:
        status, regular = parse_response(headers)
        if 100 <= status < 200:
            return  # interim response
        if 200 <= status < 300:
            self._events.append(ev.SessionEstablished(session.session_id, regular))
            self._open(session)
        else:
            self._reject(session, status, regular, f"server answered {status}")

    def _reject(self, session: SessionState, status: int, headers: ev.Headers, reason: str) -> None:
        session.set_phase(SessionPhase.REJECTED)
        self._events.append(ev.SessionRejected(session.session_id, status, headers, reason))
        self._end_session(session, H3ErrorCode.WT_BUFFERED_STREAM_REJECTED)

    def _on_request_headers(self, stream_id: int, headers: ev.Headers) -> None:
        """Server: a complete request header section on a request stream."""
        request = parse_request(headers)
        if self.goaway_sent is not None and stream_id >= self.goaway_sent:
            # RFC 9114 5.2: a request beyond our GOAWAY is rejected without processing.
            self.engine.reset_stream(stream_id, H3ErrorCode.H3_REQUEST_REJECTED)
            self.engine.stop_stream(stream_id, H3ErrorCode.H3_REQUEST_REJECTED)
            return
        if request.method != "CONNECT" or request.protocol not in PROTOCOL_TOKENS:
            status = b"501" if request.method == "CONNECT" else b"404"
            self._send_headers(stream_id, [(b":status", status)], fin=True)
            return
        assert self.peer_settings is not None
        draft02 = any(name == b"sec-webtransport-http3-draft02" for name, _ in request.headers)
        dialect = client_dialect(self.peer_settings, request.protocol, draft02)
        session = SessionState(stream_id, dialect, SessionPhase.REQUESTED)
        self._sessions[stream_id] = session
        stream = self._streams[stream_id]
        stream.session = session
        self._events.append(
            ev.SessionRequested(
                stream_id,
                request.path,
                request.authority,
                request.protocol,
                request.headers,
                dialect,
            )
        )
        for waiting in self._unknown_early.pop(stream_id, []):
            wt = self._streams.get(waiting)
            if wt is not None and wt.early_since is not None:
                since = wt.early_since
                self._drop_early(waiting, wt)  # it waits for this session now, from ``since``
                self._attach(waiting, wt, stream_id, since, replay=wt.buf)

    # ----------------------------------------------------------------------------- capsules

    def _on_capsule(self, session: SessionState, ctype: int, value: bytes) -> None:
        if session.close_received:
            raise ProtocolViolation(
                H3ErrorCode.H3_MESSAGE_ERROR, "capsule after close", scope=Scope.SESSION
            )
        if ctype == CapsuleType.CLOSE_SESSION:
            # Draft: the reason "MUST NOT exceed 1024 bytes".
            if not 4 <= len(value) <= 4 + MAX_CLOSE_REASON:
                raise ProtocolViolation(
                    H3ErrorCode.H3_MESSAGE_ERROR, "malformed close capsule", scope=Scope.SESSION
                )
            code = int.from_bytes(value[:4], "big")
            reason = value[4:].decode("utf-8", "replace")
            session.close_received = True
            if not session.close_sent:
                self.engine.send_stream_data(session.session_id, b"", True)
                session.close_sent = True
            self._finish_session(session, code, reason, by_peer=True)
        elif ctype == CapsuleType.DRAIN_SESSION:
            self._events.append(ev.SessionDraining(session.session_id))
        elif session.fc is not None and ctype in _FLOW_CAPSULES:
            self._on_flow_capsule(session, session.fc, ctype, value)
        # Any other capsule type (grease, DATAGRAM capsules, future ones) is ignored.

    def _on_flow_capsule(
        self, session: SessionState, fc: FlowControl, ctype: int, value: bytes
    ) -> None:
        try:
            number, end = decode_varint(value)
        except NeedMoreData:
            number, end = -1, 0
        if number < 0 or end != len(value):
            raise ProtocolViolation(
                H3ErrorCode.H3_MESSAGE_ERROR, "malformed flow-control capsule", scope=Scope.SESSION
            )
        if ctype == CapsuleType.WT_MAX_DATA:
            if number < fc.remote_max_data:
                raise ProtocolViolation(
                    H3ErrorCode.WT_FLOW_CONTROL_ERROR, "WT_MAX_DATA decreased", scope=Scope.SESSION
                )
            fc.remote_max_data = number
            fc.blocked_sent = False
            self._events.append(ev.CreditAvailable(session.session_id))
        elif ctype in (CapsuleType.WT_MAX_STREAMS_BIDI, CapsuleType.WT_MAX_STREAMS_UNI):
            bidi = ctype == CapsuleType.WT_MAX_STREAMS_BIDI
            if number < fc.remote_max_streams[bidi]:
                raise ProtocolViolation(
                    H3ErrorCode.WT_FLOW_CONTROL_ERROR,
                    "WT_MAX_STREAMS decreased",
                    scope=Scope.SESSION,
                )
            fc.remote_max_streams[bidi] = number
            fc.blocked_sent = False
            self._events.append(ev.CreditAvailable(session.session_id))
        # *_BLOCKED capsules are informational: credit is granted as data is consumed.

    def _blocked_data(self, session: SessionState, fc: FlowControl) -> None:
        if not fc.blocked_sent:
            fc.blocked_sent = True
            self._send_capsule(
                session, CapsuleType.WT_DATA_BLOCKED, encode_varint(fc.remote_max_data)
            )

    def _blocked_streams(self, session: SessionState, fc: FlowControl, bidi: bool) -> None:
        if not fc.blocked_sent:
            fc.blocked_sent = True
            ctype = (
                CapsuleType.WT_STREAMS_BLOCKED_BIDI if bidi else CapsuleType.WT_STREAMS_BLOCKED_UNI
            )
            self._send_capsule(session, ctype, encode_varint(fc.remote_max_streams[bidi]))

    # ------------------------------------------------------------------------ WebTransport streams

    def _attach(
        self, stream_id: int, stream: _Stream, session_id: int, now: float, replay: bytes = b""
    ) -> None:
        """Bind a peer's new WebTransport stream to its session (or make it wait for one)."""
        stream.session_id = session_id
        stream.buf = b""
        session = self._sessions.get(session_id)
        if session is not None and session.phase in (SessionPhase.CLOSED, SessionPhase.REJECTED):
            self._refuse(stream_id, H3ErrorCode.WT_SESSION_GONE)
            return
        if session is None:
            if session_id & 3 != 0:  # session IDs are client-initiated bidirectional stream IDs
                raise ProtocolViolation(H3ErrorCode.H3_ID_ERROR, f"bad session id {session_id}")
            if session_id in self._gone:
                self._refuse(stream_id, H3ErrorCode.WT_SESSION_GONE)
                return
            if self._early_count >= self.max_early_streams:
                self._refuse(stream_id, H3ErrorCode.WT_BUFFERED_STREAM_REJECTED)
                return
            self._early_count += 1
            stream.early_since = now
            self._unknown_early.setdefault(session_id, []).append(stream_id)
            return
        stream.session = session
        session.streams.add(stream_id)
        opened = ev.StreamOpened(session_id, stream_id, not stream.unidir)
        if session.is_open:
            self._count_peer_stream(session, stream)
            self._events.append(opened)
        else:
            if session.early_streams >= self.max_early_streams:
                session.streams.discard(stream_id)
                self._refuse(stream_id, H3ErrorCode.WT_BUFFERED_STREAM_REJECTED)
                return
            session.early_streams += 1
            self._early_count += 1
            stream.early_since = now
            session.early.append(opened)
        if replay or stream.fin:
            self._deliver(stream_id, stream, session, replay, stream.fin)

    def _count_peer_stream(self, session: SessionState, stream: _Stream) -> None:
        fc = session.fc
        if fc is None:
            return
        bidi = not stream.unidir
        stream.counted = True
        fc.peer_opened[bidi] += 1
        # Draft: opening more streams than granted "MUST be treated as a flow control error".
        if fc.peer_opened[bidi] > fc.local_max_streams[bidi]:
            raise ProtocolViolation(
                H3ErrorCode.WT_FLOW_CONTROL_ERROR, "too many streams", scope=Scope.SESSION
            )
        self._grant(session, fc)

    def _refuse(self, stream_id: int, code: int) -> None:
        self.engine.untrack_consumption(stream_id)  # what still arrives is discarded
        self.engine.stop_stream(stream_id, code)
        if not stream_id & 2:  # bidirectional: our sending side goes too
            self.engine.reset_stream(stream_id, code)
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._ignore(stream_id, stream)

    def _ignore(self, stream_id: int, stream: _Stream) -> None:
        """Detach a stream from its session; it is kept, ignored, until nothing more arrives."""
        self._drop_early(stream_id, stream)
        self._release_receive(stream_id, stream)
        self._close_counted(stream_id, stream)
        stream.kind = _Kind.IGNORED
        stream.session = None
        if stream.fin:
            self._forget(stream_id)

    def _release_receive(self, stream_id: int, stream: _Stream) -> None:
        """The receiving side is done with: unread bytes give their session credit back."""
        if stream.released:
            return
        stream.released = True
        self.engine.untrack_consumption(stream_id)
        session = stream.session
        if session is not None and session.fc is not None:
            unread = stream.delivered - stream.consumed
            stream.consumed = stream.delivered
            self._credit_consumed(session, unread)

    def _credit_consumed(self, session: SessionState, size: int) -> None:
        fc = session.fc
        assert fc is not None
        fc.consumed += size
        if session.is_open and fc.data_update_due():
            self._grant(session, fc)

    def _close_counted(self, stream_id: int, stream: _Stream) -> None:
        """A stream that held one of the session's stream credits is gone: credit may follow."""
        session = stream.session
        if not stream.counted or session is None or session.fc is None:
            return
        stream.counted = False
        session.fc.peer_closed[not stream_id & 2] += 1
        if session.is_open:
            self._grant(session, session.fc)

    def _on_wt_data(self, stream_id: int, stream: _Stream, data: bytes, fin: bool) -> None:
        session = stream.session
        if session is None:  # waiting for its session: keep the bytes (bounded below)
            if stream.session_id >= 0:
                stream.buf += data
                stream.fin = stream.fin or fin
                if len(stream.buf) > self.max_early_bytes:
                    self._refuse(stream_id, H3ErrorCode.WT_BUFFERED_STREAM_REJECTED)
            return
        self._deliver(stream_id, stream, session, data, fin)

    def _deliver(
        self, stream_id: int, stream: _Stream, session: SessionState, data: bytes, fin: bool
    ) -> None:
        if fin:
            stream.fin = True
        event = ev.StreamData(stream_id, data, fin)
        if session.is_open:
            fc = session.fc
            if fc is not None and data:
                fc.received += len(data)
                stream.delivered += len(data)
                if fc.received > fc.local_max_data:
                    raise ProtocolViolation(
                        H3ErrorCode.WT_FLOW_CONTROL_ERROR,
                        "session data credit exceeded",
                        scope=Scope.SESSION,
                    )
                if stream.released:  # nobody reads any more: the bytes are done with
                    stream.consumed += len(data)
                    fc.consumed += len(data)
                if fc.data_update_due():
                    self._grant(session, fc)
            if not stream.released:
                self._events.append(event)
            if fin:
                self._forget_if_done(stream_id, stream)
        elif session.is_pending:
            session.early_bytes += len(data)
            if session.early_bytes > self.max_early_bytes * self.max_early_streams:
                raise ProtocolViolation(
                    H3ErrorCode.WT_BUFFERED_STREAM_REJECTED,
                    "too much early data",
                    scope=Scope.STREAM,
                )
            session.early.append(event)
        # CLOSED sessions: streams were refused already; late bytes are dropped.

    def _grant(self, session: SessionState, fc: FlowControl) -> None:
        updates = fc.updates()
        if updates:
            frame = encode_frame(FrameType.DATA, updates)
            self.engine.send_stream_data(session.session_id, frame)

    def _local_send_done(self, stream_id: int, stream: _Stream) -> None:
        if stream.unidir and not stream.fin:
            return  # a peer's uni stream: we never send on it
        stream.unidir = True  # our direction is finished: only the receive side remains
        self._forget_if_done(stream_id, stream)

    def _forget_if_done(self, stream_id: int, stream: _Stream) -> None:
        """Drop a WebTransport stream's state once both directions are done with.

        Receiving is done when nothing more arrives (FIN or reset) and the application
        released it; sending when our FIN or reset went out (or the stream is the peer's uni).
        """
        if stream.fin and stream.released and stream.unidir:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        self.engine.untrack_consumption(stream_id)
        self._request_deadlines.pop(stream_id, None)
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._drop_early(stream_id, stream)
        if stream.session is not None:
            self._close_counted(stream_id, stream)
            stream.session.streams.discard(stream_id)

    def _on_stream_reset(self, stream_id: int, code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        kind = stream.kind
        if kind in (_Kind.CONTROL, _Kind.QPACK_ENCODER, _Kind.QPACK_DECODER):
            raise ProtocolViolation(H3ErrorCode.H3_CLOSED_CRITICAL_STREAM, f"{kind.value} reset")
        session = stream.session
        if kind is _Kind.REQUEST and session is not None:
            if session.is_pending and self.is_client:
                self._reject(session, 0, [], f"request reset by the server (0x{code:x})")
            else:
                self._finish_session(session, 0, f"CONNECT stream reset (0x{code:x})", by_peer=True)
            self._forget(stream_id)
            return
        stream.fin = True
        if kind in (_Kind.IGNORED, _Kind.UNKNOWN, _Kind.REQUEST):
            self._forget(stream_id)  # not (or not yet) a session's stream: nothing else to do
            return
        if kind is _Kind.WEBTRANSPORT and session is not None:
            event = ev.StreamReset(stream_id, h3_to_app_code(code), code)
            if session.is_open:
                self._events.append(event)
            elif session.is_pending:
                session.early.append(event)
        self._forget_if_done(stream_id, stream)

    def _on_stop_sending(self, stream_id: int, code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.session is None:
            return
        session = stream.session
        if stream.kind is _Kind.REQUEST:
            if not session.is_pending:
                self._finish_session(
                    session, 0, f"CONNECT stream stopped (0x{code:x})", by_peer=True
                )
            return
        # RFC 9000 3.5: answer STOP_SENDING with RESET_STREAM (the engine does not do it for us).
        self.engine.reset_stream(stream_id, code)
        if session.is_open:
            self._events.append(ev.StreamStopped(stream_id, h3_to_app_code(code), code))
        self._local_send_done(stream_id, stream)

    # ----------------------------------------------------------------------------- datagrams in

    def _on_datagram(self, data: bytes) -> None:
        try:
            quarter, pos = decode_varint(data)
        except NeedMoreData:
            raise ProtocolViolation(H3ErrorCode.H3_DATAGRAM_ERROR, "datagram without id") from None
        session = self._sessions.get(quarter * 4)
        if session is None:
            return  # unknown or ended session: datagrams are unreliable, dropping is allowed
        event = ev.DatagramReceived(session.session_id, data[pos:])
        if session.is_open:
            self._events.append(event)
        elif session.is_pending:
            waiting = sum(isinstance(e, ev.DatagramReceived) for e in session.early)
            if waiting < self.max_early_streams:
                session.early.append(event)

    # ----------------------------------------------------------------------------- session end

    def _finish_session(
        self, session: SessionState, code: int, reason: str, *, by_peer: bool
    ) -> None:
        if session.phase is SessionPhase.CLOSED:
            return
        session.set_phase(SessionPhase.CLOSED)
        self._end_session(session, H3ErrorCode.WT_SESSION_GONE)
        self._events.append(ev.SessionClosed(session.session_id, code, reason, by_peer))

    def _end_session(self, session: SessionState, code: int) -> None:
        """Refuse every stream of an ended session and forget it (its ID stays 'gone')."""
        # Draft: "the endpoint MUST reset the send side and abort reading on the receive side
        # of all of the streams associated with the session" (WT_SESSION_GONE).
        for stream_id in list(session.streams):
            self._refuse(stream_id, code)
        session.streams.clear()
        session.early.clear()
        for waiting in self._unknown_early.get(session.session_id, [])[:]:
            self._refuse(waiting, code)
        self._unknown_early.pop(session.session_id, None)
        self._gone.add(session.session_id)
        self._sessions.pop(session.session_id, None)
        if session.phase is not SessionPhase.CLOSED:
            session.set_phase(SessionPhase.CLOSED)

    # ----------------------------------------------------------------------------- early expiry

    def _early_streams(self) -> list[tuple[int, _Stream, SessionState | None]]:
        """Every stream waiting for a session: unknown sessions and sessions not open yet."""
        out: list[tuple[int, _Stream, SessionState | None]] = []
        for stream_ids in self._unknown_early.values():
            for sid in stream_ids:
                stream = self._streams.get(sid)
                if stream is not None and stream.early_since is not None:
                    out.append((sid, stream, None))
        for session in self._sessions.values():
            if session.is_pending and session.early_streams:
                for sid in session.streams:
                    stream = self._streams.get(sid)
                    if stream is not None and stream.early_since is not None:
                        out.append((sid, stream, session))
        return out

    def _early_deadline(self) -> float | None:
        if not self._early_count:
            return None
        times = [stream.early_since for _, stream, _ in self._early_streams()]
        return min(t for t in times if t is not None) + self.early_timeout if times else None

    def _expire_early(self, now: float) -> None:
        """Refuse streams that waited ``early_timeout`` for their session (bounded in time)."""
        if not self._early_count:
            return
        for sid, stream, session in self._early_streams():
            since = stream.early_since
            if since is None or since + self.early_timeout > now:
                continue
            if session is not None:
                session.streams.discard(sid)
            self._refuse(sid, H3ErrorCode.WT_BUFFERED_STREAM_REJECTED)
            self._forget(sid)

    def _request_deadline(self) -> float | None:
        return next(iter(self._request_deadlines.values()), None)

    def _expire_requests(self, now: float) -> None:
        """Answer 408 on request streams whose HEADERS did not arrive in ``request_timeout``.

        RFC 9114 4.1.2: a server may answer before the whole request arrived, stop reading
        (STOP_SENDING with H3_NO_ERROR) and end its side cleanly. What still arrives on the
        stream is ignored until it ends.
        """
        while self._request_deadlines:
            stream_id, deadline = next(iter(self._request_deadlines.items()))
            if deadline > now:
                return
            del self._request_deadlines[stream_id]
            stream = self._streams.get(stream_id)
            if stream is None:
                continue
            self._send_headers(stream_id, [(b":status", b"408")], fin=True)
            self.engine.stop_stream(stream_id, H3ErrorCode.H3_NO_ERROR)
            self._ignore(stream_id, stream)

    def _drop_early(self, stream_id: int, stream: _Stream) -> None:
        """Take a stream out of the early bookkeeping (it stopped waiting for its session).

        The one place the counts go down: the stream's events leave the pending session's
        queue, so a refused stream is never replayed to the application.
        """
        if stream.early_since is None:
            return
        stream.early_since = None
        self._early_count -= 1
        session = stream.session
        if session is None:
            waiting = self._unknown_early.get(stream.session_id)
            if waiting is not None and stream_id in waiting:
                waiting.remove(stream_id)
                if not waiting:
                    del self._unknown_early[stream.session_id]
            return
        session.early_streams -= 1
        session.early = [e for e in session.early if getattr(e, "stream_id", None) != stream_id]
