"""WebTransport sessions for asyncio.

A session object is created by the client when it sends a CONNECT and by the server when one
arrives, and is added to its connection, which routes the core's events to it. The server layer
answers the CONNECT with :func:`accept_session` or :func:`reject_session`. The session's state
moves CONNECTING -> READY -> (DRAINING) -> CLOSED through :meth:`_set_state` only. When the
session or its connection ends for any reason, :meth:`_on_closed` wakes every waiter at once:
blocked reads and writes raise, ``wait_closed()`` returns, ``is_ready`` is false.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from . import exceptions as errors
from .datagram import WebTransportDatagramTransport
from .events import EventEmitter, EventType
from .exceptions import FlowControlError, SessionError, StreamError
from .protocol import CreditExhausted, ProtocolUsageError
from .protocol.subprotocol import PROTOCOL, chosen_protocol, encode_protocol
from .protocol.wire import H3ErrorCode
from .stream import AnyStream, WebTransportReceiveStream, WebTransportSendStream, WebTransportStream

if TYPE_CHECKING:
    from types import TracebackType

    from .connection import WebTransportConnection

logger = logging.getLogger(__name__)

IncomingStream = WebTransportStream | WebTransportReceiveStream


class SessionState(Enum):
    """Lifecycle of a session."""

    CONNECTING = "connecting"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


@dataclass
class _SessionCounters:
    """Counters of one session (times are ``time.monotonic()`` values)."""

    created_at: float = 0.0
    ready_at: float | None = None
    closed_at: float | None = None
    streams_opened: int = 0
    streams_accepted: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramStats:
    """A session's datagram losses, shaped like the W3C ``WebTransportDatagramStats``.

    Attributes:
        dropped_incoming: datagrams that arrived while the receive queue
            (``datagram_queue_size``) was full: the oldest queued one was dropped for each.
        dropped_outgoing: datagrams dropped from the connection's send queue because it was
            full when this session sent one (``datagrams.send()``); the dropped ones may be of
            any session on the connection.
        expired_outgoing: always 0: outgoing datagrams have no maximum age here, so none
            expires (a full send queue drops the oldest instead: ``dropped_outgoing``).
        lost_outgoing: always None: QUIC does not retransmit DATAGRAM frames and neither
            engine reports which of them were in a lost packet.
    """

    dropped_incoming: int = 0
    dropped_outgoing: int = 0
    expired_outgoing: int = 0
    lost_outgoing: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStats:
    """A snapshot of a session's statistics, shaped like the W3C ``WebTransportConnectionStats``.

    The packet, byte, loss and RTT figures are those of the QUIC connection that carries the
    session: sessions pooled on one connection share them. Packets are UDP datagrams and bytes
    their payloads (QUIC headers, retransmissions and acknowledgements included). A figure the
    QUIC engine cannot tell is None (see docs/architecture.md, the QUIC engines).

    Attributes:
        timestamp: when the snapshot was taken (``time.time()``).
        bytes_sent, packets_sent: sent on the connection.
        bytes_lost, packets_lost: sent on the connection and declared lost by loss recovery.
        bytes_received, packets_received: received on the connection.
        smoothed_rtt, rtt_variation, min_rtt: the connection's RTT estimates (RFC 9002 5),
            in seconds; None before the first RTT sample.
        estimated_send_rate: the congestion window over the smoothed RTT, in bits per second
            (None before an RTT sample): what congestion control lets the connection send.
        datagrams: the session's datagram losses.
        streams_opened_local, streams_opened_remote: the session's streams opened by this
            side, and by the peer.
        stream_bytes_sent, stream_bytes_received: the session's stream payload bytes handed
            to QUIC and delivered by it.
        datagrams_sent, datagrams_received: the session's datagrams queued for sending and
            received (those later dropped included).
    """

    timestamp: float
    bytes_sent: int
    packets_sent: int
    bytes_lost: int | None
    packets_lost: int | None
    bytes_received: int
    packets_received: int
    smoothed_rtt: float | None
    rtt_variation: float | None
    min_rtt: float | None
    estimated_send_rate: float | None
    datagrams: DatagramStats
    streams_opened_local: int = 0
    streams_opened_remote: int = 0
    stream_bytes_sent: int = 0
    stream_bytes_received: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0


def estimated_send_rate(congestion_window: int | None, smoothed_rtt: float | None) -> float | None:
    """Bits per second the congestion window allows at the smoothed RTT (None: unknown)."""
    if congestion_window is None or not smoothed_rtt or smoothed_rtt <= 0:
        return None
    return congestion_window * 8 / smoothed_rtt


def _closed_error(session_id: int, code: int, reason: str, by_peer: bool | None) -> SessionError:
    """The error of a closed session, in words: who closed it (when known), the code, why."""
    who = {True: " by the peer", False: " locally", None: ""}[by_peer]
    message = f"session {session_id} was closed{who} with code {code}"
    if reason:
        message += f": {reason}"
    error = SessionError(message, error_code=code)
    error._code_in_message = True
    return error


class WebTransportSession(EventEmitter):
    """One WebTransport session: streams, datagrams and its close.

    Use as ``async with session:`` to close it on exit. It is an
    :class:`~pywebtransport.events.EventEmitter`: ``session_ready``, ``session_draining``,
    ``session_closed``, ``stream_opened``, ``stream_closed`` and ``datagram_received`` (see
    docs/events.md). Events notify; the queues behind ``accept_*`` and ``datagrams.receive()``
    are filled all the same.
    """

    def __init__(
        self,
        conn: WebTransportConnection,
        session_id: int,
        *,
        path: str,
        headers: list[tuple[str, str]],
        remote_address: Any,
        protocol: str | None = None,
        offered_protocols: Sequence[str] = (),
        authority: str = "",
    ) -> None:
        super().__init__()
        self._authority = authority
        self._conn = conn
        self._session_id = session_id
        self._path = path
        self._headers = headers
        self._remote_address = remote_address
        self._state = SessionState.CONNECTING
        self._protocol = protocol  # server: the subprotocol it chose
        self._offered_protocols = list(offered_protocols)  # client: what its CONNECT offered
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._closed_error: Exception | None = None
        self._streams: dict[int, AnyStream] = {}
        self._incoming: list[IncomingStream] = []  # (a deque costs 600 bytes even when empty)
        self._incoming_waiter: asyncio.Future[None] | None = None
        self._credit_waiter: asyncio.Future[None] | None = None
        self._ready = conn.loop.create_future()
        self._closed = conn.loop.create_future()
        self._datagrams: WebTransportDatagramTransport | None = None
        self._stats = _SessionCounters(created_at=time.monotonic())
        self._response_status = 200  # server: what accept_session answers (set_response)
        self._response_headers: list[tuple[str, str]] = []
        self.path_params: dict[str, str] = {}

    # ----------------------------------------------------------------------------- properties

    @property
    def session_id(self) -> int:
        """The session ID (the CONNECT stream's ID)."""
        return self._session_id

    @property
    def path(self) -> str:
        """Request path, with query, without fragment."""
        return self._path

    @property
    def headers(self) -> dict[str, str]:
        """Request headers (server) or response headers (client); later duplicates win."""
        return dict(self._headers)

    @property
    def authority(self) -> str:
        """The request's ``:authority`` (``host[:port]``), which ``headers`` leaves out."""
        return self._authority

    @property
    def state(self) -> SessionState:
        """Current lifecycle state."""
        return self._state

    @property
    def is_ready(self) -> bool:
        """True while the session can carry streams and datagrams."""
        return self._state in (SessionState.READY, SessionState.DRAINING)

    @property
    def is_closed(self) -> bool:
        """True once the session has ended."""
        return self._state is SessionState.CLOSED

    @property
    def remote_address(self) -> Any:
        """The peer's address (on a server: the client's real address)."""
        return self._conn.remote_address

    @property
    def protocol(self) -> str | None:
        """The negotiated subprotocol, if any."""
        return self._protocol

    @property
    def close_code(self) -> int | None:
        """The application code the session closed with (None while open)."""
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The reason the session closed with (None while open)."""
        return self._close_reason

    @property
    def datagrams(self) -> WebTransportDatagramTransport:
        """The session's datagram transport (created on first use)."""
        if self._datagrams is None:
            self._datagrams = WebTransportDatagramTransport(
                self, queue_size=self._conn.datagram_queue_size
            )
            if self._closed_error is not None:
                self._datagrams._fail(self._closed_error)
        return self._datagrams

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: streams, bytes, datagrams, RTT and the created/ready/closed times."""
        out = asdict(self._stats)
        out["rtt"] = self._conn.protocol.smoothed_rtt()
        if self._datagrams is not None:
            out["datagrams"] = self._datagrams.stats
        out["active_streams"] = len(self._streams)
        return out

    def get_stats(self) -> SessionStats:
        """A snapshot of the session's statistics (see :class:`SessionStats`).

        A plain method, not a coroutine as the browser's ``getStats()``: every figure is in
        this process, read without waiting. It works after the session closed too (the
        connection's figures then stop moving once the connection is gone).
        """
        path = self._conn.protocol.path_stats()
        counters = self._stats
        transport = self._datagrams
        datagrams = None if transport is None else transport._stats
        smoothed = path.smoothed_rtt
        min_rtt = path.min_rtt
        if min_rtt is not None and smoothed is not None and min_rtt > smoothed:
            # aioquic floors its minimum at 1 ms but starts the smoothed estimate from the
            # first sample unfloored; RFC 9002's minimum never exceeds the smoothed RTT.
            min_rtt = smoothed
        return SessionStats(
            timestamp=time.time(),
            bytes_sent=path.bytes_sent,
            packets_sent=path.packets_sent,
            bytes_lost=path.bytes_lost,
            packets_lost=path.packets_lost,
            bytes_received=path.bytes_received,
            packets_received=path.packets_received,
            smoothed_rtt=smoothed,
            rtt_variation=path.rtt_variation,
            min_rtt=min_rtt,
            estimated_send_rate=estimated_send_rate(path.congestion_window, smoothed),
            datagrams=DatagramStats()
            if datagrams is None
            else DatagramStats(
                dropped_incoming=datagrams.dropped_incoming,
                dropped_outgoing=datagrams.dropped_outgoing,
            ),
            streams_opened_local=counters.streams_opened,
            streams_opened_remote=counters.streams_accepted,
            stream_bytes_sent=counters.bytes_sent,
            stream_bytes_received=counters.bytes_received,
            datagrams_sent=0 if datagrams is None else datagrams.sent,
            datagrams_received=0 if datagrams is None else datagrams.received,
        )

    def __repr__(self) -> str:
        return (
            f"<WebTransportSession id={self._session_id} path={self._path!r} "
            f"state={self._state.value} streams={len(self._streams)}>"
        )

    # ----------------------------------------------------------------------------- life cycle

    def _set_state(self, state: SessionState) -> None:
        if state is self._state:
            return
        logger.debug("session %d: %s -> %s", self._session_id, self._state.value, state.value)
        self._state = state

    def _on_ready(self, headers: list[tuple[str, str]] | None = None) -> None:
        if headers is not None and self._conn.is_client:
            self._headers = headers
            chosen = chosen_protocol(
                [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            )
            # A choice the client did not offer is ignored (no protocol was negotiated).
            if chosen is not None and chosen in self._offered_protocols:
                self._protocol = chosen
            elif chosen is not None:
                logger.warning(
                    "session %d: server chose unoffered protocol %r", self._session_id, chosen
                )
        self._set_state(SessionState.READY)
        self._stats.ready_at = time.monotonic()
        if not self._ready.done():
            self._ready.set_result(None)
        self.emit(EventType.SESSION_READY, {"session_id": self._session_id})

    def _on_draining(self) -> None:
        if self._state is SessionState.READY:
            self._set_state(SessionState.DRAINING)
            self.emit(EventType.SESSION_DRAINING, {"session_id": self._session_id})

    def _on_closed(
        self, code: int, reason: str, exc: Exception | None = None, *, by_peer: bool | None = None
    ) -> None:
        """The session ended (either side, or the connection): wake everything.

        ``by_peer`` says who closed it, when known (it only words the error message).
        """
        if self._state is SessionState.CLOSED:
            return
        self._set_state(SessionState.CLOSED)
        self._close_code = code
        self._close_reason = reason
        self._stats.closed_at = time.monotonic()
        error = exc or _closed_error(self._session_id, code, reason, by_peer)
        self._closed_error = error
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream_error = StreamError(f"stream {stream.stream_id}: {error}", error_code=code)
            stream_error._code_in_message = exc is None  # the session's message states it
            stream._fail(stream_error)
            stream._emit_closed()
        if self._datagrams is not None:
            self._datagrams._fail(error)
        for waiter in (self._incoming_waiter, self._credit_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved here: nobody may be waiting
        if not self._closed.done():
            self._closed.set_result(None)
        self._conn.session_ended(self)
        self.emit(
            EventType.SESSION_CLOSED,
            {"session_id": self._session_id, "code": code, "reason": reason},
        )

    async def ready(self, *, timeout: float | None = None) -> None:
        """Wait until the session is ready.

        Raises:
            SessionError: it closed first.  pywebtransport.TimeoutError: ``timeout`` passed.
        """
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            raise errors.TimeoutError(
                f"session {self._session_id} not ready in {timeout} s"
            ) from None

    async def wait_closed(self) -> None:
        """Wait until the session has ended."""
        await asyncio.shield(self._closed)

    def add_close_callback(self, callback: Callable[[WebTransportSession], None]) -> None:
        """Call ``callback(session)`` once the session has ended (soon, if it already has)."""
        self._closed.add_done_callback(lambda _: callback(self))

    def drain(self) -> None:
        """Ask the peer to wrap the session up, and move to DRAINING (a ready session only).

        Sends WT_DRAIN_SESSION where the dialect has it; either way the session reports
        ``session_draining``. Nothing is closed: the session ends when either side closes it.
        """
        if self._state is not SessionState.READY:
            return
        self._conn.protocol.drain_session(self._session_id)
        self._on_draining()
        self._conn.schedule_transmit()

    def set_response(
        self, *, status: int = 200, headers: Sequence[tuple[str, str]] | Mapping[str, str] = ()
    ) -> None:
        """Server: the status (2xx) and extra headers the session will be accepted with.

        For middleware, before the server accepts the session; a later call replaces an
        earlier one. A ``wt-protocol`` header replaces the one of the chosen subprotocol, and
        ``protocol`` follows it when it parses as a String.

        Raises:
            ValueError: ``status`` is not within 200..299, or a header name is empty, has
                upper-case letters or is a pseudo-header (``:status``).
            SessionError: a client session, or one that was already answered.
        """
        if self._conn.is_client or self._state is not SessionState.CONNECTING:
            raise SessionError(f"session {self._session_id}: the response is no longer open")
        if not 200 <= status < 300:
            raise ValueError(f"{status} is not a success status (200..299)")
        items = list(headers.items() if isinstance(headers, Mapping) else headers)
        for name, _ in items:
            if not name or name != name.lower() or name.startswith(":"):
                raise ValueError(f"invalid response header name {name!r}")
        self._response_status = status
        self._response_headers = items
        chosen = chosen_protocol([(k.encode("latin-1"), v.encode("latin-1")) for k, v in items])
        if chosen is not None:
            self._protocol = chosen

    def close_connection(self, *, code: int = H3ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        """Close the QUIC connection the session runs on (CONNECTION_CLOSE).

        Every session of that connection ends with it, this one included. ``code`` is the
        HTTP/3 application error code (H3_NO_ERROR, 0x100, by default). Does nothing once the
        connection has ended.

        Raises:
            ValueError: ``code`` is outside 0..2**62-1 (nothing changes).
        """
        if not 0 <= code < 1 << 62:
            raise ValueError(f"connection close code out of range: {code}")
        self._conn.close(code=code, reason=reason)

    async def close(self, *, code: int = 0, reason: str = "") -> None:
        """Close the session (close capsule and FIN). Idempotent.

        Ends every stream of the session; closes the QUIC connection when no other session
        uses it (client side).

        Raises:
            ValueError: ``code`` is outside 0..0xFFFFFFFF (nothing changes).
            SessionError: the reason is longer than 1024 UTF-8 bytes.
        """
        self.close_nowait(code=code, reason=reason)

    def close_nowait(self, *, code: int = 0, reason: str = "") -> None:
        """:meth:`close` without awaiting: for callbacks and cleanup paths (cancellation too)."""
        if self._state is SessionState.CLOSED:
            return
        try:
            self._conn.protocol.close_session(self._session_id, code=code, reason=reason)
        except ProtocolUsageError as exc:
            raise SessionError(str(exc)) from None
        self._conn.flush_events()
        self._on_closed(code, reason, by_peer=False)
        self._conn.schedule_transmit()

    async def __aenter__(self) -> WebTransportSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------------------- streams

    def _check_open(self) -> None:
        if self._closed_error is not None:
            raise self._closed_error
        if not self.is_ready:
            raise SessionError(f"session {self._session_id} is not ready")

    async def _create(self, bidirectional: bool, timeout: float | None) -> AnyStream:
        self._check_open()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        stream_id = self._conn.protocol.create_stream(
                            self._session_id, bidirectional=bidirectional
                        )
                        break
                    except CreditExhausted:
                        await self._wait_credit()
                    except ProtocolUsageError as exc:
                        raise SessionError(str(exc)) from None
        except TimeoutError:
            raise FlowControlError(f"no stream credit within {timeout} s") from None
        cls = WebTransportStream if bidirectional else WebTransportSendStream
        stream = cls(self, stream_id)
        self._streams[stream_id] = stream
        self._conn.register_stream(stream_id, stream)
        self._stats.streams_opened += 1
        self._conn.schedule_transmit()
        self._emit_stream(EventType.STREAM_OPENED, stream)
        return stream

    def _emit_stream(self, event_type: EventType, stream: AnyStream) -> None:
        if self.has_listeners(event_type):
            data = {"stream_id": stream.stream_id, "stream": stream, "local": stream._local}
            self.emit(event_type, data)

    async def _wait_credit(self) -> None:
        # Every coroutine that ran out of credit waits on the same future, so that one update
        # wakes them all (each retries, and waits again if the update was not enough for it).
        if self._credit_waiter is None:
            self._credit_waiter = self._conn.loop.create_future()
        await asyncio.shield(self._credit_waiter)
        self._check_open()

    def _on_credit(self) -> None:
        waiter, self._credit_waiter = self._credit_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        for stream in self._streams.values():
            if isinstance(stream, WebTransportSendStream):
                stream._wake_writer()

    async def create_bidirectional_stream(
        self, *, timeout: float | None = None
    ) -> WebTransportStream:
        """Open a bidirectional stream."""
        stream = await self._create(True, timeout)
        assert isinstance(stream, WebTransportStream)
        return stream

    async def create_unidirectional_stream(
        self, *, timeout: float | None = None
    ) -> WebTransportSendStream:
        """Open a unidirectional (send-only) stream."""
        stream = await self._create(False, timeout)
        assert isinstance(stream, WebTransportSendStream)
        return stream

    def _on_stream_opened(self, stream_id: int, bidirectional: bool) -> IncomingStream:
        stream: IncomingStream = (
            WebTransportStream(self, stream_id)
            if bidirectional
            else WebTransportReceiveStream(self, stream_id)
        )
        self._streams[stream_id] = stream
        self._incoming.append(stream)
        self._stats.streams_accepted += 1
        if self._incoming_waiter is not None and not self._incoming_waiter.done():
            self._incoming_waiter.set_result(None)
        self._emit_stream(EventType.STREAM_OPENED, stream)
        return stream

    def _forget_stream(self, stream_id: int) -> None:
        """Both directions of a stream ended: no event can concern it any more."""
        self._streams.pop(stream_id, None)
        self._conn.forget_stream(stream_id)

    async def _next_incoming(self, kind: type | None, timeout: float | None) -> IncomingStream:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for stream in self._incoming:
                        if kind is None or type(stream) is kind:
                            self._incoming.remove(stream)
                            return stream
                    if self._closed_error is not None:
                        raise self._closed_error
                    if self._incoming_waiter is not None:
                        await asyncio.shield(self._incoming_waiter)
                        continue
                    self._incoming_waiter = self._conn.loop.create_future()
                    try:
                        await self._incoming_waiter
                    finally:
                        self._incoming_waiter = None
        except TimeoutError:
            raise errors.TimeoutError(f"no incoming stream within {timeout} s") from None

    async def accept_bidirectional_stream(
        self, *, timeout: float | None = None
    ) -> WebTransportStream:
        """Wait for the peer to open a bidirectional stream."""
        stream = await self._next_incoming(WebTransportStream, timeout)
        assert isinstance(stream, WebTransportStream)
        return stream

    async def accept_unidirectional_stream(
        self, *, timeout: float | None = None
    ) -> WebTransportReceiveStream:
        """Wait for the peer to open a unidirectional stream."""
        stream = await self._next_incoming(WebTransportReceiveStream, timeout)
        return stream

    async def incoming_streams(self) -> AsyncIterator[IncomingStream]:
        """Yield peer-opened streams of both kinds until the session closes."""
        while True:
            try:
                yield await self._next_incoming(None, None)
            except SessionError:
                return
            except Exception:
                if self._closed_error is not None:
                    return
                raise


def accept_session(session: WebTransportSession, *, headers: list[tuple[str, str]] = ()) -> int:  # type: ignore[assignment]
    """Server: answer the session's CONNECT with a 2xx (used by the server layer).

    The status and any extra headers are those of :meth:`WebTransportSession.set_response`
    (200 and none by default), after ``headers``. Returns the status sent.
    """
    conn = session._conn
    section = [(k.encode(), v.encode()) for k, v in [*headers, *session._response_headers]]
    if session._protocol is not None and not any(k == PROTOCOL for k, _ in section):
        section.append((PROTOCOL, encode_protocol(session._protocol)))
    try:
        conn.protocol.accept_session(
            session.session_id, status=session._response_status, headers=section
        )
    except ProtocolUsageError as exc:
        raise SessionError(f"cannot accept: {exc}") from None
    session._on_ready()
    conn.flush_events()
    conn.schedule_transmit()
    return session._response_status


def reject_session(session: WebTransportSession, *, status: int) -> None:
    """Server: answer the session's CONNECT with a non-2xx status."""
    conn = session._conn
    try:
        conn.protocol.reject_session(session.session_id, status=status)
    except ProtocolUsageError:
        return  # already closed by the peer
    session._on_closed(0, f"rejected with status {status}")
    conn.flush_events()
    conn.schedule_transmit()
