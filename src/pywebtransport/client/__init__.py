"""The client API: WebTransportClient and the higher-level clients (see docs/client.md)."""

from __future__ import annotations

from .browser import WebTransportBrowser
from .client import ClientStats, WebTransportClient
from .monitor import ClientMonitor
from .pool import ClientPool
from .pooled import PooledClient
from .reconnecting import ReconnectingClient
from .utils import benchmark_client_performance, test_client_connectivity

__all__ = [
    "ClientMonitor",
    "ClientPool",
    "ClientStats",
    "PooledClient",
    "ReconnectingClient",
    "WebTransportBrowser",
    "WebTransportClient",
    "benchmark_client_performance",
    "test_client_connectivity",
]
