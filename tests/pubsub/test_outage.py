"""Redis killed and restarted under a stream of messages: reported, never silent, then resumed."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import ClientConfig
from pywebtransport.events import Event
from pywebtransport.pubsub import BrokerUnavailable, Hub
from pywebtransport.pubsub.redis import RedisBackend
from tests.certs import CertBundle
from tests.conftest import T
from tests.pubsub.test_hub import member, room
from tests.redis_server import RedisServer


async def test_broker_killed_and_restarted_mid_stream(
    cert: CertBundle, client_config: ClientConfig, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    events: dict[str, list[Event]] = {"lost": [], "restored": [], "missed": []}
    try:
        async with (
            asyncio.timeout(20 * T),
            Hub(RedisBackend(redis.url, reconnect_max=0.5)) as publisher,
            room(cert, lambda: RedisBackend(redis.url, reconnect_max=0.5)) as r,
            member(client_config, r.url) as subscriber,
        ):
            r.hub.on("broker_lost", events["lost"].append)
            r.hub.on("broker_restored", events["restored"].append)
            r.hub.on("messages_missed", events["missed"].append)
            await subscriber.join("prices", timeout=T)
            await subscriber.join("other", timeout=T)
            accepted: list[int] = []
            refused: list[int] = []
            received: list[int] = []
            progress = asyncio.Event()
            stop = asyncio.Event()

            async def publish_forever() -> None:
                i = 0
                while not stop.is_set():
                    try:
                        await publisher.publish("prices", {"i": i})
                    except BrokerUnavailable:
                        refused.append(i)
                        await publisher.wait_for("broker_restored", timeout=4 * T)
                    else:
                        accepted.append(i)
                    i += 1
                    await asyncio.sleep(0.002)  # a steady feed, not synchronisation

            async def read_forever() -> None:
                async for message in subscriber:
                    received.append(message.data["i"])
                    progress.set()

            async def until(condition: Any) -> None:
                while not condition():
                    progress.clear()
                    await progress.wait()

            tasks = [asyncio.create_task(publish_forever()), asyncio.create_task(read_forever())]
            await until(lambda: len(received) >= 50)
            redis.kill()
            lost = await publisher.wait_for("broker_lost", timeout=T)
            assert lost.data["reason"]
            with pytest.raises(BrokerUnavailable):
                await publisher.publish("other", "while away")
            redis.start()  # empty: no subscriptions, no presence
            restored = await publisher.wait_for("broker_restored", timeout=4 * T)
            assert restored.data["publish_failed"] >= 1
            assert "other" in restored.data["topics"]
            mark = len(received)
            await until(lambda: len(received) >= mark + 50)  # delivery resumed
            stop.set()
            await tasks[0]
            tasks[1].cancel()
            await asyncio.gather(tasks[1], return_exceptions=True)

            assert len(events["lost"]) == 1 and len(events["restored"]) == 1
            assert all(a < b for a, b in itertools.pairwise(received))  # in order, once each
            assert set(received) <= set(accepted)
            # Nothing lost silently: a message the broker accepted but the subscriber never got
            # is counted as missed by its hub; and only messages that may have been lost are.
            not_received = len(set(accepted) - set(received))
            missed = r.hub.stats["missed"]
            assert not_received <= missed <= not_received + len(refused)
            assert subscriber.stats["missed"] == missed
            assert sum(e.data["count"] for e in events["missed"]) == missed
            assert publisher.stats["publish_failed"] == len(refused) + 1
            # Presence was written back after the restart.
            assert len(await r.hub.presence("prices")) == 1
    finally:
        redis.stop()
