"""The hub with real sessions, every case under the in-process and the Redis backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import pywebtransport.pubsub.hub as hub_module
from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.messaging import Messenger
from pywebtransport.pubsub import (
    SLOW_CONSUMER,
    Forbidden,
    Hub,
    PubSubError,
    TopicClient,
    TopicMessage,
)
from tests.certs import CertBundle
from tests.conftest import CREDIT_FOLLOWS_READING, T, serving, url
from tests.pubsub.conftest import BackendFactory


@dataclass
class Room:
    hub: Hub
    server: WebTransportServer
    joined: asyncio.Queue[WebTransportSession]

    @property
    def url(self) -> str:
        return url(self.server, "/room")


@asynccontextmanager
async def room(cert: CertBundle, factory: BackendFactory, **options: Any) -> AsyncIterator[Room]:
    """A server whose ``/room`` route attaches every session to one hub."""
    joined: asyncio.Queue[WebTransportSession] = asyncio.Queue()
    async with Hub(factory(), **options) as hub:
        app = ServerApp(config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile)))

        @app.route("/room")
        async def handler(session: WebTransportSession) -> None:
            messenger = Messenger(session)
            hub.attach(messenger)
            joined.put_nowait(session)
            await messenger.serve()

        async with serving(app) as server:
            yield Room(hub, server, joined)


@asynccontextmanager
async def member(
    client_config: ClientConfig, target: str, **options: Any
) -> AsyncIterator[TopicClient]:
    async with WebTransportClient(config=client_config) as client:
        session = await client.connect(url=target)
        topics = await TopicClient.open(Messenger(session), timeout=T, **options)
        try:
            yield topics
        finally:
            await topics.close()


async def take(topics: TopicClient, count: int) -> list[TopicMessage]:
    return [await topics.receive(timeout=T) for _ in range(count)]


async def test_published_messages_reach_every_member_in_order(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    async with asyncio.timeout(6 * T), room(cert, backend_factory) as r, AsyncExitStack() as stack:
        a = await stack.enter_async_context(member(client_config, r.url))
        b = await stack.enter_async_context(member(client_config, r.url))
        outsider = await stack.enter_async_context(member(client_config, r.url))
        await a.join("news", info={"name": "a"}, timeout=T)
        await b.join("news", info={"name": "b"}, timeout=T)
        await outsider.join("other", timeout=T)
        sent = [{"n": i, "text": "x" * 80} for i in range(300)]
        for message in sent:
            await r.hub.publish("news", message)
        for topics in (a, b):
            assert await take(topics, len(sent)) == [TopicMessage("news", m) for m in sent]
        await r.hub.publish("other", "only for the outsider")
        assert await outsider.receive(timeout=T) == TopicMessage("other", "only for the outsider")
        assert outsider.stats["received"] == 1
        names = [entry["info"]["name"] for entry in await a.presence("news", timeout=T)]
        assert sorted(names) == ["a", "b"]
        assert r.hub.stats["published"] == len(sent) + 1
        assert r.hub.stats["dropped"] == 0


async def test_two_servers_share_topics_and_presence(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    """Two hubs on one broker: the several-processes (and several-machines) case."""
    async with (
        asyncio.timeout(6 * T),
        room(cert, backend_factory) as first,
        room(cert, backend_factory) as second,
        member(client_config, first.url) as a,
        member(client_config, second.url) as b,
    ):
        assert first.server.local_address[1] != second.server.local_address[1]
        await a.join("lobby", info="a", timeout=T)
        await b.join("lobby", info="b", timeout=T)

        async def publish(hub: Hub, tag: str) -> None:
            for i in range(100):
                await hub.publish("lobby", [tag, i])

        await asyncio.gather(publish(first.hub, "first"), publish(second.hub, "second"))
        for topics in (a, b):
            received = [message.data for message in await take(topics, 200)]
            for tag in ("first", "second"):  # in order per publisher
                assert [i for t, i in received if t == tag] == list(range(100))
        presence = await b.presence("lobby", timeout=T)
        assert sorted(entry["info"] for entry in presence) == ["a", "b"]
        assert {entry["id"].split("/")[0] for entry in presence} == {
            first.hub.node_id,
            second.hub.node_id,
        }


async def test_members_publish_only_where_allowed(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    asked: list[tuple[str, str]] = []

    async def authorize(session: WebTransportSession, action: str, topic: str) -> bool:
        asked.append((action, topic))
        return not topic.startswith("secret") and (action != "publish" or topic == "chat")

    async with (
        asyncio.timeout(6 * T),
        room(cert, backend_factory, authorize=authorize) as r,
        member(client_config, r.url) as a,
        member(client_config, r.url) as b,
    ):
        await a.join("chat", timeout=T)
        await b.join("chat", timeout=T)
        with pytest.raises(Forbidden):
            await a.join("secret-plans", timeout=T)
        with pytest.raises(Forbidden):
            await a.publish("news", "not here", timeout=T)
        for i in range(20):
            await a.publish("chat", {"from": "a", "i": i}, timeout=T)
        for topics in (a, b):  # the publisher is a member too: it hears itself
            received = await take(topics, 20)
            assert [m.data["i"] for m in received] == list(range(20))
        assert ("join", "secret-plans") in asked and ("publish", "news") in asked
        assert r.hub.stats["denied"] == 2
        assert "secret-plans" not in r.hub.topics_of(await r.joined.get())


async def test_without_a_hook_members_cannot_publish(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    async with (
        asyncio.timeout(4 * T),
        room(cert, backend_factory) as r,
        member(client_config, r.url) as a,
    ):
        await a.join("chat", timeout=T)
        with pytest.raises(Forbidden):
            await a.publish("chat", "hello", timeout=T)


async def test_leaving_and_ending_the_session(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    async with (
        asyncio.timeout(6 * T),
        room(cert, backend_factory) as r,
        member(client_config, r.url) as stays,
    ):
        await stays.join("t", info="stays", timeout=T)
        async with member(client_config, r.url) as goes:
            await goes.join("t", info="goes", timeout=T)
            await goes.join("u", timeout=T)
            await goes.leave("u", timeout=T)
            assert [e["info"] for e in await r.hub.presence("u")] == []
            assert sorted(e["info"] for e in await r.hub.presence("t")) == ["goes", "stays"]
            await r.hub.publish("u", "nobody hears this")
            await r.hub.publish("t", 1)
            assert await goes.receive(timeout=T) == TopicMessage("t", 1)
        # The session ended: it left every topic, here and in the broker's presence.
        async with asyncio.timeout(T):
            while [e["info"] for e in await r.hub.presence("t")] != ["stays"]:
                await r.hub.wait_for("member_left")
        assert r.hub.stats["members"] == 1
        await r.hub.publish("t", 2)
        assert await take(stays, 2) == [TopicMessage("t", 1), TopicMessage("t", 2)]


async def test_server_side_join_and_datagram_mode(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    async with (
        asyncio.timeout(6 * T),
        room(cert, backend_factory) as r,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=r.url)
        server_session = await r.joined.get()
        # Joined by server code before the member's channel exists: queued for it.
        await r.hub.join(server_session, "welcome", info={"by": "server"})
        await r.hub.publish("welcome", "hello")
        messenger = Messenger(session)
        topics = await TopicClient.open(messenger, timeout=T)
        assert await topics.receive(timeout=T) == TopicMessage("welcome", "hello")
        await topics.join("ticks", mode="datagram", timeout=T)
        assert r.hub.topics_of(server_session) == {"welcome": "reliable", "ticks": "datagram"}
        tick = 0
        while True:  # datagrams may be lost: publish until one arrives (bounded above)
            tick += 1
            await r.hub.publish("ticks", {"tick": tick})
            try:
                got = await topics.receive(timeout=0.2)
            except TimeoutError:
                continue
            assert got.topic == "ticks" and got.data["tick"] <= tick
            break
        await topics.close()


@pytest.mark.aioquic_only(CREDIT_FOLLOWS_READING)
async def test_a_member_that_never_reads_loses_the_oldest_and_holds_no_one_up(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    async with (
        asyncio.timeout(10 * T),
        room(cert, backend_factory, queue_size=8) as r,
        member(client_config, r.url) as reader,
        member(client_config, r.url, queue_size=2) as sleeper,
    ):
        await reader.join("feed", timeout=T)
        await sleeper.join("feed", timeout=T)
        count, blob = 400, "z" * 20_000  # 8 MB: well past the flow-control windows
        received: list[int] = []
        progress = asyncio.Event()

        async def read_all() -> None:
            while len(received) < count:
                received.append((await reader.receive(timeout=T)).data["n"])
                progress.set()

        consumer = asyncio.create_task(read_all())
        for n in range(count):
            # Paced by the reader (at most 4 ahead of it), never by the sleeper.
            while len(received) < n - 4:
                progress.clear()
                await progress.wait()
            await r.hub.publish("feed", {"n": n, "blob": blob})
        await consumer
        assert received == list(range(count))
        sleeper_session = r.hub.local_members("feed")[1]
        stats = r.hub.member_stats(sleeper_session)
        assert stats["queued"] <= 8
        assert stats["dropped"] > 0
        assert r.hub.stats["dropped"] == stats["dropped"]
        # When the sleeper reads at last, it learns how many it lost, and the newest arrived.
        last = -1
        while last != count - 1:
            last = (await sleeper.receive(timeout=T)).data["n"]
        assert sleeper.stats["dropped"] == stats["dropped"]
        assert sleeper.stats["received"] + stats["dropped"] == count


@pytest.mark.aioquic_only(CREDIT_FOLLOWS_READING)
async def test_disconnect_policy_closes_a_slow_session(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    async with (
        asyncio.timeout(10 * T),
        room(cert, backend_factory, queue_size=4, overflow="disconnect") as r,
        member(client_config, r.url) as reader,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=r.url)
        sleeper = await TopicClient.open(Messenger(session), timeout=T, queue_size=1)
        await sleeper.join("feed", timeout=T)
        await reader.join("feed", timeout=T)
        count, blob = 300, "z" * 20_000
        received: list[int] = []
        for n in range(count):  # paced by the reader, which keeps up
            await r.hub.publish("feed", {"n": n, "blob": blob})
            received.append((await reader.receive(timeout=T)).data["n"])
        assert received == list(range(count))
        await session.wait_closed()
        assert session.close_code == SLOW_CONSUMER
        assert r.hub.stats["disconnected"] == 1


async def test_hub_api_errors(cert: CertBundle, backend_factory: BackendFactory) -> None:
    hub = Hub(backend_factory())
    with pytest.raises(PubSubError):
        await hub.publish("t", 1)  # not started
    async with hub:
        with pytest.raises(PubSubError):
            await hub.publish("", 1)
        with pytest.raises(PubSubError):
            await hub.publish("x" * 300, 1)
        await hub.publish("nobody-listens", 1)
        assert hub.stats["published"] == 1


async def test_an_overloaded_hub_drops_the_oldest_envelopes_and_counts_them() -> None:
    async with Hub() as hub:
        extra = 100
        for _ in range(hub_module._MAX_INBOX + extra):  # faster than any dispatcher
            hub.deliver("t", b"{}")
        assert hub.stats["overloaded"] == extra


async def test_members_joining_a_new_topic_together_all_hear_its_first_message(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    async with asyncio.timeout(6 * T), room(cert, backend_factory) as r, AsyncExitStack() as stack:
        members = [await stack.enter_async_context(member(client_config, r.url)) for _ in range(4)]
        for round_ in range(3):
            topic = f"fresh-{round_}"

            async def join_then_publish(index: int, topics: TopicClient, topic: str) -> None:
                await topics.join(topic, timeout=T)  # the topic is subscribed once this returns
                await r.hub.publish(topic, index)

            await asyncio.gather(*(join_then_publish(i, m, topic) for i, m in enumerate(members)))
            for index, topics in enumerate(members):  # each hears what followed its own join
                while await topics.receive(timeout=T) != TopicMessage(topic, index):
                    pass


async def test_a_session_may_open_its_channel_again(
    cert: CertBundle, client_config: ClientConfig, backend_factory: BackendFactory
) -> None:
    async with (
        asyncio.timeout(6 * T),
        room(cert, backend_factory) as r,
        WebTransportClient(config=client_config) as client,
    ):
        messenger = Messenger(await client.connect(url=r.url))
        first = await TopicClient.open(messenger, timeout=T)
        await first.join("t", info="first", timeout=T)
        await first.close()
        async with asyncio.timeout(T):
            while await r.hub.presence("t"):
                await r.hub.wait_for("member_left")
        second = await TopicClient.open(messenger, timeout=T)
        await second.join("t", info="second", timeout=T)
        await r.hub.publish("t", "again")
        assert await second.receive(timeout=T) == TopicMessage("t", "again")
        assert [entry["info"] for entry in await r.hub.presence("t")] == ["second"]
        await second.close()
