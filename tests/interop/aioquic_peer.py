"""An independent WebTransport (draft-02) peer built only on aioquic's own HTTP/3 stack.

This module is the "other implementation" for interoperability tests: it knows nothing about
pywebtransport and speaks WebTransport over HTTP/3 through
:class:`aioquic.h3.connection.H3Connection` with ``enable_webtransport=True`` (draft-02:
``SETTINGS_ENABLE_WEBTRANSPORT`` and ``H3_DATAGRAM``).

Server routes (see :func:`start_echo_server`):

* ``/echo``: bidirectional stream bytes come back on the same stream (FIN mirrored, a peer
  reset mirrored as a reset with the same code); a client unidirectional stream is echoed,
  after its FIN, on a new server-opened unidirectional stream; datagrams come back as datagrams
  (those that fit in one packet: :func:`largest_datagram`), and a ``b"largest"`` datagram is
  answered with one of the largest size.
* ``/push``: right after accepting, the server opens a bidirectional stream carrying
  ``b"server-bidi"`` + FIN and a unidirectional stream carrying ``b"server-uni"`` + FIN, then
  echoes like ``/echo``.
* ``/close``: right after accepting, the server sends CLOSE_WEBTRANSPORT_SESSION (code 4242,
  reason ``b"bye"``) in a DATA frame on the CONNECT stream, then FIN.
* ``/reset``: the first bytes on a client bidirectional stream are answered by RESET_STREAM with
  the HTTP/3 code of WebTransport application code 7 (nothing is echoed).
* ``/stop``: the first bytes on a client bidirectional stream are answered by STOP_SENDING with
  the HTTP/3 code of WebTransport application code 9 (nothing is echoed).
* anything else: 404.

What the server saw from its clients (stream resets, STOP_SENDING, session closes) is recorded in
:attr:`AioquicServerHandle.observed`, so a test can check what its own client sent.

The client side is :func:`open_client_session`.

aioquic quirk handled here: H3Connection parses the bytes that arrive on a WebTransport
bidirectional stream that *this* side opened as HTTP/3 frames (it never records the stream as a
WebTransport stream). Both peers therefore keep their own set of locally opened bidirectional
WebTransport streams and deliver the QUIC events of those streams directly, without passing them
through H3Connection.

Run as a process::

    python -m tests.interop.aioquic_peer serve --port 0 --cert cert.pem --key key.pem

prints ``READY <port>`` on stdout once listening and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional
from aioquic.quic.events import (
    ConnectionTerminated,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet_builder import PACKET_NUMBER_SEND_SIZE

__all__ = [
    "CLOSE_SESSION_CAPSULE",
    "MAX_DATAGRAM_FRAME_SIZE",
    "AioquicClientSession",
    "AioquicServerHandle",
    "PeerResetError",
    "ServerObservations",
    "app_code_from_http3",
    "app_code_to_http3",
    "encode_close_capsule",
    "main",
    "open_client_session",
    "start_echo_server",
]

#: Capsule type of CLOSE_WEBTRANSPORT_SESSION.
CLOSE_SESSION_CAPSULE = 0x2843
#: Transport parameter sent by both peers (must be > 0 for datagrams).
MAX_DATAGRAM_FRAME_SIZE = 65536
#: First HTTP/3 error code of the WebTransport application error range.
_WT_CODE_FIRST = 0x52E4A40FA8DB
_WT_CODE_LAST = 0x52E5AC983162
_PUSH_BIDI_PAYLOAD = b"server-bidi"
_PUSH_UNI_PAYLOAD = b"server-uni"
_CLOSE_CODE = 4242
_CLOSE_REASON = b"bye"
_RESET_CODE = 7
_STOP_CODE = 9
_ECHO_PATHS = frozenset({"/echo", "/push", "/close", "/reset", "/stop"})


def app_code_to_http3(code: int) -> int:
    """Map a 32-bit WebTransport application error code into the HTTP/3 error space.

    Args:
        code: The application error code (0 to 2**32 - 1).

    Returns:
        The HTTP/3 error code carried by RESET_STREAM / STOP_SENDING.
    """
    if not 0 <= code <= 0xFFFFFFFF:
        raise ValueError(f"application error code out of range: {code}")
    return _WT_CODE_FIRST + code + code // 0x1E


def app_code_from_http3(h3_code: int) -> int | None:
    """Map an HTTP/3 error code back to the WebTransport application error code.

    Args:
        h3_code: The error code received in RESET_STREAM / STOP_SENDING.

    Returns:
        The application code, or ``None`` when the code is outside the WebTransport range or is
        one of the reserved (GREASE) values.
    """
    if not _WT_CODE_FIRST <= h3_code <= _WT_CODE_LAST:
        return None
    if (h3_code - 0x21) % 0x1F == 0:
        return None
    shifted = h3_code - _WT_CODE_FIRST
    return shifted - shifted // 0x1F


def encode_close_capsule(code: int, reason: bytes) -> bytes:
    """Encode a CLOSE_WEBTRANSPORT_SESSION capsule.

    Args:
        code: The 32-bit application error code.
        reason: The UTF-8 reason (at most 1024 bytes).

    Returns:
        The capsule bytes (type, length, value), to be sent inside an HTTP/3 DATA frame.
    """
    value = code.to_bytes(4, "big") + reason
    return encode_uint_var(CLOSE_SESSION_CAPSULE) + encode_uint_var(len(value)) + value


def _read_varint(data: bytes | bytearray, offset: int) -> tuple[int, int] | None:
    """Decode a QUIC variable-length integer at ``offset``.

    Returns:
        ``(value, next_offset)``, or ``None`` when ``data`` ends first.
    """
    if offset >= len(data):
        return None
    length = 1 << (data[offset] >> 6)
    if offset + length > len(data):
        return None
    value = data[offset] & 0x3F
    for byte in data[offset + 1 : offset + length]:
        value = (value << 8) | byte
    return value, offset + length


def _parse_capsules(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove and return every complete capsule at the start of ``buffer``."""
    capsules: list[tuple[int, bytes]] = []
    while buffer:
        head = _read_varint(buffer, 0)
        size = _read_varint(buffer, head[1]) if head is not None else None
        if head is None or size is None:
            break
        (capsule_type, _), (length, start) = head, size
        if len(buffer) - start < length:
            break
        capsules.append((capsule_type, bytes(buffer[start : start + length])))
        del buffer[: start + length]
    return capsules


#: The AEAD tag of a 1-RTT packet (AES-GCM and ChaCha20-Poly1305 alike).
AEAD_TAG_SIZE = 16


def largest_datagram(quic: QuicConnection, session_id: int) -> int:
    """The largest WebTransport datagram payload ``quic`` can send on the session.

    aioquic does no path MTU discovery: its packets are at most ``max_datagram_size`` bytes
    (1,200 by default), and one packet holds the datagram with the short header (one byte, the
    peer's connection ID, a two-byte packet number), the AEAD tag, the DATAGRAM frame's type and
    length and the quarter stream ID. aioquic keeps a larger datagram queued for ever, and every
    datagram queued after it with it, so the peers here never send one.
    """
    header = 1 + len(quic._peer_cid.cid) + PACKET_NUMBER_SEND_SIZE
    frame = 1 + 2  # type, length (a two-byte varint for 64 to 16,383 bytes)
    quarter = len(encode_uint_var(session_id // 4))
    return quic._max_datagram_size - header - AEAD_TAG_SIZE - frame - quarter


def datagram_pattern(size: int) -> bytes:
    """The answer to ``b"largest"``: byte ``i`` is ``(i * 31 + size) % 251``."""
    return bytes((i * 31 + size) % 251 for i in range(size))


def _header_map(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Decode a header list into a dict (last value wins)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}


class PeerResetError(Exception):
    """The remote peer reset a stream this peer was reading.

    Attributes:
        stream_id: The QUIC stream ID.
        http3_code: The HTTP/3 error code carried by RESET_STREAM.
        app_code: The WebTransport application code, or ``None`` when unmapped.
    """

    def __init__(self, stream_id: int, http3_code: int) -> None:
        """Record the reset stream and its code."""
        self.stream_id = stream_id
        self.http3_code = http3_code
        self.app_code = app_code_from_http3(http3_code)
        super().__init__(
            f"stream {stream_id} reset with code {http3_code:#x} (app {self.app_code})"
        )


class _WebTransportProtocol(QuicConnectionProtocol):
    """Shared plumbing: an H3Connection plus the quirk work-around for local bidi streams."""

    def __init__(self, quic: QuicConnection, stream_handler: Any = None) -> None:
        """Create the HTTP/3 layer on top of the QUIC connection."""
        super().__init__(quic, stream_handler=stream_handler)
        self._h3 = H3Connection(quic, enable_webtransport=True)
        # Locally opened bidirectional WebTransport streams -> session ID. Their incoming bytes
        # are raw payload and must not reach H3Connection (see the module docstring).
        self._local_bidi: dict[int, int] = {}

    def open_wt_stream(self, session_id: int, *, unidirectional: bool) -> int:
        """Open a WebTransport stream on ``session_id`` and return its stream ID."""
        stream_id = self._h3.create_webtransport_stream(
            session_id, is_unidirectional=unidirectional
        )
        if not unidirectional:
            self._local_bidi[stream_id] = session_id
        return stream_id

    def quic_event_received(self, event: QuicEvent) -> None:
        """Route one QUIC event, bypassing H3Connection for locally opened bidi streams."""
        if isinstance(event, ConnectionTerminated):
            self.connection_lost_event(event)
            return
        stream_id = getattr(event, "stream_id", None)
        if stream_id is not None and stream_id in self._local_bidi:
            session_id = self._local_bidi[stream_id]
            if isinstance(event, StreamDataReceived):
                self.wt_stream_data(stream_id, session_id, event.data, event.end_stream)
            elif isinstance(event, StreamReset):
                self.wt_stream_reset(stream_id, event.error_code)
            elif isinstance(event, StopSendingReceived):
                self.wt_stop_sending(stream_id, event.error_code)
            return
        if isinstance(event, StreamReset):
            self.wt_stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, StopSendingReceived):
            self.wt_stop_sending(event.stream_id, event.error_code)
        for h3_event in self._h3.handle_event(event):
            self.h3_event_received(h3_event)

    def h3_event_received(self, event: H3Event) -> None:
        """Handle one HTTP/3 event (WebTransport stream data is dispatched here)."""
        if isinstance(event, WebTransportStreamDataReceived):
            self.wt_stream_data(event.stream_id, event.session_id, event.data, event.stream_ended)
        else:
            self.other_h3_event(event)

    # Hooks for subclasses.

    def wt_stream_data(self, stream_id: int, session_id: int, data: bytes, fin: bool) -> None:
        """Bytes arrived on a WebTransport stream."""

    def wt_stream_reset(self, stream_id: int, error_code: int) -> None:
        """Handle the peer resetting the sending side of a stream."""

    def wt_stop_sending(self, stream_id: int, error_code: int) -> None:
        """Handle the peer asking this side to stop sending on a stream."""

    def other_h3_event(self, event: H3Event) -> None:
        """Handle an HTTP/3 event other than WebTransport stream data."""

    def connection_lost_event(self, event: ConnectionTerminated) -> None:
        """Handle the end of the QUIC connection."""


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


@dataclass
class ServerObservations:
    """What the aioquic server received from its clients, in arrival order.

    Attributes:
        resets: ``(stream_id, http3_code)`` of every RESET_STREAM on a WebTransport stream.
        stop_sendings: ``(stream_id, http3_code)`` of every STOP_SENDING on such a stream.
        stops_sent: the streams ``/stop`` sent its STOP_SENDING on.
        largest_sent: the sizes of the answers to ``b"largest"``.
        datagrams_not_echoed: the sizes of the datagrams too large to echo.
        session_closes: ``(session_id, code, reason)`` when a client ends a session; code and
            reason are ``None`` when the session ended without a CLOSE_WEBTRANSPORT_SESSION
            capsule (plain FIN or reset of the CONNECT stream).
    """

    resets: asyncio.Queue[tuple[int, int]] = field(default_factory=asyncio.Queue)
    stop_sendings: asyncio.Queue[tuple[int, int]] = field(default_factory=asyncio.Queue)
    stops_sent: set[int] = field(default_factory=set)
    largest_sent: list[int] = field(default_factory=list)
    datagrams_not_echoed: list[int] = field(default_factory=list)
    session_closes: asyncio.Queue[tuple[int, int | None, str | None]] = field(
        default_factory=asyncio.Queue
    )


@dataclass
class _ServerSession:
    """A WebTransport session accepted by the aioquic server."""

    session_id: int
    path: str
    capsule_buffer: bytearray = field(default_factory=bytearray)
    uni_buffers: dict[int, bytearray] = field(default_factory=dict)
    closed: bool = False
    client_closed: bool = False


class _EchoServerProtocol(_WebTransportProtocol):
    """Server side: accepts extended CONNECT on the known paths and echoes."""

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: Any = None,
        *,
        observed: ServerObservations | None = None,
    ) -> None:
        """Start with no session; record client actions into ``observed``."""
        super().__init__(quic, stream_handler=stream_handler)
        self._sessions: dict[int, _ServerSession] = {}
        self._observed = observed if observed is not None else ServerObservations()

    def other_h3_event(self, event: H3Event) -> None:
        """Handle CONNECT requests, capsules on CONNECT streams and datagrams."""
        if isinstance(event, HeadersReceived):
            self._on_request(event)
        elif isinstance(event, DatagramReceived):
            if event.stream_id in self._sessions:
                self._echo_datagram(event.stream_id, event.data)
        elif isinstance(event, DataReceived):
            self._on_session_data(event)

    def _echo_datagram(self, session_id: int, data: bytes) -> None:
        """Echo one datagram if it fits in a packet; answer ``b"largest"`` with the largest."""
        largest = largest_datagram(self._quic, session_id)
        if data == b"largest":
            data = datagram_pattern(largest)
            self._observed.largest_sent.append(largest)
        if len(data) > largest:
            self._observed.datagrams_not_echoed.append(len(data))
        else:
            self._h3.send_datagram(session_id, data)

    def _on_request(self, event: HeadersReceived) -> None:
        """Accept or reject one request."""
        headers = _header_map(event.headers)
        path = headers.get(":path", "")
        is_wt = headers.get(":method") == "CONNECT" and headers.get(":protocol") == "webtransport"
        if not is_wt or path not in _ECHO_PATHS:
            self._h3.send_headers(event.stream_id, [(b":status", b"404")], end_stream=True)
            return
        session_id = event.stream_id
        self._sessions[session_id] = _ServerSession(session_id=session_id, path=path)
        self._h3.send_headers(
            session_id,
            [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")],
        )
        if path == "/push":
            bidi = self.open_wt_stream(session_id, unidirectional=False)
            self._quic.send_stream_data(bidi, _PUSH_BIDI_PAYLOAD, end_stream=True)
            uni = self.open_wt_stream(session_id, unidirectional=True)
            self._quic.send_stream_data(uni, _PUSH_UNI_PAYLOAD, end_stream=True)
        elif path == "/close":
            self._close_session(session_id, _CLOSE_CODE, _CLOSE_REASON)

    def _close_session(self, session_id: int, code: int, reason: bytes) -> None:
        """Send CLOSE_WEBTRANSPORT_SESSION then FIN on the CONNECT stream."""
        session = self._sessions[session_id]
        if session.closed:
            return
        session.closed = True
        self._h3.send_data(session_id, encode_close_capsule(code, reason), end_stream=True)

    def _on_session_data(self, event: DataReceived) -> None:
        """Capsules or FIN on a CONNECT stream: a FIN ends the session, answered with FIN."""
        session = self._sessions.get(event.stream_id)
        if session is None:
            return
        session.capsule_buffer.extend(event.data)
        for capsule_type, value in _parse_capsules(session.capsule_buffer):
            if capsule_type == CLOSE_SESSION_CAPSULE and len(value) >= 4:
                reason = value[4:].decode("utf-8", errors="replace")
                self._session_ended(session, int.from_bytes(value[:4], "big"), reason)
        if event.stream_ended:
            self._session_ended(session, None, None)

    def _session_ended(self, session: _ServerSession, code: int | None, reason: str | None) -> None:
        """Record the client's end of a session (once) and finish the CONNECT stream."""
        if session.client_closed:
            return
        session.client_closed = True
        self._observed.session_closes.put_nowait((session.session_id, code, reason))
        if not session.closed:
            session.closed = True
            self._h3.send_data(session.session_id, b"", end_stream=True)

    def wt_stream_data(self, stream_id: int, session_id: int, data: bytes, fin: bool) -> None:
        """Echo bidirectional bytes at once; echo unidirectional bytes after FIN."""
        session = self._sessions.get(session_id)
        if session is None or session.closed:
            return
        if stream_id in self._local_bidi:
            return  # the /push stream: already finished, replies are ignored
        if not stream_is_unidirectional(stream_id):
            if session.path == "/reset":
                if data or fin:
                    self._quic.reset_stream(stream_id, app_code_to_http3(_RESET_CODE))
            elif session.path == "/stop":
                if data and stream_id not in self._observed.stops_sent:
                    self._observed.stops_sent.add(stream_id)
                    self._quic.stop_stream(stream_id, app_code_to_http3(_STOP_CODE))
            elif data or fin:
                self._quic.send_stream_data(stream_id, data, end_stream=fin)
            return
        buffer = session.uni_buffers.setdefault(stream_id, bytearray())
        buffer.extend(data)
        if fin:
            del session.uni_buffers[stream_id]
            reply = self.open_wt_stream(session_id, unidirectional=True)
            self._quic.send_stream_data(reply, bytes(buffer), end_stream=True)

    def wt_stream_reset(self, stream_id: int, error_code: int) -> None:
        """Record a reset; mirror it on a client bidirectional stream with the same code."""
        session = self._sessions.get(stream_id)
        if session is not None:
            self._session_ended(session, None, None)
            return
        self._observed.resets.put_nowait((stream_id, error_code))
        if not stream_is_unidirectional(stream_id) and stream_id not in self._local_bidi:
            self._quic.reset_stream(stream_id, error_code)

    def wt_stop_sending(self, stream_id: int, error_code: int) -> None:
        """Record a STOP_SENDING (aioquic has already reset the sending side)."""
        if stream_id not in self._sessions:
            self._observed.stop_sendings.put_nowait((stream_id, error_code))


@dataclass
class AioquicServerHandle:
    """A running aioquic WebTransport echo server.

    Attributes:
        host: The address the server listens on.
        port: The UDP port actually bound (useful when 0 was asked for).
        observed: What the server received from its clients (resets, session closes).
    """

    host: str
    port: int
    observed: ServerObservations
    _server: QuicServer

    async def close(self) -> None:
        """Close every connection and stop listening."""
        self._server.close()


def _server_configuration(certfile: str, keyfile: str) -> QuicConfiguration:
    """Build the server's QUIC configuration (HTTP/3 ALPN, datagrams on)."""
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE,
    )
    config.load_cert_chain(certfile, keyfile)
    return config


async def start_echo_server(
    *, host: str, port: int, certfile: str, keyfile: str
) -> AioquicServerHandle:
    """Start the aioquic WebTransport server described in the module docstring.

    Args:
        host: Address to bind (loopback in tests).
        port: UDP port, 0 for an ephemeral one.
        certfile: PEM certificate chain.
        keyfile: PEM private key.

    Returns:
        A handle whose ``port`` is the port actually bound.
    """
    observed = ServerObservations()
    server = await serve(
        host,
        port,
        configuration=_server_configuration(certfile, keyfile),
        create_protocol=functools.partial(_EchoServerProtocol, observed=observed),
    )
    transport = server._transport
    assert transport is not None
    bound = transport.get_extra_info("sockname")
    return AioquicServerHandle(host=host, port=int(bound[1]), observed=observed, _server=server)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail ``future`` if still pending, without a "never retrieved" warning if nobody waits."""
    if not future.done():
        future.set_exception(error)
        future.exception()  # marks the exception as retrieved


@dataclass
class _ClientStream:
    """Receive state of one WebTransport stream seen by the client."""

    data: bytearray = field(default_factory=bytearray)
    done: asyncio.Future[bytes] | None = None


class _ClientProtocol(_WebTransportProtocol):
    """Client side: one WebTransport session, streams and datagrams exposed as futures/queues."""

    def __init__(self, quic: QuicConnection, stream_handler: Any = None) -> None:
        """Create the futures and queues the session object waits on."""
        super().__init__(quic, stream_handler=stream_handler)
        loop = asyncio.get_running_loop()
        self.session_id: int | None = None
        self.settings_received: asyncio.Future[dict[int, int]] = loop.create_future()
        self.response: asyncio.Future[list[tuple[bytes, bytes]]] = loop.create_future()
        self.session_closed: asyncio.Future[tuple[int | None, str | None]] = loop.create_future()
        self.incoming_uni: asyncio.Queue[tuple[int, bytes] | BaseException] = asyncio.Queue()
        self.incoming_bidi: asyncio.Queue[int | BaseException] = asyncio.Queue()
        self.datagrams: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self.stop_sending: dict[int, asyncio.Future[int]] = {}
        self._streams: dict[int, _ClientStream] = {}
        self._capsules = bytearray()
        self._close_info: tuple[int | None, str | None] = (None, None)

    def stream_state(self, stream_id: int) -> _ClientStream:
        """Return (creating if needed) the receive state of a stream."""
        state = self._streams.get(stream_id)
        if state is None:
            state = _ClientStream(done=asyncio.get_running_loop().create_future())
            self._streams[stream_id] = state
        return state

    def quic_event_received(self, event: QuicEvent) -> None:
        """Route the event, then notice the server's SETTINGS once they arrive."""
        super().quic_event_received(event)
        settings = self._h3.received_settings
        if settings is not None and not self.settings_received.done():
            self.settings_received.set_result(dict(settings))

    def other_h3_event(self, event: H3Event) -> None:
        """Handle the CONNECT response, capsules and datagrams."""
        if isinstance(event, HeadersReceived) and event.stream_id == self.session_id:
            if not self.response.done():
                self.response.set_result(list(event.headers))
            if event.stream_ended:
                self._end_session()
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            self._capsules.extend(event.data)
            for capsule_type, value in _parse_capsules(self._capsules):
                if capsule_type == CLOSE_SESSION_CAPSULE and len(value) >= 4:
                    reason = value[4:].decode("utf-8", errors="replace")
                    self._close_info = (int.from_bytes(value[:4], "big"), reason)
            if event.stream_ended:
                self._end_session()
        elif isinstance(event, DatagramReceived) and event.stream_id == self.session_id:
            self.datagrams.put_nowait(event.data)

    def _end_session(self) -> None:
        """Mark the session over (its CONNECT stream ended)."""
        if not self.session_closed.done():
            self.session_closed.set_result(self._close_info)

    def wt_stream_data(self, stream_id: int, session_id: int, data: bytes, fin: bool) -> None:
        """Accumulate stream bytes; announce new server-opened streams."""
        if session_id != self.session_id:
            return
        is_new = stream_id not in self._streams
        state = self.stream_state(stream_id)
        state.data.extend(data)
        if is_new and not stream_is_unidirectional(stream_id) and stream_id % 2 == 1:
            self.incoming_bidi.put_nowait(stream_id)
        if fin and state.done is not None and not state.done.done():
            state.done.set_result(bytes(state.data))
            if stream_is_unidirectional(stream_id):
                self.incoming_uni.put_nowait((stream_id, bytes(state.data)))

    def wt_stream_reset(self, stream_id: int, error_code: int) -> None:
        """Fail a pending read of the reset stream."""
        if stream_id == self.session_id:
            self._end_session()
            return
        state = self.stream_state(stream_id)
        if state.done is not None:
            _fail(state.done, PeerResetError(stream_id, error_code))

    def wt_stop_sending(self, stream_id: int, error_code: int) -> None:
        """Record the peer's STOP_SENDING code."""
        future = self.stop_sending.setdefault(stream_id, asyncio.get_running_loop().create_future())
        if not future.done():
            future.set_result(error_code)

    def connection_lost_event(self, event: ConnectionTerminated) -> None:
        """Wake every waiter with a connection error."""
        error = ConnectionError(
            f"QUIC connection closed: code {event.error_code:#x} {event.reason_phrase!r}"
        )
        _fail(self.settings_received, error)
        _fail(self.response, error)
        self._end_session()
        for state in self._streams.values():
            if state.done is not None:
                _fail(state.done, error)
        self.incoming_uni.put_nowait(error)
        self.incoming_bidi.put_nowait(error)
        self.datagrams.put_nowait(error)


class AioquicClientSession:
    """A WebTransport client session driven by aioquic's H3Connection.

    Attributes:
        status: The ``:status`` of the CONNECT response.
        headers: The response headers (decoded, last value wins).
        session_id: The session ID (the CONNECT stream ID).
        server_settings: The HTTP/3 SETTINGS the server sent.
    """

    def __init__(
        self,
        protocol: _ClientProtocol,
        stack: contextlib.AsyncExitStack,
        response: list[tuple[bytes, bytes]],
        settings: dict[int, int],
    ) -> None:
        """Wrap an established protocol; use :func:`open_client_session` to create one."""
        self._protocol = protocol
        self._stack = stack
        assert protocol.session_id is not None
        self.session_id: int = protocol.session_id
        self.headers = _header_map(response)
        self.status = int(self.headers[":status"])
        self.server_settings = settings

    def _transmit(self) -> None:
        self._protocol.transmit()

    async def open_bidi(self, data: bytes, *, end: bool = True) -> int:
        """Open a bidirectional stream, send ``data`` (and FIN when ``end``), return its ID."""
        stream_id = self._protocol.open_wt_stream(self.session_id, unidirectional=False)
        self._protocol.stream_state(stream_id)
        self._protocol._quic.send_stream_data(stream_id, data, end_stream=end)
        self._transmit()
        return stream_id

    async def open_uni(self, data: bytes, *, end: bool = True) -> int:
        """Open a unidirectional stream, send ``data`` (and FIN when ``end``), return its ID."""
        stream_id = self._protocol.open_wt_stream(self.session_id, unidirectional=True)
        self._protocol._quic.send_stream_data(stream_id, data, end_stream=end)
        self._transmit()
        return stream_id

    async def send(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Send more bytes on a stream this client can write to."""
        self._protocol._quic.send_stream_data(stream_id, data, end_stream=end)
        self._transmit()

    async def read_stream(self, stream_id: int) -> bytes:
        """Return every byte received on ``stream_id`` once its FIN arrives.

        Raises:
            PeerResetError: The peer reset the stream.
            ConnectionError: The connection ended first.
        """
        done = self._protocol.stream_state(stream_id).done
        assert done is not None
        return await asyncio.shield(done)

    async def accept_uni(self) -> tuple[int, bytes]:
        """Wait for the next server-opened unidirectional stream, returned after its FIN."""
        item = await self._protocol.incoming_uni.get()
        if isinstance(item, BaseException):
            self._protocol.incoming_uni.put_nowait(item)
            raise item
        return item

    async def accept_bidi(self) -> int:
        """Wait for the next server-opened bidirectional stream and return its ID."""
        item = await self._protocol.incoming_bidi.get()
        if isinstance(item, BaseException):
            self._protocol.incoming_bidi.put_nowait(item)
            raise item
        return item

    def send_datagram(self, data: bytes) -> None:
        """Send one datagram on the session."""
        self._protocol._h3.send_datagram(self.session_id, data)
        self._transmit()

    @property
    def max_datagram_size(self) -> int:
        """The largest datagram payload this client sends (:func:`largest_datagram`)."""
        return largest_datagram(self._protocol._quic, self.session_id)

    async def receive_datagram(self) -> bytes:
        """Wait for the next datagram of the session."""
        item = await self._protocol.datagrams.get()
        if isinstance(item, BaseException):
            self._protocol.datagrams.put_nowait(item)
            raise item
        return item

    def reset_stream(self, stream_id: int, code: int) -> None:
        """Reset the sending side of a stream with WebTransport application ``code``."""
        self._protocol._quic.reset_stream(stream_id, app_code_to_http3(code))
        self._transmit()

    def stop_stream(self, stream_id: int, code: int) -> None:
        """Send STOP_SENDING on a stream with WebTransport application ``code``."""
        self._protocol._quic.stop_stream(stream_id, app_code_to_http3(code))
        self._transmit()

    async def wait_stop_sending(self, stream_id: int) -> int:
        """Wait for the peer's STOP_SENDING on ``stream_id``; return the HTTP/3 code."""
        future = self._protocol.stop_sending.setdefault(
            stream_id, asyncio.get_running_loop().create_future()
        )
        return await asyncio.shield(future)

    def close_session(self, code: int = 0, reason: str = "") -> None:
        """Send CLOSE_WEBTRANSPORT_SESSION and FIN on the CONNECT stream."""
        capsule = encode_close_capsule(code, reason.encode("utf-8"))
        self._protocol._h3.send_data(self.session_id, capsule, end_stream=True)
        self._transmit()

    async def wait_session_closed(self) -> tuple[int | None, str | None]:
        """Wait until the CONNECT stream ends; return the close capsule's (code, reason)."""
        return await asyncio.shield(self._protocol.session_closed)

    async def close(self) -> None:
        """Close the QUIC connection and wait for it to end."""
        await self._stack.aclose()


def _client_configuration(
    server_name: str, cafile: str | None, verify: bool, idle_timeout: float | None = None
) -> QuicConfiguration:
    """Build the client's QUIC configuration."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE,
        server_name=server_name,
    )
    if idle_timeout is not None:
        config.idle_timeout = idle_timeout
    if cafile is not None:
        config.load_verify_locations(cafile=cafile)
    if not verify:
        config.verify_mode = ssl.CERT_NONE
    return config


async def open_client_session(
    *,
    host: str,
    port: int,
    path: str,
    server_name: str,
    cafile: str | None = None,
    verify: bool = True,
    idle_timeout: float | None = None,
) -> AioquicClientSession:
    """Connect, send an extended CONNECT for ``path`` and wait for the response.

    The CONNECT is sent once the server's SETTINGS have arrived (RFC 9220 requires
    ``SETTINGS_ENABLE_CONNECT_PROTOCOL`` before an extended CONNECT). Any status is returned:
    check :attr:`AioquicClientSession.status`.

    Args:
        host: Server address.
        port: Server UDP port.
        path: Request path, e.g. ``"/echo"``.
        server_name: TLS SNI / certificate name, also used in ``:authority``.
        cafile: PEM file of trusted certificates.
        verify: Whether to verify the server certificate.
        idle_timeout: aioquic's QUIC idle timeout in seconds (None: its default, 60).

    Returns:
        The session; call :meth:`AioquicClientSession.close` when done.
    """
    stack = contextlib.AsyncExitStack()
    try:
        quic_protocol = await stack.enter_async_context(
            connect(
                host,
                port,
                configuration=_client_configuration(server_name, cafile, verify, idle_timeout),
                create_protocol=_ClientProtocol,
            )
        )
        assert isinstance(quic_protocol, _ClientProtocol)
        protocol = quic_protocol
        settings = await asyncio.shield(protocol.settings_received)
        session_id = protocol._quic.get_next_available_stream_id()
        protocol.session_id = session_id
        authority = f"{server_name}:{port}".encode()
        protocol._h3.send_headers(
            session_id,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", authority),
                (b":path", path.encode()),
                (b"sec-webtransport-http3-draft02", b"1"),
            ],
        )
        protocol.transmit()
        response = await asyncio.shield(protocol.response)
    except BaseException:
        await stack.aclose()
        raise
    return AioquicClientSession(protocol, stack, response, settings)


# --------------------------------------------------------------------------------------------
# Process entry point
# --------------------------------------------------------------------------------------------


async def _serve_forever(host: str, port: int, certfile: str, keyfile: str) -> None:
    """Serve until SIGINT/SIGTERM, announcing ``READY <port>`` on stdout."""
    handle = await start_echo_server(host=host, port=port, certfile=certfile, keyfile=keyfile)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    setter: Callable[[], None] = stop.set
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, setter)
    sys.stdout.write(f"READY {handle.port}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await handle.close()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``serve --port P --cert C --key K [--host H]``."""
    parser = argparse.ArgumentParser(prog="python -m tests.interop.aioquic_peer")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the WebTransport echo server")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=0)
    serve_cmd.add_argument("--cert", required=True)
    serve_cmd.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(args.host, args.port, args.cert, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
