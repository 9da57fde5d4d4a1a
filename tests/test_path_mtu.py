"""Path MTU discovery between a real client and server on 127.0.0.1, through the lossy relay
(tests/faults.py), whose ``max_size`` drops datagrams longer than a path would carry.

The datagram limit of a session grows from 1,169 bytes (1,200-byte packets) to 1,421 (the
default ceiling, 1,452-byte packets) within a few round trips of the handshake, settles on what
a narrower path carries, and (aioquic) falls back when the path shrinks. qh3 probes only as a
client and never falls back (docs/architecture.md): the tests say where that shows. Waits poll
the public limit, bounded by a timeout; run with ``-s`` to see how long the growth took.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from pywebtransport import (
    ClientConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from tests.certs import CertBundle
from tests.conftest import NO_PATH_FALLBACK, T, build_app, current_engine, serving
from tests.faults import Faults, LossyRelay, report

#: Bytes of a packet around a datagram's payload (short header with our 8-byte CID, AEAD tag,
#: DATAGRAM frame header, the session's quarter-stream-ID prefix).
OVERHEAD = 31
BASE_LIMIT = 1200 - OVERHEAD
CEILING_LIMIT = 1452 - OVERHEAD


def qh3() -> bool:
    return current_engine() == "qh3"


@pytest.fixture
async def server(cert: CertBundle) -> AsyncIterator[WebTransportServer]:
    async with serving(build_app(cert)) as srv:
        yield srv


async def until(predicate: Callable[[], bool], timeout: float = T) -> float:
    """Poll ``predicate`` until it holds; returns the seconds it took (TimeoutError after
    ``timeout``)."""
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (engine state, no event to wait on)
            await asyncio.sleep(0.005)
    return time.monotonic() - start


def server_session(srv: WebTransportServer) -> WebTransportSession:
    (session,) = srv.sessions
    return session


def probing(session: WebTransportSession) -> bool:
    """True while the QUIC engine of ``session``'s connection runs path MTU discovery."""
    return session._conn.protocol.engine.probing_path_mtu()


def search_over(client: WebTransportSession, srv: WebTransportServer) -> bool:
    return not probing(client) and not probing(server_session(srv))


def via(relay: LossyRelay, path: str = "/echo") -> str:
    host, port = relay.address
    return f"https://{host}:{port}{path}"


async def echo_stream(session: WebTransportSession, size: int, seed: int) -> None:
    """``size`` pseudo-random bytes through the echo on a new stream, byte-exact."""
    data = random.Random(seed).randbytes(size)
    stream = await session.create_bidirectional_stream()

    async def write() -> None:
        for at in range(0, size, 32 * 1024):
            await stream.write(data[at : at + 32 * 1024])
        await stream.close()

    _, echoed = await asyncio.gather(write(), stream.read_all())
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    assert len(echoed) == size


async def round_trip(session: WebTransportSession, size: int) -> None:
    payload = bytes([size % 251]) * size
    await session.datagrams.send(payload)
    assert await session.datagrams.receive(timeout=T) == payload


async def test_the_limit_grows_and_the_largest_datagram_goes_through(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    host, port = server.local_address[:2]
    async with (
        LossyRelay((host, port)) as relay,
        asyncio.timeout(4 * T),
        WebTransportClient(config=client_config) as client,
    ):
        start = time.monotonic()
        session = await client.connect(url=via(relay))
        connected = time.monotonic() - start
        datagrams = session.datagrams
        grew = await until(lambda: datagrams.max_datagram_size > BASE_LIMIT)
        await until(lambda: search_over(session, server))
        settled = time.monotonic() - start
        assert datagrams.max_datagram_size == CEILING_LIMIT
        theirs = server_session(server).datagrams
        if qh3():  # the server's packets keep the base size: it cannot echo the largest
            assert theirs.max_datagram_size == BASE_LIMIT
            await datagrams.send(b"q" * CEILING_LIMIT)
            await until(lambda: theirs.stats["received"] == 1)
            await until(lambda: theirs.stats["rejected_outgoing"] == 1)
            await round_trip(session, BASE_LIMIT)
        else:
            await until(lambda: theirs.max_datagram_size == CEILING_LIMIT)
            await round_trip(session, CEILING_LIMIT)
        await echo_stream(session, 200_000, seed=1)
        largest_up = max(relay.up.counters.sizes_seen)
        largest_down = max(relay.down.counters.sizes_seen)
        await session.close()
    report(
        f"path MTU on loopback ({current_engine()}): connected in {connected * 1000:.0f} ms, "
        f"the limit grew above {BASE_LIMIT} {grew * 1000:.0f} ms later, and the search ended "
        f"at {CEILING_LIMIT} {settled * 1000:.0f} ms after the connect began; largest packets "
        f"{largest_up} up, {largest_down} down"
    )
    assert relay.up.counters.dropped == relay.down.counters.dropped == 0
    assert largest_up == 1452
    assert largest_down == (1200 if qh3() else 1452)


def probes_above(cap: int) -> tuple[int, int]:
    """(client's, server's) probes a path of ``cap`` bytes drops: the first size above it,
    three times by each side that probes (qh3: once, by the client alone)."""
    return (1, 0) if qh3() else (3, 3)


async def test_a_narrower_path_settles_on_what_it_carries(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    cap = 1350
    host, port = server.local_address[:2]
    narrow = Faults(max_size=cap)
    async with (
        LossyRelay((host, port), up=narrow, down=narrow) as relay,
        asyncio.timeout(4 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=via(relay))
        up, down = relay.up.counters, relay.down.counters
        took = await until(lambda: search_over(session, server))
        limit = cap - OVERHEAD
        assert session.datagrams.max_datagram_size == limit
        theirs = server_session(server).datagrams
        if qh3():
            assert theirs.max_datagram_size == BASE_LIMIT
            await round_trip(session, BASE_LIMIT)
        else:
            await until(lambda: theirs.max_datagram_size == limit)
            await round_trip(session, limit)
        await echo_stream(session, 200_000, seed=2)
        assert session.datagrams.max_datagram_size == limit  # settled, never above the path
        await session.close()
    report(f"path of {cap} bytes ({current_engine()}): settled after {took * 1000:.0f} ms")
    # Only the probes of the first size above the path were too long: no data packet was.
    assert (up.too_large, down.too_large) == probes_above(cap)
    too_long = Counter(n for n in up.dropped_sizes + down.dropped_sizes if n > cap)
    assert set(too_long) == ({1452} if qh3() else {1400})


async def test_random_loss_still_ends_the_search_below_the_path(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    cap = 1350
    host, port = server.local_address[:2]
    lossy = Faults(loss=0.1, max_size=cap)
    async with (
        LossyRelay((host, port), up=lossy, down=lossy, seed=7) as relay,
        asyncio.timeout(8 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=via(relay))
        up, down = relay.up.counters, relay.down.counters
        took = await until(lambda: search_over(session, server), 2 * T)
        limit = session.datagrams.max_datagram_size
        assert BASE_LIMIT <= limit <= cap - OVERHEAD
        await echo_stream(session, 300_000, seed=3)
        assert session.datagrams.max_datagram_size <= cap - OVERHEAD
        assert server_session(server).datagrams.max_datagram_size <= cap - OVERHEAD
        await session.close()
    report(
        f"path of {cap} bytes, 10% loss ({current_engine()}): the search ended after "
        f"{took * 1000:.0f} ms at limit {limit}\n{relay.summary()}"
    )
    assert up.dropped > up.too_large and down.dropped > down.too_large  # random losses too
    # Nothing above the path was ever confirmed: only probes were too long for it (fewer when
    # a random loss ended the search below the path).
    client_probes, server_probes = probes_above(cap)
    assert up.too_large <= client_probes and down.too_large <= server_probes
    too_long = {n for n in up.dropped_sizes + down.dropped_sizes if n > cap}
    assert too_long <= ({1452} if qh3() else {1400})


@pytest.mark.aioquic_only(NO_PATH_FALLBACK)
async def test_a_path_that_shrinks_mid_session_falls_back_and_keeps_working(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    host, port = server.local_address[:2]
    async with (
        LossyRelay((host, port)) as relay,
        asyncio.timeout(6 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=via(relay))
        mine, theirs = session.datagrams, server_session(server).datagrams
        await until(lambda: search_over(session, server))
        assert mine.max_datagram_size == theirs.max_datagram_size == CEILING_LIMIT
        await round_trip(session, CEILING_LIMIT)
        mark = relay.up.counters.mark(), relay.down.counters.mark()
        for direction in (relay.up, relay.down):
            direction.set_max_size(1300)  # a route change: larger packets vanish from now on
        start = time.monotonic()
        transfer = asyncio.create_task(echo_stream(session, 300_000, seed=4))
        # Both sides send full packets: both find the black hole and fall back to the base...
        await until(lambda: mine.max_datagram_size == theirs.max_datagram_size == BASE_LIMIT)
        fell_back = time.monotonic() - start
        await transfer  # ... and the data gets through, byte-exact
        # A second later they search again and settle on what the path carries now.
        await until(lambda: mine.max_datagram_size == theirs.max_datagram_size == 1280 - OVERHEAD)
        await until(lambda: search_over(session, server))
        settled = time.monotonic() - start
        await round_trip(session, 1280 - OVERHEAD)
        await echo_stream(session, 100_000, seed=5)
        await session.close()
    lost = (
        relay.up.counters.dropped_at_least(1301, mark[0]),
        relay.down.counters.dropped_at_least(1301, mark[1]),
    )
    report(
        f"path shrank to 1300 bytes: both sides at the base {fell_back * 1000:.0f} ms later, "
        f"settled on 1280 after {settled:.2f} s; {lost} packets above 1300 lost (up, down)"
    )
    assert all(lost)  # the full-size packets sent before the fall back were lost
