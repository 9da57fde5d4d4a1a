"""Stream helpers the layers above build on: peek and bytes_written; datagrams as an iterator."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import ClientConfig, WebTransportClient, WebTransportServer
from tests.conftest import T, url


async def test_peek_does_not_consume(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(4 * T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/push"))
        stream = await session.accept_bidirectional_stream(timeout=T)  # "server-bidi" + FIN
        assert await stream.peek(6) == b"server"
        assert await stream.peek(3) == b"ser"
        assert await stream.peek(100) == b"server-bidi"  # the stream ended first: fewer bytes
        assert await stream.read_all() == b"server-bidi"
        assert await stream.peek(4) == b""
        await stream.write_all(b"done")
        assert stream.bytes_written == 4


async def test_peek_waits_for_bytes_split_across_packets(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(4 * T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/echo"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"ab")
        peeked = asyncio.create_task(stream.peek(4))
        await stream.write(b"cdef")
        assert await peeked == b"abcd"
        assert await stream.readexactly(6) == b"abcdef"
        assert stream.bytes_written == 6


async def test_datagrams_are_async_iterable(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(4 * T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/echo"))
        got = []
        await session.datagrams.send(b"0")
        async for data in session.datagrams:
            got.append(data)
            if len(got) == 3:
                break
            await session.datagrams.send(str(len(got)).encode())
        assert got == [b"0", b"1", b"2"]
        await session.datagrams.send(b"last")
        await session.close()
        rest = [data async for data in session.datagrams]  # ends when the session has ended
        assert rest in ([], [b"last"])


async def test_an_out_of_range_stop_code_leaves_the_stream_as_it_was(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(4 * T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/echo"))
        stream = await session.create_bidirectional_stream()
        with pytest.raises(ValueError):
            await stream.stop(code=1 << 32)
        await stream.write(b"still open", end_stream=True)
        assert await stream.read_all() == b"still open"  # the receiving side still reads
        await stream.wait_closed()


async def test_an_out_of_range_abort_code_leaves_the_stream_as_it_was(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(4 * T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/echo"))
        stream = await session.create_bidirectional_stream()
        with pytest.raises(ValueError):
            await stream.abort(code=-1)
        await stream.write(b"still open")
        await stream.close()  # a FIN goes out: the sending side was not half-aborted
        await stream.wait_closed()
        assert await stream.read_all() == b"still open"
