"""The message layer of one session: channels by name, plain streams beside them, datagrams.

Theory of operation: :class:`Messenger` takes over the session's incoming streams. Each peer
bidirectional stream is classified by its first four bytes (``peek``, so nothing is consumed):
the preamble makes it a channel, anything else (or nothing within ``hello_timeout``, or an early
end) makes it a plain stream, handed on intact through :meth:`Messenger.incoming_streams`, as are
all unidirectional streams. A channel's hello is then read (bounded) and the channel is routed:

1. a name registered with :meth:`Messenger.route` is accepted at once and its handler runs;
2. a name that :meth:`accept_channel` / :meth:`channels` may take (any name while no route is
   registered, else only the names listed in ``channels=``) waits in a bounded queue and is
   accepted when the application takes it;
3. anything else is refused (reset and stop) with ``CHANNEL_UNKNOWN``, an unsupported codec with
   ``CODEC_UNSUPPORTED``, a full queue with ``CHANNEL_REFUSED``, a malformed hello with
   ``BAD_HELLO``.
Everything is counted in :attr:`Messenger.stats`. The layer uses only the session's public API.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .. import exceptions as errors
from ..exceptions import ConfigurationError, SessionError, WebTransportError
from ..stream import WebTransportStream
from .channel import Channel
from .codecs import get_codec
from .datagrams import DatagramMessages
from .errors import ErrorCode, MessagingError
from .framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CHANNEL_NAME,
    MAX_HELLO_SIZE,
    PREAMBLE,
    Accept,
    FramingError,
    Hello,
    encode_accept,
    encode_hello,
    parse_hello,
)

if TYPE_CHECKING:
    from types import TracebackType

    from ..session import IncomingStream, WebTransportSession

__all__ = ["ChannelHandler", "Messenger", "MessengerStats"]

logger = logging.getLogger(__name__)

ChannelHandler = Callable[[Channel], Awaitable[None]]
"""A route handler: ``async def handler(channel: Channel) -> None``."""

_LENGTH = struct.Struct(">I")


@dataclass
class MessengerStats:
    """Counters of one messenger."""

    channels_opened: int = 0
    channels_accepted: int = 0
    channels_refused: int = 0  # by this side, for any reason below
    refused_unknown: int = 0
    refused_codec: int = 0
    refused_busy: int = 0
    bad_hellos: int = 0
    plain_streams: int = 0
    plain_streams_refused: int = 0


@dataclass
class _Pending:
    stream: WebTransportStream
    hello: Hello


class Messenger:
    """Channels, plain streams and datagram messages over one session.

    Args:
        session: the session (client or server side).
        max_message_size: the largest message this side accepts on its channels (bytes).
        channels: the names :meth:`accept_channel` / :meth:`channels` may take once routes are
            registered (without routes, and with None, any name).
        codecs: the codecs this side accepts in a peer's hello (default: every codec usable here).
        max_pending: channels (and plain streams) waiting to be taken, at most; more are refused.
        hello_timeout: seconds a peer stream may take to show its first bytes and its hello.
    """

    def __init__(
        self,
        session: WebTransportSession,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        channels: Collection[str] | None = None,
        codecs: Collection[str] | None = None,
        max_pending: int = 16,
        hello_timeout: float = 10.0,
    ) -> None:
        if max_message_size < 0 or max_message_size > 0xFFFFFFFF:
            raise ConfigurationError(
                "max_message_size must be 0..2**32-1", field="max_message_size"
            )
        if max_pending < 1:
            raise ConfigurationError("max_pending must be at least 1", field="max_pending")
        if hello_timeout <= 0:
            raise ConfigurationError("hello_timeout must be positive", field="hello_timeout")
        self._session = session
        self._max_message_size = max_message_size
        self._allowed = None if channels is None else frozenset(channels)
        self._codecs = None if codecs is None else frozenset(codecs)
        for name in self._codecs or ():
            get_codec(name)  # fails early for an unknown or unusable codec
        self._max_pending = max_pending
        self._hello_timeout = hello_timeout
        self._routes: dict[str, ChannelHandler] = {}
        self._pending: list[_Pending] = []
        self._plain: list[IncomingStream] = []
        self._wakeup: asyncio.Event | None = None
        self._open: set[Channel] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._datagrams: DatagramMessages | None = None
        self._closed = False
        self._stats = MessengerStats()

    # ----------------------------------------------------------------------------- properties

    @property
    def session(self) -> WebTransportSession:
        """The session underneath."""
        return self._session

    @property
    def stats(self) -> dict[str, int]:
        """Counters: channels opened, accepted and refused (by reason), plain streams."""
        return asdict(self._stats)

    @property
    def open_channels(self) -> list[Channel]:
        """The channels of this messenger that are still open."""
        return [c for c in self._open if not c.is_closed]

    @property
    def datagrams(self) -> DatagramMessages:
        """Messages over the session's datagrams (created on first use)."""
        if self._datagrams is None:
            self._datagrams = DatagramMessages(self._session.datagrams)
        return self._datagrams

    def __repr__(self) -> str:
        return (
            f"<Messenger session={self._session.session_id} open={len(self.open_channels)} "
            f"pending={len(self._pending)} routes={sorted(self._routes)}>"
        )

    # ----------------------------------------------------------------------------- opening

    async def open_channel(
        self, name: str, *, codec: str = "json", timeout: float | None = None
    ) -> Channel:
        """Open a channel and wait until the peer accepts it.

        Raises:
            ChannelRefused: the peer refused it (``error_code`` says why).
            pywebtransport.TimeoutError: not accepted within ``timeout`` seconds (the stream is
                aborted).
            ConfigurationError: bad name or unknown codec.
            SessionError: the session is closed.
        """
        if not isinstance(name, str) or not 0 < len(name) <= MAX_CHANNEL_NAME:
            raise ConfigurationError(f"bad channel name {name!r}", field="name")
        chosen = get_codec(codec)
        self._check_open()
        stream = await self._session.create_bidirectional_stream(timeout=timeout)
        await stream.write(encode_hello(Hello(name, chosen.name, self._max_message_size)))
        channel = Channel(
            stream,
            name=name,
            codec=chosen,
            max_message_size=self._max_message_size,
            peer_max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
            accepted=False,
        )
        self._track(channel)
        await channel._wait_accepted(timeout)
        self._stats.channels_opened += 1
        return channel

    # ----------------------------------------------------------------------------- accepting

    def route(self, name: str) -> Callable[[ChannelHandler], ChannelHandler]:
        """Decorator: run ``handler(channel)`` for every channel of that name the peer opens.

        The channel is closed when the handler returns (aborted with code 0 if it raises).
        """

        def register(handler: ChannelHandler) -> ChannelHandler:
            self._routes[name] = handler
            return handler

        return register

    async def accept_channel(
        self, name: str | None = None, *, timeout: float | None = None
    ) -> Channel:
        """The next channel the peer opened (with that name, if given), accepted now.

        Raises:
            pywebtransport.TimeoutError: none within ``timeout`` seconds.
            SessionError: the session ended (the messenger was closed).
        """
        self._start()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for pending in self._pending:
                        if name is None or pending.hello.channel == name:
                            self._pending.remove(pending)
                            channel = await self._accept_waiting(pending)
                            if channel is not None:
                                return channel
                            break  # that one had gone: look again
                    else:
                        await self._wait_for_more()
        except TimeoutError:
            raise errors.TimeoutError(
                f"no channel {name or ''!r} opened within {timeout} s"
            ) from None

    async def channels(self) -> AsyncIterator[Channel]:
        """Every channel the peer opens (and this side may accept), until the session ends."""
        while True:
            try:
                yield await self.accept_channel()
            except (SessionError, MessagingError):
                if self._session.is_closed or self._closed:
                    return
                raise

    async def incoming_streams(self) -> AsyncIterator[IncomingStream]:
        """The peer's streams that are not channels, bytes intact, until the session ends."""
        self._start()
        while True:
            if self._plain:
                yield self._plain.pop(0)
                continue
            try:
                await self._wait_for_more()
            except (SessionError, MessagingError):
                return

    async def serve(self) -> None:
        """Run the routes until the session ends, then close the messenger."""
        self._start()
        try:
            await self._session.wait_closed()
        finally:
            await self.close()

    # ----------------------------------------------------------------------------- life cycle

    async def close(self) -> None:
        """Close this messenger's channels and stop its tasks (not the session). Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pending in self._pending:
            await _refuse(pending.stream, ErrorCode.CHANNEL_REFUSED)
        self._pending.clear()
        for channel in list(self._open):
            await channel.close()
        self._wake()

    async def __aenter__(self) -> Messenger:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise SessionError("the messenger is closed")

    def _start(self) -> None:
        self._check_open()
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _track(self, channel: Channel) -> None:
        self._open.add(channel)
        channel._on_close.append(self._open.discard)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _wait_for_more(self) -> None:
        """Wait until something was queued or the messenger/session ended."""
        if self._closed:
            raise SessionError("the messenger is closed")
        if self._dispatcher is not None and self._dispatcher.done():
            raise SessionError(f"session {self._session.session_id} has ended")
        if self._wakeup is None or self._wakeup.is_set():
            self._wakeup = asyncio.Event()
        await self._wakeup.wait()

    async def _dispatch(self) -> None:
        try:
            async for stream in self._session.incoming_streams():
                if isinstance(stream, WebTransportStream):
                    self._spawn(self._classify(stream))
                else:
                    self._queue_plain(stream)
        finally:
            self._wake()

    def _queue_plain(self, stream: IncomingStream) -> None:
        if len(self._plain) >= self._max_pending:
            self._stats.plain_streams_refused += 1
            self._spawn(_refuse(stream, ErrorCode.CHANNEL_REFUSED))
            return
        self._stats.plain_streams += 1
        self._plain.append(stream)
        self._wake()

    async def _classify(self, stream: WebTransportStream) -> None:
        """A peer's bidirectional stream: a channel (route, queue or refuse) or a plain stream."""
        try:
            async with asyncio.timeout(self._hello_timeout):
                head = await stream.peek(len(PREAMBLE))
        except TimeoutError:
            head = b""  # a quiet stream (its opener may wait for us to write first)
        except WebTransportError:
            return  # reset before it showed anything: nothing to hand over
        if head != PREAMBLE:
            self._queue_plain(stream)
            return
        try:
            async with asyncio.timeout(self._hello_timeout):
                hello = await self._read_hello(stream)
        except (TimeoutError, FramingError) as exc:
            code = exc.code if isinstance(exc, FramingError) else ErrorCode.BAD_HELLO
            logger.debug("session %d: bad hello: %s", self._session.session_id, exc or "timeout")
            self._stats.bad_hellos += 1
            await self._refuse(stream, code)
            return
        except WebTransportError as exc:
            logger.debug(
                "session %d: stream gone before its hello: %s", self._session.session_id, exc
            )
            return
        self._route(stream, hello)

    async def _read_hello(self, stream: WebTransportStream) -> Hello:
        """Read the preamble and the hello frame; whatever follows stays in the stream."""
        try:
            await stream.readexactly(len(PREAMBLE))
            (length,) = _LENGTH.unpack(await stream.readexactly(4))
            if length > MAX_HELLO_SIZE:
                raise FramingError(ErrorCode.BAD_HELLO, f"hello of {length} bytes is too long")
            payload = await stream.readexactly(length)
        except asyncio.IncompleteReadError:
            raise FramingError(ErrorCode.BAD_HELLO, "the stream ended inside the hello") from None
        return parse_hello(payload)

    def _route(self, stream: WebTransportStream, hello: Hello) -> None:
        if not self._codec_accepted(hello.codec):
            self._stats.refused_codec += 1
            self._spawn(self._refuse(stream, ErrorCode.CODEC_UNSUPPORTED))
            return
        handler = self._routes.get(hello.channel)
        if handler is not None:
            self._spawn(self._run_route(handler, _Pending(stream, hello)))
            return
        queueable = (self._allowed is None and not self._routes) or (
            self._allowed is not None and hello.channel in self._allowed
        )
        if not queueable:
            self._stats.refused_unknown += 1
            self._spawn(self._refuse(stream, ErrorCode.CHANNEL_UNKNOWN))
        elif len(self._pending) >= self._max_pending:
            self._stats.refused_busy += 1
            self._spawn(self._refuse(stream, ErrorCode.CHANNEL_REFUSED))
        else:
            self._pending.append(_Pending(stream, hello))
            self._wake()

    def _codec_accepted(self, name: str) -> bool:
        if self._codecs is not None and name not in self._codecs:
            return False
        try:
            get_codec(name)
        except ConfigurationError:
            return False
        return True

    async def _accept(self, pending: _Pending) -> Channel:
        hello = pending.hello
        codec = get_codec(hello.codec)
        channel = Channel(
            pending.stream,
            name=hello.channel,
            codec=codec,
            max_message_size=self._max_message_size,
            peer_max_message_size=hello.max_message_size,
            accepted=True,
        )
        self._track(channel)
        await channel._send_raw(encode_accept(Accept(codec.name, self._max_message_size)))
        self._stats.channels_accepted += 1
        return channel

    async def _accept_waiting(self, pending: _Pending) -> Channel | None:
        """Accept a channel that waited in the queue; None when its stream has gone since."""
        try:
            return await self._accept(pending)
        except MessagingError as exc:
            logger.debug("channel %r gone before it was accepted: %s", pending.hello.channel, exc)
            return None

    async def _run_route(self, handler: ChannelHandler, pending: _Pending) -> None:
        try:
            channel = await self._accept(pending)
        except MessagingError as exc:
            logger.debug("channel %r could not be accepted: %s", pending.hello.channel, exc)
            return
        try:
            await handler(channel)
        except asyncio.CancelledError:
            await channel.abort(code=ErrorCode.CLOSED)
            raise
        except Exception:
            logger.exception("handler of channel %r raised", channel.name)
            await channel.abort(code=ErrorCode.CLOSED)
            return
        await channel.close()

    async def _refuse(self, stream: WebTransportStream | IncomingStream, code: ErrorCode) -> None:
        self._stats.channels_refused += 1
        await _refuse(stream, code)


async def _refuse(stream: Any, code: ErrorCode) -> None:
    """Reset the stream's sending side and stop its receiving side with ``code``."""
    try:
        if hasattr(stream, "abort"):
            await stream.abort(code=code)
        if hasattr(stream, "stop"):
            await stream.stop(code=code)
    except WebTransportError as exc:
        logger.debug("refusing a stream: %s", exc)
