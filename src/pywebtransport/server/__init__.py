"""The server side: :class:`WebTransportServer`, :class:`ServerApp` and its ready-made middleware.

The submodules hold the rest: certificate tooling (:mod:`.certificate`), the echo handler
(:mod:`.echo`) and worker processes sharing one UDP port (:mod:`.workers`).
"""

from __future__ import annotations

from .app import Middleware, ServerApp
from .middleware import header_auth, max_sessions, origin_allowlist, rate_limit
from .server import Application, ServerStats, SessionHandler, WebTransportServer

__all__ = [
    "Application",
    "Middleware",
    "ServerApp",
    "ServerStats",
    "SessionHandler",
    "WebTransportServer",
    "header_auth",
    "max_sessions",
    "origin_allowlist",
    "rate_limit",
]
