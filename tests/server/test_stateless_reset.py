"""Stateless resets: a server that does not know a connection tells its peer so at once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import ClientConfig, StreamError, WebTransportClient
from pywebtransport.protocol.packets import stateless_reset_token
from tests.certs import CertBundle, load_cert
from tests.conftest import T, build_app, serving
from tests.faults import start_child, stop_child

KEY = b"0123456789abcdef0123456789abcdef"


def short_header_packet(cid: bytes, size: int) -> bytes:
    """What a 1-RTT packet looks like from outside: 0b01xxxxxx, the DCID, then ciphertext."""
    return bytes([0x41]) + cid + os.urandom(size - 1 - len(cid))


async def test_unknown_connection_gets_a_stateless_reset(cert: CertBundle) -> None:
    async with serving(build_app(cert, stateless_reset_key=KEY)) as server:
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[bytes] = asyncio.Queue()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Collector(replies), remote_addr=server.local_address[:2]
        )
        try:
            tiny, cid = os.urandom(8), os.urandom(8)
            transport.sendto(short_header_packet(tiny, 21))  # a 20-byte reset cannot exist
            transport.sendto(short_header_packet(cid, 1200))
            async with asyncio.timeout(T):
                reply = await replies.get()
            # One byte shorter than what caused it, at most 43 bytes; it ends with the token.
            assert len(reply) == 43 and reply[0] & 0xC0 == 0x40
            assert reply[-16:] == stateless_reset_token(KEY, cid)
            assert replies.empty() and server.stats["stateless_resets_sent"] == 1
        finally:
            transport.close()


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


async def test_resets_are_rate_limited(cert: CertBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(build_app(cert)) as server:
        sent: list[bytes] = []
        assert server._transport is not None
        monkeypatch.setattr(server._transport, "sendto", lambda data, addr: sent.append(data))
        start = time.monotonic()
        for _ in range(1000):  # a flood of stray packets, handled back to back
            server._datagram_received(short_header_packet(os.urandom(8), 100), ("127.0.0.1", 9))
        elapsed = time.monotonic() - start
        assert 100 <= len(sent) <= 100 + elapsed * 100 + 1
        assert server.stats["stateless_resets_sent"] == len(sent)


async def test_a_restarted_server_ends_its_predecessors_connections(tmp_path: Path) -> None:
    """Same certificate key, same derived reset key: the client hears of the loss at once."""
    proc, line = await start_child("tests.server_process", str(tmp_path), "0", timeout=3 * T)
    port = line.split()[1].decode()
    cert = load_cert(tmp_path)
    config = ClientConfig(server_certificate_hashes=[cert.sha256], idle_timeout=30.0)
    try:
        async with asyncio.timeout(4 * T), WebTransportClient(config=config) as client:
            session = await client.connect(url=f"https://127.0.0.1:{port}/echo")
            stream = await session.create_bidirectional_stream()
            await stream.write(b"before")
            assert await stream.readexactly(6) == b"before"
            # The new server takes the port before the old one dies (SO_REUSEPORT): no ICMP
            # error can end the session, only the new server's stateless reset.
            new, _ = await start_child("tests.server_process", str(tmp_path), port, timeout=3 * T)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            proc = new
            lost_at = time.monotonic()
            await stream.write(b"after")  # reaches a server that never heard of the connection
            with pytest.raises(StreamError, match="stateless reset"):
                await stream.readexactly(5)
            took = time.monotonic() - lost_at
            assert took < 2.0, f"{took:.2f} s: the reset did not end it (idle timeout is 30 s)"
            assert session.is_closed
    finally:
        await stop_child(proc, T)
