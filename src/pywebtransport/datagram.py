"""Datagrams of one session: size-checked sends, a bounded receive queue, honest counters."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import exceptions as errors
from .events import EventType
from .exceptions import DatagramError, SessionError, WebTransportError
from .protocol import DatagramTooLarge, ProtocolUsageError
from .stream import payload_bytes

if TYPE_CHECKING:
    from .session import WebTransportSession


@dataclass
class _DatagramCounters:
    """Datagram counters of one session."""

    sent: int = 0
    received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    dropped_incoming: int = 0  # arrived while the receive queue was full (oldest dropped)
    dropped_outgoing: int = 0  # queued for sending while the send queue was full (oldest dropped)
    rejected_outgoing: int = 0  # refused by send(): too large or no datagram support


class WebTransportDatagramTransport:
    """Send and receive the datagrams of one session.

    ``max_datagram_size`` is the real payload limit: what fits in one QUIC packet after the
    packet, frame and session-ID overheads. A larger payload raises :class:`DatagramError`
    before anything is queued, so one bad datagram never holds up the ones after it.
    """

    def __init__(self, session: WebTransportSession, *, queue_size: int) -> None:
        self._session = session
        self._conn = session._conn
        self._queue: deque[bytes] = deque()
        self._queue_size = queue_size
        self._waiter: asyncio.Future[None] | None = None
        self._closed_error: Exception | None = None
        self._stats = _DatagramCounters()
        self._send = self._conn.protocol.send_datagram
        self._session_id = session.session_id

    @property
    def max_datagram_size(self) -> int:
        """Largest payload :meth:`send` accepts on this connection (0: peer has no datagrams)."""
        return self._conn.protocol.max_datagram_size(self._session.session_id)

    @property
    def is_closed(self) -> bool:
        """True once the session has ended (queued datagrams may still be received)."""
        return self._closed_error is not None

    @property
    def stats(self) -> dict[str, int]:
        """Counters; nothing dropped goes uncounted."""
        return asdict(self._stats)

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one datagram.

        Raises:
            DatagramError: larger than :attr:`max_datagram_size`, or no datagram support.
            SessionError: the session is closed.
        """
        payload = payload_bytes(data, "send()")
        if self._closed_error is not None:
            raise self._closed_error
        try:
            dropped = self._send(self._session_id, payload)
        except DatagramTooLarge as exc:
            self._stats.rejected_outgoing += 1
            raise DatagramError(str(exc)) from None
        except ProtocolUsageError as exc:
            raise SessionError(str(exc)) from None
        self._stats.sent += 1
        self._stats.dropped_outgoing += dropped
        self._stats.bytes_sent += len(payload)
        self._conn.schedule_transmit()

    async def receive(self, *, timeout: float | None = None) -> bytes:
        """Wait for the next datagram.

        Raises:
            pywebtransport.TimeoutError: none arrived within ``timeout`` seconds.
            SessionError: the session closed and the queue is empty.
        """
        while not self._queue:
            if self._closed_error is not None:
                raise self._closed_error
            if self._waiter is not None:
                raise DatagramError("another coroutine is already receiving")
            self._waiter = self._conn.loop.create_future()
            try:
                if timeout is None:
                    await self._waiter
                else:
                    async with asyncio.timeout(timeout):
                        await self._waiter
            except TimeoutError:
                raise errors.TimeoutError(f"no datagram within {timeout} s") from None
            finally:
                self._waiter = None
        return self._queue.popleft()

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``async for data in session.datagrams``: every datagram until the session closes."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            try:
                data = await self.receive()
            except WebTransportError:
                if self._closed_error is not None:
                    return  # the session ended and everything queued was delivered
                raise
            yield data

    async def send_json(self, obj: Any) -> None:
        """Send ``obj`` as compact JSON in one datagram."""
        await self.send(json.dumps(obj, separators=(",", ":")).encode())

    async def receive_json(self, *, timeout: float | None = None) -> Any:
        """Receive one datagram and decode it as JSON."""
        return json.loads(await self.receive(timeout=timeout))

    def _feed(self, data: bytes) -> None:
        if len(self._queue) >= self._queue_size:
            self._queue.popleft()
            self._stats.dropped_incoming += 1
        self._queue.append(data)
        self._stats.received += 1
        self._stats.bytes_received += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        session = self._session
        if session.has_listeners(EventType.DATAGRAM_RECEIVED):  # nothing built for nobody
            session.emit(EventType.DATAGRAM_RECEIVED, {"data": data})

    def _fail(self, exc: Exception) -> None:
        self._closed_error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
