"""Session and stream statistics shaped like the W3C WebTransport API, on loopback."""

from __future__ import annotations

import asyncio
import os

import pytest

from pywebtransport import (
    ClientConfig,
    DatagramStats,
    ReceiveStreamStats,
    SendStreamStats,
    SessionStats,
    StreamStats,
    WebTransportClient,
    WebTransportServer,
)
from pywebtransport.events import EventType
from pywebtransport.session import estimated_send_rate
from tests.conftest import T, current_engine, url

MIB = 1024 * 1024


def test_estimated_send_rate_is_the_window_over_the_rtt_in_bits() -> None:
    assert estimated_send_rate(12_000, 0.01) == pytest.approx(9_600_000.0)
    assert estimated_send_rate(None, 0.01) is None
    assert estimated_send_rate(12_000, None) is None
    assert estimated_send_rate(12_000, 0.0) is None  # no sample yet


def test_a_bidirectional_streams_stats_are_both_sides() -> None:
    stats = StreamStats(timestamp=1.0, bytes_written=3, bytes_sent=2, bytes_received=5)
    assert isinstance(stats, SendStreamStats) and isinstance(stats, ReceiveStreamStats)
    assert (stats.bytes_acknowledged, stats.bytes_read) == (None, 0)


async def test_stats_after_an_echo_of_one_mebibyte_and_datagrams(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    payload = os.urandom(MIB)
    async with asyncio.timeout(4 * T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        start = session.get_stats()
        stream = await session.create_bidirectional_stream()
        writer = asyncio.ensure_future(stream.write(payload, end_stream=True))
        echoed = await stream.read_all()
        await writer
        assert echoed == payload
        for n in range(5):
            await session.datagrams.send(b"datagram %d" % n)
        for _ in range(5):
            await session.datagrams.receive()
        uni = await session.create_unidirectional_stream()
        await uni.write_all(b"one way")
        back = await session.accept_unidirectional_stream()
        assert await back.read_all() == b"one way"
        stats = session.get_stats()

    assert isinstance(stats, SessionStats) and isinstance(stats.datagrams, DatagramStats)
    assert start.timestamp <= stats.timestamp
    # The connection's figures: at least the payload each way, in packets of at most 1452 bytes.
    assert stats.bytes_sent >= MIB and stats.bytes_received >= MIB
    assert stats.packets_sent >= MIB // 1452 and stats.packets_received >= MIB // 1452
    assert stats.bytes_sent > start.bytes_sent and stats.packets_sent > start.packets_sent
    assert stats.smoothed_rtt is not None and 0 < stats.smoothed_rtt < 1.0
    assert stats.estimated_send_rate is not None and stats.estimated_send_rate > 0
    assert stats.packets_lost is not None and stats.packets_lost >= 0
    if current_engine() == "aioquic":
        assert stats.min_rtt is not None and 0 < stats.min_rtt <= stats.smoothed_rtt
        assert stats.rtt_variation is not None and stats.rtt_variation >= 0
        assert stats.bytes_lost is not None and stats.bytes_lost >= 0
    else:  # qh3 exposes neither (docs/architecture.md, the QUIC engines)
        assert stats.min_rtt is None and stats.rtt_variation is None and stats.bytes_lost is None
    # The session's own counters: exact.
    assert stats.streams_opened_local == 2 and stats.streams_opened_remote == 1
    assert stats.stream_bytes_sent == MIB + 7 and stats.stream_bytes_received == MIB + 7
    assert stats.datagrams_sent == 5 and stats.datagrams_received == 5
    assert stats.datagrams == DatagramStats(lost_outgoing=None)

    both = stream.get_stats()
    assert isinstance(both, StreamStats)
    assert both.bytes_written == both.bytes_sent == MIB
    assert both.bytes_received == both.bytes_read == MIB
    if current_engine() == "aioquic":
        assert both.bytes_acknowledged is not None and 0 <= both.bytes_acknowledged <= MIB
    else:  # qh3 tells only an upper bound of the unacknowledged bytes
        assert both.bytes_acknowledged is None
    sent = uni.get_stats()
    assert type(sent) is SendStreamStats
    assert (sent.bytes_written, sent.bytes_sent) == (7, 7)
    received = back.get_stats()
    assert type(received) is ReceiveStreamStats
    assert (received.bytes_received, received.bytes_read) == (7, 7)


async def test_a_full_datagram_receive_queue_counts_dropped_incoming(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    config = client_config.update(datagram_queue_size=2)
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server))
        arrivals: asyncio.Queue[object] = asyncio.Queue()
        session.on(EventType.DATAGRAM_RECEIVED, arrivals.put_nowait)
        assert session.get_stats().datagrams.dropped_incoming == 0
        # One at a time (the send queue holds two as well): each echo arrives, none is read.
        for n in range(5):
            await session.datagrams.send(b"%d" % n)
            await arrivals.get()
        stats = session.get_stats()
        assert stats.datagrams_sent == stats.datagrams_received == 5
        assert stats.datagrams.dropped_incoming == 3
        assert stats.datagrams.dropped_outgoing == 0
        assert await session.datagrams.receive() == b"3"  # the two newest were kept


async def test_bytes_read_lag_bytes_received_until_read(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"0123456789", end_stream=True)
        assert await stream.peek(10) == b"0123456789"  # buffered, not read
        stats = stream.get_stats()
        assert (stats.bytes_received, stats.bytes_read) == (10, 0)
        assert await stream.read(4) == b"0123"
        stats = stream.get_stats()
        assert (stats.bytes_received, stats.bytes_read) == (10, 4)
