"""The sans-I/O WebTransport-over-HTTP/3 connection: :class:`WebTransportProtocol`.

Theory of operation. :class:`WebTransportProtocol` owns one QUIC engine. Bytes from the network go
in through :meth:`receive_datagram`, timers through :meth:`handle_timer`; both only change state
and queue :mod:`events`. The layer above drains events with :meth:`pop_events` and asks for the
bytes to send with :meth:`datagrams_to_send`. The clock is always an argument.

The class is built in layers, one module per concern, each a base class of the next:
``stream_table.py`` (the state, what each QUIC stream is, letting streams go, early streams),
``sessions.py`` (sessions: opening, capsules and flow control, WebTransport streams and
datagrams, the end), ``http3.py`` (our control stream, classifying the peer's streams, SETTINGS,
GOAWAY, requests) and this module (the driving API, the public calls, the engine's events).
Peer protocol violations raise :class:`ProtocolViolation` inside; :meth:`_process_engine_events`
hands each to the one boundary, ``_violation`` (sessions.py), which turns it into the wire error
of the scope it names (stream, session, connection) and never lets it out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from . import events as ev
from .codec import (
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
)
from .headers import HeaderCodec
from .http3 import Http3Layer
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
    PathStats,
    QuicEngine,
    no_packet_from_peer,
)
from .session import SessionPhase, SessionState
from .settings import (
    LocalLimits,
)
from .stream_table import Kind, Stream
from .wire import (
    MAX_CLOSE_REASON,
    CapsuleType,
    Dialect,
    FrameType,
    H3ErrorCode,
    SettingId,
    StreamType,
    app_code_to_h3,
    check_app_code,
)

logger = logging.getLogger(__name__)


class WebTransportProtocol(Http3Layer):
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
        keep_alive_interval: seconds between PINGs while a session is open (so that an idle
            session is not timed out by either side). None: no PINGs.
        liveness_timeout: seconds without any packet from the peer after which the connection
            is declared lost (``ConnectionTerminated``, not by the peer); counted from the
            last packet received (from the connection attempt, on a client). None: QUIC's
            idle timeout alone.
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
        keep_alive_interval: float | None = None,
        liveness_timeout: float | None = None,
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
        self._streams: dict[int, Stream] = {}
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
        self.keep_alive_interval = keep_alive_interval
        self.liveness_timeout = liveness_timeout
        self._last_received: float | None = None
        self._next_ping: float | None = None
        self.closing = False  # close() was called (the CONNECTION_CLOSE is queued or sent)
        self._close_after: tuple[int, float] | None = None  # (stream, linger deadline)
        self._codec = HeaderCodec()
        self._init_local_streams()

    def connect(self, addr: Address, now: float) -> None:
        """Client: start the QUIC handshake."""
        self.engine.connect(addr, now)
        self._heard_from_peer(now)  # the liveness clock starts with the attempt

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Process one UDP payload from ``addr``."""
        self._heard_from_peer(now)
        self.engine.receive_datagram(data, addr, now)
        self._process_engine_events(now)

    def receive_datagrams(self, batch: list[tuple[bytes, Address]], now: float) -> None:
        """Process several UDP payloads at once (cheaper than one call each)."""
        self._heard_from_peer(now)
        self.engine.receive_datagrams(batch, now)
        self._process_engine_events(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """UDP payloads to send now.

        What sending produced is processed at once, too: a connection ID announced in these
        packets (ConnectionIdIssued) must be routable before the peer can use it.
        """
        self._close_if_delivered(now)
        out = self.engine.datagrams_to_send(now)
        self._process_engine_events(now)
        return out

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        deadlines = [
            t
            for t in (
                self.engine.get_timer(),
                self._early_deadline(),
                self._request_deadline(),
                self._sessionless_deadline(),
                self._next_ping,
                self._liveness_deadline(),
                None if self._close_after is None else self._close_after[1],
            )
            if t is not None
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run timers due at ``now``."""
        deadline, timeout = self._liveness_deadline(), self.liveness_timeout
        if deadline is not None and timeout is not None and deadline <= now:
            self._lost(no_packet_from_peer(timeout))  # before QUIC's idle timer, due as well
        engine_timer = self.engine.get_timer()
        if engine_timer is not None and engine_timer <= now:
            self.engine.handle_timer(now)
        self._expire_early(now)
        self._expire_requests(now)
        self._keep_alive(now)
        self._close_if_delivered(now)
        self._process_engine_events(now)
        deadline = self._sessionless_deadline()
        if deadline is not None and deadline <= now:
            self._sessionless_since = None
            timeout = self.no_session_timeout
            self.close(code=H3ErrorCode.H3_NO_ERROR, reason=f"no session for {timeout:g} s")
            self._process_engine_events(now)

    # ----------------------------------------------------------------------------- liveness

    def _heard_from_peer(self, now: float) -> None:
        self._last_received = now
        interval = self.keep_alive_interval
        if self._next_ping is None and interval is not None and not self.terminated:
            self._next_ping = now + interval

    def _keep_alive(self, now: float) -> None:
        """A PING every ``keep_alive_interval`` while a session is open (idle sessions live)."""
        due = self._next_ping
        interval = self.keep_alive_interval
        if due is None or interval is None or due > now:
            return
        if self.terminated:
            self._next_ping = None
            return
        if self._sessions:
            self.engine.send_ping()
        self._next_ping = now + interval

    def _sessionless_deadline(self) -> float | None:
        since, timeout = self._sessionless_since, self.no_session_timeout
        return None if since is None or timeout is None else since + timeout

    def _liveness_deadline(self) -> float | None:
        """Last receipt + ``liveness_timeout``: with keep-alive PINGs, QUIC's idle timer
        restarts on the first PING after the last receipt (RFC 9000 10.1), which would stretch
        loss detection to idle + interval; this keeps it within one timeout."""
        last, timeout = self._last_received, self.liveness_timeout
        if last is None or timeout is None or self.terminated:
            return None
        return last + timeout

    def _lost(self, end: EngineTerminated) -> None:
        """The peer is gone: end here (the engine's close goes out, if anyone still listens)."""
        self.engine.close(end.error_code, end.reason)
        self._on_terminated(end)

    def pop_events(self) -> list[ev.ProtocolEvent]:
        """Events produced since the last call, oldest first."""
        out = self._events
        self._events = []
        return out

    def close(self, *, code: int = H3ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        """Close the whole connection (CONNECTION_CLOSE with an HTTP/3 code)."""
        self._close_after = None
        self.closing = True
        self.engine.close(code, reason)

    def close_when_delivered(self, stream_id: int, *, linger: float, now: float) -> None:
        """Close the connection (H3_NO_ERROR) once ``stream_id``'s data is acknowledged.

        For a client whose last session ended: closing at once would let the CONNECTION_CLOSE
        overtake a lost close capsule, and the server would see a connection error instead of
        the session's code. ``linger`` seconds bound the wait.
        """
        if not self.closing and not self.terminated:
            self._close_after = (stream_id, now + linger)

    def _close_if_delivered(self, now: float) -> None:
        pending = self._close_after
        if pending is not None and (not self.engine.send_buffered(pending[0]) or pending[1] <= now):
            self.close()

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
        stream = Stream(Kind.REQUEST, False, local=True)
        stream.session = session
        stream.session_id = sid
        stream.reader = self._request_reader()
        self._streams[sid] = stream
        self._send_headers(sid, section)
        return sid

    def accept_session(
        self, session_id: int, *, status: int = 200, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Server: answer a requested session with ``status`` (2xx, 200 by default) and open it."""
        if not 200 <= status < 300:
            raise ProtocolUsageError(f"{status} is not a success status")
        session = self._pending_session(session_id, SessionPhase.REQUESTED)
        section: ev.Headers = [(b":status", str(status).encode())]
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
        """Close a session: close capsule and FIN (or cancel a pending CONNECT).

        Raises:
            ValueError: ``code`` is outside 0..0xFFFFFFFF (as for stream codes), before
                anything changes.
            ProtocolUsageError: the reason is longer than 1024 UTF-8 bytes.
        """
        check_app_code(code)
        session = self._sessions.get(session_id)
        if session is None or session.phase is SessionPhase.CLOSED:
            return
        raw = reason.encode()
        if len(raw) > MAX_CLOSE_REASON:
            raise ProtocolUsageError(f"close reason is {len(raw)} bytes, limit {MAX_CLOSE_REASON}")
        if session.phase is SessionPhase.OPEN and not session.close_sent:
            capsule = encode_capsule(CapsuleType.CLOSE_SESSION, code.to_bytes(4, "big") + raw)
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
                self._blocked(session, fc, bidirectional)
                raise CreditExhausted("no stream credit")
            fc.we_opened[bidirectional] += 1
        stream_id = self.engine.next_stream_id(not bidirectional)
        signal = FrameType.WEBTRANSPORT_STREAM if bidirectional else StreamType.WEBTRANSPORT
        stream = Stream(Kind.WEBTRANSPORT, not bidirectional, local=True)
        stream.session = session
        stream.session_id = session_id
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
        if not stream.ended:  # released before its end: the peer should stop sending
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

    def send_blocked(self, stream_id: int) -> bool:
        """The application has bytes for ``stream_id`` that :meth:`send_capacity` does not allow.

        When the session's data credit is what holds them back, the peer is told (a
        WT_DATA_BLOCKED capsule, at most once until new credit arrives); a full local send
        buffer is not the peer's business. Returns True when a capsule was queued.
        """
        stream = self._streams.get(stream_id)
        session = None if stream is None else stream.session
        if session is None or not session.is_open or session.fc is None:
            return False
        if session.fc.data_credit() > 0 or None in session.fc.blocked_sent:
            return False
        self._blocked(session, session.fc, None)
        return True

    def send_stream_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send payload on a WebTransport stream.

        Raises:
            CreditExhausted: ``data`` exceeds the session's flow-control credit.
            ProtocolUsageError: the stream is unknown or its session is not open.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.kind is not Kind.WEBTRANSPORT or stream.session is None:
            raise ProtocolUsageError(f"stream {stream_id} is not an open WebTransport stream")
        session = stream.session
        if not session.is_open:
            raise ProtocolUsageError(f"session {session.session_id} is not open")
        fc = session.fc
        if fc is not None and data:
            if len(data) > fc.data_credit():
                self._blocked(session, fc, None)
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

    def send_ping(self) -> None:
        """Queue a PING (keep-alive, liveness probe)."""
        self.engine.send_ping()

    def smoothed_rtt(self) -> float:
        """The connection's smoothed round-trip time, in seconds."""
        return self.engine.smoothed_rtt()

    def path_stats(self) -> PathStats:
        """What the engine counts of the connection's network path (bytes, packets, RTT)."""
        return self.engine.path_stats()

    def send_acknowledged(self, stream_id: int, sent: int) -> int | None:
        """Of the ``sent`` payload bytes handed to :meth:`send_stream_data` for ``stream_id``,
        how many the peer acknowledged; None when the engine cannot tell (its
        ``send_buffered`` is only an upper bound)."""
        if not self.engine.exact_send_buffered:
            return None
        return max(0, sent - self.engine.send_buffered(stream_id))

    def peer_certificate_der(self) -> bytes | None:
        """The peer's certificate (DER) once the handshake is done; None before or without."""
        return self.engine.peer_certificate_der()

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

    def _on_terminated(self, event: EngineTerminated) -> None:
        if self.terminated:
            return
        self.terminated = True
        for session in list(self._sessions.values()):
            if session.phase is not SessionPhase.CLOSED:
                session.set_phase(SessionPhase.CLOSED)
        self._events.append(ev.ConnectionTerminated(event.error_code, event.reason, event.by_peer))
