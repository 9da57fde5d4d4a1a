"""Datagram messages: one value per datagram, ``codec id (1 byte) + payload``.

Unreliable and unordered, like the datagrams underneath. A datagram that is empty, names a codec
not usable here, or does not decode is dropped and counted; :meth:`DatagramMessages.receive`
then waits for the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .. import exceptions as errors
from ..exceptions import ConfigurationError, DatagramError, WebTransportError
from .codecs import Codec, get_codec
from .errors import DecodeError, MessageTooLarge

if TYPE_CHECKING:
    from ..datagram import WebTransportDatagramTransport

__all__ = ["DatagramMessageStats", "DatagramMessages"]

logger = logging.getLogger(__name__)


@dataclass
class DatagramMessageStats:
    """Counters of datagram messages (the transport's own counters are in ``transport.stats``)."""

    sent: int = 0
    received: int = 0
    dropped_invalid: int = 0  # empty, unknown codec, or undecodable


class DatagramMessages:
    """Send and receive messages as datagrams of one session.

    Args:
        transport: the session's datagram transport (``session.datagrams``).
        codec: the codec :meth:`send` uses unless told otherwise.
    """

    def __init__(self, transport: WebTransportDatagramTransport, *, codec: str = "json") -> None:
        self._transport = transport
        self._codec = get_codec(codec)
        self._stats = DatagramMessageStats()

    @property
    def transport(self) -> WebTransportDatagramTransport:
        """The datagram transport underneath."""
        return self._transport

    @property
    def max_message_size(self) -> int:
        """The largest payload one datagram message can carry now (0: no datagrams)."""
        return max(0, self._transport.max_datagram_size - 1)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: sent, received, dropped_invalid."""
        return asdict(self._stats)

    async def send(self, message: Any, *, codec: str | None = None) -> None:
        """Send one message in one datagram.

        Raises:
            MessageTooLarge: the encoded message does not fit in a datagram (nothing is sent).
            EncodeError: the codec cannot encode ``message``.
            SessionError: the session is closed.
        """
        chosen = self._codec if codec is None else get_codec(codec)
        await self.send_encoded(chosen.encode(message), codec=chosen.name)

    async def send_encoded(self, payload: bytes, *, codec: str | None = None) -> None:
        """Send a payload already encoded with ``codec`` (default: this object's) in one
        datagram: encode once, send to many sessions. Raises as :meth:`send` does."""
        chosen = self._codec if codec is None else get_codec(codec)
        try:
            await self._transport.send(bytes((chosen.id,)) + payload)
        except DatagramError as exc:
            raise MessageTooLarge(
                f"datagram message of {len(payload)} bytes does not fit: {exc}"
            ) from None
        self._stats.sent += 1

    async def receive(self, *, timeout: float | None = None) -> Any:
        """The next valid datagram message (invalid ones are dropped and counted).

        Raises:
            pywebtransport.TimeoutError: none within ``timeout`` seconds.
            SessionError: the session closed and every datagram was delivered.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await self._transport.receive()
                    decoded = self._decode(data)
                    if decoded is not _INVALID:
                        self._stats.received += 1
                        return decoded
        except TimeoutError:
            raise errors.TimeoutError(f"no datagram message within {timeout} s") from None

    def _decode(self, data: bytes) -> Any:
        try:
            codec: Codec = get_codec(data[0])
            return codec.decode(data[1:])
        except (IndexError, ConfigurationError, DecodeError) as exc:
            self._stats.dropped_invalid += 1
            logger.debug("dropped an invalid datagram message (%d bytes): %s", len(data), exc)
            return _INVALID

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                message = await self.receive()
            except WebTransportError:
                if self._transport_closed():
                    return
                raise
            yield message

    def _transport_closed(self) -> bool:
        return self._transport.is_closed


_INVALID = object()
