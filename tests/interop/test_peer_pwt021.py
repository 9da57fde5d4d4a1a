"""Interoperability with pywebtransport 0.21.1 (the PyPI release: Rust core on quinn), both ways.

0.21.1 shares this project's name only: it is a different stack that speaks draft-15 alone. The
peer (``peers/peer_pwt021.py``, run under the peers' Python 3.12) imports it from the peers'
virtualenv. The sessions are asserted to be draft-15 on our side, so a fall-back to an older
dialect fails. Draft-15 has session flow control, and 0.21.1 enforces and reports it: the tests
run transfers under credit small enough (8 KiB of data, 2 streams of each kind) that it is
renewed dozens of times, in both directions, and check the limits each side saw.

* our ``WebTransportClient`` against the 0.21.1 server (routes: ``peers/peer_pwt021.py``);
* the 0.21.1 client against our ``WebTransportServer`` (routes: ``peer_support.py``).

Codes are 32-bit application codes with the top bit set and the close reason is 1,002 bytes of
UTF-8: both arrive whole, both ways. 0.21.1 reports the codes of the resets and STOP_SENDINGs
it receives as events; its ``session_max_data_updated`` / ``session_data_blocked`` events count
the WT_MAX_DATA / WT_DATA_BLOCKED capsules we send it. What it does its own way is asserted as it
does it:

* a write that a STOP_SENDING ended fails with 0.21.1's own ``LIB_STREAM_STATE_ERROR``
  (0x13000001): the peer's code is in the event only (a read that a reset ended carries the code);
* its datagrams stay within 1,200-byte packets: 1,161 bytes of payload at most, and a larger
  datagram it received is not echoed (``DatagramError`` 0x1001 on its side).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio

from pywebtransport import (
    ClientConfig,
    WebTransportClient,
    WebTransportReceiveStream,
    WebTransportStream,
)
from pywebtransport.exceptions import StreamError
from pywebtransport.protocol.wire import Dialect
from tests.conftest import T
from tests.faults import report
from tests.interop.conftest import CertificateFiles
from tests.interop.peer_support import (
    CODE_HIGH,
    CODE_MAX,
    LONG_REASON,
    PROBE_RESET_CODE,
    PROBE_STOP_CODE,
    SERVER_CLOSE,
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
    restart_peer_server_under_our_client,
    restart_under_peer_client,
    run_peer_client,
    run_through_a_retry,
    send_uni,
    stream_renewals_at_least,
)

pytestmark = pytest.mark.interop

SCRIPT = "peer_pwt021.py"
TEST_TIMEOUT = 6 * T
"""Upper bound on every test."""
STREAM_SIZE = 300_000
"""Large enough to span many packets and the peers' initial flow-control windows."""
MANY = 200
"""Streams of each kind in the many-streams tests: more than either side allows open at once
(0.21.1 grants 10 per session at first, we grant 100)."""
BATCH = 25
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


@pytest.mark.covers("bidi", "pwt021-server")
async def test_our_client_bidi_echo(pwt_server: PeerServer, client: WebTransportClient) -> None:
    payload = pattern(STREAM_SIZE, seed=1)
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=pwt_server.url("/echo"))
        dialect = dialect_of(session)
        small = await echo_once(session, b"hello")
        large = await echo_once(session, payload)
        empty = await echo_once(session, b"")
        await session.close()
        observed = await pwt_server.session_result()
    assert dialect is Dialect.DRAFT15
    assert (small, empty) == (b"hello", b"")
    assert large == payload
    assert observed["bidi_echoed"] == 3
    assert observed["bytes_received"] == STREAM_SIZE + 5


@pytest.mark.covers("uni", "pwt021-server")
async def test_our_client_unidirectional_both_ways(
    pwt_server: PeerServer, client: WebTransportClient
) -> None:
    payload = pattern(50_000, seed=3)
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=pwt_server.url("/echo"))
        outgoing = await session.create_unidirectional_stream()
        await outgoing.write_all(payload)
        incoming = await session.accept_unidirectional_stream()
        received = await incoming.read_all()
        await session.close()
        observed = await pwt_server.session_result()
    assert outgoing.stream_id % 4 == 2 and incoming.stream_id % 4 == 3
    assert received == payload
    assert observed["uni_echoed"] == 1


@pytest.mark.covers("bidi-server", "pwt021-server")
async def test_our_client_accepts_server_opened_streams(
    pwt_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=pwt_server.url("/push?bidi=3&uni=3"))
        bidi: list[bytes] = []
        for _ in range(3):
            stream = await session.accept_bidirectional_stream()
            assert stream.stream_id % 4 == 1  # server-initiated bidirectional
            data = await stream.read_all()
            bidi.append(data)
            await stream.write_all(b"reply:" + data)
        uni = [await (await session.accept_unidirectional_stream()).read_all() for _ in range(3)]
        pushed = await pwt_server.next("pushed")  # the peer checked our replies
        await session.close()
        await pwt_server.session_result()
    assert sorted(bidi) == [b"server-bidi-%d" % i for i in range(3)]
    assert sorted(uni) == [b"server-uni-%d" % i for i in range(3)]
    assert (pushed["bidi_ok"], pushed["uni_sent"]) == (3, 3)


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


@pytest.mark.covers("close", "pwt021-server")
async def test_our_client_sees_peer_close(
    pwt_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(
            url=pwt_server.url(f"/close?code={CODE_MAX}&reason={quote(LONG_REASON)}")
        )
        await session.wait_closed()
        observed = await pwt_server.session_result()
    assert (session.close_code, session.close_reason) == (CODE_MAX, LONG_REASON)
    assert observed["close"] == {"code": CODE_MAX, "reason": LONG_REASON}


@pytest.mark.covers("close", "pwt021-server")
async def test_our_close_reaches_peer(pwt_server: PeerServer, client: WebTransportClient) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=pwt_server.url("/echo"))
        await session.close(code=CODE_MAX, reason=LONG_REASON)
        observed = await pwt_server.session_result()
    assert observed["close"] == {"code": CODE_MAX, "reason": LONG_REASON}


@pytest.mark.covers("reset", "pwt021-server")
@pytest.mark.covers("stop-sending", "pwt021-server")
async def test_our_client_sees_peer_reset_and_stop_codes(
    pwt_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(
            url=pwt_server.url(f"/reset?reset={CODE_MAX}&stop={CODE_HIGH}")
        )
        stream = await session.create_bidirectional_stream()
        await stream.write(b"first bytes")
        with pytest.raises(StreamError) as reset:
            await stream.read_all()
        with pytest.raises(StreamError) as stopped:
            while True:  # until the STOP_SENDING arrives (bounded by the test's timeout)
                await stream.write(b"more" * 256)
        await session.close()
        await pwt_server.session_result()
    assert reset.value.error_code == CODE_MAX
    assert stopped.value.error_code == CODE_HIGH


@pytest.mark.covers("reset", "pwt021-server")
@pytest.mark.covers("stop-sending", "pwt021-server")
async def test_our_reset_and_stop_codes_reach_peer(
    pwt_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=pwt_server.url("/echo"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"partial")
        assert await stream.read(7) == b"partial"
        await stream.abort(code=CODE_MAX)
        reset = await pwt_server.next("reset")
        # The peer answers a reset with a reset of the code it received.
        with pytest.raises(StreamError) as mirrored:
            await stream.read_all()
        await session.close()
        echo_observed = await pwt_server.session_result()

        session = await client.connect(url=pwt_server.url("/source"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"go")
        assert await stream.read(1000)
        await stream.stop(code=CODE_HIGH)
        stop = await pwt_server.next("stop")
        await session.close()
        source_observed = await pwt_server.session_result()
    assert reset["code"] == CODE_MAX and echo_observed["resets"] == [CODE_MAX]
    assert mirrored.value.error_code == CODE_MAX
    assert stop["code"] == CODE_HIGH and source_observed["stops"] == [CODE_HIGH]


@pytest.mark.covers("many-streams", "pwt021-server")
async def test_our_client_many_streams(pwt_server: PeerServer, client: WebTransportClient) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=pwt_server.url("/echo"))
        bidi_ok = 0
        for start in range(0, MANY, BATCH):
            names = [b"stream-%d" % i for i in range(start, start + BATCH)]
            echoed = await asyncio.gather(*(echo_once(session, name) for name in names))
            bidi_ok += echoed == names
        # The peer echoes each unidirectional stream on a stream of its own. A batch ends when
        # its echoes are read.
        received: list[bytes] = []
        for start in range(0, MANY, BATCH):
            await asyncio.gather(
                *(send_uni(session, b"uni-%d" % i) for i in range(start, start + BATCH))
            )
            received += await read_uni_streams(session, BATCH)
        await session.close()
        observed = await pwt_server.session_result()
    assert bidi_ok == MANY // BATCH
    assert sorted(received) == sorted(b"uni-%d" % i for i in range(MANY))
    assert (observed["bidi_echoed"], observed["uni_echoed"]) == (MANY, MANY)
    # 0.21.1 granted 10 streams of each kind at first: it renewed its credit for the rest.
    assert observed["at_start"]["local_max_streams_bidi"] == 10


@pytest.mark.covers("many-streams", "pwt021-server")
async def test_our_client_accepts_many_server_opened_streams(
    pwt_server: PeerServer, client: WebTransportClient
) -> None:
    # The peer opens them BATCH of each kind at a time, 200 in all: more than we allow open at
    # once (100), so our credit must be renewed. Streams are read as they come.
    received: list[bytes] = []
    all_received = asyncio.Event()

    async def take(stream: WebTransportStream | WebTransportReceiveStream) -> None:
        data = await stream.read_all()
        if isinstance(stream, WebTransportStream):
            await stream.write_all(b"reply:" + data)
            return
        received.append(data)
        if len(received) == MANY:
            all_received.set()

    async with asyncio.timeout(TEST_TIMEOUT):
        path = f"/push?bidi={MANY}&uni={MANY}&batch={BATCH}"
        session = await client.connect(url=pwt_server.url(path))
        tasks = []
        async for stream in session.incoming_streams():
            tasks.append(asyncio.create_task(take(stream)))
            if len(tasks) == 2 * MANY:
                break
        await asyncio.gather(*tasks)
        await all_received.wait()
        pushed = await pwt_server.next("pushed")  # the peer checked our replies
        await session.close()
        observed = await pwt_server.session_result()
    assert (pushed["bidi_ok"], pushed["uni_sent"]) == (MANY, MANY)
    assert sorted(received) == sorted(b"server-uni-%d" % i for i in range(MANY))
    assert observed["at_start"]["peer_max_streams_bidi"] == 100  # what we granted at first


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


@pytest.mark.covers("stateless-reset", "pwt021-server")
async def test_our_session_on_a_restarted_pwt021_server(
    peers_python: str, certificate: CertificateFiles
) -> None:
    config = ClientConfig(ca_certs=certificate.certfile, connect_timeout=T, idle_timeout=2.0)
    async with asyncio.timeout(4 * TEST_TIMEOUT):
        seen = await restart_peer_server_under_our_client(
            peers_python, SCRIPT, certificate, "/echo", config
        )
    report(f"0.21.1 server restarted: {seen}")
    assert seen.echoed == b"hello"
    # The new server's stateless resets (if any) carry a new key: our session ends only at
    # our idle timeout, 2 s after the old server's last packet.
    assert seen.by_idle_timeout, seen
    assert 1.5 < seen.since_kill < 3.0, seen


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


@pytest.mark.covers("bidi", "pwt021-client")
async def test_their_client_bidi_echo(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/echo", "bidi", size=STREAM_SIZE)
        dialect = await our_pwt_server.probe.wait("dialect")
    assert dialect is Dialect.DRAFT15
    assert outcome["small_ok"] and outcome["large_ok"] and outcome["empty_ok"]
    assert outcome["large"] == STREAM_SIZE


@pytest.mark.covers("uni", "pwt021-client")
async def test_their_client_unidirectional_both_ways(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/echo", "uni", size=50_000)
    assert outcome["ok"] and outcome["received"] == 50_000


@pytest.mark.covers("datagrams", "pwt021-client")
@pytest.mark.covers("datagram-size", "pwt021-client")
async def test_their_client_datagrams_both_ways(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/echo", "datagrams", size=PEER_DATAGRAM_LIMIT)
        received = await our_pwt_server.probe.wait("datagrams")
    # 0.21.1's largest datagram arrives whole, and our echo of it comes back.
    assert outcome["answers_ok"] == [True, True]
    assert PEER_DATAGRAM_LIMIT in [length for length, _ in received]


@pytest.mark.covers("bidi-server", "pwt021-client")
async def test_their_client_accepts_our_streams(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/push?bidi=3&uni=3", "accept", bidi=3, uni=3)
        pushed = await our_pwt_server.probe.wait("push")
    assert outcome["bidi"] == [f"server-bidi-{i}" for i in range(3)]
    assert outcome["uni"] == [f"server-uni-{i}" for i in range(3)]
    assert pushed == {"bidi_ok": 3, "uni_sent": 3, "errors": []}
    assert outcome["closed"] == {"code": 0, "reason": ""}  # ours, once the answers were read


@pytest.mark.covers("close", "pwt021-client")
async def test_their_close_reaches_us(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/hold", "close", code=CODE_MAX, reason=LONG_REASON)
        closed = await our_pwt_server.probe.wait("closed")
    assert closed == (CODE_MAX, LONG_REASON)
    assert outcome["closed"] == {"code": CODE_MAX, "reason": LONG_REASON}


@pytest.mark.covers("close", "pwt021-client")
async def test_their_client_sees_our_close(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/close", "await-close")
    code, reason = SERVER_CLOSE
    assert outcome["closed"] == {"code": code, "reason": reason}


@pytest.mark.covers("reset", "pwt021-client")
@pytest.mark.covers("stop-sending", "pwt021-client")
async def test_their_reset_and_stop_codes_reach_us(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/observe", "send-reset", reset=CODE_MAX, stop=CODE_HIGH)
        reset = await our_pwt_server.probe.wait("reset")
        stop = await our_pwt_server.probe.wait("stop")
    assert outcome["confirmed"] == "got"
    assert reset[0] == CODE_MAX
    assert stop[0] == CODE_HIGH


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


@pytest.mark.covers("many-streams", "pwt021-client")
async def test_their_client_many_streams(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/echo", "many", count=MANY, batch=BATCH)
    assert (outcome["bidi_ok"], outcome["uni_sent"], outcome["uni_ok"]) == (MANY, MANY, MANY)
    # We granted 100 streams of each kind at first: the rest came with our renewals.
    assert outcome["at_start"]["peer_max_streams_bidi"] == 100
    assert outcome["flow_events"]["session_max_streams_bidi_updated"] >= 1


@pytest.mark.covers("many-streams", "pwt021-client")
async def test_their_client_accepts_many_streams_from_us(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run(
            f"/push?bidi={MANY}&uni={MANY}", "accept", bidi=MANY, uni=MANY
        )
        pushed = await our_pwt_server.probe.wait("push")
    assert len(outcome["bidi"]) == len(outcome["uni"]) == MANY
    # 0.21.1 granted 10 streams of each kind at first; our 400 waited for its renewals.
    assert outcome["at_start"]["local_max_streams_bidi"] == 10
    assert pushed == {"bidi_ok": MANY, "uni_sent": MANY, "errors": []}


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


@pytest.mark.covers("retry", "pwt021-client")
async def test_their_client_follows_our_retry(
    peers_python: str, certificate: CertificateFiles
) -> None:
    trust = ("--ca", certificate.certfile)
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome, stats = await run_through_a_retry(
            peers_python, SCRIPT, certificate, trust, "bidi", size=STREAM_SIZE
        )
    assert outcome["small_ok"] and outcome["large_ok"] and outcome["empty_ok"]
    # Only the Initial that carried the Retry's token made a connection.
    assert stats["retries_sent"] >= 1 and stats["connections_accepted"] == 1, stats


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


@pytest.mark.covers("origin", "pwt021-client")
async def test_their_client_sends_no_origin(our_pwt_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_pwt_server.run("/echo", "bidi", size=1000)
        headers = await our_pwt_server.probe.wait("headers")
    assert outcome["small_ok"]
    # No origin header: OriginAllowlist lets such a client through unless ``require=True``.
    assert "origin" not in headers, headers


@pytest.mark.covers("stateless-reset", "pwt021-client")
async def test_their_session_ends_promptly_when_our_server_restarts(
    peers_python: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT):
        seen = await restart_under_peer_client(
            peers_python,
            SCRIPT,
            tmp_path,
            lambda cert: ("--ca", str(cert.certfile)),
            timeout=TEST_TIMEOUT,
        )
    report(f"pwt021: {seen}")
    assert seen.connected == {"connected": True}
    # Its connection ends with quinn's "reset by peer": the stateless reset.
    assert seen.ended["closed"]["reason"] == "reset by peer", seen
    assert seen.seconds < 3.0, seen
