"""ServerApp: routes, middleware and hooks on top of :class:`WebTransportServer`.

A request is matched against exact routes (``{name}`` segments capture path parameters), then
full-match regex routes, then the default handler; no match answers 404. Middleware runs before
the handler and may reject with a real HTTP status. The session is accepted, the handler runs,
and the session is closed when the handler returns (code 0) or raises (code 1, logged). Every
session, accepted or rejected, ends with one line on the ``pywebtransport.access`` logger.
Ready-made middleware lives in :mod:`.middleware`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from ..config import ServerConfig
from ..exceptions import ConfigurationError, SessionError
from ..protocol.subprotocol import select_protocol
from ..session import WebTransportSession, accept_session, reject_session
from .server import SessionHandler, WebTransportServer

logger = logging.getLogger(__name__)
#: One INFO line per session when it ends (see :func:`_log_access`).
access_logger = logging.getLogger("pywebtransport.access")

#: A middleware returns None to let the request through or an HTTP status to reject it.
Middleware = Callable[[WebTransportSession], Awaitable[int | None]]
Hook = Callable[[], Awaitable[None]]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _compile_path(path: str) -> re.Pattern[str] | None:
    """A regex for a path with ``{name}`` segments, or None for a plain path."""
    if "{" not in path:
        return None
    pattern = ""
    pos = 0
    for match in _PARAM.finditer(path):
        pattern += re.escape(path[pos : match.start()]) + f"(?P<{match.group(1)}>[^/]+)"
        pos = match.end()
    return re.compile(pattern + re.escape(path[pos:]))


class ServerApp:
    """A WebTransport application: routes sessions to handlers.

    Args:
        config: the server configuration used by :meth:`run` and :meth:`serve`.
    """

    def __init__(self, *, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._exact: dict[str, SessionHandler] = {}
        self._params: list[tuple[re.Pattern[str], SessionHandler]] = []
        self._route_names: dict[re.Pattern[str], str] = {}  # compiled {name} route -> its path
        self._patterns: list[tuple[re.Pattern[str], SessionHandler]] = []
        self._default: SessionHandler | None = None
        self.middleware: list[Middleware] = []
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        self.server: WebTransportServer | None = None
        self._open: dict[str, set[WebTransportSession]] = {}  # route -> sessions it is handling

    # ----------------------------------------------------------------------------- registration

    def route(self, path: str) -> Callable[[SessionHandler], SessionHandler]:
        """Decorator: handle sessions whose path (without query) is ``path``."""
        if not path.startswith("/"):
            raise ConfigurationError(f"route {path!r} must start with '/'", field="path")

        def register(handler: SessionHandler) -> SessionHandler:
            compiled = _compile_path(path)
            if compiled is None:
                self._exact[path] = handler
            else:
                self._params.append((compiled, handler))
                self._route_names[compiled] = path
            return handler

        return register

    def pattern_route(self, pattern: str) -> Callable[[SessionHandler], SessionHandler]:
        """Decorator: handle sessions whose path fully matches the regex ``pattern``."""
        compiled = re.compile(pattern)

        def register(handler: SessionHandler) -> SessionHandler:
            self._patterns.append((compiled, handler))
            return handler

        return register

    def default(self, handler: SessionHandler) -> SessionHandler:
        """Decorator: handle sessions no route matches (instead of answering 404)."""
        self._default = handler
        return handler

    def add_middleware(self, middleware: Middleware) -> None:
        """Run ``middleware`` before every handler, in the order added."""
        self.middleware.append(middleware)

    def on_startup(self, hook: Hook) -> Hook:
        """Decorator: run ``hook`` when the server starts listening."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Decorator: run ``hook`` when the server closes."""
        self._shutdown_hooks.append(hook)
        return hook

    # ----------------------------------------------------------------------------- dispatch

    def select_protocol(self, offered: list[str]) -> str | None:
        """Choose a subprotocol from the client's ``wt-available-protocols`` (None: none).

        The default takes the first of ``config.protocols`` the client offered; override it
        (subclass or assignment) to decide otherwise.
        """
        return select_protocol(offered, self.config.protocols)

    def resolve(self, path: str) -> tuple[SessionHandler, dict[str, str]] | None:
        """The handler and path parameters for a request path, or None."""
        found = self._match(path)
        return None if found is None else (found[1], found[2])

    def _match(self, path: str) -> tuple[str, SessionHandler, dict[str, str]] | None:
        """The route (as registered), handler and path parameters for a request path."""
        bare = urlsplit(path).path
        handler = self._exact.get(bare)
        if handler is not None:
            return bare, handler, {}
        for compiled, handler in self._params:
            match = compiled.fullmatch(bare)
            if match is not None:
                return self._route_names[compiled], handler, match.groupdict()
        for compiled, handler in self._patterns:
            match = compiled.fullmatch(bare)
            if match is not None:
                return compiled.pattern, handler, match.groupdict()
        if self._default is not None:
            return "", self._default, {}
        return None

    def sessions(self, route: str | None = None) -> list[WebTransportSession]:
        """The open sessions whose handler is running, all or those of one route.

        Args:
            route: the route as registered: the ``path`` given to :meth:`route` (with its
                ``{name}`` segments), the regex given to :meth:`pattern_route`, or ``""`` for
                the default handler. None: every route.
        """
        if route is not None:
            return [s for s in self._open.get(route, ()) if s.is_ready]
        return [s for group in self._open.values() for s in group if s.is_ready]

    async def handle(self, session: WebTransportSession) -> bool:
        """Run one session through middleware and its handler. Returns True if accepted.

        Called by the server for every session request it does not refuse itself.

        Whatever happens (rejection, handler error, cancellation at shutdown), one access log
        line is written when the session ends.
        """
        status: int | None = None
        try:
            status, route, handler = await self._admit(session)
            if handler is None:
                return False
            group = self._open.setdefault(route, set())
            group.add(session)
            try:
                await self._run_handler(session, handler)
            finally:
                group.discard(session)
            return True
        finally:
            _log_access(session, status)

    async def _admit(
        self, session: WebTransportSession
    ) -> tuple[int | None, str, SessionHandler | None]:
        """Route and run middleware; answer the request. Returns the status, route and handler.

        The handler is None when the request was rejected (or the peer went away first).
        """
        found = self._match(session.path)
        if found is None:
            reject_session(session, status=404)
            return 404, "", None
        route, handler, params = found
        session.path_params = params
        status = await self._run_middleware(session)
        if status is not None:
            reject_session(session, status=status)
            return status, route, None
        try:
            accepted = accept_session(session)  # 200, or the status of session.set_response()
        except SessionError:
            return None, route, None
        return accepted, route, handler

    async def _run_handler(self, session: WebTransportSession, handler: SessionHandler) -> None:
        """Run the handler, then close the session (code 1 if the handler raised)."""
        try:
            await handler(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("handler for %s raised", session.path)
            await session.close(code=1, reason="handler error")
            return
        await session.close()

    async def _run_middleware(self, session: WebTransportSession) -> int | None:
        """The first rejection status a middleware gives, or None to accept.

        A middleware that raises, answers something that is not a rejection status, or takes
        longer than ``session_accept_timeout`` in all, gets the request answered 500 / 503: a
        request is never left unanswered.
        """
        try:
            async with asyncio.timeout(self.config.session_accept_timeout):
                for middleware in self.middleware:
                    status = await middleware(session)
                    if status is None:
                        continue
                    if not 300 <= status <= 599:
                        logger.error(
                            "middleware %r answered %r, not a rejection", middleware, status
                        )
                        return 500
                    return status
        except TimeoutError:
            logger.error(
                "middleware took over %s s for %s", self.config.session_accept_timeout, session.path
            )
            return 503
        except Exception:
            logger.exception("middleware raised for %s", session.path)
            return 500
        return None

    async def startup(self) -> None:
        """Run the ``on_startup`` hooks in order (the server calls it when it starts listening)."""
        for hook in self._startup_hooks:
            await hook()

    async def shutdown(self) -> None:
        """Run the ``on_shutdown`` hooks in order (the server calls it when it has closed)."""
        for hook in self._shutdown_hooks:
            await hook()

    # ----------------------------------------------------------------------------- running

    async def serve(self, *, host: str | None = None, port: int | None = None) -> None:
        """Listen and serve until cancelled or the server is closed."""
        server = WebTransportServer(config=self.config, app=self)
        self.server = server
        await server.listen(host=host, port=port)
        try:
            await server.serve_forever()
        finally:
            await server.close()

    def run(self, *, host: str | None = None, port: int | None = None) -> None:
        """Blocking: serve until interrupted (Ctrl-C)."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve(host=host, port=port))


def _format_address(address: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a socket address, or ``-``."""
    if not isinstance(address, tuple) or len(address) < 2:
        return "-"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _log_access(session: WebTransportSession, status: int | None) -> None:
    """Write the access log line of a session that ended.

    The line reads ``<client> "<path>" <status> <duration>s sent=<n> received=<n>``; the same
    values are on the record as ``client_address``, ``path``, ``status`` (None if the peer left
    before an answer), ``duration``, ``bytes_sent`` and ``bytes_received`` (stream and datagram
    payload bytes).
    """
    if not access_logger.isEnabledFor(logging.INFO):
        return
    stats = session.stats
    datagrams = stats.get("datagrams") or {}
    sent = stats["bytes_sent"] + datagrams.get("bytes_sent", 0)
    received = stats["bytes_received"] + datagrams.get("bytes_received", 0)
    ended = stats["closed_at"] if stats["closed_at"] is not None else time.monotonic()
    duration = max(0.0, ended - stats["created_at"])
    client = _format_address(session.remote_address)
    access_logger.info(
        '%s "%s" %s %.3fs sent=%d received=%d',
        client,
        session.path,
        "-" if status is None else status,
        duration,
        sent,
        received,
        extra={
            "client_address": client,
            "path": session.path,
            "status": status,
            "duration": duration,
            "bytes_sent": sent,
            "bytes_received": received,
        },
    )
