"""Incremental reader for type-length-value records: HTTP/3 frames and capsules share it.

Theory of operation: bytes arrive in arbitrary pieces. Records whose type the caller marks as
*buffered* are returned whole, after a size check (a peer cannot make us hold more than
``max_buffered`` bytes for one record). All other records are *streamed*: their payload is handed
out in the pieces it arrived in, so DATA frames and unknown (grease) records cost no buffering.
"""

from __future__ import annotations

from collections.abc import Callable

from .codec import NeedMoreData, decode_varint
from .errors import ProtocolViolation, Scope

#: (record type, payload or payload piece, True when this piece ends the record)
Record = tuple[int, bytes, bool]


class TLVReader:
    """Parse a stream of type-length-value records.

    Args:
        is_buffered: tells whether a record type must be delivered whole.
        max_buffered: largest payload accepted for a buffered record.
        too_large_code: wire error code when a buffered record exceeds ``max_buffered``.
        scope: what a violation tears down.
    """

    __slots__ = ("_buf", "_code", "_is_buffered", "_max", "_remaining", "_scope", "_type")

    def __init__(
        self,
        *,
        is_buffered: Callable[[int], bool],
        max_buffered: int,
        too_large_code: int,
        scope: Scope = Scope.CONNECTION,
    ) -> None:
        self._is_buffered = is_buffered
        self._max = max_buffered
        self._code = too_large_code
        self._scope = scope
        self._buf = bytearray()
        self._type = -1  # type of the record being streamed, -1 between records
        self._remaining = 0

    @property
    def at_boundary(self) -> bool:
        """True when no record is partly read (a clean place for the stream to end)."""
        return self._type < 0 and not self._buf

    def feed(self, data: bytes) -> list[Record]:
        """Consume ``data`` and return the records (or record pieces) it completes."""
        out: list[Record] = []
        if not data:
            return out
        if self._type >= 0:
            data = self._stream_piece(data, out)
        if not data and not self._buf:
            return out
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        while pos < size:
            if self._type >= 0:  # a streamed record whose header was already parsed
                take = min(self._remaining, size - pos)
                self._remaining -= take
                end = self._remaining == 0
                out.append((self._type, bytes(buf[pos : pos + take]), end))
                pos += take
                if end:
                    self._type = -1
                continue
            try:
                rtype, p = decode_varint(buf, pos)
                length, p = decode_varint(buf, p)
            except NeedMoreData:
                break
            if self._is_buffered(rtype):
                if length > self._max:
                    raise ProtocolViolation(
                        self._code,
                        f"record 0x{rtype:x} of {length} bytes too large",
                        scope=self._scope,
                    )
                if size - p < length:
                    break
                out.append((rtype, bytes(buf[p : p + length]), True))
                pos = p + length
            else:
                pos = p
                if length == 0:
                    out.append((rtype, b"", True))
                else:
                    self._type = rtype
                    self._remaining = length
        del buf[:pos]
        return out

    def _stream_piece(self, data: bytes, out: list[Record]) -> bytes:
        """Hand out the part of ``data`` that belongs to the streamed record in progress."""
        take = min(self._remaining, len(data))
        self._remaining -= take
        end = self._remaining == 0
        out.append((self._type, data[:take] if take < len(data) else data, end))
        if end:
            self._type = -1
        return data[take:]
