"""A channel: ordered, reliable messages both ways over one bidirectional stream.

Theory of operation: :meth:`Channel.send` encodes one value, frames it and writes the frame with
the stream's own backpressure; one lock keeps frames whole when several tasks send at once.
:meth:`Channel.receive` hands out frames already cut by the :class:`FrameDecoder`; only when
none is left does it read the stream again (at most :data:`READ_SIZE` bytes), so a reader that
does not keep up leaves the bytes in the stream, whose receive credit then stops the writer. A
framing error (oversized or cut-short frame) resets both directions with its code; a payload that
does not decode is reported for that message only.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .. import exceptions as errors
from ..exceptions import StreamError, WebTransportError
from .errors import (
    ChannelClosed,
    ChannelProtocolError,
    ChannelRefused,
    DecodeError,
    ErrorCode,
    MessageTooLarge,
    MessagingError,
)
from .framing import FrameDecoder, FramingError, parse_accept

if TYPE_CHECKING:
    from types import TracebackType

    from ..session import WebTransportSession
    from ..stream import WebTransportStream
    from .codecs import Codec

__all__ = ["Channel", "ChannelStats"]

logger = logging.getLogger(__name__)

READ_SIZE = 65536
"""Bytes read from the stream at a time when no whole message is buffered."""

_LENGTH = struct.Struct(">I")
_REFUSALS = frozenset(
    {
        ErrorCode.CHANNEL_UNKNOWN,
        ErrorCode.CODEC_UNSUPPORTED,
        ErrorCode.CHANNEL_REFUSED,
        ErrorCode.BAD_HELLO,
    }
)


@dataclass
class ChannelStats:
    """Counters of one channel (bytes are message payload bytes, without framing)."""

    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    decode_errors: int = 0
    protocol_errors: int = 0  # framing broken by the peer (the channel was reset)


class Channel:
    """One message channel. Built by :class:`~pywebtransport.messaging.Messenger`.

    Use ``async with channel:`` to close it on exit (abort with code 0 on an exception), and
    ``async for message in channel`` to receive until the peer closes it.
    """

    def __init__(
        self,
        stream: WebTransportStream,
        *,
        name: str,
        codec: Codec,
        max_message_size: int,
        peer_max_message_size: int,
        accepted: bool,
        decoder: FrameDecoder | None = None,
    ) -> None:
        self._stream = stream
        self._name = name
        self._codec = codec
        self._peer_limit = peer_max_message_size
        self._decoder = decoder or FrameDecoder(max_message_size)
        self._frames: deque[bytes] = deque()
        self._accepted = accepted
        self._lock = asyncio.Lock()
        self._finishing: asyncio.Future[None] | None = None  # completes a cancelled send's frame
        self._reading = False
        self._eof = False
        self._closed_error: MessagingError | None = None
        self._stats = ChannelStats()
        self._on_close: list[Any] = []

    # ----------------------------------------------------------------------------- properties

    @property
    def name(self) -> str:
        """The channel's name (from its hello)."""
        return self._name

    @property
    def codec(self) -> str:
        """The codec's name."""
        return self._codec.name

    @property
    def session(self) -> WebTransportSession:
        """The session the channel lives in."""
        return self._stream.session

    @property
    def stream_id(self) -> int:
        """The ID of the stream carrying the channel."""
        return self._stream.stream_id

    @property
    def max_message_size(self) -> int:
        """The largest message this side accepts."""
        return self._decoder.max_size

    @property
    def peer_max_message_size(self) -> int:
        """The largest message the peer accepts (``send`` refuses larger ones)."""
        return self._peer_limit

    @property
    def is_closed(self) -> bool:
        """True once the channel cannot carry messages either way any more."""
        return self._closed_error is not None

    @property
    def stats(self) -> dict[str, int]:
        """Counters: messages and payload bytes both ways, decode errors."""
        return asdict(self._stats)

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open"
        return (
            f"<Channel {self._name!r} codec={self._codec.name} stream={self.stream_id} {state} "
            f"sent={self._stats.messages_sent} received={self._stats.messages_received}>"
        )

    # ----------------------------------------------------------------------------- sending

    async def send(self, message: Any) -> None:
        """Send one message; waits while the peer's flow control does not allow more.

        Cancelling a send is safe: a message is either not sent at all or sent whole (a part
        already written is completed in the background).

        Raises:
            MessageTooLarge: larger than the peer accepts (nothing is sent; the channel goes on).
            EncodeError: the codec cannot encode ``message``.
            ChannelClosed: the channel or its session has ended.
        """
        payload = self._codec.encode(message)
        await self.send_encoded(payload)

    async def send_encoded(self, payload: bytes) -> None:
        """Send a payload already encoded with this channel's codec (see :meth:`send`)."""
        if len(payload) > self._peer_limit:
            raise MessageTooLarge(
                f"message of {len(payload)} bytes over the peer's limit of {self._peer_limit}"
            )
        if self._closed_error is not None:
            raise self._closed_error
        await self._write(_LENGTH.pack(len(payload)) + payload)
        self._stats.messages_sent += 1
        self._stats.bytes_sent += len(payload)

    async def _write(self, frame: bytes) -> None:
        """Write whole frames, one task at a time, even when the caller is cancelled midway."""
        await self._lock.acquire()
        stream = self._stream
        before = stream.bytes_written
        try:
            await stream.write(frame)
        except asyncio.CancelledError:
            written = stream.bytes_written - before
            if 0 < written < len(frame):  # part of the frame is out: finish it, then unlock
                task = asyncio.ensure_future(self._finish(frame[written:]))
                self._finishing = task
                raise
            self._lock.release()
            raise
        except WebTransportError as exc:
            self._lock.release()
            raise self._closed_from(exc) from None
        self._lock.release()

    async def _finish(self, rest: bytes) -> None:
        try:
            await self._stream.write(rest)
        except WebTransportError as exc:
            self._closed_from(exc)
        finally:
            self._finishing = None
            self._lock.release()

    async def _send_raw(self, data: bytes) -> None:
        """Write bytes that are not a message (the accept frame)."""
        await self._write(data)

    # ----------------------------------------------------------------------------- receiving

    async def receive(self, *, timeout: float | None = None) -> Any:
        """The next message.

        Raises:
            ChannelClosed: the peer closed the channel (after its last message), it was closed
                or aborted here, or the session ended.
            DecodeError: this message did not decode; the next call returns the next message.
            ChannelProtocolError: the peer broke the framing rules (the channel is reset).
            pywebtransport.TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        if not self._frames:
            await self._fill(timeout)
        payload = self._frames.popleft()
        self._stats.messages_received += 1
        self._stats.bytes_received += len(payload)
        try:
            return self._codec.decode(payload)
        except DecodeError:
            self._stats.decode_errors += 1
            raise

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        """Messages until the channel ends normally (FIN, close, code 0, session end)."""
        while True:
            try:
                message = await self.receive()
            except ChannelClosed as exc:
                if exc.error_code in (None, ErrorCode.CLOSED):
                    return
                raise
            yield message

    async def _fill(self, timeout: float | None) -> None:
        """Read until at least one frame is buffered."""
        if self._reading:
            raise MessagingError(f"channel {self._name!r}: another task is already receiving")
        self._reading = True
        try:
            async with asyncio.timeout(timeout):
                while not self._frames:
                    await self._read_more()
        except TimeoutError:
            raise errors.TimeoutError(
                f"no message on channel {self._name!r} within {timeout} s"
            ) from None
        finally:
            self._reading = False

    async def _read_more(self) -> None:
        if self._eof or self._closed_error is not None:
            raise self._closed_error or ChannelClosed(
                f"channel {self._name!r} was closed by the peer"
            )
        try:
            data = await self._stream.read(READ_SIZE)
        except WebTransportError as exc:
            raise self._closed_from(exc) from None
        try:
            if not data:
                self._eof = True
                self._decoder.end()
                raise ChannelClosed(f"channel {self._name!r} was closed by the peer")
            frames = self._decoder.feed(data)
            if not self._accepted and frames:
                self._take_accept(frames.pop(0))
        except FramingError as exc:
            self._stats.protocol_errors += 1
            error = ChannelProtocolError(f"channel {self._name!r}: {exc}", error_code=exc.code)
            self._closed_error = error
            await self._abort(exc.code, str(exc))
            raise error from None
        self._frames.extend(frames)

    def _take_accept(self, payload: bytes) -> None:
        accept = parse_accept(payload)
        if accept.codec != self._codec.name:
            raise FramingError(
                ErrorCode.BAD_HELLO,
                f"the peer accepted with codec {accept.codec!r}, not {self._codec.name!r}",
            )
        self._peer_limit = accept.max_message_size
        self._accepted = True

    async def _wait_accepted(self, timeout: float | None) -> None:
        """Opener: wait for the accept frame (messages after it stay buffered)."""
        try:
            async with asyncio.timeout(timeout):
                while not self._accepted:
                    await self._read_more()
        except TimeoutError:
            await self._abort(ErrorCode.CLOSED, "was not accepted in time")
            raise errors.TimeoutError(
                f"channel {self._name!r} not accepted within {timeout} s"
            ) from None
        except ChannelClosed as exc:
            if type(exc) is ChannelClosed and exc.error_code in _REFUSALS:
                code = ErrorCode(exc.error_code)
                raise ChannelRefused(
                    f"the peer refused channel {self._name!r}: {code.name}", error_code=code
                ) from None
            raise

    # ----------------------------------------------------------------------------- ending

    def _closed_from(self, exc: WebTransportError) -> MessagingError:
        """The channel's error for a stream or session error (kept for later calls)."""
        if self._closed_error is None:
            code = exc.error_code if isinstance(exc, StreamError) else None
            self._closed_error = ChannelClosed(
                f"channel {self._name!r} ended: {exc}", error_code=code
            )
            self._notify_closed()
        return self._closed_error

    async def _abort(self, code: int, why: str) -> None:
        """Reset our direction and stop the peer's, both with ``code`` (never waits)."""
        logger.debug(
            "channel %r (stream %d) aborted, %#x: %s", self._name, self.stream_id, code, why
        )
        if self._closed_error is None:
            self._closed_error = ChannelClosed(f"channel {self._name!r} {why}", error_code=code)
        await _quietly(self._stream.abort(code=code))
        await _quietly(self._stream.stop(code=code))
        self._notify_closed()

    async def close(self) -> None:
        """End the channel: FIN on our direction, STOP_SENDING (code 0) on the peer's. Idempotent.

        Messages the peer had in flight are discarded and its sends fail from then on. While
        another task's send waits for flow control, the channel is aborted with code 0 instead
        (a FIN would cut that message).
        """
        if self._closed_error is not None:
            return
        if self._lock.locked():
            await self._abort(ErrorCode.CLOSED, "was closed during a send")
            return
        self._closed_error = ChannelClosed(f"channel {self._name!r} was closed")
        await _quietly(self._stream.close())
        await _quietly(self._stream.stop(code=ErrorCode.CLOSED))
        self._notify_closed()

    async def abort(self, *, code: int = 0) -> None:
        """End the channel abruptly: reset our direction and stop the peer's with ``code``."""
        if self._closed_error is None:
            await self._abort(code, "was aborted")

    def _notify_closed(self) -> None:
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback(self)

    async def __aenter__(self) -> Channel:
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
            await self.abort(code=ErrorCode.CLOSED)


async def _quietly(action: Any) -> None:
    try:
        await action
    except WebTransportError as exc:
        logger.debug("channel: ignoring %s", exc)
