"""A server's decisions about datagrams for unknown connections, with time stepped by hand."""

from __future__ import annotations

import itertools

import pytest

from pywebtransport.protocol.admission import Accept, Drop, PacketAdmission, Reply
from pywebtransport.protocol.codec import encode_varint
from pywebtransport.protocol.packets import route_packet, stateless_reset_token

CID = 8
ADDRESS = b"127.0.0.1|50000"
RESET_KEY = b"r" * 32


def initial(dcid: bytes, *, token: bytes = b"", size: int = 1200, version: int = 1) -> bytes:
    """A long-header Initial to ``dcid`` padded to ``size`` bytes (its payload is noise)."""
    header = bytes([0xC3]) + version.to_bytes(4, "big")
    header += bytes([len(dcid)]) + dcid + bytes([8]) + b"s" * 8
    header += encode_varint(len(token)) + token
    length = size - len(header) - 2
    return header + bytes([0x40 | length >> 8, length & 0xFF]) + b"\x00" * length


def short(dcid: bytes, size: int = 60) -> bytes:
    return bytes([0x43]) + dcid + b"\x00" * (size - 1 - len(dcid))


def admission(retry: str = "never", *, max_connections: int = 10) -> PacketAdmission:
    counter = itertools.count()
    return PacketAdmission(
        cid_length=CID,
        retry=retry,
        retry_key=b"k" * 32,
        reset_key=RESET_KEY,
        max_connections=max_connections,
        random_bytes=lambda n: bytes([next(counter) % 256]) * n,
        resets_per_second=100,
        retry_when_handshaking=64,
        now=0.0,
    )


def decide(
    gate: PacketAdmission,
    data: bytes,
    *,
    now: float = 0.0,
    wall: float = 1000.0,
    handshaking: int = 0,
    connections: int = 0,
    closing: bool = False,
) -> object:
    return gate.decide(
        data,
        route_packet(data, CID),
        ADDRESS,
        now=now,
        wall=wall,
        handshaking=handshaking,
        connections=connections,
        closing=closing,
    )


def test_an_initial_is_accepted_and_anything_else_new_is_dropped() -> None:
    gate = admission()
    assert decide(gate, initial(b"d" * 8)) == Accept(None)
    assert isinstance(decide(gate, initial(b"d" * 8, size=1199)), Drop)  # not padded
    handshake = bytearray(initial(b"d" * 8))
    handshake[0] = 0xE3  # a Handshake packet: no connection starts with one
    assert isinstance(decide(gate, bytes(handshake)), Drop)
    assert isinstance(decide(gate, b"\x80\x01"), Drop)  # unparsable
    assert isinstance(decide(gate, initial(b"d" * 8), closing=True), Drop)
    assert isinstance(decide(gate, initial(b"d" * 8), connections=10), Drop)


def test_an_unknown_version_gets_version_negotiation() -> None:
    got = decide(admission(), initial(b"d" * 8, version=0x1A2A3A4A))
    assert isinstance(got, Reply) and got.kind == "version_negotiation"
    assert got.data[1:5] == b"\x00\x00\x00\x00"  # version 0: a version negotiation packet


def test_a_stateless_reset_is_shorter_than_its_trigger_and_carries_the_token() -> None:
    gate = admission()
    dcid = b"c" * 8
    got = decide(gate, short(dcid, 60))
    assert isinstance(got, Reply) and got.kind == "stateless_reset"
    assert len(got.data) == 43 and got.data[-16:] == stateless_reset_token(RESET_KEY, dcid)
    smaller = decide(gate, short(dcid, 30))
    assert isinstance(smaller, Reply) and len(smaller.data) == 29
    assert isinstance(decide(gate, short(dcid, 21)), Drop)  # a reset would be under 21 bytes


def test_stateless_resets_are_rate_limited_and_the_budget_refills_with_time() -> None:
    gate = admission()
    answers = [decide(gate, short(b"c" * 8), now=5.0) for _ in range(120)]
    assert sum(isinstance(a, Reply) for a in answers) == 100
    assert isinstance(decide(gate, short(b"c" * 8), now=5.0), Drop)
    assert isinstance(decide(gate, short(b"c" * 8), now=5.015), Reply)  # 15 ms: one more
    assert isinstance(decide(gate, short(b"c" * 8), now=5.015), Drop)


@pytest.mark.parametrize(("handshaking", "retried"), [(63, False), (64, True)])
def test_auto_retry_starts_at_the_handshake_threshold(handshaking: int, retried: bool) -> None:
    got = decide(admission("auto"), initial(b"d" * 8), handshaking=handshaking)
    assert isinstance(got, Reply if retried else Accept)


def test_a_client_back_with_its_retry_token_is_accepted_until_the_token_expires() -> None:
    gate = admission("always")
    first = b"f" * 8
    retry = decide(gate, initial(first), wall=1000.0)
    assert isinstance(retry, Reply) and retry.kind == "retry"
    route = route_packet(retry.data, CID)
    assert route is not None
    token = retry.data[1 + 4 + 1 + len(route.destination_cid) + 1 + len(route.source_cid) : -16]
    new_cid = route.source_cid
    back = decide(gate, initial(new_cid, token=token), wall=1005.0)
    assert back == Accept(first)  # the original destination ID comes back with the token
    late = decide(gate, initial(new_cid, token=token), wall=1011.0)
    assert isinstance(late, Reply) and late.kind == "retry"  # expired: prove it again
    forged = decide(gate, initial(new_cid, token=token[:-1] + b"x"), wall=1005.0)
    assert isinstance(forged, Reply)
