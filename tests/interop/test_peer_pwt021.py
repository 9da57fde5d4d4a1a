"""What pywebtransport 0.21.1 (the PyPI release: Rust core on quinn) does its own way, both ways.

0.21.1 shares this project's name only: it is a different stack that speaks draft-15 alone. The
tests it shares with web-transport-quinn (streams, close, resets, many streams, Retry, restarts)
are in ``test_peer_stacks.py``; here are what only it has or does its own way. Draft-15 has
session flow control, and 0.21.1 enforces and reports it: the tests run transfers under credit
small enough (8 KiB of data, 2 streams of each kind) that it is renewed dozens of times, in both
directions, and check the limits each side saw; its ``session_max_data_updated`` /
``session_data_blocked`` events count the WT_MAX_DATA / WT_DATA_BLOCKED capsules we send it.
Also asserted as it does it:

* a write that a STOP_SENDING ended fails with 0.21.1's own ``LIB_STREAM_STATE_ERROR``
  (0x13000001): the peer's code is in the event only (a read that a reset ended carries the code);
* its datagrams stay within 1,200-byte packets: 1,161 bytes of payload at most, and a larger
  datagram it received is not echoed (``DatagramError`` 0x1001 on its side);
* subprotocols: each side's preference wins when it is the server.

The peer is ``peers/peer_pwt021.py``, run under the peers' Python 3.12 from the peers'
virtualenv (its server's routes are listed there; ours in ``peer_support.py``).
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
from pywebtransport.protocol.wire import Dialect
from tests.conftest import T
from tests.interop.conftest import CertificateFiles
from tests.interop.peer_support import (
    PROBE_RESET_CODE,
    PROBE_STOP_CODE,
    OurServer,
    PeerServer,
    Probe,
    data_renewals_at_least,
    datagram_roundtrip,
    dialect_of,
    echo_once,
    flow_control_of,
    largest_datagram_echoed,
    our_server,
    our_server_instance,
    pattern,
    peer_server,
    read_uni_streams,
    run_peer_client,
    send_uni,
    stream_renewals_at_least,
)

pytestmark = pytest.mark.interop

SCRIPT = "peer_pwt021.py"
TEST_TIMEOUT = 6 * T
"""Upper bound on every test."""
SMALL_DATA = 8192
"""The session data credit of the flow-control tests (WT_INITIAL_MAX_DATA and the window)."""
SMALL_STREAMS = 2
"""The session stream credit of each kind in the flow-control tests."""
FLOW_SIZE = 12 * 1024
"""Bytes per stream in the flow-control tests: more than the whole session credit."""
FLOW_BIDI = 32
FLOW_UNI = 12
FLOW_BATCH = 8
FLOW_BYTES = (FLOW_BIDI + FLOW_UNI) * FLOW_SIZE
"""What each side sends in a flow-control test (528 KiB: 66 times the data credit)."""
PEER_DATAGRAM_LIMIT = 1161
"""The largest datagram 0.21.1 sends (its packets stay at 1,200 bytes; larger ones it refuses
with DatagramError 0x1001), measured on loopback."""
LIB_STREAM_STATE_ERROR = 0x13000001
"""0.21.1's ``ErrorCodes.LIB_STREAM_STATE_ERROR``: its code for a stream it cannot use."""


def small_credit(window: int = SMALL_DATA, streams: int = SMALL_STREAMS) -> dict[str, int]:
    """0.21.1's configuration for small session credit (its ``--set`` options)."""
    return {
        "initial_max_data": window,
        "session_receive_window": window,
        "initial_max_streams_bidi": streams,
        "initial_max_streams_uni": streams,
    }


# ---------------------------------------------------------------------------------------------
# Our client against the 0.21.1 server
# ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def pwt_server(peers_python: str, certificate: CertificateFiles) -> AsyncIterator[PeerServer]:
    """The 0.21.1 server on an ephemeral loopback port, with its default limits."""
    async with peer_server(peers_python, SCRIPT, certificate) as server:
        yield server


@pytest_asyncio.fixture
async def client(certificate: CertificateFiles) -> AsyncIterator[WebTransportClient]:
    """Our client, trusting the test certificate as a CA (verification on)."""
    config = ClientConfig(ca_certs=certificate.certfile, connect_timeout=T)
    async with WebTransportClient(config=config) as wt_client:
        yield wt_client


@pytest.mark.covers("datagrams", "pwt021-server")
async def test_our_client_datagrams_both_ways(
    pwt_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=pwt_server.url("/echo"))
        datagrams = session.datagrams
        payloads = [b"dgram-1", pattern(PEER_DATAGRAM_LIMIT, seed=5)]
        answers = [
            await datagram_roundtrip(datagrams.send, datagrams.receive, payload)
            for payload in payloads
        ]
        # Our largest datagram: 0.21.1 receives it, and echoes it only if it may send it.
        largest = session.datagrams.max_datagram_size
        largest_echoed = await largest_datagram_echoed(session)
        await session.close()
        observed = await pwt_server.session_result()
    assert answers == payloads
    assert observed["datagrams_echoed"] >= 3
    # Its datagrams stay within 1,200-byte packets: 1,161 bytes of payload at most.
    if largest > PEER_DATAGRAM_LIMIT:
        assert (largest_echoed, observed["datagrams_not_echoed"]) == (False, [largest])
    else:
        assert (largest_echoed, observed["datagrams_not_echoed"]) == (True, [])


@pytest.mark.covers("datagram-size", "pwt021-server")
async def test_our_client_receives_the_peers_largest_datagram(
    pwt_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=pwt_server.url(f"/echo?reply={PEER_DATAGRAM_LIMIT}"))
        datagrams = session.datagrams
        answer = await datagram_roundtrip(datagrams.send, datagrams.receive, b"ping")
        await session.close()
        observed = await pwt_server.session_result()
    assert observed["largest_sent"] and observed["datagrams_not_echoed"] == []
    assert answer == pattern(PEER_DATAGRAM_LIMIT, seed=PEER_DATAGRAM_LIMIT)


@pytest.mark.covers("flow-control", "pwt021-server")
async def test_our_client_under_small_session_credit(
    peers_python: str, certificate: CertificateFiles
) -> None:
    # Both sides grant 8 to 16 KiB and 2 to 4 streams of each kind per session; each sends
    # 528 KiB on 44 streams: credit is renewed dozens of times each way.
    config = ClientConfig(
        ca_certs=certificate.certfile,
        connection_receive_window=2 * SMALL_DATA,  # our session data credit
        stream_receive_window=2 * SMALL_DATA,
        max_incoming_streams=2 * SMALL_STREAMS,  # our session stream credit
        connect_timeout=T,
    )
    options = [f"{name}={value}" for name, value in small_credit().items()]
    async with (
        peer_server(peers_python, SCRIPT, certificate, *options) as server,
        asyncio.timeout(TEST_TIMEOUT),
        WebTransportClient(config=config) as client,
    ):
        session = await client.connect(url=server.url("/echo"))
        dialect = dialect_of(session)
        fc = flow_control_of(session)
        assert fc is not None
        at_start = (fc.remote_max_data, dict(fc.remote_max_streams))
        bidi_ok = 0
        for start in range(0, FLOW_BIDI, FLOW_BATCH):
            sent = [pattern(FLOW_SIZE, seed=i) for i in range(start, start + FLOW_BATCH)]
            echoed = await asyncio.gather(*(echo_once(session, data) for data in sent))
            bidi_ok += sum(a == b for a, b in zip(echoed, sent, strict=True))
        uni_sent = [pattern(FLOW_SIZE, seed=100 + i) for i in range(FLOW_UNI)]
        received: list[bytes] = []
        for start in range(0, FLOW_UNI, SMALL_STREAMS):
            batch = uni_sent[start : start + SMALL_STREAMS]
            await asyncio.gather(*(send_uni(session, data) for data in batch))
            received += await read_uni_streams(session, len(batch))
        await session.close()
        observed = await server.session_result()
    assert dialect is Dialect.DRAFT15
    assert bidi_ok == FLOW_BIDI
    assert sorted(received) == sorted(uni_sent)
    # We started from the peer's small credit and it renewed it for everything we sent.
    assert at_start == (SMALL_DATA, {True: SMALL_STREAMS, False: SMALL_STREAMS})
    assert fc.sent == FLOW_BYTES <= fc.remote_max_data
    assert fc.remote_max_streams[True] >= FLOW_BIDI
    assert fc.remote_max_streams[False] >= FLOW_UNI
    # The peer started from our small credit, and we renewed it for everything it sent: at
    # least 32 WT_MAX_DATA capsules by our own count (one window each at most), and 0.21.1
    # counted them arrive.
    peer_start = observed["at_start"]
    assert (peer_start["local_max_data"], peer_start["local_max_streams_bidi"]) == (
        SMALL_DATA,
        SMALL_STREAMS,
    )
    assert (peer_start["peer_max_data"], peer_start["peer_max_streams_uni"]) == (
        2 * SMALL_DATA,
        2 * SMALL_STREAMS,
    )
    needed = FLOW_BYTES // (2 * SMALL_DATA) - 1
    assert data_renewals_at_least(fc) >= needed
    assert observed["flow_events"]["session_max_data_updated"] >= needed
    assert stream_renewals_at_least(fc, bidirectional=False) >= FLOW_UNI // 4 - 1
    assert observed["flow_events"]["session_max_streams_uni_updated"] >= 2
    # Our writers ran out of the peer's data credit and said so (WT_DATA_BLOCKED).
    assert observed["flow_events"]["session_data_blocked"] >= 1


# ---------------------------------------------------------------------------------------------
# The 0.21.1 client against our server
# ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def our_pwt_server(
    peers_python: str, certificate: CertificateFiles
) -> AsyncIterator[OurServer]:
    """Our server on an ephemeral loopback port, with the peer tests' routes."""
    probe = Probe()
    async with our_server(certificate, probe) as port:
        yield OurServer(port, probe, peers_python, SCRIPT, ("--ca", certificate.certfile))


@pytest.mark.covers("datagrams", "pwt021-client")
@pytest.mark.covers("datagram-size", "pwt021-client")
async def test_their_client_datagrams_both_ways(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/echo", "datagrams", size=PEER_DATAGRAM_LIMIT)
        received = await our_pwt_server.probe.wait("datagrams")
    # 0.21.1's largest datagram arrives whole, and our echo of it comes back.
    assert outcome["answers_ok"] == [True, True]
    assert PEER_DATAGRAM_LIMIT in [length for length, _ in received]


@pytest.mark.covers("reset", "pwt021-client")
@pytest.mark.covers("stop-sending", "pwt021-client")
async def test_their_client_sees_our_reset_and_stop_codes(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/reset-probe", "receive-reset")
    assert outcome["events"] == {"reset": PROBE_RESET_CODE, "stop": PROBE_STOP_CODE}
    assert outcome["read_error"]["error_code"] == PROBE_RESET_CODE
    # 0.21.1 tells the STOP_SENDING code by its event only: the write it fails ends with
    # 0.21.1's own LIB_STREAM_STATE_ERROR.
    assert outcome["write_error"]["error_code"] == LIB_STREAM_STATE_ERROR


@pytest.mark.covers("flow-control", "pwt021-client")
async def test_their_client_under_small_session_credit(
    peers_python: str, certificate: CertificateFiles
) -> None:
    # Both sides grant 8 KiB and 2 streams of each kind per session; each sends 528 KiB on 44
    # streams: credit is renewed dozens of times each way.
    probe = Probe()
    async with (
        our_server(
            certificate,
            probe,
            initial_max_data=SMALL_DATA,
            initial_max_streams_bidi=SMALL_STREAMS,
            initial_max_streams_uni=SMALL_STREAMS,
        ) as port,
        asyncio.timeout(TEST_TIMEOUT),
    ):
        outcome = await run_peer_client(
            peers_python,
            SCRIPT,
            f"https://127.0.0.1:{port}/echo",
            "many",
            ("--ca", certificate.certfile),
            {
                **small_credit(),
                "count": FLOW_BIDI,
                "uni": FLOW_UNI,
                "batch": FLOW_BATCH,
                "size": FLOW_SIZE,
            },
        )
        dialect = await probe.wait("dialect")
        at_start = await probe.wait("credit_at_start")
        fc = await probe.wait("credit")
    assert dialect is Dialect.DRAFT15
    assert (outcome["bidi_ok"], outcome["uni_ok"]) == (FLOW_BIDI, FLOW_UNI)
    # Each side started from the other's small credit.
    assert at_start == (SMALL_DATA, {True: SMALL_STREAMS, False: SMALL_STREAMS})
    peer_start = outcome["at_start"]
    assert (peer_start["peer_max_data"], peer_start["peer_max_streams_bidi"]) == (
        SMALL_DATA,
        SMALL_STREAMS,
    )
    assert peer_start["peer_max_streams_uni"] == SMALL_STREAMS
    assert peer_start["local_max_data"] == SMALL_DATA
    # We renewed the peer's credit for all it sent (one window per update at most), and it
    # counted our updates; it renewed ours for our echoes.
    needed = FLOW_BYTES // SMALL_DATA - 1
    assert fc.received == FLOW_BYTES
    assert data_renewals_at_least(fc) >= needed
    assert stream_renewals_at_least(fc, bidirectional=True) >= FLOW_BIDI // SMALL_STREAMS - 1
    assert stream_renewals_at_least(fc, bidirectional=False) >= FLOW_UNI // SMALL_STREAMS - 1
    events = outcome["flow_events"]
    assert events["session_max_data_updated"] >= needed
    assert events["session_max_streams_bidi_updated"] >= FLOW_BIDI // SMALL_STREAMS - 1
    assert fc.sent == FLOW_BYTES <= fc.remote_max_data
    assert fc.remote_max_streams[False] >= FLOW_UNI
    assert events["session_data_blocked"] >= 1  # our echoes waited for its credit, and said so


@pytest.mark.covers("protocols", "pwt021-client")
async def test_their_client_gets_our_preferred_protocol(
    peers_python: str, certificate: CertificateFiles
) -> None:
    probe = Probe()
    trust = ("--ca", certificate.certfile)
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        our_server_instance(certificate, probe, protocols=["json", "chat"]) as server,
    ):
        ours = OurServer(server.local_address[1], probe, peers_python, SCRIPT, trust)
        outcome = await ours.run("/echo", "bidi", size=1000, protocols="chat,json")
        chosen = await probe.wait("protocol")
        headers = await probe.wait("headers")
    assert outcome["small_ok"]
    assert (chosen, outcome["protocol"]) == ("json", "json")
    assert headers["wt-available-protocols"] == '"chat", "json"'


@pytest.mark.covers("protocols", "pwt021-server")
async def test_our_client_gets_their_preferred_protocol(
    peers_python: str, certificate: CertificateFiles
) -> None:
    config = ClientConfig(
        ca_certs=certificate.certfile, connect_timeout=T, protocols=["chat", "json"]
    )
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        peer_server(peers_python, SCRIPT, certificate, "protocols=json,chat") as server,
        WebTransportClient(config=config) as client,
    ):
        session = await client.connect(url=server.url("/echo"))
        assert await echo_once(session, b"hello") == b"hello"
        protocol = session.protocol
        await session.close()
        observed = await server.session_result()
    assert protocol == "json"
    assert (observed["offered"], observed["protocol"]) == (["chat", "json"], "json")
