"""Protocol codepoints (re-exported from the core) and library defaults."""

from __future__ import annotations

from .protocol.wire import (
    APP_ERROR_FIRST,
    MAX_CLOSE_REASON,
    CapsuleType,
    Dialect,
    FrameType,
    H3ErrorCode,
    SettingId,
    StreamType,
)

ALPN_H3 = "h3"
DEFAULT_PORT = 4433
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 30.0
#: UDP payload size of the packets we send; 1200 fits every IPv6 path (RFC 9000 14).
DEFAULT_MAX_UDP_PAYLOAD = 1200
#: Ceiling of path MTU discovery: 1500-byte Ethernet less the IPv6 and UDP headers.
DEFAULT_MAX_PATH_UDP_PAYLOAD = 1452
#: Unacknowledged bytes a stream may queue before write() waits.
DEFAULT_STREAM_SEND_BUFFER = 1024 * 1024
#: Datagrams kept per session in each direction before the oldest is dropped.
DEFAULT_DATAGRAM_QUEUE = 1024
DEFAULT_MAX_SESSIONS_PER_CONNECTION = 16
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
#: Unread bytes one stream may hold (its flow-control window).
DEFAULT_STREAM_RECEIVE_WINDOW = 1024 * 1024
#: Unread bytes all streams of a connection may hold together (connection and session window).
DEFAULT_CONNECTION_RECEIVE_WINDOW = 16 * 1024 * 1024
#: Streams of each kind a peer may have open (or not yet read) at once on one connection.
DEFAULT_MAX_INCOMING_STREAMS = 100
#: Streams (per connection) and datagrams (per session) held for a session not open yet.
DEFAULT_MAX_EARLY_STREAMS = 32
DEFAULT_USER_AGENT = "pywebtransport"

__all__ = [
    "ALPN_H3",
    "APP_ERROR_FIRST",
    "DEFAULT_CONNECTION_RECEIVE_WINDOW",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DATAGRAM_QUEUE",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_EARLY_STREAMS",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_INCOMING_STREAMS",
    "DEFAULT_MAX_PATH_UDP_PAYLOAD",
    "DEFAULT_MAX_SESSIONS_PER_CONNECTION",
    "DEFAULT_MAX_UDP_PAYLOAD",
    "DEFAULT_PORT",
    "DEFAULT_STREAM_RECEIVE_WINDOW",
    "DEFAULT_STREAM_SEND_BUFFER",
    "DEFAULT_USER_AGENT",
    "MAX_CLOSE_REASON",
    "CapsuleType",
    "Dialect",
    "FrameType",
    "H3ErrorCode",
    "SettingId",
    "StreamType",
]
