"""One QUIC connection for asyncio: the core, a batch sender, the core's timer and a transmit step.

Received datagrams go straight into the core, a batch at a time (what one read pass of the UDP
endpoint brought for this connection); the events it produces are dispatched to the session and
stream objects; one ``call_soon`` transmit step per loop iteration hands whatever the core has
queued to the sender in one call (so a burst of received packets is answered in one batch) and
re-arms the core's timer (one timer handle, replaced only when the core's deadline moves
earlier). Writers that wait for send capacity are woken from the transmit step, after the
acknowledgements that freed it were processed. Every deadline (keep-alive PINGs, the liveness
deadline, early streams, request headers, the close of a client whose last session ended) is the
core's, behind that one timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from . import exceptions as errors
from .exceptions import HandshakeError
from .protocol import WebTransportProtocol
from .protocol import events as ev
from .protocol.wire import H3ErrorCode
from .session import WebTransportSession
from .stream import AnyStream, WebTransportReceiveStream, WebTransportSendStream

logger = logging.getLogger(__name__)

SendBatch = Callable[[list[tuple[bytes, Any]]], None]

#: Longest a client connection waits for its last session's close capsule to be acknowledged
#: before it sends CONNECTION_CLOSE anyway (seconds).
_CLOSE_LINGER = 2.0


def _text_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


#: A timer this close to its deadline runs the core's timers instead of waiting again.
_TIMER_SLACK = 0.0005


class WebTransportConnection:
    """A QUIC connection carrying WebTransport sessions, driven by asyncio.

    Args:
        protocol: the sans-I/O core.
        send: sends the UDP payloads of one transmit pass, ``(data, address)`` in order (the
            address is ignored by connected client sockets); called once per pass.
        remote_address: the peer's address.
        datagram_queue_size: per-session datagram receive queue bound.
        on_event: optional hook for events the connection does not handle itself (the server
            uses it for session requests and connection IDs).
    """

    def __init__(
        self,
        protocol: WebTransportProtocol,
        *,
        send: SendBatch,
        remote_address: Any,
        datagram_queue_size: int,
        on_event: Callable[[WebTransportConnection, ev.ProtocolEvent], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.protocol = protocol
        self.is_client = protocol.is_client
        self.remote_address = remote_address
        self.datagram_queue_size = datagram_queue_size
        self._send = send
        self._on_event = on_event
        self._sessions: dict[int, WebTransportSession] = {}
        self._streams: dict[int, AnyStream] = {}
        self._writers: set[WebTransportSendStream] = set()
        self._transmit_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self.handshake_done: asyncio.Future[None] = self.loop.create_future()
        self.settings_received: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        #: Done once CONNECTION_CLOSE was sent (or the connection ended otherwise).
        self.close_sent: asyncio.Future[None] = self.loop.create_future()
        self.close_error: Exception | None = None
        self._on_closed_callbacks: list[Callable[[WebTransportConnection], None]] = []

    def __repr__(self) -> str:
        role = "client" if self.is_client else "server"
        peer = self.remote_address
        return f"<WebTransportConnection {role} peer={peer} sessions={len(self._sessions)}>"

    # ----------------------------------------------------------------------------- properties

    @property
    def is_closed(self) -> bool:
        """True once the QUIC connection has terminated."""
        return self.closed.done()

    @property
    def sessions(self) -> list[WebTransportSession]:
        """Sessions currently on this connection."""
        return list(self._sessions.values())

    def add_close_callback(self, callback: Callable[[WebTransportConnection], None]) -> None:
        """Call ``callback(connection)`` once when the connection terminates."""
        if self.closed.done():
            callback(self)
        else:
            self._on_closed_callbacks.append(callback)

    # ----------------------------------------------------------------------------- I/O

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Feed one UDP payload from the network."""
        self.datagrams_received([(data, addr)])

    def datagrams_received(self, batch: list[tuple[bytes, Any]]) -> None:
        """Feed a batch of UDP payloads from the network, then dispatch and transmit once."""
        if not self.is_client:
            self.remote_address = batch[-1][1]
        self.protocol.receive_datagrams(batch, self.loop.time())
        self.flush_events()
        self.schedule_transmit()

    def schedule_transmit(self) -> None:
        """Send what the core has queued, once, at the end of this loop iteration."""
        if not self._transmit_scheduled:
            self._transmit_scheduled = True
            self.loop.call_soon(self._transmit)

    def transmit(self) -> None:
        """Send what the core has queued now."""
        self._transmit()

    def _transmit(self) -> None:
        self._transmit_scheduled = False
        now = self.loop.time()
        packets = self.protocol.datagrams_to_send(now)
        if packets:
            self._send(packets)
        if self._writers:
            self._wake_writers()
        if self.protocol.closing and not self.close_sent.done():
            self.close_sent.set_result(None)  # the core closed (or was closed) and sent it
        self._arm_timer()
        self.flush_events()  # closing the connection produces its termination event here

    def _arm_timer(self) -> None:
        """Make sure the timer fires no later than the core's next deadline.

        A timer that would fire earlier is kept (it re-arms when it fires): deadlines mostly
        move later as packets arrive, and replacing the timer each time would leave a cancelled
        handle in the event loop's heap per packet until its original time.
        """
        when = self.protocol.get_timer()
        if when is None or self.closed.done():
            return  # a pending timer fires, finds nothing due and is not renewed
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        when = self.protocol.get_timer()
        now = self.loop.time()
        if when is None:
            return  # the deadline went away since the timer was set
        if when > now + _TIMER_SLACK:  # fired early: the deadline moved later; wait for it
            self._timer = self.loop.call_at(when, self._on_timer)
            return
        self.protocol.handle_timer(now)
        self.flush_events()
        self._transmit()

    def watch_writable(self, stream: WebTransportSendStream) -> None:
        """Wake ``stream`` when it may write again."""
        self._writers.add(stream)

    def unwatch_writable(self, stream: WebTransportSendStream) -> None:
        """Stop watching ``stream``."""
        self._writers.discard(stream)

    def _wake_writers(self) -> None:
        capacity = self.protocol.send_capacity
        for stream in list(self._writers):
            if capacity(stream.stream_id) > 0:
                stream._wake_writer()

    def error_received(self, exc: Exception) -> None:
        """The socket reported an error (for example ICMP port unreachable)."""
        logger.debug("socket error on %r: %s", self, exc)
        if self.is_client and not self.handshake_done.done():
            self._terminate(errors.ConnectionError(f"cannot reach {self.remote_address}: {exc}"))

    # ----------------------------------------------------------------------------- sessions

    def add_session(self, session: WebTransportSession) -> None:
        """Track a session created on this connection."""
        self._sessions[session.session_id] = session

    def session_ended(self, session: WebTransportSession) -> None:
        """A session reached CLOSED: forget it and its streams."""
        self._sessions.pop(session.session_id, None)
        for stream_id in [sid for sid, s in self._streams.items() if s.session is session]:
            del self._streams[stream_id]
        if self.is_client and not self._sessions and self.close_error is None:
            # A client connection exists for its session; close it once the peer acknowledged
            # what the CONNECT stream carried (the close capsule and FIN), or after a bounded
            # linger. Closing at once lets a CONNECTION_CLOSE overtake a lost capsule, and
            # the server then sees a connection error instead of the session's code.
            self.protocol.close_when_delivered(
                session.session_id, linger=_CLOSE_LINGER, now=self.loop.time()
            )
            self.schedule_transmit()

    def forget_stream(self, stream_id: int) -> None:
        """Stop routing events for ``stream_id`` (both directions have ended)."""
        self._streams.pop(stream_id, None)

    def register_stream(self, stream_id: int, stream: AnyStream) -> None:
        """Route core events for ``stream_id`` to ``stream``."""
        self._streams[stream_id] = stream

    def close(self, *, code: int = H3ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        """Close the QUIC connection (CONNECTION_CLOSE), after sending what is queued."""
        if self.closed.done():
            return
        self._transmit()
        self.protocol.close(code=code, reason=reason)
        self._transmit()
        if not self.close_sent.done():
            self.close_sent.set_result(None)

    def abandon(self, reason: str) -> None:
        """End the connection here without telling the peer: nothing more is sent.

        For a handshake that never finished. Before a client's address is validated a server
        may send it at most three times the bytes it received (RFC 9000 section 8.1), and a
        silent or spoofed client has had all of that in retransmissions by then; a
        CONNECTION_CLOSE would go over. The peer times out as it would for any lost server.
        A server that closed its socket ends its connections this way too, after their close.
        """
        self._terminate(errors.ConnectionError(f"connection abandoned: {reason}"), silent=True)

    async def wait_closed(self) -> None:
        """Wait until the connection has terminated."""
        await asyncio.shield(self.closed)

    # ----------------------------------------------------------------------------- events

    def flush_events(self) -> None:
        """Dispatch every event the core has produced."""
        for event in self.protocol.pop_events():
            self._dispatch(event)

    def _dispatch(self, event: ev.ProtocolEvent) -> None:
        if isinstance(event, ev.StreamData):
            stream = self._streams.get(event.stream_id)
            if isinstance(stream, WebTransportReceiveStream):
                stream._feed(event.data, event.end_stream)
        elif isinstance(event, ev.DatagramReceived):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session.datagrams._feed(event.data)
        elif isinstance(event, ev.StreamOpened):
            session = self._sessions.get(event.session_id)
            if session is not None:
                incoming = session._on_stream_opened(event.stream_id, event.bidirectional)
                self._streams[event.stream_id] = incoming
        elif isinstance(event, ev.StreamReset):
            stream = self._streams.get(event.stream_id)
            if isinstance(stream, WebTransportReceiveStream):
                stream._reset_by_peer(event.app_code, event.h3_code)
        elif isinstance(event, ev.StreamStopped):
            stream = self._streams.get(event.stream_id)
            if isinstance(stream, WebTransportSendStream):
                stream._stopped_by_peer(event.app_code, event.h3_code)
        elif isinstance(event, ev.CreditAvailable):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._on_credit()
        else:
            self._dispatch_control(event)

    def _dispatch_control(self, event: ev.ProtocolEvent) -> None:
        if isinstance(event, ev.SessionEstablished):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._on_ready(_text_headers(event.headers))
        elif isinstance(event, ev.SessionClosed):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._on_closed(event.code, event.reason, by_peer=event.by_peer)
        elif isinstance(event, ev.SessionRejected):
            session = self._sessions.get(event.session_id)
            if session is not None:
                error = HandshakeError(
                    f"server rejected the session: {event.reason}",
                    status=event.status,
                    headers=dict(_text_headers(event.headers)),
                )
                session._on_closed(0, event.reason, error)
        elif isinstance(event, ev.SessionDraining):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._on_draining()
        elif isinstance(event, ev.HandshakeCompleted):
            if not self.handshake_done.done():
                self.handshake_done.set_result(None)
        elif isinstance(event, ev.SettingsReceived):
            if not self.settings_received.done():
                self.settings_received.set_result(None)
        elif isinstance(event, ev.ConnectionTerminated):
            self._terminate(
                errors.ConnectionError(
                    f"connection closed: {event.reason or 'no reason'}",
                    error_code=event.error_code,
                ),
                event,
            )
        if self._on_event is not None:
            self._on_event(self, event)

    def _terminate(
        self,
        exc: errors.ConnectionError,
        event: ev.ConnectionTerminated | None = None,
        *,
        silent: bool = False,
    ) -> None:
        """The connection is gone: every session, stream and waiter learns it now.

        ``silent``: the engine is not asked to close either (nothing is ever sent again: the
        connection's timers are cancelled here and its owner forgets it).
        """
        if self.closed.done():
            return
        self.close_error = exc
        if event is None and not silent:
            self.protocol.close(code=H3ErrorCode.H3_NO_ERROR, reason="")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut in (self.handshake_done, self.settings_received):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
        for session in list(self._sessions.values()):
            session._on_closed(exc.error_code or 0, exc.message, exc)
        self._sessions.clear()
        self._streams.clear()
        self._writers.clear()
        self.closed.set_result(None)
        if not self.close_sent.done():
            self.close_sent.set_result(None)
        callbacks, self._on_closed_callbacks = self._on_closed_callbacks, []
        for callback in callbacks:
            callback(self)

    def last_session_closed(self) -> bool:
        """True when no session is left on this connection."""
        return not self._sessions


__all__ = ["WebTransportConnection"]
