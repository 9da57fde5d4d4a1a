"""Codecs: one application value <-> the payload of one message.

A codec has a name (used in a channel's hello) and a one-byte id (used in datagram messages).
``bytes`` and ``json`` are always available; ``msgpack`` needs the optional ``msgspec`` package
(``pip install pywebtransport[msgpack]``).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from ..exceptions import ConfigurationError
from .errors import DecodeError, EncodeError

__all__ = ["BytesCodec", "Codec", "JsonCodec", "MsgpackCodec", "available_codecs", "get_codec"]


class Codec(Protocol):
    """A codec: ``encode`` raises :class:`EncodeError`, ``decode`` :class:`DecodeError`."""

    name: str
    id: int

    def encode(self, value: Any) -> bytes: ...

    def decode(self, payload: bytes) -> Any: ...


class BytesCodec:
    """Payloads as they are: ``bytes``, ``bytearray`` or ``memoryview`` in, ``bytes`` out."""

    name = "bytes"
    id = 0

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise EncodeError(f"the bytes codec sends bytes, not {type(value).__name__}")

    def decode(self, payload: bytes) -> Any:
        return payload


class JsonCodec:
    """UTF-8 JSON (RFC 8259), compact; NaN and infinities are refused both ways."""

    name = "json"
    id = 1

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self._decoder = json.JSONDecoder(parse_constant=_refuse_constant)

    def encode(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value).encode()
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: too deep
            raise EncodeError(f"cannot encode as JSON: {exc}") from None

    def decode(self, payload: bytes) -> Any:
        try:
            return self._decoder.decode(payload.decode())
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # too deeply nested
            raise DecodeError(f"invalid JSON message: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class MsgpackCodec:
    """MessagePack via ``msgspec``."""

    name = "msgpack"
    id = 2

    def __init__(self) -> None:
        try:
            import msgspec
        except ImportError:
            raise ConfigurationError(
                "the msgpack codec needs msgspec: pip install pywebtransport[msgpack]",
                field="codec",
            ) from None
        self._msgspec = msgspec
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()

    def encode(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise EncodeError(f"cannot encode as MessagePack: {exc}") from None

    def decode(self, payload: bytes) -> Any:
        try:
            return self._decoder.decode(payload)
        except (self._msgspec.DecodeError, RecursionError) as exc:  # too deeply nested
            raise DecodeError(f"invalid MessagePack message: {exc}") from None


_FACTORIES: dict[str, type[BytesCodec] | type[JsonCodec] | type[MsgpackCodec]] = {
    "bytes": BytesCodec,
    "json": JsonCodec,
    "msgpack": MsgpackCodec,
}
_IDS = {factory.id: name for name, factory in _FACTORIES.items()}
_CACHE: dict[str, Codec] = {}


def get_codec(name: str | int) -> Codec:
    """The codec of that name (or datagram id).

    Raises:
        ConfigurationError: no such codec, or it needs a package that is not installed.
    """
    if isinstance(name, int):
        if name not in _IDS:
            raise ConfigurationError(f"no codec has id {name}", field="codec")
        name = _IDS[name]
    codec = _CACHE.get(name)
    if codec is None:
        factory = _FACTORIES.get(name)
        if factory is None:
            raise ConfigurationError(
                f"unknown codec {name!r} (known: {', '.join(_FACTORIES)})", field="codec"
            )
        codec = _CACHE[name] = factory()
    return codec


def available_codecs() -> list[str]:
    """The names of the codecs usable here (``msgpack`` only when msgspec is installed)."""
    names = []
    for name in _FACTORIES:
        try:
            get_codec(name)
        except ConfigurationError:
            continue
        names.append(name)
    return names
