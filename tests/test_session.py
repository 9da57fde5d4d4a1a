"""Loopback tests of sessions, streams and datagrams between our client and our server."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import (
    ClientConfig,
    DatagramError,
    SessionError,
    StreamError,
    WebTransportClient,
    WebTransportServer,
)
from tests.conftest import T, url


async def test_bidirectional_echo_with_fin(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        assert session.is_ready and session.path == "/echo"
        stream = await session.create_bidirectional_stream()
        await stream.write(b"hello ")
        await stream.write(b"world", end_stream=True)
        assert await stream.read_all() == b"hello world"
        assert await stream.read(10) == b""


async def test_unidirectional_echo_comes_back_on_server_stream(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        out = await session.create_unidirectional_stream()
        await out.write_all(b"one way")
        back = await session.accept_unidirectional_stream()
        assert back.stream_id % 4 == 3  # server-initiated unidirectional
        assert await back.read_all() == b"one way"


async def test_server_opened_streams_reach_the_client(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/push"))
        bidi = await session.accept_bidirectional_stream()
        assert bidi.stream_id % 4 == 1  # server-initiated bidirectional
        assert await bidi.read_all() == b"server-bidi"
        await bidi.write_all(b"answer")
        uni = await session.accept_unidirectional_stream()
        assert await uni.read_all() == b"server-uni"
        assert await session.datagrams.receive() == b"got:answer"


async def test_datagrams_both_ways_and_size_limit(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        limit = session.datagrams.max_datagram_size
        assert 1100 <= limit < 1200
        await session.datagrams.send(b"x" * limit)
        assert await session.datagrams.receive() == b"x" * limit
        with pytest.raises(DatagramError):
            await session.datagrams.send(b"y" * (limit + 1))
        assert session.datagrams.stats["rejected_outgoing"] == 1
        # The refused datagram blocks nothing: the next one goes through.
        await session.datagrams.send_json({"n": 1})
        assert await session.datagrams.receive_json() == {"n": 1}


async def test_path_parameters(server: WebTransportServer, client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/items/42?x=1"))
        assert session.path == "/items/42?x=1"
        assert await session.datagrams.receive() == b"42"


async def test_server_close_reaches_client_with_code_and_reason(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/close"))
        await session.wait_closed()
        assert session.is_closed and not session.is_ready
        assert (session.close_code, session.close_reason) == (4321, "server bye")
        with pytest.raises(SessionError):
            await session.create_bidirectional_stream()


async def test_client_close_reaches_server_handler(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"ping")
        assert await stream.read(4) == b"ping"
        (conn,) = server.connections
        (server_session,) = conn.sessions
        await session.close(code=77, reason="client bye")
        await server_session.wait_closed()
        assert (server_session.close_code, server_session.close_reason) == (77, "client bye")
        await session.close()  # idempotent


async def test_reset_codes_both_ways(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"partial")
        assert await stream.read(7) == b"partial"
        await stream.abort(code=7)
        # The echo handler mirrors the peer's reset code back as its own reset.
        with pytest.raises(StreamError) as info:
            await stream.read_all()
        assert info.value.error_code == 7


async def test_stop_sending_reaches_writer(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/stop"))
        stream = await session.create_bidirectional_stream()
        with pytest.raises(StreamError) as info:
            while True:  # ends when the server's STOP_SENDING arrives (bounded by the timeout)
                await stream.write(b"data" * 1000)
                await asyncio.sleep(0)
        assert info.value.error_code == 9


async def test_writer_memory_is_bounded_when_peer_does_not_read(
    server: WebTransportServer, cert: object
) -> None:
    limit = 256 * 1024
    config = ClientConfig(
        server_certificate_hashes=[cert.sha256],  # type: ignore[attr-defined]
        stream_buffer_size=limit,
    )
    async with asyncio.timeout(4 * T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server, "/sink"))
        stream = await session.create_bidirectional_stream()
        engine = session._conn.protocol.engine
        peak = 0
        chunk = b"z" * 65536
        written = 0
        # Write 8 MiB; after each write, the unacknowledged bytes queued in QUIC stay bounded.
        for _ in range(128):
            await stream.write(chunk)
            written += len(chunk)
            peak = max(peak, engine.send_buffered(stream.stream_id))
        assert written == 8 * 1024 * 1024
        assert 0 < peak <= limit


async def test_two_sessions_in_parallel(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        first, second = await asyncio.gather(
            client.connect(url=url(server)), client.connect(url=url(server))
        )
        s1 = await first.create_bidirectional_stream()
        s2 = await second.create_bidirectional_stream()
        await s1.write_all(b"one")
        await s2.write_all(b"two")
        assert (await s1.read_all(), await s2.read_all()) == (b"one", b"two")
        await first.close()
        s3 = await second.create_bidirectional_stream()
        await s3.write_all(b"still")
        assert await s3.read_all() == b"still"


async def test_remote_address_is_the_clients_real_address(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        (conn,) = server.connections
        (server_session,) = conn.sessions
        host, port = server_session.remote_address[:2]
        assert host == "127.0.0.1"
        assert port != server.local_address[1]
        await session.close()
