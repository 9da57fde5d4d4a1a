"""ClientPool: several WebTransportClients, handed out round-robin.

Theory of operation: the clients are built from the configurations up front and entered with the
pool. :meth:`ClientPool.get_client` reads and advances the round-robin index with no ``await`` in
between, so concurrent callers each get the next client in turn. :meth:`ClientPool.connect_all`
runs one connect per client in a ``gather(return_exceptions=True)``: a failing client never
cancels the others, and its error (even a cancellation of that one connect) is logged and left
out of the result instead of being raised.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..config import ClientConfig
from ..exceptions import ConfigurationError
from ..session import WebTransportSession
from ._lifecycle import AsyncLifecycle
from .client import URL, WebTransportClient

if TYPE_CHECKING:
    pass

__all__ = ["ClientPool"]

logger = logging.getLogger(__name__)


def _describe(error: BaseException) -> str:
    """An error as ``Type: message`` (the type alone when the message is empty)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class ClientPool(AsyncLifecycle):
    """A fixed set of :class:`WebTransportClient` objects. Use inside ``async with``.

    Args:
        configs: one entry per client (``None``: that client uses the default configuration).

    Raises:
        ConfigurationError: ``configs`` is empty (also a ``ValueError``).
    """

    _noun = "client pool"

    def __init__(self, *, configs: list[ClientConfig | None]) -> None:
        if not configs:
            raise ConfigurationError("ClientPool needs at least one configuration", field="configs")
        self._clients = [WebTransportClient(config=config) for config in configs]
        self._next = 0
        super().__init__()

    def __repr__(self) -> str:
        state = self._state_text
        sessions = sum(client.stats["active_sessions"] for client in self._clients)
        return (
            f"<ClientPool [{state}] clients={len(self._clients)} next={self._next} "
            f"active_sessions={sessions}>"
        )

    # ----------------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> ClientPool:
        self._check_enter()
        for client in self._clients:
            await client.__aenter__()
        self._entered = True
        return self

    async def close(self) -> None:
        """Close every client (same as :meth:`close_all`)."""
        await self.close_all()

    # ----------------------------------------------------------------------------- API

    async def get_client(self) -> WebTransportClient:
        """Return the next client, round-robin from the first one.

        Raises:
            ClientError: the pool is not entered, or closed.
        """
        self._check_usable()
        # No await between reading and advancing the index: concurrent callers cannot interleave.
        client = self._clients[self._next]
        self._next = (self._next + 1) % len(self._clients)
        return client

    async def connect_all(self, url: URL) -> list[WebTransportSession]:
        """Connect every client to ``url`` concurrently.

        Args:
            url: the ``https://`` URL every client connects to.

        Returns:
            The sessions that were established, in client order (empty when every connect
            failed). Failed connects are logged at WARNING with the URL and the error, and left
            out; they never cancel the other connects.

        Raises:
            ClientError: the pool is not entered, or closed.
        """
        self._check_usable()
        results = await asyncio.gather(
            *(client.connect(url=url) for client in self._clients), return_exceptions=True
        )
        sessions: list[WebTransportSession] = []
        for index, result in enumerate(results):
            if isinstance(result, WebTransportSession):
                sessions.append(result)
            elif isinstance(result, Exception | asyncio.CancelledError):
                logger.warning(
                    "client %d of the pool failed to connect to %s: %s",
                    index,
                    url,
                    _describe(result),
                )
            else:
                raise result  # KeyboardInterrupt, SystemExit: not a connect failure
        return sessions

    async def close_all(self) -> None:
        """Close every client (and so every session they opened) concurrently. Idempotent."""
        if self._closed:
            return
        self._closed = True
        clients, self._clients = self._clients, []
        results = await asyncio.gather(
            *(client.close() for client in clients), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("closing a pooled client failed: %r", result)

    def get_client_count(self) -> int:
        """Return the number of clients in the pool (0 once it is closed)."""
        return len(self._clients)
