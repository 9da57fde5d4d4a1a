"""pywebtransport: WebTransport over HTTP/3 for asyncio, client and server.

The layers, bottom up: :mod:`pywebtransport.protocol` (the sans-I/O core), the asyncio layer
(:mod:`.connection`, :mod:`.session`, :mod:`.stream`, :mod:`.datagram`), the client and server
APIs (:mod:`pywebtransport.client`, :mod:`pywebtransport.server`), the message layer
(:mod:`pywebtransport.messaging`), topics (:mod:`pywebtransport.pubsub`), and the programs on top
(the command line, :mod:`pywebtransport.cli`, and its demo's web pieces, :mod:`pywebtransport.web`).
This module re-exports the client and server APIs, the asyncio layer's classes and the
exceptions.
"""

from __future__ import annotations

from .client import WebTransportClient
from .config import ClientConfig, ServerConfig
from .datagram import WebTransportDatagramTransport
from .exceptions import (
    CertificateError,
    ClientError,
    ConfigurationError,
    ConnectionError,
    DatagramError,
    FlowControlError,
    HandshakeError,
    ProtocolError,
    ServerError,
    SessionError,
    StreamError,
    TimeoutError,
    WebTransportError,
)
from .server import ServerApp, WebTransportServer
from .session import DatagramStats, SessionState, SessionStats, WebTransportSession
from .stream import (
    ReceiveStreamStats,
    SendStreamStats,
    StreamStats,
    WebTransportReceiveStream,
    WebTransportSendStream,
    WebTransportStream,
)

__version__ = "0.1.0"

__all__ = [
    "CertificateError",
    "ClientConfig",
    "ClientError",
    "ConfigurationError",
    "ConnectionError",
    "DatagramError",
    "DatagramStats",
    "FlowControlError",
    "HandshakeError",
    "ProtocolError",
    "ReceiveStreamStats",
    "SendStreamStats",
    "ServerApp",
    "ServerConfig",
    "ServerError",
    "SessionError",
    "SessionState",
    "SessionStats",
    "StreamError",
    "StreamStats",
    "TimeoutError",
    "WebTransportClient",
    "WebTransportDatagramTransport",
    "WebTransportError",
    "WebTransportReceiveStream",
    "WebTransportSendStream",
    "WebTransportServer",
    "WebTransportSession",
    "WebTransportStream",
    "__version__",
]
