"""The live statistics demo (route ``/live`` of ``pywebtransport serve``) with our own client.

A server runs ``echo_app`` (or the handler alone, to watch it end) on 127.0.0.1; the client reads
the statistics lines from the stream the server opens, keeps the echo busy and checks what the
lines say, and that the push stops with the session.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportReceiveStream,
    WebTransportSession,
)
from pywebtransport.cli import LIVE_PATH, _add_demo_routes, _Certificate, echo_app
from pywebtransport.session import DatagramStats, SessionStats
from pywebtransport.web import PageServer
from pywebtransport.web.demo_live import STATS_INTERVAL, live_handler, stats_line
from tests.certs import CertBundle
from tests.conftest import T, serving, url

LOAD_SIZE = 64 * 1024
LOAD_ROUNDS = 4


async def next_sample(stream: WebTransportReceiveStream) -> dict[str, Any]:
    """The next statistics line of ``stream``, parsed."""
    line = await stream.readline()
    assert line.endswith(b"\n"), f"the statistics stream ended: {line!r}"
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


async def echo_round(session: WebTransportSession, payload: bytes) -> None:
    """One echo of ``payload`` on a new bidirectional stream, written while it is read."""
    stream = await session.create_bidirectional_stream()
    _, echoed = await asyncio.gather(stream.write_all(payload), stream.read_all())
    assert echoed == payload


def live_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("live-stats-")]


def test_stats_line_is_one_json_line_of_the_session_stats() -> None:
    stats = SessionStats(
        timestamp=1700000000.5,
        bytes_sent=10,
        packets_sent=1,
        bytes_lost=None,
        packets_lost=0,
        bytes_received=20,
        packets_received=2,
        smoothed_rtt=0.002,
        rtt_variation=None,
        min_rtt=0.001,
        estimated_send_rate=1e6,
        datagrams=DatagramStats(),
    )
    line = stats_line(stats, seq=3, elapsed=0.75)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line)
    assert record["seq"] == 3 and record["elapsed"] == 0.75
    assert record["timestamp"] == 1700000000.5
    assert record["smoothed_rtt"] == 0.002 and record["bytes_lost"] is None
    assert record["datagrams"]["dropped_incoming"] == 0


async def test_live_route_pushes_growing_statistics_while_echoing(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    config = ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile))
    async with (
        asyncio.timeout(6 * T),
        serving(echo_app(config)) as server,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server, LIVE_PATH))
        stats = await session.accept_unidirectional_stream(timeout=T)
        first = await next_sample(stats)
        payload = bytes(range(256)) * (LOAD_SIZE // 256)
        for _ in range(LOAD_ROUNDS):
            await echo_round(session, payload)
        # Datagrams are echoed too.
        await session.datagrams.send(b"ping")
        assert await session.datagrams.receive(timeout=T) == b"ping"
        samples = [first]
        total = LOAD_ROUNDS * LOAD_SIZE
        # Samples come until one has seen the whole load (each line is a fresh snapshot).
        while len(samples) < 3 or samples[-1]["stream_bytes_received"] < total:
            samples.append(await next_sample(stats))
        await session.close()

    assert [s["seq"] for s in samples] == list(range(len(samples)))
    for earlier, later in itertools.pairwise(samples):
        assert later["timestamp"] > earlier["timestamp"]
        assert later["elapsed"] > earlier["elapsed"]
    rtts = [s["smoothed_rtt"] for s in samples if s["smoothed_rtt"] is not None]
    assert rtts, samples
    assert all(0 < rtt < 1 for rtt in rtts), rtts
    last = samples[-1]
    # The server received the load and sent the echo back: its counters grew by that much.
    assert last["stream_bytes_received"] >= total
    assert last["stream_bytes_sent"] >= total  # the echo, plus the statistics lines
    assert last["bytes_received"] - first["bytes_received"] >= total - LOAD_SIZE
    assert last["bytes_sent"] - first["bytes_sent"] >= total - LOAD_SIZE
    assert last["streams_opened_remote"] >= LOAD_ROUNDS
    assert last["datagrams_received"] >= 1


async def test_the_push_stops_when_the_session_closes(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    app = ServerApp(config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile)))

    @app.route("/live")
    async def watched(session: WebTransportSession) -> None:
        try:
            await live_handler(session, interval=0.05)
        finally:
            ended.set_result(None)

    async with (
        asyncio.timeout(4 * T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server, "/live"))
        stats = await session.accept_unidirectional_stream(timeout=T)
        for seq in range(3):
            assert (await next_sample(stats))["seq"] == seq
        assert len(live_tasks()) == 1
        await session.close(code=7, reason="done")
        await asyncio.wait_for(asyncio.shield(ended), T)  # the handler returned
        assert live_tasks() == []


async def test_a_stopped_statistics_stream_ends_the_push_not_the_echo(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = ServerApp(config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile)))
    app.route("/live")(live_handler)
    async with (
        asyncio.timeout(4 * T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server, "/live"))
        stats = await session.accept_unidirectional_stream(timeout=T)
        await next_sample(stats)
        (pusher,) = live_tasks()
        await stats.stop(code=3)
        # The next write fails on the STOP_SENDING, within an interval or two.
        await asyncio.wait_for(asyncio.shield(pusher), T + 2 * STATS_INTERVAL)
        assert pusher.exception() is None
        await echo_round(session, b"still echoing")
        await session.close()


async def test_config_json_names_the_live_route() -> None:
    pages = PageServer()
    _add_demo_routes(pages, "127.0.0.1", 4433, _Certificate("", "", bytes(32)))
    await pages.start(host="127.0.0.1", port=0)
    try:
        async with asyncio.timeout(T):
            reader, writer = await asyncio.open_connection("127.0.0.1", pages.port)
            writer.write(b"GET /config.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = await reader.read()
            writer.close()
            await writer.wait_closed()
    finally:
        await pages.close()
    config = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert config["livePath"] == LIVE_PATH == "/live"
    assert config["liveUrl"] == f"https://127.0.0.1:4433{LIVE_PATH}"
