"""Errors and wire codes of the message layer.

::

    WebTransportError
    └── MessagingError                a channel, datagram message or call failed
        ├── ChannelClosed             the channel ended (closed, aborted, session gone); .error_code
        │   ├── ChannelRefused        the peer refused to open the channel; .error_code says why
        │   └── ChannelProtocolError  the peer broke the framing rules (the channel was reset)
        ├── MessageTooLarge           a message exceeds the limit of the side that would receive it
        ├── DecodeError               one received payload did not decode (the channel goes on)
        ├── EncodeError               a value the channel's codec cannot encode (also a ValueError)
        └── RpcError                  an error object: .code, .message, .data
            └── RpcTimeoutError       a call timed out (also a pywebtransport.TimeoutError)
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from .. import exceptions as errors
from ..exceptions import WebTransportError


class ErrorCode(IntEnum):
    """Application error codes on channel streams (RESET_STREAM / STOP_SENDING).

    All within 0..255, the codes a browser page can send; 0xF0..0xFF are reserved for the protocol.
    """

    CLOSED = 0x0
    CHANNEL_UNKNOWN = 0xF1
    CODEC_UNSUPPORTED = 0xF2
    MESSAGE_TOO_LARGE = 0xF3
    TRUNCATED = 0xF4
    BAD_HELLO = 0xF5
    CHANNEL_REFUSED = 0xF6


class RpcErrorCode(IntEnum):
    """JSON-RPC 2.0 error codes, the standard ones and this protocol's own."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    TOO_MANY_CALLS = -32000


class MessagingError(WebTransportError):
    """A channel, datagram message or RPC call failed."""


class ChannelClosed(MessagingError):
    """The channel has ended: closed by either side, aborted, reset, or its session ended.

    ``error_code`` is the peer's application code when the peer stopped or reset the stream.
    """


class ChannelRefused(ChannelClosed):
    """The peer refused to open the channel (``error_code``: an :class:`ErrorCode`)."""


class MessageTooLarge(MessagingError):
    """A message is larger than the receiving side's limit."""


class DecodeError(MessagingError):
    """A received payload did not decode with the channel's codec; later messages still arrive."""


class EncodeError(MessagingError, ValueError):
    """A value cannot be encoded by the codec (for example a set in JSON)."""


class ChannelProtocolError(ChannelClosed):
    """The peer broke the framing rules; the channel was reset with ``error_code``."""


class RpcError(MessagingError):
    """A JSON-RPC error object: raised by :meth:`RpcPeer.call`, or raised by a method to send one.

    Attributes:
        code: the JSON-RPC error code.
        message: the error message.
        data: the optional ``data`` member (None when absent).
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message, error_code=code)
        self.code = code
        self.data = data

    def __str__(self) -> str:
        return f"{self.message} (rpc error {self.code})"


class RpcTimeoutError(RpcError, errors.TimeoutError):
    """A call got no answer within its timeout (the peer was told to cancel it)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


__all__ = [
    "ChannelClosed",
    "ChannelProtocolError",
    "ChannelRefused",
    "DecodeError",
    "EncodeError",
    "ErrorCode",
    "MessageTooLarge",
    "MessagingError",
    "RpcError",
    "RpcErrorCode",
    "RpcTimeoutError",
]
