"""PooledClient: reusable sessions, pooled per URL key.

Theory of operation: sessions are grouped by the key (scheme, host, port, path) of the URL they
were requested for. Each key has a :class:`_KeyPool` with the idle sessions, the sessions handed
out, the number of connects in flight and one ``asyncio.Condition``. A slot is taken by every
idle, handed-out or connecting session, so a key never has more than ``pool_size`` of them.

``get_session`` takes the condition's lock, drops dead idle sessions, and then either hands out
an idle healthy one, or reserves a slot and connects outside the lock, or waits on the condition
until a slot or an idle session appears. One deadline (the client's ``connect_timeout``) covers
the wait and the connect. ``return_session`` puts a healthy session back under the key it was
taken under (remembered at hand-out, never re-derived from the peer's address), or closes it,
and then notifies one waiter. A background task sweeps dead idle sessions every
``cleanup_interval`` seconds. ``close`` closes idle and handed-out sessions and wakes every
waiter, which then raises ``ClientError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from .. import exceptions as errors
from ..config import ClientConfig
from ..exceptions import ClientError, ConfigurationError, WebTransportError
from ..session import SessionState, WebTransportSession
from ._lifecycle import AsyncLifecycle
from ._url import parse_url
from .client import URL, WebTransportClient

__all__ = ["PooledClient"]

logger = logging.getLogger(__name__)

_PoolKey = tuple[str, str, int, str]


def _is_healthy(session: WebTransportSession) -> bool:
    """Ready: not draining, not closed (a session whose connection ended is closed too)."""
    return session.state is SessionState.READY


def _key_text(key: _PoolKey) -> str:
    scheme, host, port, path = key
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{path}"


@dataclass(eq=False)
class _KeyPool:
    """The sessions of one key and the condition its waiters wait on."""

    idle: deque[WebTransportSession] = field(default_factory=deque)
    in_use: set[WebTransportSession] = field(default_factory=set)
    connecting: int = 0
    waiting: int = 0
    users: int = 0  # get_session calls in progress that hold a reference to this pool
    condition: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def size(self) -> int:
        """Slots taken: idle + handed out + connecting."""
        return len(self.idle) + len(self.in_use) + self.connecting

    def is_unused(self) -> bool:
        """Nothing in it and nobody about to use it."""
        return self.size == 0 and self.users == 0

    def drop_dead_idle(self) -> list[WebTransportSession]:
        """Remove the idle sessions that are no longer healthy and return them."""
        dead = [session for session in self.idle if not _is_healthy(session)]
        if dead:
            self.idle = deque(session for session in self.idle if _is_healthy(session))
        return dead

    def counts(self) -> dict[str, int]:
        """Live counts of this key."""
        return {
            "idle": len(self.idle),
            "in_use": len(self.in_use),
            "connecting": self.connecting,
            "waiting": self.waiting,
        }


class PooledClient(AsyncLifecycle):
    """Hands out reusable sessions, at most ``pool_size`` per URL key. Use inside ``async with``.

    Take a session with :meth:`get_session` and give it back with :meth:`return_session`; a
    session holds its slot from hand-out until it is returned.

    Args:
        config: configuration of the underlying :class:`WebTransportClient`; its
            ``connect_timeout`` also bounds how long :meth:`get_session` waits for a slot.
        pool_size: most sessions per key (idle, handed out and connecting together).
        cleanup_interval: seconds between sweeps that drop idle sessions that died.

    Raises:
        ConfigurationError: ``pool_size`` or ``cleanup_interval`` is not positive.
    """

    _noun = "pooled client"

    def __init__(
        self,
        *,
        config: ClientConfig | None = None,
        pool_size: int = 10,
        cleanup_interval: float = 60.0,
    ) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigurationError(
                f"pool_size must be >= 1, got {pool_size!r}", field="pool_size"
            )
        if not cleanup_interval > 0:
            raise ConfigurationError(
                f"cleanup_interval must be positive, got {cleanup_interval!r}",
                field="cleanup_interval",
            )
        self._client = WebTransportClient(config=config)
        self._pool_size = pool_size
        self._cleanup_interval = cleanup_interval
        self._pools: dict[_PoolKey, _KeyPool] = {}
        self._handed_out: dict[WebTransportSession, _PoolKey] = {}
        self._cleanup_task: asyncio.Task[None] | None = None
        self._swept = asyncio.Condition()  # notified after every cleanup sweep
        self._sweeps = 0
        super().__init__()

    # ----------------------------------------------------------------------------- properties

    @property
    def client(self) -> WebTransportClient:
        """The underlying client (its stats count every connect the pool made)."""
        return self._client

    @property
    def pool_size(self) -> int:
        """Most sessions per key."""
        return self._pool_size

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """Live counts per key.

        Returns:
            ``{"https://host:port/path": {"idle": n, "in_use": n, "connecting": n,
            "waiting": n}}`` for every key that has sessions or callers.
        """
        return {_key_text(key): pool.counts() for key, pool in self._pools.items()}

    def __repr__(self) -> str:
        state = self._state_text
        parts = [
            f"{_key_text(key)}: {len(pool.idle)} idle, {len(pool.in_use)} in use, "
            f"{pool.connecting} connecting, {pool.waiting} waiting"
            for key, pool in self._pools.items()
        ]
        return f"<PooledClient [{state}] pool_size={self._pool_size} [{'; '.join(parts)}]>"

    # ----------------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> PooledClient:
        self._check_enter()
        await self._client.__aenter__()
        self._entered = True
        self._cleanup_task = asyncio.get_running_loop().create_task(self._cleanup_loop())
        return self

    async def close(self) -> None:
        """Close idle and handed-out sessions and the underlying client. Idempotent.

        Callers waiting in :meth:`get_session` are woken and raise ``ClientError``.
        """
        if self._closed:
            return
        self._closed = True
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            await asyncio.gather(self._cleanup_task, return_exceptions=True)
        sessions: list[WebTransportSession] = list(self._handed_out)
        pools = list(self._pools.values())
        for pool in pools:
            sessions.extend(pool.idle)
            pool.idle.clear()
            pool.in_use.clear()
        self._handed_out.clear()
        self._pools.clear()
        for pool in pools:
            async with pool.condition:
                pool.condition.notify_all()
        await asyncio.gather(*(self._close_quietly(s) for s in sessions))
        await self._client.close()

    # ----------------------------------------------------------------------------- get / return

    async def get_session(self, url: URL) -> WebTransportSession:
        """Return an idle healthy session for ``url``'s key, or a new one.

        A new session is opened while the key has fewer than ``pool_size`` sessions; otherwise
        the call waits for one to be returned. One deadline, the client's ``connect_timeout``,
        covers the wait and the connect.

        Args:
            url: the ``https://`` URL; its (scheme, host, port, path) is the pool key.

        Returns:
            A ready session; give it back with :meth:`return_session`.

        Raises:
            ClientError: the pooled client is not entered, or closed (also while waiting).
            pywebtransport.TimeoutError: no session within ``connect_timeout``.
            ConfigurationError, HandshakeError, pywebtransport.ConnectionError: as
                ``WebTransportClient.connect``.
        """
        self._check_usable()
        key = parse_url(url).key
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _KeyPool()
        pool.users += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._client.config.connect_timeout
        try:
            session = await self._take_or_reserve(pool, deadline)
            if session is None:
                session = await self._connect_reserved(pool, url, deadline - loop.time())
            self._handed_out[session] = key
            return session
        finally:
            pool.users -= 1
            if pool.is_unused() and self._pools.get(key) is pool:
                del self._pools[key]

    async def _take_or_reserve(self, pool: _KeyPool, deadline: float) -> WebTransportSession | None:
        """Hand out an idle healthy session, or reserve a connect slot (None), or wait.

        Nothing is awaited between taking a session or a slot and returning it, so a
        cancellation cannot lose one.
        """
        try:
            async with asyncio.timeout_at(deadline), pool.condition:
                while True:
                    if self._closed:
                        raise ClientError("pooled client is closed")
                    dead = pool.drop_dead_idle()
                    if dead:
                        await asyncio.gather(*(self._close_quietly(s) for s in dead))
                        continue  # the world may have changed while closing: look again
                    if pool.idle:
                        session = pool.idle.pop()  # the most recently returned one
                        pool.in_use.add(session)
                        return session
                    if pool.size < self._pool_size:
                        pool.connecting += 1
                        return None
                    pool.waiting += 1
                    try:
                        await pool.condition.wait()
                    except BaseException:
                        # Cancelled (or timed out) after being notified: pass the wake-up on,
                        # or another waiter would miss it (asyncio.Condition in 3.11 drops it).
                        pool.condition.notify()
                        raise
                    finally:
                        pool.waiting -= 1
        except TimeoutError:
            raise errors.TimeoutError(
                f"no pooled session within {self._client.config.connect_timeout} s "
                f"({self._pool_size} in use)"
            ) from None

    async def _connect_reserved(
        self, pool: _KeyPool, url: URL, timeout: float
    ) -> WebTransportSession:
        """Connect in the slot :meth:`_take_or_reserve` reserved; free it on failure."""
        try:
            session = await self._client.connect(url=url, timeout=max(timeout, 0.0))
        except BaseException:
            pool.connecting -= 1
            await asyncio.shield(self._notify(pool))
            raise
        pool.connecting -= 1
        if self._closed:
            await self._close_quietly(session)
            raise ClientError("pooled client is closed")
        pool.in_use.add(session)
        return session

    async def return_session(self, *, session: WebTransportSession) -> None:
        """Give back a session taken with :meth:`get_session`.

        A healthy session is kept idle for reuse under the key it was taken under; an
        unhealthy (closed, draining or connection lost) or surplus one is closed. Either way
        one waiter of that key is woken. After :meth:`close` the session is just closed.

        Args:
            session: a session this pooled client handed out.

        Raises:
            ClientError: the session was not handed out by this pooled client (or was
                already returned).
        """
        if self._closed:
            await self._close_quietly(session)
            return
        key = self._handed_out.pop(session, None)
        if key is None:
            raise ClientError(f"{session!r} is not a session handed out by this pooled client")
        pool = self._pools[key]
        pool.in_use.discard(session)
        keep = _is_healthy(session) and len(pool.idle) < self._pool_size
        if keep:
            pool.idle.append(session)
        await self._notify(pool)
        if not keep:
            logger.debug("pooled session %r dropped on return", session)
            await self._close_quietly(session)
            if pool.is_unused() and self._pools.get(key) is pool:
                del self._pools[key]

    # ----------------------------------------------------------------------------- internals

    async def _notify(self, pool: _KeyPool) -> None:
        async with pool.condition:
            pool.condition.notify()

    @staticmethod
    async def _close_quietly(session: WebTransportSession) -> None:
        with contextlib.suppress(WebTransportError):
            await session.close()

    async def _cleanup_loop(self) -> None:
        """Every ``cleanup_interval`` seconds, drop idle sessions that died."""
        while True:
            await asyncio.sleep(self._cleanup_interval)  # a schedule, not a synchronisation
            try:
                await self._sweep()
            except Exception:
                logger.exception("pooled client cleanup failed")

    async def _sweep(self) -> None:
        dropped = 0
        for key, pool in list(self._pools.items()):
            dead = pool.drop_dead_idle()
            if dead:
                dropped += len(dead)
                async with pool.condition:
                    pool.condition.notify(len(dead))
                await asyncio.gather(*(self._close_quietly(s) for s in dead))
            if pool.is_unused() and self._pools.get(key) is pool:
                del self._pools[key]
        if dropped:
            logger.debug("pooled client cleanup dropped %d dead idle sessions", dropped)
        async with self._swept:
            self._sweeps += 1
            self._swept.notify_all()
