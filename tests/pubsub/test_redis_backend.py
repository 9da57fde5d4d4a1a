"""The Redis backend against a real ``redis-server``: order, presence, outages, set-up."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from pywebtransport.exceptions import ConfigurationError
from pywebtransport.pubsub.backend import backend_from_url
from pywebtransport.pubsub.errors import BrokerUnavailable
from pywebtransport.pubsub.redis import RedisBackend
from tests.conftest import T
from tests.redis_server import RedisServer, free_tcp_port


class Recorder:
    """A listener that keeps everything it is told; :meth:`until` waits for a condition."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, bytes]] = []
        self.lost: list[str] = []
        self.restored = 0
        self._changed = asyncio.Event()

    def deliver(self, topic: str, envelope: bytes) -> None:
        self.deliveries.append((topic, envelope))
        self._changed.set()

    def broker_lost(self, reason: str) -> None:
        self.lost.append(reason)
        self._changed.set()

    def broker_restored(self) -> None:
        self.restored += 1
        self._changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()


Start = Callable[..., Awaitable[tuple[RedisBackend, Recorder]]]


@pytest.fixture
async def start(redis_server: RedisServer) -> AsyncIterator[Start]:
    """Starts backends on ``redis_server`` (or ``url``); closes them all at the end."""
    backends: list[RedisBackend] = []

    async def start_backend(
        url: str | None = None, **options: Any
    ) -> tuple[RedisBackend, Recorder]:
        backend = RedisBackend(url or redis_server.url, **options)
        recorder = Recorder()
        await backend.start(recorder)
        backends.append(backend)
        return backend, recorder

    yield start_backend
    async with asyncio.timeout(T):
        for backend in backends:
            await backend.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A plain redis-py client on the same server, to look behind the backend's back."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


class DelayProxy:
    """A TCP proxy to the server that holds what clients send for ``delay`` seconds (latency)."""

    def __init__(self, port: int, delay: float) -> None:
        self.port = port
        self.delay = delay
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def __aenter__(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        for source, sink, delay in ((reader, up_writer, self.delay), (up_reader, writer, 0.0)):
            task = asyncio.create_task(self._pump(source, sink, delay))
            self._tasks.add(task)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await source.read(65536):
                await asyncio.sleep(delay)  # the simulated latency
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()


async def eventually(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    """Until ``probe()`` holds: for what only the server's clock decides (TTLs)."""
    for _ in range(200):
        if await probe():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"never: {what}")


# ------------------------------------------------------------------------------ delivery


@pytest.mark.parametrize("resp", [2, 3])
async def test_every_envelope_reaches_the_subscribers_in_order_and_only_them(
    start: Start, raw: Any, redis_server: RedisServer, resp: int
) -> None:
    async with asyncio.timeout(T):
        url = f"{redis_server.url}?protocol={resp}"  # messages are pushes in RESP3
        publisher, _ = await start(url)
        subscriber, got = await start(url)
        bystander, other = await start(url)
        await subscriber.subscribe("room: ü/1")
        await subscriber.subscribe("sync")
        await bystander.subscribe("elsewhere")

        envelopes = [b"m%d" % i for i in range(1000)]
        for envelope in envelopes:
            await publisher.publish("room: ü/1", envelope)
        await publisher.publish("elsewhere", b"marker")
        await got.until(lambda: len(got.deliveries) >= 1000)
        await other.until(lambda: len(other.deliveries) >= 1)
        assert got.deliveries == [("room: ü/1", envelope) for envelope in envelopes]
        # the bystander's marker came after the 1000 envelopes, on the same subscriber socket
        assert other.deliveries == [("elsewhere", b"marker")]

        await subscriber.unsubscribe("room: ü/1")
        channel = "pwt:t:room: ü/1".encode()
        assert await raw.pubsub_numsub(channel) == [(channel, 0)]
        await publisher.publish("room: ü/1", b"late")
        await publisher.publish("sync", b"marker")
        await got.until(lambda: got.deliveries[-1] == ("sync", b"marker"))
        assert len(got.deliveries) == 1001


async def test_concurrent_publishes_arrive_in_call_order(start: Start) -> None:
    async with asyncio.timeout(T):
        publisher, echo = await start()
        subscriber, got = await start()
        await subscriber.subscribe("t")
        await publisher.subscribe("t")  # a hub hears its own publishes too

        await asyncio.gather(*(publisher.publish("t", b"%d" % i) for i in range(200)))
        expected = [("t", b"%d" % i) for i in range(200)]
        await got.until(lambda: len(got.deliveries) >= 200)
        await echo.until(lambda: len(echo.deliveries) >= 200)
        assert got.deliveries == expected
        assert echo.deliveries == expected


async def test_concurrent_publishes_share_round_trips(
    start: Start, redis_server: RedisServer
) -> None:
    async with asyncio.timeout(T), DelayProxy(redis_server.port, 0.05) as proxy:
        publisher, _ = await start(proxy.url)
        subscriber, got = await start()
        await subscriber.subscribe("t")
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.gather(*(publisher.publish("t", b"%d" % i) for i in range(200)))
        assert loop.time() - began < 1.0  # one round trip per publish would take 10 s
        await got.until(lambda: len(got.deliveries) >= 200)
        assert got.deliveries == [("t", b"%d" % i) for i in range(200)]
        await publisher.close()


async def test_subscribe_returns_once_the_server_delivers_the_topic(
    start: Start, redis_server: RedisServer, raw: Any
) -> None:
    async with asyncio.timeout(T), DelayProxy(redis_server.port, 0.05) as proxy:
        subscriber, _ = await start(proxy.url)
        await subscriber.subscribe("slow")
        assert await raw.pubsub_numsub(b"pwt:t:slow") == [(b"pwt:t:slow", 1)]
        await subscriber.unsubscribe("slow")
        assert await raw.pubsub_numsub(b"pwt:t:slow") == [(b"pwt:t:slow", 0)]
        await subscriber.close()


async def test_unsubscribe_stops_deliveries_at_once(
    start: Start, redis_server: RedisServer
) -> None:
    async with asyncio.timeout(T), DelayProxy(redis_server.port, 0.05) as proxy:
        publisher, _ = await start()
        subscriber, got = await start(proxy.url)
        await subscriber.subscribe("t")
        stop = asyncio.Event()

        async def flood() -> None:
            while not stop.is_set():
                await publisher.publish("t", b"x")

        flooding = asyncio.create_task(flood())
        await got.until(lambda: len(got.deliveries) > 0)
        delivered = len(got.deliveries)
        # UNSUBSCRIBE takes 50 ms to reach the server; the envelopes meanwhile are dropped
        await subscriber.unsubscribe("t")
        stop.set()
        await flooding
        assert len(got.deliveries) == delivered
        await subscriber.close()


# ------------------------------------------------------------------------------ presence


@pytest.mark.parametrize("resp", [2, 3])
async def test_presence_is_shared_and_close_forgets_it(
    start: Start, raw: Any, redis_server: RedisServer, resp: int
) -> None:
    async with asyncio.timeout(T):
        url = f"{redis_server.url}?protocol={resp}"  # replies are shaped differently
        a, _ = await start(url)
        b, _ = await start(url)
        await a.set_presence("room", "na/1", b"alice")
        await b.set_presence("room", "nb/1", b"bob")
        await b.set_presence("room", "nb/2", b"carol")
        await b.set_presence("hall", "nb/1", b"bob")
        everyone = {"na/1": b"alice", "nb/1": b"bob", "nb/2": b"carol"}
        assert await a.presence("room") == everyone
        assert await b.presence("room") == everyone
        assert await a.presence("hall") == {"nb/1": b"bob"}
        assert await a.presence("nobody") == {}

        await b.set_presence("room", "nb/2", b"carol2")
        await b.clear_presence("room", "nb/1")
        assert await a.presence("room") == {"na/1": b"alice", "nb/2": b"carol2"}

        await b.close()
        await b.close()
        assert not b.connected
        assert await a.presence("room") == {"na/1": b"alice"}
        assert await a.presence("hall") == {}
        assert await raw.exists("pwt:n:nb") == 0
        assert await raw.exists("pwt:n:na") == 1


async def test_a_dead_nodes_entries_are_dropped_and_a_live_one_keeps_its_own(
    start: Start, raw: Any
) -> None:
    async with asyncio.timeout(T):
        observer, _ = await start()
        live, _ = await start(node_ttl=0.3)
        await live.set_presence("room", "live/1", b"l")
        # a hub that died: its entry and a node key nobody refreshes
        await raw.hset("pwt:p:room", "ghost/1", b"g")
        await raw.set("pwt:n:ghost", b"1", px=300)
        assert await observer.presence("room") == {"live/1": b"l", "ghost/1": b"g"}

        async def ghost_gone() -> bool:
            return "ghost/1" not in await observer.presence("room")

        await eventually(ghost_gone, "the ghost's entry was dropped")
        # the live node's key was set before the ghost's, with the same TTL: refreshed
        assert await observer.presence("room") == {"live/1": b"l"}
        assert await raw.hkeys("pwt:p:room") == [b"live/1"]

        # the live node's key lost (a stall, a flush), its entry dropped by someone: it heals
        async with raw.pipeline(transaction=True) as pipe:
            await pipe.delete("pwt:n:live").hdel("pwt:p:room", "live/1").execute()

        async def healed() -> bool:
            return await observer.presence("room") == {"live/1": b"l"}

        await eventually(healed, "the live node put its entry back")


# ------------------------------------------------------------------------------ outages


async def test_a_broker_outage_is_reported_once_and_everything_comes_back(
    start: Start, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pywebtransport.pubsub.redis")
    async with asyncio.timeout(3 * T):
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {"reconnect_initial": 0.05, "reconnect_max": 0.2}
        a, a_events = await start(**options)
        b, b_events = await start(**options)
        await b.subscribe("room")
        await a.set_presence("room", "na/1", b"a")
        await b.set_presence("room", "nb/1", b"b")

        async def publish_until_refused() -> None:
            for i in range(1_000_000):
                await a.publish("room", b"%d" % i)

        publishing = asyncio.create_task(publish_until_refused())
        await b_events.until(lambda: len(b_events.deliveries) >= 20)
        killed_at = loop.time()
        redis_server.kill()
        with pytest.raises(BrokerUnavailable):
            await publishing
        await a_events.until(lambda: bool(a_events.lost))
        await b_events.until(lambda: bool(b_events.lost))
        assert loop.time() - killed_at < 1.0  # the sockets close: no timeout involved
        assert (a.connected, b.connected) == (False, False)
        with pytest.raises(BrokerUnavailable):
            await a.publish("room", b"away")
        with pytest.raises(BrokerUnavailable):
            await a.presence("room")
        # recorded while away, applied on reconnection
        await b.subscribe("later")
        await a.set_presence("room", "na/2", b"a2")
        await a.clear_presence("room", "na/1")
        await b.unsubscribe("room")
        await b.subscribe("room")

        async def retried_with_backoff() -> bool:
            delays = [r.getMessage().rpartition(" in ")[2] for r in caplog.records]
            return {"0.10 s", "0.20 s"} <= set(delays)  # reconnect_initial 0.05, doubling

        await eventually(retried_with_backoff, "reconnection attempts with growing delays")

        await asyncio.to_thread(redis_server.start)  # a fresh, empty server on the same port
        await a_events.until(lambda: a_events.restored > 0)
        await b_events.until(lambda: b_events.restored > 0)
        assert (a.connected, b.connected) == (True, True)
        assert (len(a_events.lost), a_events.restored) == (1, 1)
        assert (len(b_events.lost), b_events.restored) == (1, 1)

        seen = len(b_events.deliveries)
        await a.publish("room", b"after")
        await a.publish("later", b"later")
        await b_events.until(lambda: len(b_events.deliveries) >= seen + 2)
        assert b_events.deliveries[seen:] == [("room", b"after"), ("later", b"later")]
        assert await a.presence("room") == {"na/2": b"a2", "nb/1": b"b"}
        assert (len(a_events.lost), len(b_events.lost)) == (1, 1)


async def test_close_while_the_broker_is_away_is_quick(
    start: Start, redis_server: RedisServer
) -> None:
    async with asyncio.timeout(T):
        backend, events = await start(reconnect_initial=0.05, reconnect_max=0.1)
        await backend.subscribe("room")
        await backend.set_presence("room", "n/1", b"x")
        redis_server.kill()
        await events.until(lambda: bool(events.lost))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await backend.close()
        assert loop.time() - began < 0.5
        assert not backend.connected
        with pytest.raises(BrokerUnavailable):
            await backend.publish("room", b"closed")


async def test_nothing_is_delivered_after_close(start: Start) -> None:
    async with asyncio.timeout(T):
        publisher, _ = await start()
        closing, closed_events = await start()
        witness, witness_events = await start()
        for backend in (closing, witness):
            await backend.subscribe("room")
        await publisher.publish("room", b"before")
        await closed_events.until(lambda: bool(closed_events.deliveries))
        await closing.close()
        await publisher.publish("room", b"after")
        await witness_events.until(lambda: len(witness_events.deliveries) == 2)
        assert closed_events.deliveries == [("room", b"before")]


# ------------------------------------------------------------------------------ set-up


async def test_start_without_a_server_raises_broker_unavailable() -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_tcp_port()}/0", connect_timeout=1.0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(T):
        with pytest.raises(BrokerUnavailable, match="cannot reach"):
            await backend.start(Recorder())
    assert loop.time() - began < 1.0  # refused at once
    assert not backend.connected
    await backend.close()


async def test_start_against_a_server_that_never_answers_times_out() -> None:
    held: list[asyncio.StreamWriter] = []

    def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # connected, never answered

    silent = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", connect_timeout=0.3)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        async with asyncio.timeout(T):
            with pytest.raises(BrokerUnavailable):
                await backend.start(Recorder())
        assert 0.25 < loop.time() - began < 1.5
        assert not backend.connected
    finally:
        await backend.close()
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


def test_backend_from_url_makes_a_redis_backend() -> None:
    assert isinstance(backend_from_url("redis://127.0.0.1:6379/0"), RedisBackend)
    assert isinstance(backend_from_url("unix:///run/redis.sock"), RedisBackend)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"url": "http://127.0.0.1"}, "url"),
        ({"url": ""}, "url"),
        ({"prefix": ""}, "prefix"),
        ({"reconnect_initial": 0}, "reconnect_initial"),
        ({"reconnect_initial": 2.0, "reconnect_max": 1.0}, "reconnect_max"),
        ({"node_ttl": -1.0}, "node_ttl"),
        ({"node_ttl": float("inf")}, "node_ttl"),
        ({"connect_timeout": True}, "connect_timeout"),
    ],
)
def test_invalid_arguments_are_configuration_errors(options: dict[str, Any], field: str) -> None:
    options = {"url": "redis://127.0.0.1:6379/0", **options}
    with pytest.raises(ConfigurationError) as caught:
        RedisBackend(**options)
    assert caught.value.field == field


def test_without_the_redis_package_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in sys.modules if name.partition(".")[0] == "redis"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(ConfigurationError, match=r"pip install pywebtransport\[redis\]"):
        RedisBackend("redis://127.0.0.1:6379/0")
