"""The member's side of a hub, for Python clients: join, leave, publish, presence, messages.

Theory of operation: :class:`TopicClient` opens the session's ``pubsub`` channel and reads it
with one task. Responses complete the futures of its calls; ``pubsub.message`` notifications go
into a bounded queue that :meth:`TopicClient.receive` takes from. When the application does not
read, the queue fills, the reader stops reading the channel, and flow control holds the
messages back in the server's queue for this session, where the hub's overflow policy applies.
Messages of topics joined in datagram mode arrive as datagram messages, read by a second task
(while the queue is full they are dropped and counted, as datagrams may be).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from .. import exceptions as errors
from ..events import EventEmitter
from ..exceptions import WebTransportError
from ..messaging import (
    Channel,
    ChannelClosed,
    DecodeError,
    MessagingError,
    Messenger,
    RpcError,
    RpcErrorCode,
)
from .errors import BrokerUnavailable, Forbidden
from .hub import CHANNEL, FORBIDDEN, UNAVAILABLE, Mode

__all__ = ["TopicClient", "TopicClientStats", "TopicMessage"]

logger = logging.getLogger(__name__)


class TopicMessage(NamedTuple):
    """One message received on a topic."""

    topic: str
    data: Any


@dataclass
class TopicClientStats:
    """Counters of one :class:`TopicClient`."""

    received: int = 0  # messages taken from the channel and the datagrams
    dropped: int = 0  # messages the hub dropped for this session (its notices), plus datagrams
    # dropped here because the queue was full
    missed: int = 0  # messages the hub reported lost by the broker on joined topics
    ignored: int = 0  # messages on the channel or datagrams that were not the hub's


class TopicClient(EventEmitter):
    """A session's membership in a hub's topics. Made by :meth:`open`.

    Events: ``messages_dropped`` (``{"count"}``), ``messages_missed`` (``{"topic", "count"}``).
    """

    def __init__(self, messenger: Messenger, channel: Channel, *, queue_size: int) -> None:
        super().__init__()
        self._messenger = messenger
        self._channel = channel
        self._queue: asyncio.Queue[TopicMessage] = asyncio.Queue(queue_size)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._stats = TopicClientStats()
        self._closed_error: MessagingError | None = None
        self._ended = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._datagram_reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        messenger: Messenger,
        *,
        codec: str = "json",
        queue_size: int = 1024,
        timeout: float | None = None,
    ) -> TopicClient:
        """Open the ``pubsub`` channel to the server's hub.

        Raises:
            ChannelRefused: the server has no hub for this session.
            pywebtransport.TimeoutError: the hub did not accept within ``timeout`` seconds.
        """
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        channel = await messenger.open_channel(CHANNEL, codec=codec, timeout=timeout)
        return cls(messenger, channel, queue_size=queue_size)

    def __repr__(self) -> str:
        return f"<TopicClient session={self._messenger.session!r} stats={self.stats}>"

    @property
    def stats(self) -> dict[str, int]:
        """Counters: received, dropped, missed, ignored."""
        return asdict(self._stats)

    @property
    def is_closed(self) -> bool:
        return self._ended.is_set()

    async def __aenter__(self) -> TopicClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------- operations

    async def join(
        self,
        topic: str,
        *,
        mode: Mode = "reliable",
        info: Any = None,
        timeout: float | None = None,
    ) -> None:
        """Join ``topic``: its messages arrive from now on (``mode="datagram"``: unreliably,
        as datagrams). ``info`` (a JSON value) is shown with this session in presence lists.

        Raises:
            Forbidden: the server does not allow it.
            BrokerUnavailable: the server's broker is away.
            RpcError: another refusal (a bad topic name).
        """
        if mode == "datagram" and self._datagram_reader is None:
            self._datagram_reader = asyncio.get_running_loop().create_task(self._read_datagrams())
        await self._request("pubsub.join", [topic, mode, info], timeout)

    async def leave(self, topic: str, *, timeout: float | None = None) -> None:
        """Leave ``topic`` (nothing happens when this session is not in it)."""
        await self._request("pubsub.leave", [topic], timeout)

    async def publish(self, topic: str, data: Any, *, timeout: float | None = None) -> None:
        """Publish ``data`` (a JSON value) on ``topic`` through the server, if it allows it.

        Raises:
            Forbidden: the server does not allow this session to publish there.
            BrokerUnavailable: the server's broker is away (nothing was published).
        """
        await self._request("pubsub.publish", [topic, data], timeout)

    async def presence(self, topic: str, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Who is in ``topic`` across the server's processes: ``[{"id", "info"}, ...]``."""
        result: list[dict[str, Any]] = await self._request("pubsub.presence", [topic], timeout)
        return result

    async def receive(self, *, timeout: float | None = None) -> TopicMessage:
        """The next message of a joined topic.

        Raises:
            ChannelClosed: the channel to the hub ended (and every message before it was taken).
            pywebtransport.TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._ended.is_set():
            raise self._closed()
        getter = asyncio.ensure_future(self._queue.get())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            done, _ = await asyncio.wait(
                (getter, ended), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ended.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if ended in done:
            raise self._closed()
        raise errors.TimeoutError(f"no topic message within {timeout} s")

    def __aiter__(self) -> AsyncIterator[TopicMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TopicMessage]:
        while True:
            try:
                message = await self.receive()
            except ChannelClosed:
                return
            yield message

    async def close(self) -> None:
        """Close the channel (the hub makes this session leave every topic). Idempotent."""
        await self._channel.close()
        for task in (self._reader, self._datagram_reader):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._end(ChannelClosed("the topic client was closed"))

    # ---------------------------------------------------------------------------- inside

    def _closed(self) -> MessagingError:
        return self._closed_error or ChannelClosed("the channel to the hub ended")

    def _end(self, error: MessagingError) -> None:
        if self._closed_error is None:
            self._closed_error = error
        self._ended.set()
        for future in self._calls.values():
            if not future.done():
                future.set_exception(self._closed_error)
        self._calls.clear()

    async def _request(self, method: str, params: list[Any], timeout: float | None) -> Any:
        if self._ended.is_set():
            raise self._closed()
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        try:
            await self._channel.send(
                {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}
            )
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise errors.TimeoutError(f"{method} got no answer within {timeout} s") from exc
        finally:
            self._calls.pop(call_id, None)

    async def _read(self) -> None:
        error: MessagingError = ChannelClosed("the channel to the hub ended")
        try:
            while True:
                try:
                    message = await self._channel.receive()
                except DecodeError:
                    self._stats.ignored += 1
                    continue
                await self._take(message)
        except ChannelClosed as exc:
            if exc.error_code not in (None, 0):
                error = exc
        except MessagingError as exc:
            error = exc
        except WebTransportError as exc:
            error = ChannelClosed(str(exc))
        finally:
            self._end(error)

    async def _take(self, message: Any) -> None:
        if not isinstance(message, dict):
            self._stats.ignored += 1
            return
        method = message.get("method")
        params: Any = message.get("params")
        if method is None:
            self._answer(message)
        elif method == "pubsub.message" and isinstance(params, list) and len(params) == 2:
            self._stats.received += 1
            await self._queue.put(TopicMessage(params[0], params[1]))  # full: backpressure
        elif method == "pubsub.dropped" and _counts(params, 1):
            self._stats.dropped += params[0]
            self.emit("messages_dropped", {"count": params[0]})
        elif method == "pubsub.missed" and _counts(params, 2):
            self._stats.missed += params[1]
            self.emit("messages_missed", {"topic": params[0], "count": params[1]})
        else:
            self._stats.ignored += 1

    def _answer(self, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        future = self._calls.get(call_id) if type(call_id) is int else None
        if future is None or future.done():
            self._stats.ignored += 1
            return
        error = message.get("error")
        if error is None:
            future.set_result(message.get("result"))
            return
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code = error.get("code")
        if type(code) is not int:
            code = RpcErrorCode.INTERNAL_ERROR
        text = str(error.get("message", ""))
        if code == FORBIDDEN:
            future.set_exception(Forbidden(text))
        elif code == UNAVAILABLE:
            future.set_exception(BrokerUnavailable(text))
        else:
            future.set_exception(RpcError(code, text, error.get("data")))

    async def _read_datagrams(self) -> None:
        datagrams = self._messenger.datagrams
        try:
            while True:
                try:
                    value = await datagrams.receive()
                except DecodeError:
                    self._stats.ignored += 1
                    continue
                if not (isinstance(value, dict) and value.keys() == {"topic", "data"}):
                    self._stats.ignored += 1
                    continue
                try:
                    self._queue.put_nowait(TopicMessage(value["topic"], value["data"]))
                except asyncio.QueueFull:
                    self._stats.dropped += 1
                else:
                    self._stats.received += 1
        except (MessagingError, WebTransportError) as exc:
            logger.debug("topic client: datagrams ended: %s", exc)


def _counts(params: Any, length: int) -> bool:
    """True for a params array of ``length`` whose last item is a count (a non-negative int)."""
    return (
        isinstance(params, list)
        and len(params) == length
        and type(params[-1]) is int
        and params[-1] >= 0
    )
