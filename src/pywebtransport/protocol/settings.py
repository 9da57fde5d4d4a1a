"""SETTINGS: what each side advertises, and how a dialect is chosen from them."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import NeedMoreData, decode_varint, encode_varint
from .errors import ProtocolViolation
from .wire import HTTP2_ONLY_SETTINGS, Dialect, H3ErrorCode, SettingId

_FLOW_CONTROL_SETTINGS = (
    SettingId.WT_INITIAL_MAX_DATA,
    SettingId.WT_INITIAL_MAX_STREAMS_UNI,
    SettingId.WT_INITIAL_MAX_STREAMS_BIDI,
)


@dataclass(frozen=True, slots=True)
class LocalLimits:
    """The limits this endpoint advertises for WebTransport sessions."""

    max_sessions: int = 16
    initial_max_data: int = 16 * 1024 * 1024
    initial_max_streams_bidi: int = 100
    initial_max_streams_uni: int = 100


def build_settings(limits: LocalLimits) -> dict[int, int]:
    """Return the SETTINGS this endpoint sends: every dialect at once (see docs/protocol.md)."""
    return {
        SettingId.ENABLE_CONNECT_PROTOCOL: 1,
        SettingId.H3_DATAGRAM: 1,
        SettingId.H3_DATAGRAM_DRAFT04: 1,
        SettingId.ENABLE_WEBTRANSPORT_DRAFT02: 1,
        SettingId.WT_MAX_SESSIONS_DRAFT07: limits.max_sessions,
        SettingId.WT_MAX_SESSIONS_DRAFT13: limits.max_sessions,
        SettingId.WT_ENABLED: 1,
        SettingId.WT_INITIAL_MAX_DATA: limits.initial_max_data,
        SettingId.WT_INITIAL_MAX_STREAMS_UNI: limits.initial_max_streams_uni,
        SettingId.WT_INITIAL_MAX_STREAMS_BIDI: limits.initial_max_streams_bidi,
    }


def encode_settings(settings: dict[int, int]) -> bytes:
    """Encode the payload of a SETTINGS frame."""
    return b"".join(encode_varint(k) + encode_varint(v) for k, v in settings.items())


def decode_settings(payload: bytes) -> dict[int, int]:
    """Decode a SETTINGS frame payload, enforcing RFC 9114 section 7.2.4.

    Raises:
        ProtocolViolation: H3_SETTINGS_ERROR for duplicates, HTTP/2-only identifiers, invalid
            values or a truncated payload.
    """
    settings: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(payload):
            key, pos = decode_varint(payload, pos)
            value, pos = decode_varint(payload, pos)
            # RFC 9114 7.2.4: "The same setting identifier MUST NOT occur more than once".
            if key in settings:
                raise ProtocolViolation(
                    H3ErrorCode.H3_SETTINGS_ERROR, f"duplicate setting 0x{key:x}"
                )
            if key in HTTP2_ONLY_SETTINGS:
                raise ProtocolViolation(H3ErrorCode.H3_SETTINGS_ERROR, f"HTTP/2 setting 0x{key:x}")
            settings[key] = value
    except NeedMoreData:
        raise ProtocolViolation(H3ErrorCode.H3_FRAME_ERROR, "truncated SETTINGS frame") from None
    for key in (SettingId.ENABLE_CONNECT_PROTOCOL, SettingId.H3_DATAGRAM, SettingId.WT_ENABLED):
        if settings.get(key, 0) > 1:
            raise ProtocolViolation(
                H3ErrorCode.H3_SETTINGS_ERROR, f"setting 0x{key:x} must be 0 or 1"
            )
    return settings


def peer_supports_datagrams(settings: dict[int, int]) -> bool:
    """True when the peer enabled HTTP datagrams (RFC 9297 or its draft-04 codepoint)."""
    return bool(settings.get(SettingId.H3_DATAGRAM) or settings.get(SettingId.H3_DATAGRAM_DRAFT04))


def server_dialect(settings: dict[int, int]) -> Dialect | None:
    """The newest dialect a server's SETTINGS offer (client side), or None for no WebTransport."""
    if settings.get(SettingId.WT_ENABLED) == 1:
        return Dialect.DRAFT15
    if settings.get(SettingId.WT_MAX_SESSIONS_DRAFT13, 0) > 0:
        return Dialect.DRAFT13
    if settings.get(SettingId.WT_MAX_SESSIONS_DRAFT07, 0) > 0:
        return Dialect.DRAFT07
    if settings.get(SettingId.ENABLE_WEBTRANSPORT_DRAFT02) == 1:
        return Dialect.DRAFT02
    return None


def client_dialect(settings: dict[int, int], protocol: str, draft02_header: bool) -> Dialect:
    """The dialect of a session request (server side), from the client's SETTINGS and request."""
    if protocol == "webtransport-h3":
        return Dialect.DRAFT15
    if draft02_header:
        return Dialect.DRAFT02
    if settings.get(SettingId.WT_MAX_SESSIONS_DRAFT13, 0) > 0:
        return Dialect.DRAFT13
    if settings.get(SettingId.WT_MAX_SESSIONS_DRAFT07, 0) > 0:
        return Dialect.DRAFT07
    return Dialect.DRAFT02


def flow_control_enabled(dialect: Dialect, peer_settings: dict[int, int]) -> bool:
    """Session flow control is used from draft-13 on, when the peer sent any initial credit."""
    if dialect not in (Dialect.DRAFT13, Dialect.DRAFT15):
        return False
    return any(key in peer_settings for key in _FLOW_CONTROL_SETTINGS)
