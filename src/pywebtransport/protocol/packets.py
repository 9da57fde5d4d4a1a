"""The server's packet helpers: routing by connection ID, stateless resets, Retry, version
negotiation. Sans-I/O, and the same whichever engine runs the connections (the header parsing
and the Retry and Version Negotiation encoders are aioquic's public packet functions).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aioquic._buffer import Buffer  # aioquic.buffer re-exports it untyped
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)

__all__ = [
    "MIN_STATELESS_RESET",
    "RETRY_TOKEN_LIFETIME",
    "PacketRoute",
    "check_retry_token",
    "retry_packet",
    "retry_token",
    "route_packet",
    "stateless_reset",
    "stateless_reset_token",
    "version_negotiation",
]


@dataclass(slots=True)
class PacketRoute:
    """What a server needs from a packet's header to route it."""

    destination_cid: bytes
    source_cid: bytes
    version: int | None
    is_initial: bool
    version_supported: bool
    token: bytes = b""  # an Initial's address-validation token


def route_packet(data: bytes, cid_length: int) -> PacketRoute | None:
    """Read the routing fields of a QUIC packet; None when it cannot be parsed."""
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=cid_length)
    except Exception:  # aioquic raises ValueError or BufferReadError for garbage
        return None
    supported = header.version is None or header.version in _SUPPORTED_VERSIONS
    return PacketRoute(
        destination_cid=header.destination_cid,
        source_cid=header.source_cid,
        version=header.version,
        is_initial=header.packet_type == QuicPacketType.INITIAL,
        version_supported=supported,
        token=header.token,
    )


#: RFC 9000 10.3: a Stateless Reset is at least 21 bytes: 5 unpredictable, then the 16-byte token.
MIN_STATELESS_RESET = 21


def stateless_reset_token(key: bytes, cid: bytes) -> bytes:
    """The 16-byte stateless-reset token of connection ID ``cid`` under ``key``.

    Derived (HMAC-SHA256), not random, so that a server that lost a connection's state (it
    restarted, or forgot the connection) can still end the connection for its peer
    (RFC 9000 10.3.2: a static key, tokens that cannot be guessed without it).
    """
    return hmac.new(key, b"stateless reset\x00" + cid, hashlib.sha256).digest()[:16]


def stateless_reset(token: bytes, unpredictable: bytes) -> bytes:
    """A Stateless Reset packet: it looks like a short-header packet and ends with ``token``.

    Args:
        token: the token of the connection ID the triggering packet carried.
        unpredictable: at least 5 random bytes (the caller draws them: the core has no RNG).
    """
    if len(unpredictable) < MIN_STATELESS_RESET - 16:
        raise ValueError("a stateless reset needs at least 5 unpredictable bytes")
    first = 0x40 | (unpredictable[0] & 0x3F)  # header form 0, fixed bit 1
    return bytes([first]) + unpredictable[1:] + token


#: How long a Retry token is accepted (seconds): one round trip is all it needs.
RETRY_TOKEN_LIFETIME = 10.0


def _retry_mac(key: bytes, address: bytes, issued: bytes, odcid: bytes) -> bytes:
    message = b"retry token\x00" + issued + bytes([len(address)]) + address + odcid
    return hmac.new(key, message, hashlib.sha256).digest()[:16]


def retry_token(key: bytes, address: bytes, odcid: bytes, now: float) -> bytes:
    """An address-validation token for a Retry: when, for whom, and the client's first DCID.

    It is authenticated (HMAC-SHA256 under ``key``), not encrypted: the original DCID was sent
    in the clear anyway. ``address`` is the client's IP address and port, as bytes.
    """
    issued = int(now * 1000).to_bytes(8, "big")
    return issued + bytes([len(odcid)]) + odcid + _retry_mac(key, address, issued, odcid)


def check_retry_token(key: bytes, token: bytes, address: bytes, now: float) -> bytes | None:
    """The original DCID ``token`` carries, or None if it is forged, expired or not for us."""
    if len(token) < 8 + 1 + 16:
        return None
    issued, size = token[:8], token[8]
    odcid, mac = token[9 : 9 + size], token[9 + size :]
    if len(odcid) != size or len(mac) != 16:
        return None
    if not hmac.compare_digest(mac, _retry_mac(key, address, issued, odcid)):
        return None
    age = now - int.from_bytes(issued, "big") / 1000
    return odcid if 0 <= age <= RETRY_TOKEN_LIFETIME else None


def retry_packet(route: PacketRoute, new_cid: bytes, token: bytes) -> bytes:
    """A Retry answering ``route``'s Initial: come back to ``new_cid`` with ``token``."""
    assert route.version is not None
    return encode_quic_retry(
        version=route.version,
        source_cid=new_cid,
        destination_cid=route.source_cid,
        original_destination_cid=route.destination_cid,
        retry_token=token,
    )


def version_negotiation(route: PacketRoute) -> bytes:
    """A Version Negotiation packet answering ``route``'s unsupported version."""
    return encode_quic_version_negotiation(
        source_cid=route.destination_cid,
        destination_cid=route.source_cid,
        supported_versions=list(_SUPPORTED_VERSIONS),
    )


def _supported_versions() -> tuple[int, ...]:
    return tuple(QuicConfiguration(is_client=False).supported_versions)


_SUPPORTED_VERSIONS = _supported_versions()
