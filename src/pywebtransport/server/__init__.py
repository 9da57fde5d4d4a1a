"""The server side: :class:`WebTransportServer`, :class:`ServerApp` and certificate tooling."""

from __future__ import annotations

from .app import Middleware, ServerApp
from .server import ServerStats, SessionHandler, WebTransportServer

__all__ = ["Middleware", "ServerApp", "ServerStats", "SessionHandler", "WebTransportServer"]
