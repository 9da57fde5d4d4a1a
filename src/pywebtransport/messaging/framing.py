"""Framing of the message protocol, without I/O (docs/messaging-protocol.md).

Theory of operation: a channel's bytes in each direction are frames, ``u32 length`` (big
endian) then ``length`` bytes. :class:`FrameDecoder` is fed whatever the stream delivered and
returns every complete payload; it checks each length against the limit as soon as the four
length bytes are there, so an oversized frame is refused before its payload is buffered, and it
says at the end of the stream whether a frame was cut short. The opener's direction starts with
:data:`PREAMBLE` and a hello frame, the acceptor's with an accept frame; both are small JSON
objects parsed by :func:`parse_hello` and :func:`parse_accept`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from .errors import ErrorCode

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_CHANNEL_NAME",
    "MAX_HELLO_SIZE",
    "PREAMBLE",
    "Accept",
    "FrameDecoder",
    "FramingError",
    "Hello",
    "encode_accept",
    "encode_frame",
    "encode_hello",
    "parse_accept",
    "parse_hello",
]

PREAMBLE = b"PWM\x01"
"""The first bytes of the opener's direction of every channel ("PWM", version 1)."""

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
"""The limit a side that announces none is assumed to have (1 MiB)."""

MAX_HELLO_SIZE = 4096
"""Largest hello or accept frame payload."""

MAX_CHANNEL_NAME = 256
"""Longest channel name, in characters."""

_LENGTH = struct.Struct(">I")
MAX_FRAME = 0xFFFFFFFF


class FramingError(Exception):
    """The peer broke the framing rules; ``code`` is the :class:`ErrorCode` to reset with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode_frame(payload: bytes) -> bytes:
    """One frame: the length, then the payload."""
    return _LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Cuts a byte stream into frame payloads, refusing frames over ``max_size``."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held that do not make a whole frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads of the frames now complete, in order.

        Raises:
            FramingError: a length over ``max_size`` (MESSAGE_TOO_LARGE).
        """
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray = buffer
        else:
            source = data
        frames: list[bytes] = []
        pos, end, limit = 0, len(source), self.max_size
        while end - pos >= 4:
            (length,) = _LENGTH.unpack_from(source, pos)
            if length > limit:
                self._buffer = bytearray()
                raise FramingError(
                    ErrorCode.MESSAGE_TOO_LARGE, f"frame of {length} bytes over the {limit} limit"
                )
            stop = pos + 4 + length
            if stop > end:
                break
            frames.append(bytes(source[pos + 4 : stop]))
            pos = stop
        if source is buffer:
            del buffer[:pos]
        elif pos < end:
            self._buffer = bytearray(data[pos:])
        return frames

    def end(self) -> None:
        """The stream ended (FIN).

        Raises:
            FramingError: a frame was cut short (TRUNCATED).
        """
        if self._buffer:
            held = len(self._buffer)
            self._buffer = bytearray()
            raise FramingError(ErrorCode.TRUNCATED, f"stream ended inside a frame ({held} bytes)")


@dataclass(frozen=True)
class Hello:
    """What the opener of a channel announced."""

    channel: str
    codec: str
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


@dataclass(frozen=True)
class Accept:
    """What the acceptor of a channel answered."""

    codec: str
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_HELLO_SIZE:
        raise FramingError(ErrorCode.BAD_HELLO, f"{what} of {len(payload)} bytes is too long")
    try:
        value = json.loads(payload.decode())
    except (UnicodeDecodeError, ValueError):
        raise FramingError(ErrorCode.BAD_HELLO, f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise FramingError(ErrorCode.BAD_HELLO, f"{what} is not a JSON object")
    return value


def _size_limit(value: dict[str, Any], what: str) -> int:
    limit = value.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    if type(limit) is not int or not 0 <= limit <= MAX_FRAME:
        raise FramingError(ErrorCode.BAD_HELLO, f"{what}: bad max_message_size {limit!r}")
    return limit


def _codec_name(value: dict[str, Any], what: str) -> str:
    codec = value.get("codec")
    if not isinstance(codec, str) or not codec:
        raise FramingError(ErrorCode.BAD_HELLO, f"{what}: codec missing or not a string")
    return codec


def parse_hello(payload: bytes) -> Hello:
    """Parse a hello frame's payload.

    Raises:
        FramingError: BAD_HELLO, with what is wrong.
    """
    value = _json_object(payload, "hello")
    name = value.get("channel")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_CHANNEL_NAME:
        raise FramingError(ErrorCode.BAD_HELLO, f"hello: bad channel name {name!r}"[:200])
    return Hello(name, _codec_name(value, "hello"), _size_limit(value, "hello"))


def parse_accept(payload: bytes) -> Accept:
    """Parse an accept frame's payload.

    Raises:
        FramingError: BAD_HELLO, with what is wrong.
    """
    value = _json_object(payload, "accept")
    return Accept(_codec_name(value, "accept"), _size_limit(value, "accept"))


def encode_hello(hello: Hello) -> bytes:
    """The preamble and the hello frame that open a channel."""
    body: dict[str, Any] = {
        "channel": hello.channel,
        "codec": hello.codec,
        "max_message_size": hello.max_message_size,
    }
    return PREAMBLE + encode_frame(json.dumps(body, separators=(",", ":")).encode())


def encode_accept(accept: Accept) -> bytes:
    """The accept frame."""
    body: dict[str, Any] = {"codec": accept.codec, "max_message_size": accept.max_message_size}
    return encode_frame(json.dumps(body, separators=(",", ":")).encode())
