"""What web-transport-quinn 0.1.0 and pywebtransport 0.21.1 are tested for alike, both ways.

Both are Rust stacks on quinn, run as child processes under the peers' Python 3.12
(``peers/peer_quinn.py``, ``peers/peer_pwt021.py``) with the same routes and client scenarios,
so each test here runs once per :class:`Stack`. quinn speaks draft-07 with us, 0.21.1 draft-15:
the sessions are asserted to speak that dialect on our side, so a fall-back fails.

* our ``WebTransportClient`` against the peer's server (its routes: the peer scripts);
* the peer's client against our ``WebTransportServer`` (routes: ``peer_support.py``).

Codes are 32-bit application codes with the top bit set (0xFFFFFFFF, 0xDEADBEEF) and the close
reason is 1,002 bytes of UTF-8: both arrive whole, both ways. Stream limits are renewed: 200
streams of each kind, more than either side allows open at once, opened 25 at a time. Where the
two stacks report something their own way, the :class:`Stack` says what each reports; what only
one of them does is tested in ``test_peer_quinn.py`` and ``test_peer_pwt021.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from _pytest.mark.structures import MarkDecorator

from pywebtransport import (
    ClientConfig,
    WebTransportClient,
    WebTransportReceiveStream,
    WebTransportStream,
)
from pywebtransport.exceptions import StreamError
from pywebtransport.protocol.wire import Dialect
from tests.certs import CertBundle
from tests.conftest import T
from tests.faults import report
from tests.interop.conftest import CertificateFiles
from tests.interop.peer_support import (
    CODE_HIGH,
    CODE_MAX,
    LONG_REASON,
    SERVER_CLOSE,
    OurServer,
    PeerServer,
    Probe,
    dialect_of,
    echo_once,
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

TEST_TIMEOUT = 6 * T
"""Upper bound on every test."""
STREAM_SIZE = 300_000
"""Large enough to span many packets and the peers' initial flow-control windows."""
MANY = 200
"""Streams of each kind in the many-streams tests: more than either side allows open at once."""
BATCH = 25
OUR_INITIAL_STREAMS = 100
"""The stream credit of each kind our side grants at first (the default configuration)."""


@dataclass(frozen=True)
class Stack:
    """One peer stack, and what it reports its own way in the tests both stacks share."""

    name: str
    """The stack's name in the interop matrix (its columns are ``<name>-client/-server``)."""
    script: str
    dialect: Dialect
    pins_hash: bool
    """Whether our client trusts the peer's certificate by its hash (else as a CA), and the
    peer's client ours likewise: each stack is run one way, so both are covered."""
    closed_locally: dict[str, Any]
    """What the peer reports of a session it closed itself with ``CODE_MAX`` and the long
    reason (the fields it reports, at least)."""
    closed_by_us: dict[str, Any]
    """What the peer reports, beyond code and reason, of a session we closed."""
    reset_end: dict[str, Any]
    """What the peer's client reports when our restarted server's stateless reset ended it."""
    initial_streams: int | None = None
    """The stream credit of each kind the peer grants at first, when it reports its credit
    (it then also reports what we granted); None: it reports none."""

    def client_config(self, certificate: CertificateFiles, **options: Any) -> ClientConfig:
        """Our client's configuration, trusting ``certificate`` this stack's way."""
        if self.pins_hash:
            options["server_certificate_hashes"] = [certificate.sha256]
        else:
            options["ca_certs"] = certificate.certfile
        return ClientConfig(connect_timeout=T, **options)

    def peer_trust(self, certificate: CertificateFiles | CertBundle) -> tuple[str, ...]:
        """The peer client's arguments that make it trust ``certificate``."""
        if self.pins_hash:
            return ("--cert-hash", certificate.sha256.hex())
        return ("--ca", str(certificate.certfile))


QUINN = Stack(
    name="quinn",
    script="peer_quinn.py",
    dialect=Dialect.DRAFT07,
    pins_hash=True,
    # quinn's close() sends the close capsule, then CONNECTION_CLOSE at once.
    closed_locally={"type": "SessionClosedLocally"},
    closed_by_us={"type": "SessionClosedByPeer", "source": "session"},
    # quinn reports a session ended by a stateless reset as closed locally.
    reset_end={"type": "SessionClosedLocally"},
)
PWT021 = Stack(
    name="pwt021",
    script="peer_pwt021.py",
    dialect=Dialect.DRAFT15,
    pins_hash=False,
    closed_locally={"code": CODE_MAX, "reason": LONG_REASON},
    closed_by_us={},
    # Its connection ends with quinn's "reset by peer": the stateless reset.
    reset_end={"reason": "reset by peer"},
    initial_streams=10,
)
STACKS = (QUINN, PWT021)


def each_stack(role: str, *features: str) -> MarkDecorator:
    """Run a test once per stack; it covers ``features`` in each stack's ``role`` column."""
    return pytest.mark.parametrize(
        "stack",
        [
            pytest.param(
                stack,
                id=stack.name,
                marks=[pytest.mark.covers(feature, f"{stack.name}-{role}") for feature in features],
            )
            for stack in STACKS
        ],
    )


def assert_includes(reported: dict[str, Any], expected: dict[str, Any]) -> None:
    """``reported`` has every field of ``expected``, with the same value."""
    assert {key: reported.get(key) for key in expected} == expected, reported


# ---------------------------------------------------------------------------------------------
# Our client against the peer's server
# ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def their_server(
    stack: Stack, peers_python: str, certificate: CertificateFiles
) -> AsyncIterator[PeerServer]:
    """The stack's server on an ephemeral loopback port, with its default limits."""
    async with peer_server(peers_python, stack.script, certificate) as server:
        yield server


@pytest_asyncio.fixture
async def client(stack: Stack, certificate: CertificateFiles) -> AsyncIterator[WebTransportClient]:
    """Our client, trusting the test certificate the stack's way."""
    async with WebTransportClient(config=stack.client_config(certificate)) as wt_client:
        yield wt_client


@each_stack("server", "bidi")
async def test_our_client_bidi_echo(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    payload = pattern(STREAM_SIZE, seed=1)
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=their_server.url("/echo"))
        dialect = dialect_of(session)
        small = await echo_once(session, b"hello")
        large = await echo_once(session, payload)
        empty = await echo_once(session, b"")
        await session.close()
        observed = await their_server.session_result()
    assert dialect is stack.dialect
    assert (small, empty) == (b"hello", b"")
    assert large == payload
    assert observed["bidi_echoed"] == 3
    assert observed["bytes_received"] == STREAM_SIZE + 5


@each_stack("server", "uni")
async def test_our_client_unidirectional_both_ways(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    payload = pattern(50_000, seed=3)
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=their_server.url("/echo"))
        outgoing = await session.create_unidirectional_stream()
        await outgoing.write_all(payload)
        incoming = await session.accept_unidirectional_stream()
        received = await incoming.read_all()
        await session.close()
        observed = await their_server.session_result()
    assert outgoing.stream_id % 4 == 2 and incoming.stream_id % 4 == 3
    assert received == payload
    assert observed["uni_echoed"] == 1


@each_stack("server", "bidi-server")
async def test_our_client_accepts_server_opened_streams(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=their_server.url("/push?bidi=3&uni=3"))
        bidi: list[bytes] = []
        for _ in range(3):
            stream = await session.accept_bidirectional_stream()
            assert stream.stream_id % 4 == 1  # server-initiated bidirectional
            data = await stream.read_all()
            bidi.append(data)
            await stream.write_all(b"reply:" + data)
        uni = [await (await session.accept_unidirectional_stream()).read_all() for _ in range(3)]
        pushed = await their_server.next("pushed")  # the peer checked our replies
        await session.close()
        await their_server.session_result()
    assert sorted(bidi) == [b"server-bidi-%d" % i for i in range(3)]
    assert sorted(uni) == [b"server-uni-%d" % i for i in range(3)]
    assert (pushed["bidi_ok"], pushed["uni_sent"]) == (3, 3)


@each_stack("server", "close")
async def test_our_client_sees_peer_close(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(
            url=their_server.url(f"/close?code={CODE_MAX}&reason={quote(LONG_REASON)}")
        )
        await session.wait_closed()
        observed = await their_server.session_result()
    # The close capsule's code and reason are what the session ends with (quinn sends
    # CONNECTION_CLOSE right after it).
    assert (session.close_code, session.close_reason) == (CODE_MAX, LONG_REASON)
    assert_includes(observed["close"], stack.closed_locally)


@each_stack("server", "close")
async def test_our_close_reaches_peer(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=their_server.url("/echo"))
        await session.close(code=CODE_MAX, reason=LONG_REASON)
        observed = await their_server.session_result()
    assert_includes(
        observed["close"], {**stack.closed_by_us, "code": CODE_MAX, "reason": LONG_REASON}
    )


@each_stack("server", "reset", "stop-sending")
async def test_our_client_sees_peer_reset_and_stop_codes(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(
            url=their_server.url(f"/reset?reset={CODE_MAX}&stop={CODE_HIGH}")
        )
        stream = await session.create_bidirectional_stream()
        await stream.write(b"first bytes")
        with pytest.raises(StreamError) as reset:
            await stream.read_all()
        with pytest.raises(StreamError) as stopped:
            while True:  # until the STOP_SENDING arrives (bounded by the test's timeout)
                await stream.write(b"more" * 256)
        await session.close()
        await their_server.session_result()
    assert reset.value.error_code == CODE_MAX
    assert stopped.value.error_code == CODE_HIGH


@each_stack("server", "reset", "stop-sending")
async def test_our_reset_and_stop_codes_reach_peer(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=their_server.url("/echo"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"partial")
        assert await stream.read(7) == b"partial"
        await stream.abort(code=CODE_MAX)
        reset = await their_server.next("reset")
        # The peer answers a reset with a reset of the code it received.
        with pytest.raises(StreamError) as mirrored:
            await stream.read_all()
        await session.close()
        echo_observed = await their_server.session_result()

        session = await client.connect(url=their_server.url("/source"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"go")
        assert await stream.read(1000)
        await stream.stop(code=CODE_HIGH)
        stop = await their_server.next("stop")
        await session.close()
        source_observed = await their_server.session_result()
    assert reset["code"] == CODE_MAX and echo_observed["resets"] == [CODE_MAX]
    assert mirrored.value.error_code == CODE_MAX
    assert stop["code"] == CODE_HIGH and source_observed["stops"] == [CODE_HIGH]


@each_stack("server", "many-streams")
async def test_our_client_many_streams(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        session = await client.connect(url=their_server.url("/echo"))
        bidi_ok = 0
        for start in range(0, MANY, BATCH):
            names = [b"stream-%d" % i for i in range(start, start + BATCH)]
            echoed = await asyncio.gather(*(echo_once(session, name) for name in names))
            bidi_ok += echoed == names
        # Unidirectional streams both ways: the peer echoes each on a stream of its own, more
        # of them than we allow open at once, so our credit must be renewed too. A batch ends
        # when its echoes are read.
        received: list[bytes] = []
        for start in range(0, MANY, BATCH):
            await asyncio.gather(
                *(send_uni(session, b"uni-%d" % i) for i in range(start, start + BATCH))
            )
            received += await read_uni_streams(session, BATCH)
        await session.close()
        observed = await their_server.session_result()
    assert bidi_ok == MANY // BATCH
    assert sorted(received) == sorted(b"uni-%d" % i for i in range(MANY))
    assert (observed["bidi_echoed"], observed["uni_echoed"]) == (MANY, MANY)
    if stack.initial_streams is not None:  # it granted fewer at first and renewed its credit
        assert observed["at_start"]["local_max_streams_bidi"] == stack.initial_streams


@each_stack("server", "many-streams")
async def test_our_client_accepts_many_server_opened_streams(
    stack: Stack, their_server: PeerServer, client: WebTransportClient
) -> None:
    # The peer opens them BATCH of each kind at a time, 200 in all: more than we allow open at
    # once, so our credit must be renewed. Streams are read as they come.
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
        session = await client.connect(url=their_server.url(path))
        tasks = []
        async for stream in session.incoming_streams():
            tasks.append(asyncio.create_task(take(stream)))
            if len(tasks) == 2 * MANY:
                break
        await asyncio.gather(*tasks)
        await all_received.wait()
        pushed = await their_server.next("pushed")  # the peer checked our replies
        await session.close()
        observed = await their_server.session_result()
    assert (pushed["bidi_ok"], pushed["uni_sent"]) == (MANY, MANY)
    assert sorted(received) == sorted(b"server-uni-%d" % i for i in range(MANY))
    if stack.initial_streams is not None:
        assert observed["at_start"]["peer_max_streams_bidi"] == OUR_INITIAL_STREAMS


@each_stack("server", "stateless-reset")
async def test_our_session_on_a_restarted_peer_server(
    stack: Stack, peers_python: str, certificate: CertificateFiles
) -> None:
    config = stack.client_config(certificate, idle_timeout=2.0)
    async with asyncio.timeout(4 * TEST_TIMEOUT):
        seen = await restart_peer_server_under_our_client(
            peers_python, stack.script, certificate, "/echo", config
        )
    report(f"{stack.name} server restarted: {seen}")
    assert seen.echoed == b"hello"
    # The new server's stateless resets (if it sends any) carry a new key: our session learns
    # nothing from them and ends only at our idle timeout, 2 s after the old server's last packet.
    assert seen.by_idle_timeout, seen
    assert 1.5 < seen.since_kill < 3.0, seen


# ---------------------------------------------------------------------------------------------
# The peer's client against our server
# ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def ours(
    stack: Stack, peers_python: str, certificate: CertificateFiles
) -> AsyncIterator[OurServer]:
    """Our server on an ephemeral loopback port, with the peer tests' routes."""
    probe = Probe()
    async with our_server(certificate, probe) as port:
        yield OurServer(port, probe, peers_python, stack.script, stack.peer_trust(certificate))


@each_stack("client", "bidi")
async def test_their_client_bidi_echo(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run("/echo", "bidi", size=STREAM_SIZE)
        dialect = await ours.probe.wait("dialect")
    assert dialect is stack.dialect
    assert outcome["small_ok"] and outcome["large_ok"] and outcome["empty_ok"]
    assert outcome["large"] == STREAM_SIZE


@each_stack("client", "uni")
async def test_their_client_unidirectional_both_ways(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run("/echo", "uni", size=50_000)
    assert outcome["ok"] and outcome["received"] == 50_000


@each_stack("client", "bidi-server")
async def test_their_client_accepts_our_streams(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run("/push?bidi=3&uni=3", "accept", bidi=3, uni=3)
        pushed = await ours.probe.wait("push")
    assert outcome["bidi"] == [f"server-bidi-{i}" for i in range(3)]
    assert outcome["uni"] == [f"server-uni-{i}" for i in range(3)]
    assert pushed == {"bidi_ok": 3, "uni_sent": 3, "errors": []}
    # The client waited for our close, once its answers were read (quinn's own close would
    # drop answers not yet sent).
    assert_includes(outcome["closed"], {**stack.closed_by_us, "code": 0})


@each_stack("client", "close")
async def test_their_close_reaches_us(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run("/hold", "close", code=CODE_MAX, reason=LONG_REASON)
        closed = await ours.probe.wait("closed")
    assert closed == (CODE_MAX, LONG_REASON)
    assert_includes(outcome["closed"], stack.closed_locally)


@each_stack("client", "close")
async def test_their_client_sees_our_close(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run("/close", "await-close")
    code, reason = SERVER_CLOSE
    assert_includes(outcome["closed"], {**stack.closed_by_us, "code": code, "reason": reason})


@each_stack("client", "reset", "stop-sending")
async def test_their_reset_and_stop_codes_reach_us(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run("/observe", "send-reset", reset=CODE_MAX, stop=CODE_HIGH)
        reset = await ours.probe.wait("reset")
        stop = await ours.probe.wait("stop")
    assert outcome["confirmed"] == "got"
    assert reset[0] == CODE_MAX
    assert stop[0] == CODE_HIGH


@each_stack("client", "many-streams")
async def test_their_client_many_streams(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run("/echo", "many", count=MANY, batch=BATCH)
    assert (outcome["bidi_ok"], outcome["uni_sent"], outcome["uni_ok"]) == (MANY, MANY, MANY)
    if stack.initial_streams is not None:  # the rest came with our renewals, and it saw them
        assert outcome["at_start"]["peer_max_streams_bidi"] == OUR_INITIAL_STREAMS
        assert outcome["flow_events"]["session_max_streams_bidi_updated"] >= 1


@each_stack("client", "many-streams")
async def test_their_client_accepts_many_streams_from_us(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run(f"/push?bidi={MANY}&uni={MANY}", "accept", bidi=MANY, uni=MANY)
        pushed = await ours.probe.wait("push")
    assert len(outcome["bidi"]) == len(outcome["uni"]) == MANY
    assert pushed == {"bidi_ok": MANY, "uni_sent": MANY, "errors": []}
    if stack.initial_streams is not None:  # our 400 streams waited for its renewals
        assert outcome["at_start"]["local_max_streams_bidi"] == stack.initial_streams


@each_stack("client", "retry")
async def test_their_client_follows_our_retry(
    stack: Stack, peers_python: str, certificate: CertificateFiles
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome, stats = await run_through_a_retry(
            peers_python,
            stack.script,
            certificate,
            stack.peer_trust(certificate),
            "bidi",
            size=STREAM_SIZE,
        )
    assert outcome["small_ok"] and outcome["large_ok"] and outcome["empty_ok"]
    # Only the Initial that carried the Retry's token made a connection.
    assert stats["retries_sent"] >= 1 and stats["connections_accepted"] == 1, stats


@each_stack("client", "origin")
async def test_their_client_sends_no_origin(stack: Stack, ours: OurServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        outcome = await ours.run("/echo", "bidi", size=1000)
        headers = await ours.probe.wait("headers")
    assert outcome["small_ok"]
    # No origin header: OriginAllowlist lets such a client through unless ``require=True``.
    assert "origin" not in headers, headers


@each_stack("client", "stateless-reset")
async def test_their_session_ends_promptly_when_our_server_restarts(
    stack: Stack, peers_python: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT):
        seen = await restart_under_peer_client(
            peers_python, stack.script, tmp_path, stack.peer_trust, timeout=TEST_TIMEOUT
        )
    report(f"{stack.name}: {seen}")
    assert seen.connected == {"connected": True}
    assert_includes(seen.ended["closed"], stack.reset_end)
    assert seen.seconds < 3.0, seen
