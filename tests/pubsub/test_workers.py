"""One topic across worker processes and servers through a real Redis: ``serve --broker``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from pywebtransport import ClientConfig, WebTransportClient
from pywebtransport.messaging import Messenger
from pywebtransport.pubsub import TopicClient
from tests.conftest import T
from tests.redis_server import RedisServer
from tests.test_cli import Served, start_serve

TOPIC = "lobby"  # the demo room lets members publish here
MESSAGES = 30


@asynccontextmanager
async def serve(tmp_path: Path, *options: str) -> AsyncIterator[Served]:
    served = await start_serve(tmp_path, *options, timeout=6 * T)
    try:
        yield served
    finally:
        if served.process.returncode is None:
            served.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(4 * T):
                    await served.process.wait()
            except TimeoutError:
                served.process.kill()
                await served.process.wait()


async def join_members(
    stack: AsyncExitStack, served: list[Served], count: int, *, min_nodes: int
) -> list[TopicClient]:
    """``count`` members of the room (more while they all sit on fewer than ``min_nodes`` hubs)."""
    members: list[TopicClient] = []
    nodes: set[str] = set()
    index = 0
    while len(members) < count or len(nodes) < min_nodes:
        assert index < 8 * count, f"every member landed on the same worker: {nodes}"
        target = served[index % len(served)]
        index += 1
        config = ClientConfig(server_certificate_hashes=[bytes.fromhex(target.hash_hex)])
        client = await stack.enter_async_context(WebTransportClient(config=config))
        session = await client.connect(url=f"https://127.0.0.1:{target.udp_port}/room")
        topics = await stack.enter_async_context(
            await TopicClient.open(Messenger(session), timeout=T)
        )
        await topics.join(TOPIC, info={"member": index}, timeout=T)
        members.append(topics)
        presence = await topics.presence(TOPIC, timeout=T)
        nodes = {entry["id"].split("/")[0] for entry in presence}
    return members


async def check_fan_out(members: list[TopicClient], publishers: list[TopicClient]) -> None:
    """Every member receives every publisher's messages, in order per publisher."""

    async def publish(tag: int, publisher: TopicClient) -> None:
        for i in range(MESSAGES):
            await publisher.publish(TOPIC, {"from": tag, "i": i}, timeout=T)

    await asyncio.gather(*(publish(tag, p) for tag, p in enumerate(publishers)))
    for member in members:
        expected = len(publishers) * MESSAGES
        received = [(await member.receive(timeout=T)).data for _ in range(expected)]
        for tag in range(len(publishers)):
            assert [m["i"] for m in received if m["from"] == tag] == list(range(MESSAGES))


async def test_two_workers_share_a_topic(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        async with (
            asyncio.timeout(20 * T),
            serve(tmp_path, "--workers", "2", "--broker", redis.url) as served,
            AsyncExitStack() as stack,
        ):
            members = await join_members(stack, [served], 6, min_nodes=2)
            presence = await members[0].presence(TOPIC, timeout=T)
            assert len(presence) == len(members)
            assert len({entry["id"].split("/")[0] for entry in presence}) == 2
            await check_fan_out(members, members[:2])
    finally:
        redis.stop()


async def test_two_servers_on_different_ports_share_a_topic(tmp_path: Path) -> None:
    """The several-machines case: two separate servers, one Redis."""
    redis = RedisServer(tmp_path)
    redis.start()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    try:
        async with (
            asyncio.timeout(20 * T),
            serve(tmp_path / "a", "--broker", redis.url) as first,
            serve(tmp_path / "b", "--broker", redis.url) as second,
            AsyncExitStack() as stack,
        ):
            assert first.udp_port != second.udp_port
            members = await join_members(stack, [first, second], 4, min_nodes=2)
            await check_fan_out(members, [members[0], members[1]])
    finally:
        redis.stop()
