"""Ready-made middleware for :class:`ServerApp`.

Each factory returns an async callable ``(session) -> int | None``: ``None`` lets the request
through, an HTTP status rejects it (the client sees the status in ``HandshakeError``). The returned
objects are small classes so that a test or a monitoring endpoint can look inside them
(``len(limiter)``, ``limiter.active``).

- :func:`origin_allowlist`: 403 when the browser's ``origin`` header is not listed (a request
  without one passes, unless ``require=True``).
- :func:`rate_limit`: 429 when a client address opens sessions faster than a token bucket allows.
- :func:`max_sessions`: 429 while the server already holds ``limit`` sessions.
- :func:`header_auth`: 401 unless a check of the request headers passes.

Order matters: middleware runs in the order added and stops at the first rejection, so put the
cheap checks (origin, rate) before the ones that hold resources (``max_sessions``) or do I/O
(``header_auth`` with a remote check).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from ..exceptions import ConfigurationError
from ..session import WebTransportSession

__all__ = [
    "HeaderAuth",
    "OriginAllowlist",
    "RateLimiter",
    "SessionLimiter",
    "header_auth",
    "max_sessions",
    "origin_allowlist",
    "rate_limit",
]

logger = logging.getLogger(__name__)

HeaderCheck = Callable[[dict[str, str]], bool | Awaitable[bool]]


def _normalise_origin(origin: str) -> str:
    """Origins compare case-insensitively and without a trailing slash."""
    return origin.strip().rstrip("/").lower()


class OriginAllowlist:
    """Reject (403) a request whose ``origin`` header is not in an allow-list.

    Args:
        origins: allowed origins such as ``"https://app.example.com"`` (scheme, host, port).
        require: also reject requests without an ``origin`` header. Browsers always send one;
            other clients usually do not (and could forge it), so the default lets them through.
    """

    def __init__(self, origins: Iterable[str], *, require: bool = False) -> None:
        self.origins = frozenset(_normalise_origin(o) for o in origins)
        if not self.origins:
            raise ConfigurationError("origin_allowlist needs at least one origin", field="origins")
        self.require = require

    async def __call__(self, session: WebTransportSession) -> int | None:
        origin = session.headers.get("origin")
        if origin is None:
            return 403 if self.require else None
        if _normalise_origin(origin) in self.origins:
            return None
        logger.debug("origin %r not allowed for %s", origin, session.path)
        return 403


class RateLimiter:
    """A token bucket per client IP address: 429 when a client has no token left.

    Each address may open ``burst`` sessions at once and then ``rate`` sessions per second.
    Memory is bounded: a bucket that has refilled completely carries no information and is
    dropped, and at most ``max_clients`` buckets are kept (the least recently seen goes first,
    which forgives that client's debt).

    Args:
        rate: tokens added per second (> 0).
        burst: bucket size (>= 1).
        max_clients: most addresses tracked at once.
        clock: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ConfigurationError(f"rate must be > 0, got {rate!r}", field="rate")
        if burst < 1:
            raise ConfigurationError(f"burst must be >= 1, got {burst!r}", field="burst")
        if max_clients < 1:
            raise ConfigurationError("max_clients must be >= 1", field="max_clients")
        self.rate = float(rate)
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        # address -> (tokens, time of last update); oldest update first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """The number of addresses currently tracked."""
        return len(self._buckets)

    def __repr__(self) -> str:
        return f"<RateLimiter rate={self.rate}/s burst={self.burst} clients={len(self)}>"

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.burst)
        tokens, last = entry
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        while self._buckets:
            key, (_, last) = next(iter(self._buckets.items()))
            if len(self._buckets) <= self.max_clients and now - last < full_after:
                return  # every later bucket was updated even more recently
            del self._buckets[key]

    def take(self, key: str) -> bool:
        """Spend one of ``key``'s tokens; False when it has none."""
        now = self.clock()
        tokens = self._tokens(key, now)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        self._evict(now)
        return allowed

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0 when it has one now)."""
        missing = 1.0 - self._tokens(key, self.clock())
        return max(0.0, missing / self.rate)

    async def __call__(self, session: WebTransportSession) -> int | None:
        key = str(session.remote_address[0])
        if self.take(key):
            return None
        logger.debug("rate limit: %s has no token for %s", key, session.path)
        return 429


class SessionLimiter:
    """Reject (429) a request while ``limit`` sessions that passed it are still open.

    A session counts from the moment this middleware lets it through until it closes (also
    when a later middleware rejects it, which closes it at once).

    Args:
        limit: the most sessions open at once (>= 1).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ConfigurationError(f"limit must be >= 1, got {limit!r}", field="limit")
        self.limit = limit
        self.active = 0

    def __repr__(self) -> str:
        return f"<SessionLimiter active={self.active} limit={self.limit}>"

    def _release(self, _: object) -> None:
        self.active -= 1

    async def __call__(self, session: WebTransportSession) -> int | None:
        if session.is_closed:
            return None  # nothing to hold: the request is already gone
        if self.active >= self.limit:
            logger.debug("max_sessions: %d open, rejecting %s", self.active, session.path)
            return 429
        self.active += 1
        session.add_close_callback(self._release)
        return None


class HeaderAuth:
    """Reject (401) a request unless ``check(headers)`` is true.

    Args:
        check: called with the request headers (lower-case names); may be a coroutine
            function. An exception in it answers 500 (see ``ServerApp``).
    """

    def __init__(self, check: HeaderCheck) -> None:
        self.check = check

    async def __call__(self, session: WebTransportSession) -> int | None:
        verdict = self.check(dict(session.headers))
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return None if verdict else 401


def origin_allowlist(origins: Iterable[str], *, require: bool = False) -> OriginAllowlist:
    """Middleware: 403 unless the ``origin`` header is one of ``origins``.

    Args:
        origins: allowed origins, for example ``["https://app.example.com"]``.
        require: also reject requests without an ``origin`` header.

    Returns:
        The middleware.
    """
    return OriginAllowlist(origins, require=require)


def rate_limit(
    *,
    rate: float,
    burst: int,
    max_clients: int = 100_000,
    clock: Callable[[], float] = time.monotonic,
) -> RateLimiter:
    """Middleware: 429 when one client IP address opens sessions faster than allowed.

    Args:
        rate: sessions per second allowed in the long run, per address.
        burst: sessions an address may open at once.
        max_clients: the most addresses tracked at once (bounds memory).
        clock: a monotonic clock in seconds.

    Returns:
        The middleware.
    """
    return RateLimiter(rate=rate, burst=burst, max_clients=max_clients, clock=clock)


def max_sessions(limit: int) -> SessionLimiter:
    """Middleware: 429 while ``limit`` sessions are open on the server.

    Args:
        limit: the most sessions open at once.

    Returns:
        The middleware (``.active`` is the current count).
    """
    return SessionLimiter(limit)


def header_auth(check: HeaderCheck) -> HeaderAuth:
    """Middleware: 401 unless ``check(headers)`` returns (or resolves to) true.

    Args:
        check: a function of the request headers, sync or async.

    Returns:
        The middleware.
    """
    return HeaderAuth(check)
