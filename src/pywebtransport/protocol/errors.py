"""Errors raised inside the sans-I/O core.

``ProtocolViolation`` is the peer's fault and carries the wire code the core must send; it never
escapes the core's public methods: the receive path catches it at one boundary and closes the
stream, session or connection it names. ``ProtocolUsageError`` is the caller's fault (the library
asked the core for something the protocol does not allow in this state).
"""

from __future__ import annotations

from enum import Enum


class Scope(Enum):
    """What a violation tears down."""

    CONNECTION = "connection"
    SESSION = "session"
    STREAM = "stream"


class ProtocolViolation(Exception):
    """The peer broke the protocol; ``code`` goes on the wire."""

    def __init__(self, code: int, reason: str, *, scope: Scope = Scope.CONNECTION) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.scope = scope


class ProtocolUsageError(Exception):
    """The local side asked for something the protocol state does not allow."""


class DatagramTooLarge(ProtocolUsageError):
    """A datagram payload exceeds what fits in one QUIC packet."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"datagram of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class CreditExhausted(ProtocolUsageError):
    """Session flow control does not allow the operation now; wait for more credit."""
