"""WebTransport streams for asyncio: reads that return receive credit, writes with backpressure.

A receive side buffers what the core delivered until the application reads it, and reports the
bytes as consumed (so the peer gets receive credit) only as they are read; a read that waits for
more than is buffered counts the buffered bytes as read. Reads wait on a future, without polling
and without a deadline of their own (bound them with ``asyncio.timeout``). A send side hands
bytes to the core only as far as :meth:`WebTransportProtocol.send_capacity` allows: the stream's
unacknowledged bytes in the QUIC engine stay under ``stream_buffer_size`` and session flow-control
credit is respected, so ``write()`` waits while the peer does not keep up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .events import EventEmitter, EventType
from .exceptions import StreamError
from .protocol import CreditExhausted, ProtocolUsageError

if TYPE_CHECKING:
    from types import TracebackType

    from .session import WebTransportSession


@dataclass(frozen=True, kw_only=True)
class SendStreamStats:
    """A snapshot of a stream's sending side, shaped like the W3C ``WebTransportSendStreamStats``.

    Attributes:
        timestamp: when the snapshot was taken (``time.time()``).
        bytes_written: payload bytes passed to ``write()`` (a cancelled or failed write's
            whole payload included).
        bytes_sent: payload bytes handed to QUIC (``bytes_written`` minus what still waits
            for send capacity or was never handed over).
        bytes_acknowledged: payload bytes the peer acknowledged, from the start of the
            stream; None when the QUIC engine cannot tell (qh3). After a reset it counts as
            acknowledged what the engine no longer keeps.
    """

    timestamp: float
    bytes_written: int = 0
    bytes_sent: int = 0
    bytes_acknowledged: int | None = None


@dataclass(frozen=True, kw_only=True)
class ReceiveStreamStats:
    """A snapshot of a stream's receiving side, shaped like the W3C
    ``WebTransportReceiveStreamStats``.

    Attributes:
        timestamp: when the snapshot was taken (``time.time()``).
        bytes_received: payload bytes QUIC delivered, in order (read or not).
        bytes_read: payload bytes the application read (``bytes_received`` minus what is
            buffered).
    """

    timestamp: float
    bytes_received: int = 0
    bytes_read: int = 0


@dataclass(frozen=True, kw_only=True)
class StreamStats(SendStreamStats, ReceiveStreamStats):
    """A bidirectional stream's snapshot: both sides' figures (see the two it derives from)."""


def payload_bytes(data: object, method: str) -> bytes:
    """``data`` (bytes, bytearray or memoryview) as bytes for ``method``; TypeError otherwise.

    A str is refused with a hint to encode it (``bytes(text)`` would need an encoding), and
    an int too (``bytes(n)`` would silently make ``n`` zero bytes).
    """
    if type(data) is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        raise TypeError(f"{method} takes bytes, not str: encode the text first (text.encode())")
    raise TypeError(f"{method} takes bytes (or bytearray / memoryview), not {type(data).__name__}")


class _StreamBase(EventEmitter):
    """What both stream directions share: identity and the session/connection they live in.

    Every stream is an :class:`~pywebtransport.events.EventEmitter`; it emits
    ``stream_closed`` once, when no direction is live any more (ended either way, reset,
    stopped, or its session ended).
    """

    def __init__(self, session: WebTransportSession, stream_id: int) -> None:
        super().__init__()
        self._session = session
        self._conn = session._conn
        self._stream_id = stream_id
        # Which directions are still live; when neither is, the session forgets the stream.
        self._recv_open = isinstance(self, WebTransportReceiveStream)
        self._send_open = isinstance(self, WebTransportSendStream)
        self._closed_emitted = False

    def _direction_done(self, *, receive: bool) -> None:
        if receive:
            self._recv_open = False
        else:
            self._send_open = False
        if not self._recv_open and not self._send_open:
            self._session._forget_stream(self._stream_id)
            self._emit_closed()

    def _emit_closed(self) -> None:
        """``stream_closed``, once, from the stream and from its session."""
        if not self._closed_emitted:
            self._closed_emitted = True
            self.emit(EventType.STREAM_CLOSED, {"stream_id": self._stream_id})
            self._session._emit_stream(EventType.STREAM_CLOSED, self)  # type: ignore[arg-type]

    @property
    def _local(self) -> bool:
        """True when this side opened the stream."""
        return bool(self._stream_id & 1) != self._conn.is_client

    @property
    def stream_id(self) -> int:
        """The QUIC stream ID."""
        return self._stream_id

    @property
    def session(self) -> WebTransportSession:
        """The session this stream belongs to."""
        return self._session

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self._stream_id} session={self._session.session_id}>"

    def _fail(self, exc: Exception) -> None:
        """The session or connection ended: wake every waiter with ``exc``."""
        raise NotImplementedError


class WebTransportReceiveStream(_StreamBase):
    """The receiving side of a WebTransport stream."""

    def __init__(self, session: WebTransportSession, stream_id: int) -> None:
        super().__init__(session, stream_id)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._received = 0  # bytes delivered by the peer so far
        self._reported = 0  # bytes reported as consumed (receive credit follows them)
        self._eof = False
        self._read_error: Exception | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._stopped = False
        self._released = False  # the core was told we are done with this receiving side

    # -- fed by the connection

    def _feed(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            self._received += len(data)
            self._session._stats.bytes_received += len(data)
        if end_stream:
            self._eof = True
            self._receive_done()
            if not self._buffered:
                self._release_stream()
        self._wake_reader()

    def _reset_by_peer(self, app_code: int | None, h3_code: int) -> None:
        self._read_error = StreamError(
            f"stream {self._stream_id} reset by peer", error_code=app_code, h3_error_code=h3_code
        )
        self._receive_done()
        self._release_stream()  # nothing more arrives; what is buffered stays readable
        self._wake_reader()

    def _fail_read(self, exc: Exception) -> None:
        if not self._eof and self._read_error is None:
            self._read_error = exc
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release(self, size: int) -> None:
        """``size`` buffered bytes were handed to the application: credit may follow."""
        self._buffered -= size
        self._report(self._received - self._buffered)
        if self._eof and not self._buffered:
            self._release_stream()

    def _release_stream(self) -> None:
        """Everything was read (or the peer reset): the peer may open another stream."""
        if not self._released:
            self._released = True
            self._conn.protocol.stream_released(self._stream_id)
            self._conn.schedule_transmit()

    def _claim_buffered(self) -> None:
        """A pending call wants more than is buffered: count what is buffered as consumed.

        Without this, ``readexactly(n)`` or ``read_all()`` for more than one receive window
        would wait for bytes the peer may not send before it gets credit.
        """
        self._report(self._received)

    def _report(self, upto: int) -> None:
        if upto > self._reported:
            self._conn.protocol.stream_consumed(self._stream_id, upto - self._reported)
            self._reported = upto
            self._conn.schedule_transmit()

    def _receive_done(self) -> None:
        if self._recv_open:
            self._direction_done(receive=True)

    # -- public API

    @property
    def is_closed(self) -> bool:
        """True when nothing more can be read (end of stream read, reset or stopped)."""
        return (self._eof and not self._chunks) or self._read_error is not None or self._stopped

    def get_stats(self) -> ReceiveStreamStats:
        """A snapshot of the bytes received and read (see :class:`ReceiveStreamStats`)."""
        return ReceiveStreamStats(
            timestamp=time.time(),
            bytes_received=self._received,
            bytes_read=self._received - self._buffered,
        )

    async def _wait_readable(self) -> None:
        if self._read_waiter is not None:
            raise StreamError("another coroutine is already reading this stream")
        self._read_waiter = self._conn.loop.create_future()
        try:
            await self._read_waiter
        finally:
            self._read_waiter = None

    def _check_readable(self) -> bool:
        """True when data is buffered; raises the stored error when there is none to give."""
        if self._chunks:
            return True
        if self._read_error is not None:
            raise self._read_error
        if self._stopped:
            raise StreamError(f"stream {self._stream_id} was stopped")
        return False

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all until end of stream when ``size`` < 0).

        Returns ``b""`` at end of stream.
        """
        if size < 0:
            return await self.read_all()
        if size == 0:
            return b""
        while not self._check_readable():
            if self._eof:
                return b""
            await self._wait_readable()
        return self._take(size)

    def _take(self, size: int) -> bytes:
        chunk = self._chunks[0]
        if len(chunk) <= size:
            self._chunks.popleft()
            if len(chunk) < size and self._chunks:
                parts = [chunk]
                got = len(chunk)
                while self._chunks and got < size:
                    nxt = self._chunks.popleft()
                    if got + len(nxt) > size:
                        self._chunks.appendleft(nxt[size - got :])
                        nxt = nxt[: size - got]
                    parts.append(nxt)
                    got += len(nxt)
                chunk = b"".join(parts)
        else:
            self._chunks[0] = chunk[size:]
            chunk = chunk[:size]
        self._release(len(chunk))
        return chunk

    async def read_all(self, *, max_size: int | None = None) -> bytes:
        """Read until end of stream.

        Raises:
            StreamError: the stream was reset, or more than ``max_size`` bytes arrived.
        """
        while not self._eof:
            if max_size is not None and self._buffered > max_size:
                raise StreamError(f"stream {self._stream_id} exceeds {max_size} bytes")
            if self._read_error is not None:
                raise self._read_error  # a reset discards what was buffered (RFC 9000 3.2)
            if self._stopped:
                raise StreamError(f"stream {self._stream_id} was stopped")
            self._claim_buffered()
            await self._wait_readable()
        if self._read_error is not None and not self._chunks:
            raise self._read_error
        if max_size is not None and self._buffered > max_size:
            raise StreamError(f"stream {self._stream_id} exceeds {max_size} bytes")
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._release(self._buffered)
        return data

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; ``asyncio.IncompleteReadError`` at an early end."""
        while self._buffered < n:
            if self._stopped:
                raise StreamError(f"stream {self._stream_id} was stopped")
            if self._eof:
                partial = b"".join(self._chunks)
                self._chunks.clear()
                self._release(self._buffered)
                raise asyncio.IncompleteReadError(partial, n)
            if self._read_error is not None:
                raise self._read_error
            self._claim_buffered()
            await self._wait_readable()
        return self._take(n) if n else b""

    async def peek(self, n: int) -> bytes:
        """Return the first ``n`` buffered bytes without consuming them.

        Waits until ``n`` bytes are buffered or the stream ends (then returns fewer). ``n`` must
        not exceed the stream receive window. The bytes stay readable by the next read.

        Raises:
            StreamError: the stream was reset or stopped before ``n`` bytes arrived.
        """
        while self._buffered < n and not self._eof:
            if self._read_error is not None:
                raise self._read_error
            if self._stopped:
                raise StreamError(f"stream {self._stream_id} was stopped")
            self._claim_buffered()
            await self._wait_readable()
        if len(self._chunks) > 1 and len(self._chunks[0]) < n:
            joined = b"".join(self._chunks)
            self._chunks.clear()
            self._chunks.append(joined)
        return self._chunks[0][:n] if self._chunks else b""

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Read up to and including ``separator``; IncompleteReadError at an early end."""
        if not separator:
            raise ValueError("separator must not be empty")
        while True:
            joined = b"".join(self._chunks)
            index = joined.find(separator)
            if index >= 0:
                return self._take(index + len(separator))
            if self._eof:
                self._chunks.clear()
                self._release(self._buffered)
                raise asyncio.IncompleteReadError(joined, None)
            if self._read_error is not None:
                raise self._read_error
            if self._stopped:
                raise StreamError(f"stream {self._stream_id} was stopped")
            if len(self._chunks) > 1:
                self._chunks.clear()
                self._chunks.append(joined)
            self._claim_buffered()
            await self._wait_readable()

    async def readline(self) -> bytes:
        """Read one line (up to and including ``\\n``; what is left at end of stream)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.read(65536)
            if not chunk:
                return
            yield chunk

    async def stop(self, *, code: int = 0) -> None:
        """Tell the peer to stop sending (STOP_SENDING with a 32-bit application code)."""
        if self._stopped or self._eof or self._read_error is not None:
            return
        # The core checks the code (ValueError) before anything changes here.
        self._conn.protocol.stop_stream(self._stream_id, code=code)
        self._stopped = self._released = True  # stopping releases the receiving side
        self._conn.schedule_transmit()
        self._receive_done()
        self._wake_reader()

    def _fail(self, exc: Exception) -> None:
        self._fail_read(exc)


class WebTransportSendStream(_StreamBase):
    """The sending side of a WebTransport stream."""

    def __init__(self, session: WebTransportSession, stream_id: int) -> None:
        super().__init__(session, stream_id)
        self._send_closed = False  # FIN or reset sent
        self._bytes_written = 0  # handed to QUIC by write()
        self._bytes_accepted = 0  # passed to write()
        self._write_error: Exception | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._send_done: asyncio.Future[None] = self._conn.loop.create_future()

    # -- fed by the connection

    def _wake_writer(self) -> None:
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stopped_by_peer(self, app_code: int | None, h3_code: int) -> None:
        self._write_error = StreamError(
            f"stream {self._stream_id} stopped by peer", error_code=app_code, h3_error_code=h3_code
        )
        self._finish_send()
        self._wake_writer()

    def _fail_write(self, exc: Exception) -> None:
        if self._write_error is None and not self._send_closed:
            self._write_error = exc
        self._finish_send()
        self._wake_writer()

    def _finish_send(self) -> None:
        if not self._send_done.done():
            self._send_done.set_result(None)
        self._send_finished()

    def _send_finished(self) -> None:
        if self._send_open:
            self._direction_done(receive=False)

    # -- public API

    def _check_writable(self) -> None:
        if self._write_error is not None:
            raise self._write_error
        if self._send_closed:
            raise StreamError(f"stream {self._stream_id} is closed for writing")

    @property
    def bytes_written(self) -> int:
        """Bytes handed to QUIC so far; when a ``write()`` is cancelled, it tells how far it got."""
        return self._bytes_written

    def get_stats(self) -> SendStreamStats:
        """A snapshot of the bytes written, sent and acknowledged (see :class:`SendStreamStats`)."""
        sent = self._bytes_written
        return SendStreamStats(
            timestamp=time.time(),
            bytes_written=self._bytes_accepted,
            bytes_sent=sent,
            bytes_acknowledged=self._conn.protocol.send_acknowledged(self._stream_id, sent),
        )

    async def write(
        self, data: bytes | bytearray | memoryview, *, end_stream: bool = False
    ) -> None:
        """Send ``data``; returns once all of it is handed to QUIC within the buffer limit.

        Waits while the stream's unacknowledged bytes reach ``stream_buffer_size`` or session
        flow control has no credit (the peer is then told: WT_DATA_BLOCKED): real backpressure.

        Raises:
            StreamError: the peer stopped the stream, it was closed or aborted, or its
                session or connection ended.
        """
        self._check_writable()
        protocol = self._conn.protocol
        view = payload_bytes(data, "write()")
        self._bytes_accepted += len(view)
        while True:
            if view:
                capacity = protocol.send_capacity(self._stream_id)
                if capacity <= 0:
                    if protocol.send_blocked(self._stream_id):  # WT_DATA_BLOCKED queued
                        self._conn.schedule_transmit()
                    await self._wait_writable()
                    continue
                chunk = view if capacity >= len(view) else view[:capacity]
            elif end_stream:
                chunk = b""
            else:
                return
            last = end_stream and len(chunk) == len(view)
            try:
                protocol.send_stream_data(self._stream_id, chunk, end_stream=last)
            except CreditExhausted:
                await self._wait_writable()
                continue
            except ProtocolUsageError as exc:
                raise self._write_error or StreamError(str(exc)) from None
            view = view[len(chunk) :]
            self._bytes_written += len(chunk)
            self._session._stats.bytes_sent += len(chunk)
            self._conn.schedule_transmit()
            if last:
                self._send_closed = True
                self._finish_send()
                return
            if not view:
                return

    async def _wait_writable(self) -> None:
        self._check_writable()
        if self._write_waiter is not None:
            raise StreamError("another coroutine is already writing this stream")
        self._write_waiter = self._conn.loop.create_future()
        self._conn.watch_writable(self)
        try:
            await self._write_waiter
        finally:
            self._write_waiter = None
            self._conn.unwatch_writable(self)
        self._check_writable()

    async def write_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` and end the stream."""
        await self.write(data, end_stream=True)

    async def close(self) -> None:
        """End the stream gracefully (FIN). Idempotent."""
        if self._send_closed or self._write_error is not None:
            return
        await self.write(b"", end_stream=True)

    async def abort(self, *, code: int = 0) -> None:
        """End the stream abruptly (RESET_STREAM with a 32-bit application code)."""
        if self._send_closed:
            return
        # The core checks the code (ValueError) before anything changes here.
        self._conn.protocol.reset_stream(self._stream_id, code=code)
        self._send_closed = True
        self._conn.schedule_transmit()
        self._fail_write(StreamError(f"stream {self._stream_id} was aborted", error_code=code))

    async def wait_closed(self) -> None:
        """Wait until our sending side has ended (FIN, reset, or the session ended)."""
        await asyncio.shield(self._send_done)

    def _fail(self, exc: Exception) -> None:
        self._fail_write(exc)


class WebTransportStream(WebTransportReceiveStream, WebTransportSendStream):
    """A bidirectional WebTransport stream: both sides on one object."""

    def __init__(self, session: WebTransportSession, stream_id: int) -> None:
        super().__init__(session, stream_id)  # cooperative: receive, then send, then base

    @property
    def is_closed(self) -> bool:
        """True when both directions have ended."""
        receive_closed = (self._eof and not self._chunks) or self._read_error is not None
        return (receive_closed or self._stopped) and self._send_done.done()

    def get_stats(self) -> StreamStats:
        """A snapshot of both sides (see :class:`StreamStats`)."""
        send = WebTransportSendStream.get_stats(self)
        return StreamStats(
            timestamp=send.timestamp,
            bytes_written=send.bytes_written,
            bytes_sent=send.bytes_sent,
            bytes_acknowledged=send.bytes_acknowledged,
            bytes_received=self._received,
            bytes_read=self._received - self._buffered,
        )

    async def __aenter__(self) -> WebTransportStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
        else:
            await self.abort(code=0)
            await self.stop(code=0)

    def _fail(self, exc: Exception) -> None:
        self._fail_read(exc)
        self._fail_write(exc)


AnyStream = WebTransportStream | WebTransportReceiveStream | WebTransportSendStream
