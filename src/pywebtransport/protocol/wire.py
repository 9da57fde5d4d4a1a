"""Wire codepoints of HTTP/3, QPACK and WebTransport over HTTP/3 (all dialects).

Mostly numbers that go on the wire (frame, stream, setting, capsule and error codes), plus the
limits and the draft families (:class:`Dialect`) that go with them. ``pywebtransport.constants``
re-exports those an application may need.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class FrameType(IntEnum):
    """HTTP/3 frame types (RFC 9114 section 7.2) and the WebTransport stream signal."""

    DATA = 0x00
    HEADERS = 0x01
    CANCEL_PUSH = 0x03
    SETTINGS = 0x04
    PUSH_PROMISE = 0x05
    GOAWAY = 0x07
    MAX_PUSH_ID = 0x0D
    WEBTRANSPORT_STREAM = 0x41


#: Frame types reserved because HTTP/2 used them; receiving one is H3_FRAME_UNEXPECTED.
HTTP2_ONLY_FRAME_TYPES = frozenset({0x02, 0x06, 0x08, 0x09})


class StreamType(IntEnum):
    """Unidirectional stream types."""

    CONTROL = 0x00
    PUSH = 0x01
    QPACK_ENCODER = 0x02
    QPACK_DECODER = 0x03
    WEBTRANSPORT = 0x54


class SettingId(IntEnum):
    """SETTINGS identifiers this library reads or writes."""

    QPACK_MAX_TABLE_CAPACITY = 0x01
    MAX_FIELD_SECTION_SIZE = 0x06
    QPACK_BLOCKED_STREAMS = 0x07
    ENABLE_CONNECT_PROTOCOL = 0x08
    H3_DATAGRAM = 0x33
    H3_DATAGRAM_DRAFT04 = 0xFFD277
    WT_INITIAL_MAX_DATA = 0x2B61
    WT_INITIAL_MAX_STREAMS_UNI = 0x2B64
    WT_INITIAL_MAX_STREAMS_BIDI = 0x2B65
    ENABLE_WEBTRANSPORT_DRAFT02 = 0x2B603742
    WT_MAX_SESSIONS_DRAFT03 = 0x2B603743
    WT_MAX_SESSIONS_DRAFT06 = 0x3C48D522
    WT_MAX_SESSIONS_DRAFT07 = 0xC671706A
    WT_MAX_SESSIONS_DRAFT13 = 0x14E9CD29
    WT_ENABLED = 0x2C7CF000


#: SETTINGS identifiers reserved because HTTP/2 used them (RFC 9114 section 7.2.4.1).
HTTP2_ONLY_SETTINGS = frozenset({0x02, 0x03, 0x04, 0x05})


class CapsuleType(IntEnum):
    """Capsule types carried in DATA frames on the CONNECT stream."""

    DATAGRAM = 0x00
    CLOSE_SESSION = 0x2843
    DRAIN_SESSION = 0x78AE
    WT_MAX_DATA = 0x190B4D3D
    WT_MAX_STREAMS_BIDI = 0x190B4D3F
    WT_MAX_STREAMS_UNI = 0x190B4D40
    WT_DATA_BLOCKED = 0x190B4D41
    WT_STREAMS_BLOCKED_BIDI = 0x190B4D43
    WT_STREAMS_BLOCKED_UNI = 0x190B4D44


#: QUIC's CRYPTO_ERROR range (RFC 9001 section 4.8): 0x100 plus a TLS alert code.
CRYPTO_ERROR = 0x100
#: The TLS alert a client sends about a certificate it refuses (RFC 8446 section 6.2).
TLS_BAD_CERTIFICATE = 42


class H3ErrorCode(IntEnum):
    """HTTP/3 and WebTransport error codes (RESET_STREAM, STOP_SENDING, CONNECTION_CLOSE)."""

    H3_DATAGRAM_ERROR = 0x33
    H3_NO_ERROR = 0x100
    H3_GENERAL_PROTOCOL_ERROR = 0x101
    H3_INTERNAL_ERROR = 0x102
    H3_STREAM_CREATION_ERROR = 0x103
    H3_CLOSED_CRITICAL_STREAM = 0x104
    H3_FRAME_UNEXPECTED = 0x105
    H3_FRAME_ERROR = 0x106
    H3_EXCESSIVE_LOAD = 0x107
    H3_ID_ERROR = 0x108
    H3_SETTINGS_ERROR = 0x109
    H3_MISSING_SETTINGS = 0x10A
    H3_REQUEST_REJECTED = 0x10B
    H3_REQUEST_CANCELLED = 0x10C
    H3_REQUEST_INCOMPLETE = 0x10D
    H3_MESSAGE_ERROR = 0x10E
    H3_CONNECT_ERROR = 0x10F
    H3_VERSION_FALLBACK = 0x110
    QPACK_DECOMPRESSION_FAILED = 0x200
    QPACK_ENCODER_STREAM_ERROR = 0x201
    QPACK_DECODER_STREAM_ERROR = 0x202
    WT_BUFFERED_STREAM_REJECTED = 0x3994BD84
    WT_SESSION_GONE = 0x170D7B68
    WT_FLOW_CONTROL_ERROR = 0x045D4487
    WT_ALPN_ERROR = 0x0817B3DD
    WT_REQUIREMENTS_NOT_MET = 0x212C0D48


class Dialect(Enum):
    """The WebTransport-over-HTTP/3 draft family a session speaks.

    DRAFT02 is what Chromium and Firefox speak by default; DRAFT07 covers drafts 07 to 12
    (``0xc671706a``); DRAFT13 covers 13 and 14 (``0x14e9cd29``); DRAFT15 covers 15 and 16
    (``SETTINGS_WT_ENABLED``, ``:protocol webtransport-h3``).
    """

    DRAFT02 = 2
    DRAFT07 = 7
    DRAFT13 = 13
    DRAFT15 = 15


#: First HTTP/3 code of the WebTransport application error range.
APP_ERROR_FIRST = 0x52E4A40FA8DB
#: Last HTTP/3 code of that range (the image of 0xFFFFFFFF).
APP_ERROR_LAST = 0x52E5AC983162

MAX_VARINT = (1 << 62) - 1
MAX_CLOSE_REASON = 1024
#: WebTransport application error codes (streams and sessions alike) are 32-bit unsigned.
MAX_APP_CODE = 0xFFFFFFFF
PROTOCOL_TOKENS = {"webtransport", "webtransport-h3"}


def check_app_code(code: int) -> int:
    """``code`` if it is a WebTransport application error code (0..0xFFFFFFFF).

    Raises:
        ValueError: it is not; the one check for stream and session codes alike.
    """
    if not 0 <= code <= MAX_APP_CODE:
        raise ValueError(f"application error code {code} is not a 32-bit unsigned integer")
    return code


def app_code_to_h3(code: int) -> int:
    """Map a 32-bit WebTransport application error code into the HTTP/3 error space."""
    check_app_code(code)
    return APP_ERROR_FIRST + code + code // 0x1E


def h3_to_app_code(h3_code: int) -> int | None:
    """Map an HTTP/3 error code back to a WebTransport application code.

    Returns ``None`` for codes outside the WebTransport range and for the reserved
    (``0x1f * N + 0x21``) codepoints inside it.
    """
    if not APP_ERROR_FIRST <= h3_code <= APP_ERROR_LAST:
        return None
    if (h3_code - 0x21) % 0x1F == 0:
        return None
    shifted = h3_code - APP_ERROR_FIRST
    return shifted - shifted // 0x1F
