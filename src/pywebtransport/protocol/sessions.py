"""WebTransport sessions in the core: opening, capsules and flow control, streams, datagrams, end.

A session opens (or is refused) on its CONNECT stream; what arrived for it before then waits and
is replayed. Capsules on the CONNECT stream close or drain it and carry session flow control
(drafts 13 to 16). Peer WebTransport streams are attached to their session, counted against its
stream credit and delivered with their bytes counted against its data credit. When a session
ends, its streams are refused with WT_SESSION_GONE and its ID is remembered as gone.
"""

from __future__ import annotations

import logging

from . import events as ev
from .codec import (
    NeedMoreData,
    decode_varint,
)
from .errors import (
    ProtocolUsageError,
    ProtocolViolation,
    Scope,
)
from .session import (
    FLOW_CAPSULES,
    FlowControl,
    SessionPhase,
    SessionState,
    read_close_capsule,
)
from .settings import (
    flow_control_enabled,
)
from .stream_table import Kind, Stream, StreamTable
from .wire import (
    CapsuleType,
    H3ErrorCode,
    SettingId,
    h3_to_app_code,
)

logger = logging.getLogger(__name__)


class SessionLayer(StreamTable):
    """Sessions on top of the stream table."""

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

    def _on_capsule(self, session: SessionState, ctype: int, value: bytes) -> None:
        if session.close_received:
            raise ProtocolViolation(
                H3ErrorCode.H3_MESSAGE_ERROR, "capsule after close", scope=Scope.SESSION
            )
        if ctype == CapsuleType.CLOSE_SESSION:
            code, reason = read_close_capsule(value)
            session.close_received = True
            if not session.close_sent:
                self.engine.send_stream_data(session.session_id, b"", True)
                session.close_sent = True
            self._finish_session(session, code, reason, by_peer=True)
        elif ctype == CapsuleType.DRAIN_SESSION:
            self._events.append(ev.SessionDraining(session.session_id))
        elif (
            session.fc is not None
            and ctype in FLOW_CAPSULES
            and session.fc.on_capsule(ctype, value)
        ):
            self._events.append(ev.CreditAvailable(session.session_id))

    def _attach(
        self, stream_id: int, stream: Stream, session_id: int, now: float, replay: bytes = b""
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
        opened = ev.StreamOpened(session_id, stream_id, not stream.unidirectional)
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
        if replay or stream.ended:
            self._deliver(stream_id, stream, session, replay, stream.ended)

    def _on_wt_data(self, stream_id: int, stream: Stream, data: bytes, fin: bool) -> None:
        session = stream.session
        if session is None:  # waiting for its session: keep the bytes (bounded below)
            if stream.session_id is not None:
                stream.buf += data
                if fin:
                    stream.end_receiving()
                if len(stream.buf) > self.max_early_bytes:
                    self._refuse(stream_id, H3ErrorCode.WT_BUFFERED_STREAM_REJECTED)
            return
        self._deliver(stream_id, stream, session, data, fin)

    def _deliver(
        self, stream_id: int, stream: Stream, session: SessionState, data: bytes, fin: bool
    ) -> None:
        if fin:
            stream.end_receiving()
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

    def _on_stream_reset(self, stream_id: int, code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        kind = stream.kind
        if kind in (Kind.CONTROL, Kind.QPACK_ENCODER, Kind.QPACK_DECODER):
            raise ProtocolViolation(H3ErrorCode.H3_CLOSED_CRITICAL_STREAM, f"{kind.value} reset")
        session = stream.session
        if kind is Kind.REQUEST and session is not None:
            if session.is_pending and self.is_client:
                self._reject(session, 0, [], f"request reset by the server (0x{code:x})")
            else:
                self._finish_session(session, 0, f"CONNECT stream reset (0x{code:x})", by_peer=True)
            self._forget(stream_id)
            return
        stream.end_receiving()
        if kind in (Kind.IGNORED, Kind.UNKNOWN, Kind.REQUEST):
            self._forget(stream_id)  # not (or not yet) a session's stream: nothing else to do
            return
        if kind is Kind.WEBTRANSPORT and session is not None:
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
        if stream.kind is Kind.REQUEST:
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

    def _reject(self, session: SessionState, status: int, headers: ev.Headers, reason: str) -> None:
        session.set_phase(SessionPhase.REJECTED)
        self._events.append(ev.SessionRejected(session.session_id, status, headers, reason))
        self._end_session(session, H3ErrorCode.WT_BUFFERED_STREAM_REJECTED)

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

    def _session_error(self, session: SessionState, code: int, reason: str) -> None:
        """Tear one session down for a violation its peer committed; others keep going."""
        if session.phase is SessionPhase.CLOSED:
            return
        self.engine.reset_stream(session.session_id, code)
        self.engine.stop_stream(session.session_id, code)
        self._finish_session(session, code, reason, by_peer=True)

    def _connection_error(self, code: int, reason: str) -> None:
        if not self.terminated:
            self.engine.close(code, reason)
