"""Interoperability with web-transport-quinn 0.1.0 (Rust quinn), in both directions.

The peer (``peers/peer_quinn.py``, run under the peers' Python 3.12) speaks draft-07 with us:
the sessions are asserted to be draft-07 on our side, so a fall-back to draft-02 fails. Draft-07
has no session flow control; the QUIC stream limits are renewed (200 streams of each kind, more
than either side allows open at once, opened 25 at a time).

* our ``WebTransportClient`` against the quinn server (its routes: ``peers/peer_quinn.py``);
* the quinn client against our ``WebTransportServer`` (routes: ``peer_support.py``).

Codes are 32-bit application codes with the top bit set (0xFFFFFFFF, 0xDEADBEEF) and the close
reason is 1,002 bytes of UTF-8: both arrive whole, both ways. What quinn does its own way is
asserted as it does it (see the tests' comments):

* its datagram limit (``max_datagram_size``) follows its path MTU discovery: 1,161 or 1,287
  bytes at first, up to 1,413 on loopback;
* ``Session.close(code, reason)`` sends the close capsule and then CONNECTION_CLOSE at once; the
  capsule's code and reason are what the other side's session ends with, and quinn reports its
  own session as ``SessionClosedLocally``.
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
from tests.conftest import T, current_engine
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
    datagram_roundtrip,
    dialect_of,
    echo_once,
    largest_datagram_echoed,
    our_server,
    pattern,
    peer_server,
    read_uni_streams,
    restart_peer_server_under_our_client,
    restart_under_peer_client,
    run_through_a_retry,
    send_uni,
)

pytestmark = pytest.mark.interop

SCRIPT = "peer_quinn.py"
TEST_TIMEOUT = 6 * T
"""Upper bound on every test."""
STREAM_SIZE = 300_000
"""Large enough to span many packets and the peers' initial flow-control windows."""
MANY = 200
"""Streams of each kind in the many-streams tests: more than either side allows open at once."""
BATCH = 25


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


@pytest.mark.covers("bidi", "quinn-server")
async def test_our_client_bidi_echo(quinn_server: PeerServer, client: WebTransportClient) -> None:
    payload = pattern(STREAM_SIZE, seed=1)
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=quinn_server.url("/echo"))
        dialect = dialect_of(session)
        small = await echo_once(session, b"hello")
        large = await echo_once(session, payload)
        empty = await echo_once(session, b"")
        await session.close()
        observed = await quinn_server.session_result()
    assert dialect is Dialect.DRAFT07
    assert (small, empty) == (b"hello", b"")
    assert large == payload
    assert observed["bidi_echoed"] == 3
    assert observed["bytes_received"] == STREAM_SIZE + 5


@pytest.mark.covers("uni", "quinn-server")
async def test_our_client_unidirectional_both_ways(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    payload = pattern(50_000, seed=3)
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=quinn_server.url("/echo"))
        outgoing = await session.create_unidirectional_stream()
        await outgoing.write_all(payload)
        incoming = await session.accept_unidirectional_stream()
        received = await incoming.read_all()
        await session.close()
        observed = await quinn_server.session_result()
    assert outgoing.stream_id % 4 == 2 and incoming.stream_id % 4 == 3
    assert received == payload
    assert observed["uni_echoed"] == 1


@pytest.mark.covers("bidi-server", "quinn-server")
async def test_our_client_accepts_server_opened_streams(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=quinn_server.url("/push?bidi=3&uni=3"))
        bidi: list[bytes] = []
        for _ in range(3):
            stream = await session.accept_bidirectional_stream()
            assert stream.stream_id % 4 == 1  # server-initiated bidirectional
            data = await stream.read_all()
            bidi.append(data)
            await stream.write_all(b"reply:" + data)
        uni = [await (await session.accept_unidirectional_stream()).read_all() for _ in range(3)]
        pushed = await quinn_server.next("pushed")  # the peer checked our replies
        await session.close()
        await quinn_server.session_result()
    assert sorted(bidi) == [b"server-bidi-%d" % i for i in range(3)]
    assert sorted(uni) == [b"server-uni-%d" % i for i in range(3)]
    assert (pushed["bidi_ok"], pushed["uni_sent"]) == (3, 3)


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


@pytest.mark.covers("close", "quinn-server")
async def test_our_client_sees_peer_close(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(
            url=quinn_server.url(f"/close?code={CODE_MAX}&reason={quote(LONG_REASON)}")
        )
        await session.wait_closed()
        observed = await quinn_server.session_result()
    # quinn sends the close capsule and then CONNECTION_CLOSE: the capsule's code and reason
    # are what the session ends with.
    assert (session.close_code, session.close_reason) == (CODE_MAX, LONG_REASON)
    assert observed["close"]["type"] == "SessionClosedLocally"


@pytest.mark.covers("close", "quinn-server")
async def test_our_close_reaches_peer(quinn_server: PeerServer, client: WebTransportClient) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=quinn_server.url("/echo"))
        await session.close(code=CODE_MAX, reason=LONG_REASON)
        observed = await quinn_server.session_result()
    close = observed["close"]
    assert (close["type"], close["source"]) == ("SessionClosedByPeer", "session")
    assert (close["code"], close["reason"]) == (CODE_MAX, LONG_REASON)


@pytest.mark.covers("reset", "quinn-server")
@pytest.mark.covers("stop-sending", "quinn-server")
async def test_our_client_sees_peer_reset_and_stop_codes(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(
            url=quinn_server.url(f"/reset?reset={CODE_MAX}&stop={CODE_HIGH}")
        )
        stream = await session.create_bidirectional_stream()
        await stream.write(b"first bytes")
        with pytest.raises(StreamError) as reset:
            await stream.read_all()
        with pytest.raises(StreamError) as stopped:
            while True:  # until the STOP_SENDING arrives (bounded by the test's timeout)
                await stream.write(b"more" * 256)
        await session.close()
        await quinn_server.session_result()
    assert reset.value.error_code == CODE_MAX
    assert stopped.value.error_code == CODE_HIGH


@pytest.mark.covers("reset", "quinn-server")
@pytest.mark.covers("stop-sending", "quinn-server")
async def test_our_reset_and_stop_codes_reach_peer(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=quinn_server.url("/echo"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"partial")
        assert await stream.read(7) == b"partial"
        await stream.abort(code=CODE_MAX)
        reset = await quinn_server.next("reset")
        # The peer answers a reset with a reset of the code it received.
        with pytest.raises(StreamError) as mirrored:
            await stream.read_all()
        await session.close()
        echo_observed = await quinn_server.session_result()

        session = await client.connect(url=quinn_server.url("/source"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"go")
        assert await stream.read(1000)
        await stream.stop(code=CODE_HIGH)
        stop = await quinn_server.next("stop")
        await session.close()
        source_observed = await quinn_server.session_result()
    assert reset["code"] == CODE_MAX and echo_observed["resets"] == [CODE_MAX]
    assert mirrored.value.error_code == CODE_MAX
    assert stop["code"] == CODE_HIGH and source_observed["stops"] == [CODE_HIGH]


@pytest.mark.covers("many-streams", "quinn-server")
async def test_our_client_many_streams(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=quinn_server.url("/echo"))
        bidi_ok = 0
        for start in range(0, MANY, BATCH):
            names = [b"stream-%d" % i for i in range(start, start + BATCH)]
            echoed = await asyncio.gather(*(echo_once(session, name) for name in names))
            bidi_ok += echoed == names
        # Unidirectional streams both ways: the peer echoes each on a stream of its own, more
        # of them than we allow open at once (100), so our MAX_STREAMS must be renewed too. A
        # batch ends when its echoes are read.
        received: list[bytes] = []
        for start in range(0, MANY, BATCH):
            await asyncio.gather(
                *(send_uni(session, b"uni-%d" % i) for i in range(start, start + BATCH))
            )
            received += await read_uni_streams(session, BATCH)
        await session.close()
        observed = await quinn_server.session_result()
    assert bidi_ok == MANY // BATCH
    assert sorted(received) == sorted(b"uni-%d" % i for i in range(MANY))
    assert (observed["bidi_echoed"], observed["uni_echoed"]) == (MANY, MANY)


@pytest.mark.covers("many-streams", "quinn-server")
async def test_our_client_accepts_many_server_opened_streams(
    quinn_server: PeerServer, client: WebTransportClient
) -> None:
    # The peer opens them BATCH of each kind at a time, 200 in all: more than we allow open at
    # once (100), so our MAX_STREAMS must be renewed. Streams are read as they come.
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
        session = await client.connect(url=quinn_server.url(path))
        tasks = []
        async for stream in session.incoming_streams():
            tasks.append(asyncio.create_task(take(stream)))
            if len(tasks) == 2 * MANY:
                break
        await asyncio.gather(*tasks)
        await all_received.wait()
        pushed = await quinn_server.next("pushed")  # the peer checked our replies
        await session.close()
        await quinn_server.session_result()
    assert (pushed["bidi_ok"], pushed["uni_sent"]) == (MANY, MANY)
    assert sorted(received) == sorted(b"server-uni-%d" % i for i in range(MANY))


@pytest.mark.covers("stateless-reset", "quinn-server")
async def test_our_session_on_a_restarted_quinn_server(
    peers_python: str, certificate: CertificateFiles
) -> None:
    config = ClientConfig(
        server_certificate_hashes=[certificate.sha256], connect_timeout=T, idle_timeout=2.0
    )
    async with asyncio.timeout(4 * TEST_TIMEOUT):
        seen = await restart_peer_server_under_our_client(
            peers_python, SCRIPT, certificate, "/echo", config
        )
    report(f"quinn server restarted: {seen}")
    assert seen.echoed == b"hello"
    # The new quinn server has a new stateless-reset key: our session learns nothing from it
    # and ends only at our idle timeout, 2 s after the old server's last packet.
    assert seen.by_idle_timeout, seen
    assert 1.5 < seen.since_kill < 3.0, seen


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


@pytest.mark.covers("bidi", "quinn-client")
async def test_their_client_bidi_echo(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/echo", "bidi", size=STREAM_SIZE)
        dialect = await our_quinn_server.probe.wait("dialect")
    assert dialect is Dialect.DRAFT07
    assert outcome["small_ok"] and outcome["large_ok"] and outcome["empty_ok"]
    assert outcome["large"] == STREAM_SIZE


@pytest.mark.covers("uni", "quinn-client")
async def test_their_client_unidirectional_both_ways(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/echo", "uni", size=50_000)
    assert outcome["ok"] and outcome["received"] == 50_000


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


@pytest.mark.covers("bidi-server", "quinn-client")
async def test_their_client_accepts_our_streams(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/push?bidi=3&uni=3", "accept", bidi=3, uni=3)
        pushed = await our_quinn_server.probe.wait("push")
    assert outcome["bidi"] == [f"server-bidi-{i}" for i in range(3)]
    assert outcome["uni"] == [f"server-uni-{i}" for i in range(3)]
    assert pushed == {"bidi_ok": 3, "uni_sent": 3, "errors": []}
    # The client waited for our close (quinn's own close would drop answers not yet sent).
    assert (outcome["closed"]["source"], outcome["closed"]["code"]) == ("session", 0)


@pytest.mark.covers("close", "quinn-client")
async def test_their_close_reaches_us(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/hold", "close", code=CODE_MAX, reason=LONG_REASON)
        closed = await our_quinn_server.probe.wait("closed")
    assert closed == (CODE_MAX, LONG_REASON)
    assert outcome["closed"]["type"] == "SessionClosedLocally"


@pytest.mark.covers("close", "quinn-client")
async def test_their_client_sees_our_close(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/close", "await-close")
    closed = outcome["closed"]
    assert (closed["type"], closed["source"]) == ("SessionClosedByPeer", "session")
    assert (closed["code"], closed["reason"]) == SERVER_CLOSE


@pytest.mark.covers("reset", "quinn-client")
@pytest.mark.covers("stop-sending", "quinn-client")
async def test_their_reset_and_stop_codes_reach_us(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run(
            "/observe", "send-reset", reset=CODE_MAX, stop=CODE_HIGH
        )
        reset = await our_quinn_server.probe.wait("reset")
        stop = await our_quinn_server.probe.wait("stop")
    assert outcome["confirmed"] == "got"
    assert reset[0] == CODE_MAX
    assert stop[0] == CODE_HIGH


@pytest.mark.covers("reset", "quinn-client")
@pytest.mark.covers("stop-sending", "quinn-client")
async def test_their_client_sees_our_reset_and_stop_codes(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/reset-probe", "receive-reset")
    assert outcome["reset"] == {"kind": "reset", "code": PROBE_RESET_CODE}
    assert outcome["stop"] == {"kind": "stop", "code": PROBE_STOP_CODE}


@pytest.mark.covers("many-streams", "quinn-client")
async def test_their_client_many_streams(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/echo", "many", count=MANY, batch=BATCH)
    assert (outcome["bidi_ok"], outcome["uni_sent"], outcome["uni_ok"]) == (MANY, MANY, MANY)


@pytest.mark.covers("many-streams", "quinn-client")
async def test_their_client_accepts_many_streams_from_us(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run(
            f"/push?bidi={MANY}&uni={MANY}", "accept", bidi=MANY, uni=MANY
        )
        pushed = await our_quinn_server.probe.wait("push")
    assert len(outcome["bidi"]) == len(outcome["uni"]) == MANY
    assert pushed == {"bidi_ok": MANY, "uni_sent": MANY, "errors": []}


@pytest.mark.covers("retry", "quinn-client")
async def test_their_client_follows_our_retry(
    peers_python: str, certificate: CertificateFiles
) -> None:
    trust = ("--cert-hash", certificate.sha256.hex())
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome, stats = await run_through_a_retry(
            peers_python, SCRIPT, certificate, trust, "bidi", size=STREAM_SIZE
        )
    assert outcome["small_ok"] and outcome["large_ok"] and outcome["empty_ok"]
    # Only the Initial that carried the Retry's token made a connection.
    assert stats["retries_sent"] >= 1 and stats["connections_accepted"] == 1, stats


@pytest.mark.covers("origin", "quinn-client")
async def test_their_client_sends_no_origin(our_quinn_server: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await our_quinn_server.run("/echo", "bidi", size=1000)
        headers = await our_quinn_server.probe.wait("headers")
    assert outcome["small_ok"]
    # No origin header: OriginAllowlist lets such a client through unless ``require=True``.
    assert "origin" not in headers, headers


@pytest.mark.covers("stateless-reset", "quinn-client")
async def test_their_session_ends_promptly_when_our_server_restarts(
    peers_python: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT):
        seen = await restart_under_peer_client(
            peers_python,
            SCRIPT,
            tmp_path,
            lambda cert: ("--cert-hash", cert.sha256.hex()),
            timeout=TEST_TIMEOUT,
        )
    report(f"quinn: {seen}")
    assert seen.connected == {"connected": True}
    # quinn reports a session ended by a stateless reset as closed locally.
    assert seen.ended["closed"]["type"] == "SessionClosedLocally", seen
    assert seen.seconds < 3.0, seen
