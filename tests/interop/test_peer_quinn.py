"""What web-transport-quinn 0.1.0 (Rust quinn, draft-07 with us) does its own way, both ways.

The tests quinn shares with pywebtransport 0.21.1 (streams, close, resets, many streams, Retry,
restarts) are in ``test_peer_stacks.py``; here are its datagrams and the codes its client sees:

* its datagram limit (``max_datagram_size``) follows its path MTU discovery: 1,161 or 1,287
  bytes at first, up to 1,413 on loopback;
* its client reports our reset and STOP_SENDING codes as they were sent.

The peer is ``peers/peer_quinn.py``, run under the peers' Python 3.12 (its server's routes are
listed there; ours in ``peer_support.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from pywebtransport import (
    ClientConfig,
    WebTransportClient,
)
from tests.conftest import T, current_engine
from tests.interop.conftest import CertificateFiles
from tests.interop.peer_support import (
    PROBE_RESET_CODE,
    PROBE_STOP_CODE,
    OurServer,
    PeerServer,
    Probe,
    datagram_roundtrip,
    largest_datagram_echoed,
    our_server,
    pattern,
    peer_server,
)

pytestmark = pytest.mark.interop

SCRIPT = "peer_quinn.py"
TEST_TIMEOUT = 6 * T
"""Upper bound on every test."""


# ---------------------------------------------------------------------------------------------
# Our client against the quinn server
# ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def quinn_server(
    peers_python: str, certificate: CertificateFiles
) -> AsyncIterator[PeerServer]:
    """The quinn server on an ephemeral loopback port."""
    async with peer_server(peers_python, SCRIPT, certificate) as server:
        yield server


@pytest_asyncio.fixture
async def client(certificate: CertificateFiles) -> AsyncIterator[WebTransportClient]:
    """Our client, pinning the test certificate by its hash."""
    config = ClientConfig(server_certificate_hashes=[certificate.sha256], connect_timeout=T)
    async with WebTransportClient(config=config) as wt_client:
        yield wt_client


@pytest.mark.covers("datagrams", "quinn-server")
async def test_our_client_datagrams_both_ways(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=quinn_server.url("/echo"))
        datagrams = session.datagrams
        payloads = [b"dgram-1", pattern(1100, seed=5)]
        answers = [
            await datagram_roundtrip(datagrams.send, datagrams.receive, payload)
            for payload in payloads
        ]
        largest = datagrams.max_datagram_size
        largest_echoed = await largest_datagram_echoed(session)
        await session.close()
        observed = await quinn_server.session_result()
    assert answers == payloads
    assert observed["datagrams_echoed"] >= 3
    # quinn's own limit (its max_datagram_size, at the session's start and end) follows its
    # path MTU discovery: 1,161 or 1,287 bytes at first, up to 1,413 on loopback later. It
    # receives our largest datagram in any case, and echoes it when it may send that much.
    first, last = observed["max_datagram_size"]
    assert 1100 <= first <= last
    if largest <= first:
        assert largest_echoed and observed["datagrams_not_echoed"] == []
    else:
        assert largest_echoed != (observed["datagrams_not_echoed"] == [largest])


@pytest.mark.covers("datagram-size", "quinn-server")
async def test_our_client_receives_the_peers_largest_datagram(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=quinn_server.url("/echo?reply=max"))
        datagrams = session.datagrams
        answer = await datagram_roundtrip(datagrams.send, datagrams.receive, b"ping")
        await session.close()
        observed = await quinn_server.session_result()
    # Answered with a datagram of quinn's largest size at the time (1,161 to 1,413 bytes).
    assert len(answer) in observed["largest_sent"]
    assert answer == pattern(len(answer), seed=len(answer))
    assert len(answer) > 1100


# ---------------------------------------------------------------------------------------------
# The quinn client against our server
# ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def our_quinn_server(
    peers_python: str, certificate: CertificateFiles
) -> AsyncIterator[OurServer]:
    """Our server on an ephemeral loopback port, with the peer tests' routes."""
    probe = Probe()
    trust = ("--cert-hash", certificate.sha256.hex())
    async with our_server(certificate, probe) as port:
        yield OurServer(port, probe, peers_python, SCRIPT, trust)


@pytest.mark.covers("datagrams", "quinn-client")
async def test_their_client_datagrams_both_ways(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/echo", "datagrams", size=1000)
    assert outcome["answers_ok"] == [True, True]
    assert outcome["max_datagram_size"] >= 1000


@pytest.mark.covers("datagram-size", "quinn-client")
async def test_their_clients_largest_datagram_reaches_us(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/echo", "datagrams", size="max", tries=3)
        received = await our_quinn_server.probe.wait("datagrams")
    size = outcome["size"]  # quinn's largest when it sent it: 1,161 to 1,413 bytes
    ours = [limit for length, limit in received if length == size]
    assert ours, f"no {size}-byte datagram arrived: {received}"
    if current_engine() == "aioquic":
        # Our path MTU discovery raises our limit within tens of milliseconds of the
        # handshake: the echo of quinn's largest datagram comes back.
        assert outcome["answers_ok"] == [True, True], (outcome, received)
        assert max(ours) >= size
    else:
        # A qh3 server never probes the path (docs/architecture.md): its limit stays at the
        # base, and datagrams larger than that cannot be echoed.
        assert max(ours) < 1200
        assert outcome["answers_ok"] == [True, size <= max(ours)], (outcome, received)


@pytest.mark.covers("reset", "quinn-client")
@pytest.mark.covers("stop-sending", "quinn-client")
async def test_their_client_sees_our_reset_and_stop_codes(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/reset-probe", "receive-reset")
    assert outcome["reset"] == {"kind": "reset", "code": PROBE_RESET_CODE}
    assert outcome["stop"] == {"kind": "stop", "code": PROBE_STOP_CODE}
