"""Soak: sessions opened and closed continuously, with traffic, against an in-process server.

Runs ``PWT_SOAK_SECONDS`` seconds (default 30 in CI; the long variant documented in
``docs/reliability.md`` is 300). After a warm-up (the first quarter) the RSS and the number of
open file descriptors are sampled every second; the descriptor count must stay flat and the
least-squares RSS slope must stay below ``RSS_SLOPE_LIMIT``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from dataclasses import dataclass, field

import pytest

from pywebtransport import ClientConfig, WebTransportClient, WebTransportError, WebTransportServer
from tests.conftest import T, url

logger = logging.getLogger(__name__)

SECONDS = float(os.environ.get("PWT_SOAK_SECONDS", "30"))
WORKERS = 4
PAYLOAD = b"s" * 4096
DATAGRAMS = 3
#: Allowed RSS growth after warm-up (bytes per minute). Measured: about 0.5 MiB/min at ~8000
#: sessions/min; a leak of 1 KiB per session would add about 8 MiB/min.
RSS_SLOPE_LIMIT = 2 << 20
#: Allowed spread of the open descriptor count after warm-up.
FD_SPREAD_LIMIT = 4
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``points`` (y per unit of x)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx


@dataclass
class Soak:
    sessions: int = 0
    datagrams_sent: int = 0
    datagrams_echoed: int = 0
    errors: list[str] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    fds: list[tuple[float, int]] = field(default_factory=list)
    pauses: list[float] = field(default_factory=list)
    #: Set while workers may start sessions; cleared by the sampler to quiesce them.
    running: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when every worker is parked at ``running``.
    parked: asyncio.Event = field(default_factory=asyncio.Event)
    idle: int = 0

    async def checkpoint(self) -> None:
        """Between sessions: park here while the sampler measures."""
        if self.running.is_set():
            return
        self.idle += 1
        if self.idle == WORKERS:
            self.parked.set()
        await self.running.wait()
        self.idle -= 1


async def session_loop(
    client: WebTransportClient, target: str, soak: Soak, deadline: float
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await soak.checkpoint()
        if loop.time() >= deadline:
            break
        async with asyncio.timeout(T):
            session = await client.connect(url=target)
            try:
                stream = await session.create_bidirectional_stream()
                await stream.write(PAYLOAD, end_stream=True)
                if await stream.read_all() != PAYLOAD:
                    soak.errors.append("stream echo mismatch")
                for i in range(DATAGRAMS):
                    await session.datagrams.send(b"d%d" % i)
                    soak.datagrams_sent += 1
                for _ in range(DATAGRAMS):
                    try:
                        await session.datagrams.receive(timeout=0.5)
                    except (TimeoutError, WebTransportError):
                        break  # a lost datagram is allowed; counted below
                    soak.datagrams_echoed += 1
            finally:
                await session.close()
        soak.sessions += 1
    soak.idle += 1  # finished for good: counts as parked
    if soak.idle == WORKERS:
        soak.parked.set()


async def sampler(
    soak: Soak,
    client: WebTransportClient,
    server: WebTransportServer,
    start: float,
    warm_up: float,
    deadline: float,
) -> None:
    """Every second after warm-up: quiesce, let every connection finish closing, measure.

    Measuring at quiescent points keeps connections that are mid-handshake or draining out of
    the descriptor count; if any connection never finishes closing the bounded wait fails.
    """
    loop = asyncio.get_running_loop()
    next_at = start + warm_up
    while next_at <= deadline:
        await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing, not synchronisation
        paused_at = loop.time()
        soak.parked.clear()
        soak.running.clear()
        async with asyncio.timeout(2 * T):
            await soak.parked.wait()
            conns = [*client._connections, *server._cids]
            await asyncio.gather(*(conn.wait_closed() for conn in conns))
        gc.collect()
        now = loop.time() - start
        soak.rss.append((now, rss()))
        soak.fds.append((now, fds()))
        soak.running.set()
        soak.pauses.append(loop.time() - paused_at)
        next_at += 1.0


@pytest.mark.timeout(SECONDS + 60)
async def test_soak(server: WebTransportServer, client_config: ClientConfig) -> None:
    loop = asyncio.get_running_loop()
    soak = Soak()
    rss_start, fds_start = rss(), fds()
    start = loop.time()
    deadline = start + SECONDS
    soak.running.set()
    async with WebTransportClient(config=client_config) as client:
        target = url(server)
        async with asyncio.timeout(SECONDS + 4 * T):
            await asyncio.gather(
                sampler(soak, client, server, start, SECONDS / 4, deadline),
                *(session_loop(client, target, soak, deadline) for _ in range(WORKERS)),
            )
            # The end is measured at a quiescent point too: every connection finished closing.
            await asyncio.gather(
                *(conn.wait_closed() for conn in [*client._connections, *server._cids])
            )
    gc.collect()
    rss_end, fds_end = rss(), fds()
    rss_slope = slope(soak.rss) * 60  # bytes per minute
    fd_counts = [n for _, n in soak.fds]
    summary = (
        f"soak {SECONDS:.0f}s: {soak.sessions} sessions "
        f"({soak.sessions / SECONDS:.0f}/s), datagrams {soak.datagrams_echoed}/"
        f"{soak.datagrams_sent} echoed; RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB "
        f"(after warm-up {soak.rss[0][1] / 2**20:.1f} -> {soak.rss[-1][1] / 2**20:.1f} MiB, "
        f"slope {rss_slope / 1024:+.1f} KiB/min over {len(soak.rss)} samples); "
        f"fds {fds_start} -> {fds_end} (after warm-up {min(fd_counts)}..{max(fd_counts)}); "
        f"longest quiesce {max(soak.pauses) * 1000:.0f} ms"
    )
    logger.warning("%s", summary)  # shown with -o log_cli=true, and on failure
    assert not soak.errors
    assert soak.sessions >= SECONDS  # at least one session a second, or the soak proves little
    assert len(soak.rss) >= 3
    assert max(fd_counts) - min(fd_counts) <= FD_SPREAD_LIMIT, summary
    assert rss_slope < RSS_SLOPE_LIMIT, summary
    assert fds_end <= fds_start + FD_SPREAD_LIMIT, summary
    assert server.stats["sessions_active"] == 0
