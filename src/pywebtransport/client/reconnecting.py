"""ReconnectingClient: one session to one URL, kept alive across losses.

Theory of operation: a background task connects, waits for the session to end, and connects
again. The n-th consecutive failed attempt is followed by a wait of
``min(retry_delay * retry_backoff ** (n - 1), max_retry_delay)`` with +-10 % jitter; a success
resets n. A loss of an established session is followed by one ``retry_delay`` (jittered) before
the next attempt, so a server that accepts and immediately closes cannot cause a hot loop. After
``max_retries`` consecutive failures (negative: never) the task emits ``connection_failed`` and
stops. ``get_session`` waits on an event, never polls.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Self

from ..config import ClientConfig
from ..events import EventEmitter, EventType
from ..exceptions import ClientError, WebTransportError
from .client import URL, WebTransportClient

if TYPE_CHECKING:
    from types import TracebackType

    from ..session import WebTransportSession

logger = logging.getLogger(__name__)

_JITTER = 0.1


def backoff_delay(config: ClientConfig, failures: int) -> float:
    """The pause before the next attempt after ``failures`` consecutive failures (no jitter)."""
    if failures <= 0:
        return 0.0
    return float(
        min(config.retry_delay * config.retry_backoff ** (failures - 1), config.max_retry_delay)
    )


class ReconnectingClient(EventEmitter):
    """Keeps one session to ``url`` open, reconnecting on loss. Use inside ``async with``.

    Emits ``connection_established`` (data: the session), ``connection_lost`` (data: close
    code and reason) and ``connection_failed`` (data: the last error) events.
    """

    def __init__(self, *, url: URL, config: ClientConfig) -> None:
        super().__init__()
        self._url = url
        self._config = config
        self._client = WebTransportClient(config=config)
        self._session: WebTransportSession | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failures = 0
        self._gave_up = False
        self._rng = random.Random()

    @classmethod
    def create(cls, *, url: URL, config: ClientConfig) -> Self:
        """Build a reconnecting client for ``url``."""
        return cls(url=url, config=config)

    @property
    def is_connected(self) -> bool:
        """True while a session is ready."""
        return self._session is not None and self._session.is_ready

    @property
    def url(self) -> URL:
        """The URL this client keeps a session to."""
        return self._url

    @property
    def client(self) -> WebTransportClient:
        """The underlying client (its stats count every attempt)."""
        return self._client

    def __repr__(self) -> str:
        return (
            f"<ReconnectingClient url={self._url!r} connected={self.is_connected} "
            f"failures={self._failures}>"
        )

    async def __aenter__(self) -> Self:
        if self._closed:
            raise ClientError("client is closed")
        if self._task is not None:
            raise ClientError("the client is already entered")
        await self._client.__aenter__()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def get_session(self, *, wait_timeout: float = 5.0) -> WebTransportSession | None:
        """The ready session, waiting up to ``wait_timeout`` seconds; None if there is none."""
        if self._task is None:
            raise ClientError("use the client inside 'async with'")
        try:
            async with asyncio.timeout(wait_timeout):
                while not self._finished():
                    session = self._session
                    if session is not None and session.is_ready:
                        return session
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            pass
        return None

    async def close(self) -> None:
        """Stop reconnecting and close the session and the client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.close()
        self._ready.set()  # wake waiters; they see is_connected false
        self.cancel_handlers()

    def _finished(self) -> bool:
        """True when no session will come any more (gave up, or closed)."""
        return self._gave_up or self._closed

    def _jittered(self, delay: float) -> float:
        return delay * (1 + self._rng.uniform(-_JITTER, _JITTER))

    async def _run(self) -> None:
        max_retries = self._config.max_retries
        while not self._closed:
            try:
                session = await self._client.connect(url=self._url)
            except WebTransportError as exc:
                self._failures += 1
                logger.info("connect to %s failed (%d): %s", self._url, self._failures, exc)
                if 0 <= max_retries <= self._failures:
                    self._gave_up = True
                    self.emit(
                        EventType.CONNECTION_FAILED, {"error": exc, "attempts": self._failures}
                    )
                    self._ready.set()
                    return
                await asyncio.sleep(self._jittered(backoff_delay(self._config, self._failures)))
                continue
            self._failures = 0
            self._session = session
            self._ready.set()
            self.emit(EventType.CONNECTION_ESTABLISHED, {"session": session})
            await session.wait_closed()
            self._ready.clear()
            self.emit(
                EventType.CONNECTION_LOST,
                {"code": session.close_code, "reason": session.close_reason},
            )
            await asyncio.sleep(self._jittered(self._config.retry_delay))
