"""Stream helpers the layers above build on: peek and bytes_written; datagrams as an iterator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pywebtransport import ClientConfig, WebTransportClient, WebTransportServer
from pywebtransport.protocol.codec import encode_varint
from pywebtransport.protocol.wire import CapsuleType
from tests.certs import CertBundle
from tests.conftest import T, build_app, serving, url


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


async def test_a_writer_out_of_session_credit_sends_data_blocked(
    cert: CertBundle, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server grants 1,000 bytes of session credit and never reads: the writer waits, and
    # the server learns why (WT_DATA_BLOCKED at the limit), once.
    async with (
        serving(build_app(cert, initial_max_data=1000)) as server,
        asyncio.timeout(2 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server, "/sink"))
        (conn,) = server.connections
        received: list[tuple[int, bytes]] = []
        arrived = asyncio.Event()
        on_capsule = conn.protocol._on_capsule

        def spy(state: Any, ctype: int, value: bytes) -> None:
            received.append((ctype, value))
            arrived.set()
            on_capsule(state, ctype, value)

        monkeypatch.setattr(conn.protocol, "_on_capsule", spy)
        stream = await session.create_bidirectional_stream()
        writer = asyncio.create_task(stream.write(b"x" * 3000))
        await arrived.wait()
        assert not writer.done() and stream.bytes_written == 1000
        writer.cancel()
        assert received == [(CapsuleType.WT_DATA_BLOCKED, encode_varint(1000))]


async def test_text_given_where_bytes_go_says_to_encode_it(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(4 * T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url(server, "/echo"))
        stream = await session.create_bidirectional_stream()
        with pytest.raises(TypeError, match=r"write\(\) takes bytes, not str: encode"):
            await stream.write("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"write\(\) takes bytes, not str"):
            await stream.write_all("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"send\(\) takes bytes, not str: encode"):
            await session.datagrams.send("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"takes bytes .*not int"):
            await stream.write(3)  # type: ignore[arg-type]
        assert stream.bytes_written == 0 and session.datagrams.stats["sent"] == 0
        await stream.write_all(bytearray(b"still") + memoryview(b" usable"))
        assert await stream.read_all() == b"still usable"
