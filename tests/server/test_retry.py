"""Retry: new clients prove their address before the server keeps state for them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from pywebtransport import ClientConfig, WebTransportClient
from tests.certs import CertBundle
from tests.conftest import T, build_app, echo_ok, serving, url

#: Initial datagrams in a client's first flight, each answered with a Retry: qh3's ClientHello
#: (it offers a post-quantum X25519MLKEM768 key share) takes two.
FIRST_FLIGHT = {"aioquic": 1, "qh3": 2}


def spoofed_initial() -> bytes:
    """A 1200-byte Initial whose header parses and whose payload nobody can decrypt."""
    header = bytes([0xC3]) + (1).to_bytes(4, "big")  # long header, Initial, QUIC v1
    header += bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8) + b"\x00"  # no token
    length = 1200 - len(header) - 2
    return header + bytes([0x40 | length >> 8, length & 0xFF]) + os.urandom(length)


async def test_always_retry_still_connects(
    cert: CertBundle, client_config: ClientConfig, quic_engine: str
) -> None:
    async with (
        serving(build_app(cert, retry="always")) as server,
        asyncio.timeout(T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server))
        await echo_ok(session)
        assert server.stats["retries_sent"] == FIRST_FLIGHT[quic_engine]
        assert server.stats["connections_accepted"] == 1  # no state before the proof


async def test_a_flood_of_spoofed_initials_turns_retry_on(
    cert: CertBundle, client_config: ClientConfig, quic_engine: str
) -> None:
    async with (
        serving(build_app(cert)) as server,  # retry="auto"
        asyncio.timeout(2 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server))  # no flood yet: no Retry
        assert server.stats["retries_sent"] == 0
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(100):  # every one leaves a handshake that will never complete
                flood.sendto(spoofed_initial(), server.local_address[:2])
            # The server reads them in order; a connect after them sees their effect.
            second = await client.connect(url=url(server))
        finally:
            flood.close()
        # 64 half-open handshakes turned Retry on: the other 36 got a Retry, no state.
        assert server.stats["connections_accepted"] == 1 + 64 + 1
        # ... and so did the real client: each datagram of its first flight, and once more for
        # an Initial it sent again because the server, busy with the flood, answered late.
        to_client = server.stats["retries_sent"] - 36
        assert FIRST_FLIGHT[quic_engine] <= to_client <= 2 * FIRST_FLIGHT[quic_engine]
        await echo_ok(second)
        await echo_ok(session)


async def test_handshakes_that_never_finish_are_dropped(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async with (
        serving(build_app(cert, handshake_timeout=0.5, retry="never")) as server,
        asyncio.timeout(T),
        WebTransportClient(config=client_config) as client,
    ):
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(3):
                flood.sendto(spoofed_initial(), server.local_address[:2])
            session = await client.connect(url=url(server))  # a real handshake finishes in time
        finally:
            flood.close()
        half_open = [conn for conn in server.connections if not conn.handshake_done.done()]
        assert len(half_open) == 3
        await asyncio.gather(*(conn.wait_closed() for conn in half_open))
        assert server.stats["handshakes_timed_out"] == 3
        assert server.stats["connections_active"] == 1
        await echo_ok(session)


async def test_a_silent_client_gets_no_more_than_three_times_what_it_sent(
    cert: CertBundle, quic_engine: str
) -> None:
    """RFC 9000 section 8.1: before its address is validated, a client may be sent at most three
    times the bytes it sent. A handshake that times out is dropped without a CONNECTION_CLOSE,
    which would go over that budget once the retransmissions have spent it."""
    async with (
        serving(build_app(cert, handshake_timeout=1.0, retry="never")) as server,
        asyncio.timeout(T),
    ):
        target = server.local_address[:2]
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.setblocking(False)
        try:
            silent.connect(target)
            configuration = QuicConfiguration(is_client=True, alpn_protocols=["h3"])
            configuration.verify_mode = ssl.CERT_NONE
            quic = QuicConnection(configuration=configuration)
            quic.connect(target, now=time.monotonic())
            sent = 0
            for data, _ in quic.datagrams_to_send(now=time.monotonic()):
                silent.send(data)
                sent += len(data)
            # The server's first answer: the connection exists from now on.
            received = len(await asyncio.get_running_loop().sock_recv(silent, 65535))
            (half_open,) = [c for c in server.connections if not c.handshake_done.done()]
            await half_open.wait_closed()  # the handshake expired (and said whatever it says)
            assert server.stats["handshakes_timed_out"] == 1
            with contextlib.suppress(BlockingIOError):
                while True:
                    received += len(silent.recv(65535))
        finally:
            silent.close()
        assert received <= 3 * sent
