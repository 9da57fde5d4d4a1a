"""Messenger: routing channels by name, the accept queue and its bounds, closing."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import ClientConfig, WebTransportSession
from pywebtransport.exceptions import ConfigurationError, SessionError
from pywebtransport.messaging import Channel, ChannelRefused, ErrorCode, Messenger
from tests.certs import CertBundle
from tests.conftest import T
from tests.messaging.test_channel import pair


async def test_accept_by_name_leaves_other_names_queued(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async def handler(session: WebTransportSession) -> None:
        async with Messenger(session) as messenger:

            async def open_and_send(name: str) -> None:
                channel = await messenger.open_channel(name, timeout=T)  # waits for the accept
                await channel.send(name.upper())

            await asyncio.gather(*(open_and_send(name) for name in ("a", "b", "c")))
            await session.wait_closed()

    async with (
        asyncio.timeout(4 * T),
        pair(cert, client_config, handler) as session,
        Messenger(session) as messenger,
    ):
        c = await messenger.accept_channel("c", timeout=T)
        assert await c.receive(timeout=T) == "C"
        rest = []
        async for channel in messenger.channels():
            rest.append((channel.name, await channel.receive(timeout=T)))
            if len(rest) == 2:
                break
        assert rest == [("a", "A"), ("b", "B")]
        assert messenger.stats["channels_accepted"] == 3
        assert len(messenger.open_channels) == 3


async def test_routes_and_the_allow_list(cert: CertBundle, client_config: ClientConfig) -> None:
    queued: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        messenger = Messenger(session, channels=["queued"])

        @messenger.route("routed")
        async def routed(channel: Channel) -> None:
            await channel.send("from route")

        async def take() -> None:
            channel = await messenger.accept_channel(timeout=T)
            queued.set_result(channel.name)

        task = asyncio.create_task(take())
        await messenger.serve()
        await task

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        messenger = Messenger(session)
        routed = await messenger.open_channel("routed", timeout=T)
        assert await routed.receive(timeout=T) == "from route"
        await messenger.open_channel("queued", timeout=T)
        assert await queued == "queued"
        with pytest.raises(ChannelRefused) as caught:
            await messenger.open_channel("other", timeout=T)
        assert caught.value.error_code == ErrorCode.CHANNEL_UNKNOWN


async def test_pending_channels_are_bounded(cert: CertBundle, client_config: ClientConfig) -> None:
    server_messenger: asyncio.Future[Messenger] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        async with Messenger(session, max_pending=2) as messenger:
            server_messenger.set_result(messenger)
            await session.wait_closed()

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        messenger = Messenger(session)
        opens = [
            asyncio.create_task(messenger.open_channel(f"n{i}", timeout=2 * T)) for i in range(3)
        ]
        done, _ = await asyncio.wait(opens, return_when=asyncio.FIRST_COMPLETED)
        (refused,) = done  # two wait in the queue, the third is refused at once
        with pytest.raises(ChannelRefused) as caught:
            await refused
        assert caught.value.error_code == ErrorCode.CHANNEL_REFUSED
        server = await server_messenger
        assert server.stats["refused_busy"] == 1
        # Closing the server's messenger refuses what still waits.
        await server.close()
        for task in opens:
            if task is not refused:
                with pytest.raises(ChannelRefused):
                    await task
        with pytest.raises(SessionError):
            await server.accept_channel(timeout=T)


async def test_datagram_messages_both_ways(cert: CertBundle, client_config: ClientConfig) -> None:
    async def handler(session: WebTransportSession) -> None:
        messenger = Messenger(session)
        async for message in messenger.datagrams:
            await messenger.datagrams.send({"echo": message}, codec="msgpack")

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        datagrams = Messenger(session).datagrams
        assert 1000 < datagrams.max_message_size < 1500
        answers = set()
        for i in range(20):  # loopback rarely drops; a lost one is retried
            while True:
                await datagrams.send({"n": i})
                try:
                    answers.add((await datagrams.receive(timeout=1.0))["echo"]["n"])
                    break
                except TimeoutError:
                    continue
        assert answers == set(range(20))
        assert datagrams.stats["received"] >= 20 and datagrams.stats["dropped_invalid"] == 0


async def test_datagram_message_too_large(cert: CertBundle, client_config: ClientConfig) -> None:
    from pywebtransport.messaging import MessageTooLarge

    async def handler(session: WebTransportSession) -> None:
        await session.wait_closed()

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        datagrams = Messenger(session).datagrams
        limit = datagrams.max_message_size
        with pytest.raises(MessageTooLarge):
            await datagrams.send(b"x" * (limit + 1), codec="bytes")
        await datagrams.send(b"x" * limit, codec="bytes")
        assert datagrams.stats["sent"] == 1


def test_bad_settings_are_refused() -> None:
    session = object()
    with pytest.raises(ConfigurationError):
        Messenger(session, max_message_size=-1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Messenger(session, max_pending=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Messenger(session, codecs=["yaml"])  # type: ignore[arg-type]
