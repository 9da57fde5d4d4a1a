"""The client API (see docs/client.md)."""

from __future__ import annotations

from .client import ClientStats, WebTransportClient

__all__ = ["ClientStats", "WebTransportClient"]
