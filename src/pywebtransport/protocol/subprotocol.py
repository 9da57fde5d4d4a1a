"""Subprotocol negotiation headers: ``wt-available-protocols`` and ``wt-protocol``.

Since draft-13 both carry RFC 8941 structured fields: the client's offer is a List of Strings
(``"chat", "json"``), the server's choice is one String (``"json"``). Drafts 10 to 12 named the
same headers; we send the structured-field form in every dialect (Chromium does the same, even
in draft-02). Parsing is lenient where it costs nothing (bare tokens are accepted in place of
Strings, parameters are ignored) and never raises: a malformed header counts as absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

AVAILABLE_PROTOCOLS = b"wt-available-protocols"
PROTOCOL = b"wt-protocol"

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# RFC 8941 3.3.4: sf-token = ( ALPHA / "*" ) *( tchar / ":" / "/" )
_SF_TOKEN_FIRST = frozenset(b"*abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SF_TOKEN_REST = _TCHAR | frozenset(b":/")
_KEY_FIRST = frozenset(b"*abcdefghijklmnopqrstuvwxyz")
_KEY_REST = _KEY_FIRST | frozenset(b"_-.0123456789")
_OWS = b" \t"


class _Malformed(Exception):
    pass


def is_valid_protocol(name: str) -> bool:
    """True for a protocol name this library sends: a non-empty HTTP token (RFC 9110 5.6.2)."""
    return bool(name) and name.isascii() and all(ord(ch) in _TCHAR for ch in name)


def encode_string(value: str) -> bytes:
    """An RFC 8941 String: printable ASCII in quotes, ``"`` and ``\\`` escaped."""
    raw = value.encode("ascii")
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise ValueError(f"{value!r} is not printable ASCII")
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def encode_protocol_list(protocols: Iterable[str]) -> bytes:
    """The ``wt-available-protocols`` value: a structured-field List of Strings."""
    return b", ".join(encode_string(p) for p in protocols)


def encode_protocol(protocol: str) -> bytes:
    """The ``wt-protocol`` value: one structured-field String."""
    return encode_string(protocol)


class _Parser:
    """Just enough of RFC 8941 for Lists of Strings/Tokens with parameters."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def skip(self, chars: bytes) -> None:
        while self.pos < len(self.data) and self.data[self.pos] in chars:
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def item(self) -> str:
        first = self.peek()
        if first == 0x22:  # '"'
            value = self.string()
        elif first in _SF_TOKEN_FIRST:
            value = self.token()
        else:
            raise _Malformed
        self.parameters()
        return value

    def string(self) -> str:
        self.pos += 1
        out = bytearray()
        while self.pos < len(self.data):
            ch = self.data[self.pos]
            self.pos += 1
            if ch == 0x5C:  # backslash
                if self.pos >= len(self.data) or self.data[self.pos] not in b'"\\':
                    raise _Malformed
                out.append(self.data[self.pos])
                self.pos += 1
            elif ch == 0x22:
                return out.decode("ascii")
            elif ch < 0x20 or ch > 0x7E:
                raise _Malformed
            else:
                out.append(ch)
        raise _Malformed  # no closing quote

    def token(self) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.data) and self.data[self.pos] in _SF_TOKEN_REST:
            self.pos += 1
        return self.data[start : self.pos].decode("ascii")

    def parameters(self) -> None:
        while self.peek() == 0x3B:  # ';'
            self.pos += 1
            self.skip(b" ")
            if self.peek() not in _KEY_FIRST:
                raise _Malformed
            while self.pos < len(self.data) and self.data[self.pos] in _KEY_REST:
                self.pos += 1
            if self.peek() == 0x3D:  # '=': a bare item we do not need
                self.pos += 1
                self.bare_item()

    def bare_item(self) -> None:
        first = self.peek()
        if first == 0x22:
            self.string()
        elif first in _SF_TOKEN_FIRST:
            self.token()
        elif first == 0x3F:  # boolean
            self.pos += 1
            if self.peek() not in b"01":
                raise _Malformed
            self.pos += 1
        else:  # number (or byte sequence): digits, sign, dot, colon-delimited base64
            start = self.pos
            allowed = b"-.0123456789" if first != 0x3A else None
            if allowed is None:
                end = self.data.find(b":", self.pos + 1)
                if end < 0:
                    raise _Malformed
                self.pos = end + 1
                return
            while self.pos < len(self.data) and self.data[self.pos] in allowed:
                self.pos += 1
            if self.pos == start:
                raise _Malformed


def decode_protocol_list(values: Sequence[bytes]) -> list[str]:
    """The protocols a ``wt-available-protocols`` header offers (several lines are joined).

    Returns an empty list when the field is malformed (RFC 8941: the whole field is ignored).
    """
    data = b",".join(values)
    parser = _Parser(data)
    out: list[str] = []
    try:
        parser.skip(b" ")
        while not parser.at_end():
            value = parser.item()
            if value not in out:
                out.append(value)
            parser.skip(_OWS)
            if parser.at_end():
                break
            if parser.peek() != 0x2C:  # ','
                raise _Malformed
            parser.pos += 1
            parser.skip(_OWS)
            if parser.at_end():
                raise _Malformed  # trailing comma
    except (_Malformed, UnicodeDecodeError):
        return []
    return out


def decode_protocol(value: bytes) -> str | None:
    """The protocol a ``wt-protocol`` header names (String or bare token), None if malformed."""
    parser = _Parser(value)
    try:
        parser.skip(b" ")
        result = parser.item()
        parser.skip(b" ")
        if not parser.at_end():
            raise _Malformed
    except (_Malformed, UnicodeDecodeError):
        return None
    return result


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of header ``name``, in order."""
    return [v for k, v in headers if k == name]


def offered_protocols(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """The protocols a request offers (empty when none or malformed)."""
    values = header_values(headers, AVAILABLE_PROTOCOLS)
    return decode_protocol_list(values) if values else []


def chosen_protocol(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The protocol a response names (None when absent, repeated or malformed)."""
    values = header_values(headers, PROTOCOL)
    if len(values) != 1:
        return None
    return decode_protocol(values[0])


def select_protocol(offered: Sequence[str], preferred: Sequence[str]) -> str | None:
    """The server's choice: the first of its ``preferred`` that the client ``offered``."""
    for name in preferred:
        if name in offered:
            return name
    return None
