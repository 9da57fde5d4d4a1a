"""Variable-length integers and the small encoders every other protocol module uses."""

from __future__ import annotations

from .wire import MAX_VARINT


class NeedMoreData(Exception):
    """Raised by a decoder when its input ends before the value does."""


def encode_varint(value: int) -> bytes:
    """Encode ``value`` as a QUIC variable-length integer (RFC 9000 section 16)."""
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise ValueError(f"{value} does not fit in a variable-length integer")


def varint_size(value: int) -> int:
    """Return how many bytes :func:`encode_varint` uses for ``value``."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    return 8


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode one variable-length integer at ``pos``.

    Returns:
        The value and the position just after it.

    Raises:
        NeedMoreData: ``data`` ends inside the integer.
    """
    if pos >= len(data):
        raise NeedMoreData
    first = data[pos]
    length = 1 << (first >> 6)
    end = pos + length
    if end > len(data):
        raise NeedMoreData
    if length == 1:
        return first, end
    value = int.from_bytes(data[pos:end], "big") & ((1 << (8 * length - 2)) - 1)
    return value, end


def encode_frame(frame_type: int, payload: bytes) -> bytes:
    """Encode one HTTP/3 frame (type, length, payload)."""
    return encode_varint(frame_type) + encode_varint(len(payload)) + payload


def encode_capsule(capsule_type: int, value: bytes) -> bytes:
    """Encode one capsule (RFC 9297 section 3.2)."""
    return encode_varint(capsule_type) + encode_varint(len(value)) + value
