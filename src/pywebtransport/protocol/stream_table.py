"""The core's table of QUIC streams: what each one is, and how it is let go.

Every incoming QUIC stream gets a :class:`Stream` that says what it is (:class:`Kind`): HTTP/3
control or QPACK stream, a request (CONNECT) stream, a WebTransport stream bound to a session,
or ignored. :class:`StreamTable` holds the connection's state (set by
:class:`~pywebtransport.protocol.connection.WebTransportProtocol`) and the bookkeeping every
layer above shares: refusing, ignoring, releasing and forgetting streams, the streams that wait
for a session that is not open yet (bounded in number and time), and the session credit that
consumption gives back.
"""

from __future__ import annotations

import logging
from enum import Enum

from . import events as ev
from .codec import (
    encode_capsule,
    encode_frame,
)
from .errors import (
    ProtocolViolation,
    Scope,
)
from .headers import HeaderCodec
from .quic import (
    QuicEngine,
)
from .session import FlowControl, SessionState
from .settings import (
    LocalLimits,
)
from .tlv import TLVReader
from .wire import (
    Dialect,
    FrameType,
    H3ErrorCode,
)

logger = logging.getLogger(__name__)


class Kind(Enum):
    UNKNOWN = "unknown"
    CONTROL = "control"
    QPACK_ENCODER = "qpack-encoder"
    QPACK_DECODER = "qpack-decoder"
    REQUEST = "request"
    WEBTRANSPORT = "webtransport"
    IGNORED = "ignored"


class Receiving(Enum):
    """Where a stream's receiving side is."""

    OPEN = "open"  # bytes may arrive, and the application reads them
    ENDED = "ended"  # nothing more arrives (FIN or reset received, or we stopped it)
    RELEASED = "released"  # the application is done with it; what still arrives is dropped
    DONE = "done"  # both: nothing is left of the receiving side


class Sending(Enum):
    """Where a stream's sending side is."""

    NONE = "none"  # a peer's unidirectional stream: we never send on it
    OPEN = "open"
    DONE = "done"  # our FIN or reset went out


_RECEIVING_STEPS = {
    (Receiving.OPEN, Receiving.ENDED),
    (Receiving.OPEN, Receiving.RELEASED),
    (Receiving.OPEN, Receiving.DONE),
    (Receiving.ENDED, Receiving.DONE),
    (Receiving.RELEASED, Receiving.DONE),
}
_SENDING_STEPS = {(Sending.OPEN, Sending.DONE)}


class Stream:
    """What the core knows about one QUIC stream.

    Its two sides change state only through :meth:`set_state` (which checks the step and logs
    it); :meth:`end_receiving`, :meth:`release` and :meth:`end_sending` name the usual steps.
    """

    __slots__ = (
        "buf",
        "consumed",
        "counted",
        "delivered",
        "early_since",
        "kind",
        "reader",
        "receiving",
        "request_seen",
        "sending",
        "session",
        "session_id",
        "unidirectional",
    )

    def __init__(self, kind: Kind, unidirectional: bool, *, local: bool = False) -> None:
        self.kind = kind
        self.unidirectional = unidirectional
        # Our own unidirectional stream receives nothing; a peer's sends us nothing to answer.
        self.receiving = Receiving.DONE if unidirectional and local else Receiving.OPEN
        self.sending = Sending.NONE if unidirectional and not local else Sending.OPEN
        self.buf = b""
        self.reader: TLVReader | None = None
        self.session: SessionState | None = None
        self.session_id: int | None = None  # the session it belongs to, once known
        self.request_seen = False  # request stream: its HEADERS arrived
        self.counted = False  # counted against the session's stream credit
        self.delivered = 0  # payload bytes counted against the session's data credit
        self.consumed = 0  # of those, what the application consumed
        self.early_since: float | None = None  # waiting for its session since (None: not)

    @property
    def ended(self) -> bool:
        """Nothing more arrives: FIN or reset received, or we stopped it."""
        return self.receiving in (Receiving.ENDED, Receiving.DONE)

    @property
    def released(self) -> bool:
        """The application is done with the receiving side."""
        return self.receiving in (Receiving.RELEASED, Receiving.DONE)

    @property
    def sending_done(self) -> bool:
        """Our sending side is over (FIN or reset sent) or never existed."""
        return self.sending is not Sending.OPEN

    def set_state(
        self, *, receiving: Receiving | None = None, sending: Sending | None = None
    ) -> None:
        """The one place a stream's sides change state."""
        if receiving is not None and receiving is not self.receiving:
            if (self.receiving, receiving) not in _RECEIVING_STEPS:
                raise AssertionError(f"stream receiving: {self.receiving} -> {receiving}")
            logger.debug("stream receiving: %s -> %s", self.receiving.value, receiving.value)
            self.receiving = receiving
        if sending is not None and sending is not self.sending:
            if (self.sending, sending) not in _SENDING_STEPS:
                raise AssertionError(f"stream sending: {self.sending} -> {sending}")
            logger.debug("stream sending: %s -> %s", self.sending.value, sending.value)
            self.sending = sending

    def end_receiving(self) -> None:
        """Nothing more arrives on this stream."""
        if not self.ended:
            self.set_state(receiving=Receiving.DONE if self.released else Receiving.ENDED)

    def release(self) -> None:
        """The application is done with the receiving side."""
        if not self.released:
            self.set_state(receiving=Receiving.DONE if self.ended else Receiving.RELEASED)

    def end_sending(self) -> None:
        """Our FIN or reset went out (a side that never existed stays as it is)."""
        if self.sending is Sending.OPEN:
            self.set_state(sending=Sending.DONE)


class StreamTable:
    """State and stream bookkeeping shared by the layers of the core."""

    # The connection's state, set by WebTransportProtocol.__init__ (connection.py).
    engine: QuicEngine
    is_client: bool
    limits: LocalLimits
    max_header_size: int
    max_early_streams: int
    early_timeout: float
    stream_send_buffer: int
    max_pending_datagrams: int
    max_early_bytes: int
    peer_settings: dict[int, int] | None
    dialect: Dialect | None
    goaway_received: bool
    goaway_sent: int | None
    terminated: bool
    request_timeout: float | None
    no_session_timeout: float | None
    _max_peer_request: int
    _peer_datagrams: bool
    _events: list[ev.ProtocolEvent]
    _streams: dict[int, Stream]
    _sessions: dict[int, SessionState]
    _gone: set[int]
    _unknown_early: dict[int, list[int]]
    _early_count: int
    _held_requests: list[tuple[int, ev.Headers]]
    _request_deadlines: dict[int, float]
    _sessionless_since: float | None
    _codec: HeaderCodec

    def _send_headers(self, stream_id: int, section: ev.Headers, *, fin: bool = False) -> None:
        block = self._codec.encode(stream_id, section)
        self.engine.send_stream_data(stream_id, encode_frame(FrameType.HEADERS, block), fin)

    def _send_capsule(self, session: SessionState, ctype: int, value: bytes) -> None:
        frame = encode_frame(FrameType.DATA, encode_capsule(ctype, value))
        self.engine.send_stream_data(session.session_id, frame)

    def _grant(self, session: SessionState, fc: FlowControl) -> None:
        updates = fc.updates()
        if updates:
            frame = encode_frame(FrameType.DATA, updates)
            self.engine.send_stream_data(session.session_id, frame)

    def _credit_consumed(self, session: SessionState, size: int) -> None:
        fc = session.fc
        assert fc is not None
        fc.consumed += size
        if session.is_open and fc.data_update_due():
            self._grant(session, fc)

    def _blocked(self, session: SessionState, fc: FlowControl, bidirectional: bool | None) -> None:
        """Tell the peer we ran out of its credit (once until it grants more)."""
        capsule = fc.blocked(bidirectional)
        if capsule:
            self.engine.send_stream_data(session.session_id, encode_frame(FrameType.DATA, capsule))

    def _new_peer_stream(self, stream_id: int) -> Stream:
        peer_initiated = bool(stream_id & 1) == self.is_client
        # A local stream we no longer track (refused, finished): late bytes are dropped.
        kind = Kind.UNKNOWN if peer_initiated else Kind.IGNORED
        if peer_initiated and not stream_id & 2 and stream_id > self._max_peer_request:
            self._max_peer_request = stream_id
        stream = Stream(kind, bool(stream_id & 2), local=not peer_initiated)
        self._streams[stream_id] = stream
        return stream

    def _count_peer_stream(self, session: SessionState, stream: Stream) -> None:
        fc = session.fc
        if fc is None:
            return
        bidi = not stream.unidirectional
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

    def _ignore(self, stream_id: int, stream: Stream) -> None:
        """Detach a stream from its session; it is kept, ignored, until nothing more arrives."""
        self._drop_early(stream_id, stream)
        self._release_receive(stream_id, stream)
        self._close_counted(stream_id, stream)
        stream.kind = Kind.IGNORED
        stream.session = None
        if stream.ended:
            self._forget(stream_id)

    def _release_receive(self, stream_id: int, stream: Stream) -> None:
        """The receiving side is done with: unread bytes give their session credit back."""
        if stream.released:
            return
        stream.release()
        self.engine.untrack_consumption(stream_id)
        session = stream.session
        if session is not None and session.fc is not None:
            unread = stream.delivered - stream.consumed
            stream.consumed = stream.delivered
            self._credit_consumed(session, unread)

    def _close_counted(self, stream_id: int, stream: Stream) -> None:
        """A stream that held one of the session's stream credits is gone: credit may follow."""
        session = stream.session
        if not stream.counted or session is None or session.fc is None:
            return
        stream.counted = False
        session.fc.peer_closed[not stream_id & 2] += 1
        if session.is_open:
            self._grant(session, session.fc)

    def _local_send_done(self, stream_id: int, stream: Stream) -> None:
        stream.end_sending()
        self._forget_if_done(stream_id, stream)

    def _forget_if_done(self, stream_id: int, stream: Stream) -> None:
        """Drop a WebTransport stream's state once both directions are done with.

        Receiving is done when nothing more arrives (FIN or reset) and the application
        released it; sending when our FIN or reset went out (or the stream is the peer's uni).
        """
        if stream.receiving is Receiving.DONE and stream.sending_done:
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

    def _early_streams(self) -> list[tuple[int, Stream, SessionState | None]]:
        """Every stream waiting for a session: unknown sessions and sessions not open yet."""
        out: list[tuple[int, Stream, SessionState | None]] = []
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

    def _drop_early(self, stream_id: int, stream: Stream) -> None:
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
            session_id = stream.session_id
            waiting = None if session_id is None else self._unknown_early.get(session_id)
            if session_id is not None and waiting is not None and stream_id in waiting:
                waiting.remove(stream_id)
                if not waiting:
                    del self._unknown_early[session_id]
            return
        session.early_streams -= 1
        session.early = [e for e in session.early if getattr(e, "stream_id", None) != stream_id]
