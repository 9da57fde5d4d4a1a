"""Channels over a real loopback session: both directions, ordering, backpressure, closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportSession,
)
from pywebtransport.messaging import (
    Channel,
    ChannelClosed,
    ChannelRefused,
    EncodeError,
    ErrorCode,
    MessageTooLarge,
    Messenger,
)
from tests.certs import CertBundle
from tests.conftest import CREDIT_FOLLOWS_READING, T, serving, url

SessionHandler = Callable[[WebTransportSession], Awaitable[None]]


@asynccontextmanager
async def pair(
    cert: CertBundle, client_config: ClientConfig, handler: SessionHandler
) -> AsyncIterator[WebTransportSession]:
    """A server whose ``/m`` route runs ``handler``, and a client session to it."""
    app = ServerApp(config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile)))
    app.route("/m")(handler)
    async with serving(app) as server, WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/m"))
        yield session


async def echo_server(session: WebTransportSession) -> None:
    messenger = Messenger(session)

    @messenger.route("echo")
    async def echo(channel: Channel) -> None:
        async for message in channel:
            await channel.send(message)

    await messenger.serve()


async def test_json_messages_echo_in_order(cert: CertBundle, client_config: ClientConfig) -> None:
    async with asyncio.timeout(4 * T), pair(cert, client_config, echo_server) as session:
        messenger = Messenger(session)
        channel = await messenger.open_channel("echo", timeout=T)
        assert (channel.name, channel.codec) == ("echo", "json")
        sent = [{"n": i, "text": "é" * (i % 7), "list": [i, None, True]} for i in range(200)]
        for message in sent:
            await channel.send(message)
        assert [await channel.receive(timeout=T) for _ in sent] == sent
        assert channel.stats["messages_sent"] == channel.stats["messages_received"] == 200
        await channel.close()
        assert channel.is_closed


@pytest.mark.parametrize("codec", ["bytes", "msgpack"])
async def test_other_codecs(cert: CertBundle, client_config: ClientConfig, codec: str) -> None:
    async with asyncio.timeout(4 * T), pair(cert, client_config, echo_server) as session:
        channel = await Messenger(session).open_channel("echo", codec=codec, timeout=T)
        value: object = b"\x00\xffraw" if codec == "bytes" else {"k": [1, 2.5, b"bin", None]}
        await channel.send(value)
        await channel.send(b"" if codec == "bytes" else [])
        assert await channel.receive(timeout=T) == value
        assert await channel.receive(timeout=T) == (b"" if codec == "bytes" else [])


async def test_server_opens_a_channel_the_client_accepts(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async def handler(session: WebTransportSession) -> None:
        async with Messenger(session) as messenger:
            channel = await messenger.open_channel("news", timeout=T)
            await channel.send({"headline": "hello"})
            assert await channel.receive(timeout=T) == {"ack": True}
            await session.wait_closed()

    async with (
        asyncio.timeout(4 * T),
        pair(cert, client_config, handler) as session,
        Messenger(session) as messenger,
    ):
        channel = await messenger.accept_channel("news", timeout=T)
        assert await channel.receive(timeout=T) == {"headline": "hello"}
        await channel.send({"ack": True})
        assert channel.peer_max_message_size == 1 << 20


async def test_peer_close_ends_async_for(cert: CertBundle, client_config: ClientConfig) -> None:
    seen: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        async with Messenger(session) as messenger:
            channel = await messenger.accept_channel(timeout=T)
            seen.set_result([message async for message in channel])
            await session.wait_closed()

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        channel = await Messenger(session).open_channel("any-name", timeout=T)
        for i in range(3):
            await channel.send(i)
        await channel.close()
        assert await seen == [0, 1, 2]
        with pytest.raises(ChannelClosed):
            await channel.send(3)


async def test_abort_code_reaches_the_peer(cert: CertBundle, client_config: ClientConfig) -> None:
    async def handler(session: WebTransportSession) -> None:
        async with Messenger(session) as messenger:
            channel = await messenger.accept_channel(timeout=T)
            assert await channel.receive(timeout=T) == "go"
            await channel.abort(code=77)
            await session.wait_closed()

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        channel = await Messenger(session).open_channel("x", timeout=T)
        await channel.send("go")
        with pytest.raises(ChannelClosed) as caught:
            await channel.receive(timeout=T)
        assert caught.value.error_code == 77
        with pytest.raises(ChannelClosed):  # async for raises for a code other than 0
            async for _ in channel:
                pass


async def test_refusals_carry_their_code(cert: CertBundle, client_config: ClientConfig) -> None:
    async def handler(session: WebTransportSession) -> None:
        messenger = Messenger(session, codecs=["json"])

        @messenger.route("known")
        async def known(channel: Channel) -> None:
            await channel.send("hi")

        await messenger.serve()

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        messenger = Messenger(session)
        with pytest.raises(ChannelRefused) as unknown:
            await messenger.open_channel("unknown", timeout=T)
        assert unknown.value.error_code == ErrorCode.CHANNEL_UNKNOWN
        with pytest.raises(ChannelRefused) as codec:
            await messenger.open_channel("known", codec="bytes", timeout=T)
        assert codec.value.error_code == ErrorCode.CODEC_UNSUPPORTED
        channel = await messenger.open_channel("known", timeout=T)  # the session still works
        assert await channel.receive(timeout=T) == "hi"


async def test_too_large_is_refused_locally_and_the_channel_goes_on(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async def handler(session: WebTransportSession) -> None:
        messenger = Messenger(session, max_message_size=1000)

        @messenger.route("echo")
        async def echo(channel: Channel) -> None:
            async for message in channel:
                await channel.send(message)

        await messenger.serve()

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        channel = await Messenger(session).open_channel("echo", timeout=T)
        assert channel.peer_max_message_size == 1000  # from the accept frame
        with pytest.raises(MessageTooLarge):
            await channel.send("x" * 1000)  # 1002 bytes of JSON
        with pytest.raises(EncodeError):
            await channel.send({1, 2})
        await channel.send("x" * 998)  # exactly 1000 bytes
        assert await channel.receive(timeout=T) == "x" * 998


@pytest.mark.aioquic_only(CREDIT_FOLLOWS_READING)
async def test_slow_reader_bounds_the_writer(cert: CertBundle, client_config: ClientConfig) -> None:
    """A reader that does not read leaves bytes in the stream; the writer's sends wait."""
    release = asyncio.Event()
    received: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        async with Messenger(session) as messenger:
            channel = await messenger.accept_channel(timeout=T)
            await release.wait()
            received.set_result(len([message async for message in channel]))
            await session.wait_closed()

    payload = "y" * 60_000  # 60 KB per message, 100 messages: 6 MB
    async with asyncio.timeout(8 * T), pair(cert, client_config, handler) as session:
        channel = await Messenger(session).open_channel("bulk", timeout=T)
        sent = 0

        async def writer() -> None:
            nonlocal sent
            for _ in range(100):
                await channel.send(payload)
                sent += 1
            await channel.close()

        task = asyncio.create_task(writer())
        # The peer's channel reads nothing: the writer stalls once the stream's receive window
        # (1 MiB) and our send buffer (1 MiB) are full. (A stall is shown by waiting.)
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert not done
        assert 0 < sent * len(payload) <= (2 << 20) + len(payload), sent
        release.set()
        await task
        assert await received == 100  # nothing lost once the reader reads


async def test_concurrent_senders_keep_messages_whole(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(6 * T), pair(cert, client_config, echo_server) as session:
        channel = await Messenger(session).open_channel("echo", codec="bytes", timeout=T)
        blobs = [bytes([i]) * (50_000 + i) for i in range(20)]
        await asyncio.gather(*(channel.send(blob) for blob in blobs))
        back = [await channel.receive(timeout=T) for _ in blobs]
        assert sorted(back) == sorted(blobs)


async def test_cancelled_send_never_cuts_a_message(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    """Sends cancelled while they wait for flow control leave the framing intact."""
    async with asyncio.timeout(8 * T), pair(cert, client_config, echo_server) as session:
        channel = await Messenger(session).open_channel("echo", codec="bytes", timeout=T)
        blob = b"z" * 400_000
        cancelled = 0
        for _ in range(10):
            try:
                async with asyncio.timeout(0.001):
                    await channel.send(blob)
            except TimeoutError:
                cancelled += 1
        await channel.send(b"last")
        got: list[bytes] = []
        while not got or got[-1] != b"last":
            got.append(await channel.receive(timeout=T))
        assert all(item == blob for item in got[:-1])
        assert len(got) - 1 + cancelled >= 10 and not channel.is_closed


async def test_plain_streams_pass_through_intact(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async def handler(session: WebTransportSession) -> None:
        async with Messenger(session) as messenger:
            async for stream in messenger.incoming_streams():
                data = await stream.read_all()
                reply = await session.create_unidirectional_stream()
                await reply.write_all(data[::-1])

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        stream = await session.create_bidirectional_stream()
        await stream.write_all(b"PW not a channel")
        uni = await session.create_unidirectional_stream()
        await uni.write_all(b"uni")
        answers = {
            await (await session.accept_unidirectional_stream(timeout=T)).read_all()
            for _ in range(2)
        }
        assert answers == {b"lennahc a ton WP", b"inu"}


async def test_session_end_ends_channels(cert: CertBundle, client_config: ClientConfig) -> None:
    async with asyncio.timeout(4 * T), pair(cert, client_config, echo_server) as session:
        channel = await Messenger(session).open_channel("echo", timeout=T)
        waiting = asyncio.create_task(channel.receive())
        await asyncio.sleep(0)
        await session.close()
        with pytest.raises(ChannelClosed):
            await waiting
        assert channel.is_closed
