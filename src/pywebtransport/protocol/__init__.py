"""The sans-I/O WebTransport-over-HTTP/3 core: bytes and QUIC events in, events and bytes out.

The core (:class:`WebTransportProtocol` and everything it runs on) performs no I/O, reads no
clock and draws no random numbers of its own: the caller passes ``now`` and moves the bytes. The
engine factories are the exception at set-up: they read the certificate, key and CA files once,
when a configuration is built (and ``quic.file_stamp`` looks at them to tell a rewritten file).
"""

from __future__ import annotations

from .connection import WebTransportProtocol
from .engine_aioquic import AioquicEngine
from .errors import CreditExhausted, DatagramTooLarge, ProtocolUsageError, ProtocolViolation
from .quic import QuicEngine
from .settings import LocalLimits
from .wire import Dialect, H3ErrorCode, app_code_to_h3, h3_to_app_code

__all__ = [
    "AioquicEngine",
    "CreditExhausted",
    "DatagramTooLarge",
    "Dialect",
    "H3ErrorCode",
    "LocalLimits",
    "ProtocolUsageError",
    "ProtocolViolation",
    "QuicEngine",
    "WebTransportProtocol",
    "app_code_to_h3",
    "h3_to_app_code",
]
