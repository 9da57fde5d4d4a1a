"""WebTransportBrowser: one current session and a navigation history.

Theory of operation: the history is a list of URLs and an index into it (-1 while empty). Every
move (navigate, back, forward, refresh) first connects to its target and only then commits: the
history, the index and the current session change together, after which the previous session
is closed. A move that fails (or is cancelled) while connecting therefore leaves everything as
it was. Moves are serialised by a lock, so concurrent calls cannot interleave their commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ..config import ClientConfig
from ..exceptions import ClientError, WebTransportError
from ..session import WebTransportSession
from ._lifecycle import AsyncLifecycle
from ._url import parse_url
from .client import URL, WebTransportClient

if TYPE_CHECKING:
    pass

__all__ = ["WebTransportBrowser"]

logger = logging.getLogger(__name__)


class WebTransportBrowser(AsyncLifecycle):
    """A browser-like client: one current session and back/forward history.

    Use inside ``async with``; leaving the block closes the current session and the client.

    Args:
        config: configuration of the underlying :class:`WebTransportClient`.
    """

    _noun = "browser"

    def __init__(self, *, config: ClientConfig | None = None) -> None:
        self._client = WebTransportClient(config=config)
        self._history: list[URL] = []
        self._index = -1
        self._session: WebTransportSession | None = None
        self._lock = asyncio.Lock()
        super().__init__()

    # ----------------------------------------------------------------------------- properties

    @property
    def current_session(self) -> WebTransportSession | None:
        """The session of the current history entry (None before the first navigation)."""
        return self._session

    @property
    def current_url(self) -> URL | None:
        """The URL of the current history entry (None while the history is empty)."""
        return self._history[self._index] if self._index >= 0 else None

    @property
    def client(self) -> WebTransportClient:
        """The underlying client (its stats count every connect)."""
        return self._client

    def __repr__(self) -> str:
        state = self._state_text
        return (
            f"<WebTransportBrowser [{state}] history={len(self._history)} index={self._index} "
            f"current={self.current_url!r}>"
        )

    # ----------------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> WebTransportBrowser:
        self._check_enter()
        await self._client.__aenter__()
        self._entered = True
        return self

    async def close(self) -> None:
        """Close the current session and the underlying client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await _close_quietly(session)
        await self._client.close()

    # ----------------------------------------------------------------------------- navigation

    async def navigate(self, url: URL) -> WebTransportSession:
        """Go to ``url``: drop the forward history, append ``url``, connect there.

        Navigating to the current URL (same scheme, host, port and path) keeps the current
        session while it is ready, and changes nothing.

        Args:
            url: the ``https://`` URL to open.

        Returns:
            The session now current.

        Raises:
            ClientError: the browser is not entered, or closed.
            WebTransportError: the connect failed (``ConfigurationError``,
                ``pywebtransport.TimeoutError``, ``HandshakeError`` or
                ``pywebtransport.ConnectionError``); history, position and current session are
                as before the call.
        """
        self._check_usable()
        key = parse_url(url).key
        async with self._lock:
            self._check_usable()
            current = self.current_url
            if current is not None and parse_url(current).key == key:
                if self._session is not None and self._session.is_ready:
                    return self._session
                return await self._move(self._index, current, None)
            history = [*self._history[: self._index + 1], url]
            return await self._move(len(history) - 1, url, history)

    async def back(self) -> WebTransportSession | None:
        """Go to the previous history entry and connect there.

        Returns:
            The new current session, or None (nothing changed) at the first entry.

        Raises:
            ClientError: the browser is not entered, or closed.
            WebTransportError: the connect failed; nothing changed.
        """
        return await self._step(-1)

    async def forward(self) -> WebTransportSession | None:
        """Go to the next history entry and connect there.

        Returns:
            The new current session, or None (nothing changed) at the last entry.

        Raises:
            ClientError: the browser is not entered, or closed.
            WebTransportError: the connect failed; nothing changed.
        """
        return await self._step(+1)

    async def refresh(self) -> WebTransportSession | None:
        """Reconnect to the current history entry, replacing the current session.

        Returns:
            The new current session, or None (nothing changed) while the history is empty.

        Raises:
            ClientError: the browser is not entered, or closed.
            WebTransportError: the connect failed; nothing changed.
        """
        return await self._step(0)

    async def get_history(self) -> list[URL]:
        """Return a copy of the history, oldest first."""
        return list(self._history)

    # ----------------------------------------------------------------------------- internals

    async def _step(self, delta: int) -> WebTransportSession | None:
        self._check_usable()
        async with self._lock:
            self._check_usable()
            target = self._index + delta
            if self._index < 0 or not 0 <= target < len(self._history):
                return None
            return await self._move(target, self._history[target], None)

    async def _move(self, index: int, url: URL, history: list[URL] | None) -> WebTransportSession:
        """Connect to ``url``, then commit index, history (if given) and session together."""
        session = await self._client.connect(url=url)
        if self._closed:  # closed while connecting
            await _close_quietly(session)
            raise ClientError("browser is closed")
        previous = self._session
        if history is not None:
            self._history = history
        self._index = index
        self._session = session
        logger.debug("browser at %d/%d: %s", index + 1, len(self._history), url)
        if previous is not None and previous is not session:
            await _close_quietly(previous)
        return session


async def _close_quietly(session: WebTransportSession) -> None:
    with contextlib.suppress(WebTransportError):
        await session.close()
