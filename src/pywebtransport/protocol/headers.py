"""Header sections: QPACK through pylsqpack, and the checks RFC 9114 section 4.3 asks for.

This library never uses the QPACK dynamic table (it advertises a capacity of 0 and encodes with
capacity 0), so no header block can ever be blocked and the encoder/decoder streams carry
nothing but what the peer's encoder insists on sending.
"""

from __future__ import annotations

from dataclasses import dataclass

import pylsqpack

from .errors import ProtocolViolation, Scope
from .events import Headers
from .wire import H3ErrorCode

MAX_HEADER_COUNT = 128
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


@dataclass(slots=True)
class Request:
    """The pseudo-headers of a request plus its regular headers."""

    method: str
    scheme: str
    authority: str
    path: str
    protocol: str
    headers: Headers


class HeaderCodec:
    """One connection's QPACK state.

    Both sides use a dynamic table of capacity 0 (docs/architecture.md), so decoding a header
    block needs no state: each block gets a fresh decoder, and a connection holds none while
    idle (a pylsqpack decoder is about 4.5 KiB). A decoder is kept only to check what the peer
    writes on its encoder stream, and only once it writes something.
    """

    def __init__(self) -> None:
        self._encoder = pylsqpack.Encoder()
        self._stream_decoder: pylsqpack.Decoder | None = None
        self.encoder_stream_data = self._encoder.apply_settings(0, 0)

    def encode(self, stream_id: int, headers: Headers) -> bytes:
        """Encode a header section; the result is a HEADERS frame payload."""
        _, block = self._encoder.encode(stream_id, headers)
        return bytes(block)

    def decode(self, stream_id: int, block: bytes) -> tuple[Headers, bytes]:
        """Decode a header block. Returns the headers and bytes for our decoder stream.

        Raises:
            ProtocolViolation: QPACK_DECOMPRESSION_FAILED (connection) or H3_EXCESSIVE_LOAD
                (stream) for more than MAX_HEADER_COUNT fields.
        """
        try:
            control, headers = pylsqpack.Decoder(0, 0).feed_header(stream_id, block)
        except (pylsqpack.DecompressionFailed, pylsqpack.StreamBlocked) as exc:
            raise ProtocolViolation(
                H3ErrorCode.QPACK_DECOMPRESSION_FAILED, f"header block: {exc}"
            ) from None
        if len(headers) > MAX_HEADER_COUNT:
            raise ProtocolViolation(
                H3ErrorCode.H3_EXCESSIVE_LOAD, "too many header fields", scope=Scope.STREAM
            )
        return list(headers), bytes(control)

    def feed_encoder_stream(self, data: bytes) -> None:
        """Bytes from the peer's QPACK encoder stream."""
        if self._stream_decoder is None:
            self._stream_decoder = pylsqpack.Decoder(0, 0)
        try:
            self._stream_decoder.feed_encoder(data)
        except pylsqpack.EncoderStreamError as exc:
            raise ProtocolViolation(H3ErrorCode.QPACK_ENCODER_STREAM_ERROR, str(exc)) from None

    def feed_decoder_stream(self, data: bytes) -> None:
        """Bytes from the peer's QPACK decoder stream."""
        try:
            self._encoder.feed_decoder(data)
        except pylsqpack.DecoderStreamError as exc:
            raise ProtocolViolation(H3ErrorCode.QPACK_DECODER_STREAM_ERROR, str(exc)) from None


def _malformed(reason: str) -> ProtocolViolation:
    return ProtocolViolation(H3ErrorCode.H3_MESSAGE_ERROR, reason, scope=Scope.STREAM)


def _split(headers: Headers) -> tuple[dict[bytes, bytes], Headers]:
    """Separate pseudo-headers from regular ones, enforcing RFC 9114 section 4.3."""
    pseudo: dict[bytes, bytes] = {}
    regular: Headers = []
    for name, value in headers:
        if name.lower() != name:
            raise _malformed(f"header name {name!r} is not lowercase")
        if name.startswith(b":"):
            if regular:
                raise _malformed("pseudo-header after a regular header")
            if name in pseudo:
                raise _malformed(f"duplicate pseudo-header {name!r}")
            pseudo[name] = value
        else:
            # RFC 9114 4.2: connection-specific fields make a message malformed; TE is
            # allowed only with the value "trailers".
            if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
                raise _malformed(f"connection-specific header {name!r}")
            regular.append((name, value))
    return pseudo, regular


def parse_request(headers: Headers) -> Request:
    """Validate a request header section and return its parts."""
    pseudo, regular = _split(headers)
    allowed = {b":method", b":scheme", b":authority", b":path", b":protocol"}
    for name in pseudo:
        if name not in allowed:
            raise _malformed(f"unknown request pseudo-header {name!r}")
    method = pseudo.get(b":method", b"").decode("latin-1")
    if not method:
        raise _malformed("missing :method")
    protocol = pseudo.get(b":protocol", b"").decode("latin-1")
    if protocol and method != "CONNECT":
        raise _malformed(":protocol on a request that is not CONNECT")
    scheme = pseudo.get(b":scheme", b"").decode("latin-1")
    path = pseudo.get(b":path", b"").decode("utf-8", "replace")
    authority = pseudo.get(b":authority", b"").decode("latin-1")
    # RFC 9220 / RFC 9114 4.3.1: extended CONNECT and ordinary requests carry all four.
    if (method != "CONNECT" or protocol) and (not scheme or not path):
        raise _malformed("missing :scheme or :path")
    if method == "CONNECT" and not authority:
        raise _malformed("CONNECT without :authority")
    return Request(method, scheme, authority, path, protocol, regular)


def parse_response(headers: Headers) -> tuple[int, Headers]:
    """Validate a response header section; return the status and regular headers."""
    pseudo, regular = _split(headers)
    if set(pseudo) != {b":status"}:
        raise _malformed("a response carries exactly one pseudo-header, :status")
    raw = pseudo[b":status"]
    if len(raw) != 3 or not raw.isdigit():
        raise _malformed(f"invalid :status {raw!r}")
    return int(raw), regular
