"""The client API (see docs/client.md).

WebTransportClient and its ClientStats; the higher-level clients built on it (ClientPool,
PooledClient, ReconnectingClient, WebTransportBrowser); ClientMonitor; and two utility
functions, a request benchmark and a connectivity check.
"""

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
