"""Messages and calls over WebTransport sessions (protocol: docs/messaging-protocol.md).

- :class:`Messenger` wraps one session: it opens and accepts named **channels** (ordered,
  reliable messages over one stream each), routes the peer's channels by name, hands on the
  peer's plain streams, and sends **datagram messages** (:class:`DatagramMessages`).
- :class:`Channel`: ``send(obj)``, ``receive()``, ``async for``, ``close()``.
- :class:`RpcPeer`: JSON-RPC 2.0 over a channel, both ways, with :class:`RpcMethods`.
- Codecs: ``bytes``, ``json`` and (with ``msgspec`` installed) ``msgpack``.

The layer uses only the public API of sessions and streams.
"""

from __future__ import annotations

from .channel import Channel, ChannelStats
from .codecs import BytesCodec, Codec, JsonCodec, MsgpackCodec, available_codecs, get_codec
from .datagrams import DatagramMessages, DatagramMessageStats
from .errors import (
    ChannelClosed,
    ChannelProtocolError,
    ChannelRefused,
    DecodeError,
    EncodeError,
    ErrorCode,
    MessageTooLarge,
    MessagingError,
    RpcError,
    RpcErrorCode,
    RpcTimeoutError,
)
from .framing import DEFAULT_MAX_MESSAGE_SIZE
from .messenger import ChannelHandler, Messenger, MessengerStats
from .rpc import RpcMethods, RpcPeer, RpcStats

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BytesCodec",
    "Channel",
    "ChannelClosed",
    "ChannelHandler",
    "ChannelProtocolError",
    "ChannelRefused",
    "ChannelStats",
    "Codec",
    "DatagramMessageStats",
    "DatagramMessages",
    "DecodeError",
    "EncodeError",
    "ErrorCode",
    "JsonCodec",
    "MessageTooLarge",
    "MessagingError",
    "Messenger",
    "MessengerStats",
    "MsgpackCodec",
    "RpcError",
    "RpcErrorCode",
    "RpcMethods",
    "RpcPeer",
    "RpcStats",
    "RpcTimeoutError",
    "available_codecs",
    "get_codec",
]
