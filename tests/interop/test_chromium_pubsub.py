"""Topics of ``messaging.js`` in headless Chromium, in one hub with two Python members.

The page (``pages/pubsub.html``) joins the hub's room beside two :class:`TopicClient` members,
receives what the server and a member publish, publishes itself, asks for presence, is refused
where the ``authorize`` hook says no, receives datagram messages, and leaves. It hands over to the
test with POSTs whose callbacks below do the Python side's part before they answer.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.messaging import Messenger
from pywebtransport.pubsub import Hub, TopicClient, TopicMessage
from pywebtransport.server.certificate import generate_self_signed_certificate
from pywebtransport.web import messaging_module
from tests.interop.chromium import load_page, run_page

pytestmark = [pytest.mark.interop]

PAGE_TIMEOUT = 60.0
SCENARIO_TIMEOUT = 90.0
WAIT = 10.0
COUNT = 20
"""Messages the server publishes, and then as many a Python member publishes."""
PAGE_COUNT = 5
TICKS = 50
"""Datagram messages published at most until the page has seen one."""
TICK_WAIT = 0.2
"""Seconds to wait for the page's word after each datagram message."""


def authorize(session: WebTransportSession, action: str, topic: str) -> bool:
    """Members may join and ask for presence anywhere, and publish in "room" only."""
    return action != "publish" or topic == "room"


def published(source: str, count: int) -> list[TopicMessage]:
    return [TopicMessage("room", {"from": source, "n": n}) for n in range(count)]


async def test_chromium_topics_with_python_members(tmp_path: Path) -> None:
    bundle = generate_self_signed_certificate()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=str(certfile), keyfile=str(keyfile))
    config = ServerConfig(certfile=str(certfile), keyfile=str(keyfile), port=0)
    client_config = ClientConfig(server_certificate_hashes=[bundle.sha256])
    seen: dict[str, Any] = {"ticks": 0}
    tick_seen = asyncio.Event()

    async with asyncio.timeout(SCENARIO_TIMEOUT), Hub(authorize=authorize) as hub:
        app = ServerApp(config=config)

        @app.route("/pubsub")
        async def handler(session: WebTransportSession) -> None:
            messenger = Messenger(session)
            hub.attach(messenger)
            await messenger.serve()

        server = WebTransportServer(config=config, app=app)
        await server.listen(host="127.0.0.1", port=0)
        url = f"https://127.0.0.1:{server.local_address[1]}/pubsub"
        try:
            async with AsyncExitStack() as stack:
                members: list[TopicClient] = []
                for name in ("py-a", "py-b"):
                    client = await stack.enter_async_context(
                        WebTransportClient(config=client_config)
                    )
                    session = await client.connect(url=url)
                    member = await TopicClient.open(Messenger(session), timeout=WAIT)
                    stack.push_async_callback(member.close)
                    await member.join("room", info={"name": name}, timeout=WAIT)
                    members.append(member)

                async def joined(_: Any) -> None:
                    for n in range(COUNT):
                        await hub.publish("room", {"from": "server", "n": n})
                    for n in range(COUNT):
                        await members[0].publish("room", {"from": "py-a", "n": n}, timeout=WAIT)

                async def ticks(_: Any) -> None:
                    for n in range(TICKS):
                        await hub.publish("ticks", {"tick": n})
                        seen["ticks"] += 1
                        try:
                            async with asyncio.timeout(TICK_WAIT):
                                await tick_seen.wait()
                        except TimeoutError:
                            continue
                        return

                async def saw_tick(_: Any) -> None:
                    tick_seen.set()

                async def closed(_: Any) -> None:
                    # The page closed its Topics: the hub removes it once it sees the channel end.
                    async with asyncio.timeout(WAIT):
                        while len(entries := await members[1].presence("room", timeout=WAIT)) != 2:
                            pass
                    seen["presence"] = entries
                    seen["members"] = hub.stats["members"]

                report = await run_page(
                    load_page("pubsub.html"),
                    {
                        "url": url,
                        "hash": bundle.sha256.hex(),
                        "count": COUNT,
                        "pageCount": PAGE_COUNT,
                    },
                    timeout=PAGE_TIMEOUT,
                    log_path=tmp_path / "chromium-pubsub.log",
                    posts={
                        "/joined": joined,
                        "/ticks": ticks,
                        "/tick-seen": saw_tick,
                        "/closed": closed,
                    },
                    gets={"/pywebtransport/messaging.js": (messaging_module(), "text/javascript")},
                )
                assert report["ok"], json.dumps(report, indent=1)
                result = report["result"]

                # Both Python members got everything published in the room, the page's five last,
                # in order (their own publishes included: the hub does not skip the publisher).
                expected = [
                    *published("server", COUNT),
                    *published("py-a", COUNT),
                    *published("page", PAGE_COUNT),
                ]
                for member in members:
                    got = [await member.receive(timeout=WAIT) for _ in expected]
                    assert got == expected
                    assert member.stats["dropped"] == 0 and member.stats["ignored"] == 0
        finally:
            await server.close(grace=0)

    # The page received the server's messages, then the Python member's, in order.
    received = [TopicMessage(m["topic"], m["data"]) for m in result["received"]]
    assert received == [*published("server", COUNT), *published("py-a", COUNT)]

    # Presence as the page saw it: three members, the page with its info.
    presence = result["presence"]
    assert len(presence) == 3 and len({entry["id"] for entry in presence}) == 3
    assert sorted(entry["info"]["name"] for entry in presence) == ["page", "py-a", "py-b"]

    # The hook refused a publish on another topic.
    forbidden = result["forbidden"]
    assert forbidden["isForbidden"] and forbidden["isRpcError"], forbidden
    assert forbidden["name"] == "ForbiddenError" and forbidden["code"] == -32010

    # A datagram-mode topic: a tick came as a datagram message (meanwhile only room echoes).
    assert result["tick"]["topic"] == "ticks" and 0 <= result["tick"]["data"]["tick"] < TICKS
    assert 1 <= seen["ticks"] <= TICKS
    assert all(m["topic"] == "room" and m["data"]["from"] == "page" for m in result["skipped"])
    stats = result["stats"]
    assert stats["received"] >= 2 * COUNT + 1
    assert stats["dropped"] == 0 and stats["missed"] == 0 and stats["ignored"] == 0
    assert result["notices"] == []

    # Closing Topics took the page out of the room while its session stayed open.
    assert result["afterClose"]["isClosed"], result["afterClose"]
    assert sorted(entry["info"]["name"] for entry in seen["presence"]) == ["py-a", "py-b"]
    assert seen["members"] == 2
