"""Parsing of WebTransport URLs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError


@dataclass(frozen=True)
class ParsedURL:
    """The parts of a WebTransport URL a client needs."""

    host: str
    port: int
    path: str  # path and query, never the fragment

    @property
    def authority(self) -> str:
        """``host:port`` with IPv6 literals bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def key(self) -> tuple[str, str, int, str]:
        """(scheme, host, port, path) for pooling."""
        return ("https", self.host.lower(), self.port, self.path)


def parse_url(url: str) -> ParsedURL:
    """Parse an ``https://`` URL.

    Raises:
        ConfigurationError: not a string, not https, no host, or an invalid port.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"URL must be a string, got {type(url).__name__}", field="url")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ConfigurationError(f"URL scheme must be https, got {parts.scheme!r}", field="url")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise ConfigurationError(f"invalid port in {url!r}: {exc}", field="url") from None
    if not parts.hostname:
        raise ConfigurationError(f"URL {url!r} has no host", field="url")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return ParsedURL(parts.hostname, port, path)
