"""HTTP/3 in the core: control stream, peer streams classified, SETTINGS, GOAWAY, requests.

The first bytes of a peer's stream decide what it is (stream type, or the 0x41 signal of a
bidirectional WebTransport stream). The control stream carries SETTINGS (which choose the
dialect) and GOAWAY; request streams carry HEADERS (an extended CONNECT opens a session, a
response answers one) and then the session's capsules in DATA frames. Requests that arrive
before the peer's SETTINGS are held; a request whose HEADERS do not arrive in time is answered
408.
"""

from __future__ import annotations

import logging

from . import events as ev
from .codec import (
    NeedMoreData,
    decode_varint,
    encode_frame,
    encode_varint,
)
from .errors import (
    ProtocolViolation,
    Scope,
)
from .headers import parse_request, parse_response
from .session import SessionPhase, SessionState
from .sessions import SessionLayer
from .settings import (
    build_settings,
    client_dialect,
    decode_settings,
    encode_settings,
    peer_supports_datagrams,
    server_dialect,
)
from .stream_table import Kind, Stream
from .tlv import TLVReader
from .wire import (
    HTTP2_ONLY_FRAME_TYPES,
    PROTOCOL_TOKENS,
    FrameType,
    H3ErrorCode,
    StreamType,
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


class Http3Layer(SessionLayer):
    """HTTP/3 framing and requests on top of the session layer."""

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

    def _on_stream_data(self, stream_id: int, data: bytes, fin: bool, now: float) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.kind is Kind.WEBTRANSPORT:
            self._on_wt_data(stream_id, stream, data, fin)
            return
        if stream is None:
            stream = self._new_peer_stream(stream_id)
            if self.request_timeout is not None and not stream_id & 2 and stream_id & 1 == 0:
                self._request_deadlines[stream_id] = now + self.request_timeout
        if stream.kind is Kind.UNKNOWN:
            self._classify(stream_id, stream, data, fin, now)
            return
        self._on_typed_data(stream_id, stream, data, fin)

    def _classify(self, stream_id: int, stream: Stream, data: bytes, fin: bool, now: float) -> None:
        """Read a new peer stream's first bytes to learn what it is."""
        buf = stream.buf + data if stream.buf else data
        try:
            first, pos = decode_varint(buf)
            if first in (StreamType.WEBTRANSPORT, FrameType.WEBTRANSPORT_STREAM) and (
                stream.unidirectional == (first == StreamType.WEBTRANSPORT)
            ):
                session_id, pos = decode_varint(buf, pos)
            else:
                session_id = -1
        except NeedMoreData:
            if fin and not stream.unidirectional:
                # A request stream whose first frame is cut short (RFC 9114 section 7.1).
                raise ProtocolViolation(
                    H3ErrorCode.H3_FRAME_ERROR, "request stream ended inside a frame"
                ) from None
            if fin:  # RFC 9114 6.2: a unidirectional stream may end before its type
                stream.kind = Kind.IGNORED
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
            stream.kind = Kind.WEBTRANSPORT
            # Receive credit follows what the application reads (the header is read already).
            self.engine.track_consumption(stream_id, pos)
            self._attach(stream_id, stream, session_id, now)
            if stream.kind is Kind.WEBTRANSPORT and (pos < len(buf) or fin):
                self._on_wt_data(stream_id, stream, buf[pos:], fin)
            elif stream.kind is Kind.IGNORED and fin:
                self._forget(stream_id)  # refused, and nothing more will arrive on it
            return
        if stream.unidirectional:
            self._typed_uni(stream_id, stream, first)
            rest = buf[pos:]
        else:
            if self.is_client:
                raise ProtocolViolation(
                    H3ErrorCode.H3_STREAM_CREATION_ERROR, "server-initiated request stream"
                )
            stream.kind = Kind.REQUEST
            stream.reader = self._request_reader()
            rest = buf
        if rest or fin:
            self._on_typed_data(stream_id, stream, rest, fin)

    def _typed_uni(self, stream_id: int, stream: Stream, stype: int) -> None:
        kinds = {
            StreamType.CONTROL: Kind.CONTROL,
            StreamType.QPACK_ENCODER: Kind.QPACK_ENCODER,
            StreamType.QPACK_DECODER: Kind.QPACK_DECODER,
        }
        kind = kinds.get(stype)  # type: ignore[call-overload]
        if kind is not None:
            # RFC 9114 6.2.1: "Only one control stream per peer is permitted".
            if any(s.kind is kind for sid, s in self._streams.items() if sid != stream_id):
                raise ProtocolViolation(
                    H3ErrorCode.H3_STREAM_CREATION_ERROR, f"second {kind.value} stream"
                )
            stream.kind = kind
            if kind is Kind.CONTROL:
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
        stream.kind = Kind.IGNORED
        self.engine.stop_stream(stream_id, H3ErrorCode.H3_STREAM_CREATION_ERROR)

    def _on_typed_data(self, stream_id: int, stream: Stream, data: bytes, fin: bool) -> None:
        kind = stream.kind
        if kind is Kind.REQUEST:
            self._on_request_data(stream_id, stream, data, fin)
        elif kind is Kind.CONTROL:
            self._on_control_data(stream, data, fin)
        elif kind is Kind.QPACK_ENCODER:
            if data:
                self._codec.feed_encoder_stream(data)
            if fin:
                raise ProtocolViolation(H3ErrorCode.H3_CLOSED_CRITICAL_STREAM, "encoder stream")
        elif kind is Kind.QPACK_DECODER:
            if data:
                self._codec.feed_decoder_stream(data)
            if fin:
                raise ProtocolViolation(H3ErrorCode.H3_CLOSED_CRITICAL_STREAM, "decoder stream")
        elif kind is Kind.IGNORED and fin:
            self._forget(stream_id)

    def _on_control_data(self, stream: Stream, data: bytes, fin: bool) -> None:
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
            if stream is None or stream.kind is not Kind.REQUEST:
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

    def _on_request_data(self, stream_id: int, stream: Stream, data: bytes, fin: bool) -> None:
        assert stream.reader is not None
        if fin:
            stream.end_receiving()
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

    def _on_request_frame_headers(self, stream_id: int, stream: Stream, payload: bytes) -> None:
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
        if session is None and not stream.request_seen:
            stream.request_seen = True
            if self.peer_settings is None:
                self._held_requests.append((stream_id, headers))
            else:
                self._on_request_headers(stream_id, headers)

    def _on_request_frame_data(self, stream_id: int, stream: Stream, payload: bytes) -> None:
        session = stream.session
        # RFC 9114 4.1: DATA before the first HEADERS is an invalid frame sequence, "a
        # connection error of type H3_FRAME_UNEXPECTED".
        if self.is_client and session is not None and session.phase is SessionPhase.CONNECTING:
            raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, "DATA before the response")
        if session is None:
            if not self.is_client and not stream.request_seen:
                raise ProtocolViolation(H3ErrorCode.H3_FRAME_UNEXPECTED, "DATA before HEADERS")
            return  # request body of a request that is not a session: ignored
        for ctype, value, _end in session.capsules.feed(payload):
            self._on_capsule(session, ctype, value)
            if session.phase is SessionPhase.CLOSED:
                return

    def _on_request_fin(self, stream_id: int, stream: Stream) -> None:
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
