"""Events the sans-I/O core hands to the layer above: small dataclasses, one per fact.

They are plain (slotted, not frozen) dataclasses; the layer above reads them and does not change
them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .wire import Dialect

Headers = list[tuple[bytes, bytes]]


class ProtocolEvent:
    """Base class of every core event."""

    __slots__ = ()


@dataclass(slots=True)
class HandshakeCompleted(ProtocolEvent):
    """QUIC and TLS are up (ALPN ``h3``)."""

    alpn_protocol: str | None


@dataclass(slots=True)
class SettingsReceived(ProtocolEvent):
    """The peer's SETTINGS arrived; on a client ``dialect`` is what sessions will speak."""

    settings: dict[int, int]
    dialect: Dialect | None


@dataclass(slots=True)
class SessionRequested(ProtocolEvent):
    """Server side: an extended CONNECT arrived; accept or reject it."""

    session_id: int
    path: str
    authority: str
    protocol: str
    headers: Headers
    dialect: Dialect


@dataclass(slots=True)
class SessionEstablished(ProtocolEvent):
    """Client side: the server answered 2xx."""

    session_id: int
    headers: Headers


@dataclass(slots=True)
class SessionRejected(ProtocolEvent):
    """Client side: the server answered a non-2xx status, or reset the request."""

    session_id: int
    status: int
    headers: Headers
    reason: str


@dataclass(slots=True)
class SessionDraining(ProtocolEvent):
    """The peer asked to wind the session down (drain capsule or GOAWAY)."""

    session_id: int


@dataclass(slots=True)
class SessionClosed(ProtocolEvent):
    """The session ended. ``by_peer`` tells who ended it; ``code``/``reason`` are the close's."""

    session_id: int
    code: int
    reason: str
    by_peer: bool


@dataclass(slots=True)
class StreamOpened(ProtocolEvent):
    """The peer opened a WebTransport stream in a session."""

    session_id: int
    stream_id: int
    bidirectional: bool


@dataclass(slots=True)
class StreamData(ProtocolEvent):
    """Payload bytes on a WebTransport stream; ``end_stream`` marks the peer's FIN."""

    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(slots=True)
class StreamReset(ProtocolEvent):
    """The peer reset its sending side. ``app_code`` is the 32-bit code, None if unmapped."""

    stream_id: int
    app_code: int | None
    h3_code: int


@dataclass(slots=True)
class StreamStopped(ProtocolEvent):
    """The peer asked us to stop sending (STOP_SENDING)."""

    stream_id: int
    app_code: int | None
    h3_code: int


@dataclass(slots=True)
class DatagramReceived(ProtocolEvent):
    """A datagram for a session."""

    session_id: int
    data: bytes


@dataclass(slots=True)
class CreditAvailable(ProtocolEvent):
    """Session flow control granted more data or stream credit."""

    session_id: int


@dataclass(slots=True)
class ConnectionIdIssued(ProtocolEvent):
    """The QUIC engine issued a connection ID (servers route by it)."""

    connection_id: bytes


@dataclass(slots=True)
class ConnectionIdRetired(ProtocolEvent):
    """The QUIC engine retired a connection ID."""

    connection_id: bytes


@dataclass(slots=True)
class ConnectionTerminated(ProtocolEvent):
    """The QUIC connection is gone; every session on it is closed."""

    error_code: int
    reason: str
    by_peer: bool
