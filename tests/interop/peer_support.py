"""What the tests against the independent peer scripts (``tests/interop/peers/``) share.

* our server, with the routes the peers' client scenarios use, and a :class:`Probe` of what its
  handlers saw;
* :func:`peer_server` (a peer script's server, :class:`PeerServer`) and :class:`OurServer` /
  :func:`run_peer_client` (a peer script's client scenario against our server);
* the test data (:func:`pattern`, the same bytes as ``peers/peer_common.py``'s);
* a look into a session's core: the dialect it speaks and its session flow-control state.

Our routes (options in the query string):

* ``/echo``: :func:`~pywebtransport.server.echo.echo_handler`. The probe gets ``dialect``,
  ``protocol`` (the negotiated subprotocol), ``headers`` (the CONNECT request's),
  ``credit_at_start`` (the peer's initial session credit, when the dialect has flow control) and,
  once the session ended, ``credit`` (the session's :class:`FlowControl`) and ``datagrams``:
  (size, our datagram limit then) of each datagram received.
* ``/push?bidi=N&uni=M``: opens N bidirectional streams carrying ``server-bidi-<i>`` (the answer
  must be ``reply:`` and those bytes) and M unidirectional ones carrying ``server-uni-<i>``, all
  at once; the probe gets ``push`` (``bidi_ok``, ``uni_sent``, ``errors``); once every answer
  is read, the session is closed (code 0).
* ``/close``: closes the session with :data:`SERVER_CLOSE`.
* ``/hold``: waits; the probe gets ``closed`` = (close code, reason).
* ``/observe``: on the first bidirectional stream, reads, answers ``got`` and reads on: the
  probe gets ``reset`` = (WebTransport code, HTTP/3 code) of the peer's reset; on the second it
  writes until the peer's STOP_SENDING: ``stop`` likewise. Then the handler returns (the session
  closes with 0).
* ``/reset-probe``: on the first bidirectional stream, once its first bytes arrived, a reset with
  :data:`PROBE_RESET_CODE` and a STOP_SENDING with :data:`PROBE_STOP_CODE`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.events import Event, EventType
from pywebtransport.exceptions import StreamError
from pywebtransport.protocol.session import FlowControl
from pywebtransport.protocol.wire import Dialect
from pywebtransport.server.echo import echo_handler
from tests.certs import CertBundle, load_cert
from tests.conftest import T
from tests.faults import start_child, stop_child
from tests.interop.conftest import CertificateFiles
from tests.interop.peer_process import PeerProcess, peer

#: WebTransport application error codes for the tests: the largest (32 bits), and another
#: with the top bit set (a code that went through a signed 32-bit integer would be mangled).
CODE_MAX = 0xFFFFFFFF
CODE_HIGH = 0xDEADBEEF
#: A close reason near the draft's limit of 1,024 bytes, not all ASCII (1,002 bytes of UTF-8).
LONG_REASON = "é" + "r" * 1000
#: The codes ``/reset-probe`` resets and stops a stream with.
PROBE_RESET_CODE = CODE_MAX
PROBE_STOP_CODE = CODE_HIGH
#: What ``/close`` closes the session with.
SERVER_CLOSE = (CODE_HIGH, LONG_REASON)
#: How long one datagram round trip may take before the datagram is sent again (loss).
DATAGRAM_WAIT = 1.0
DATAGRAM_TRIES = 5


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` deterministic bytes: byte ``i`` is ``(i * 31 + seed) % 251``."""
    period = bytes((i * 31 + seed) % 251 for i in range(251))
    return (period * (size // 251 + 1))[:size]


def dialect_of(session: WebTransportSession) -> Dialect | None:
    """The WebTransport dialect an open session speaks (None once it has closed)."""
    return session._conn.protocol.session_dialect(session.session_id)


def flow_control_of(session: WebTransportSession) -> FlowControl | None:
    """The open session's flow-control state in the core (None: not in force in its dialect).

    The object stays readable after the session closed: its final credit.
    """
    state = session._conn.protocol._sessions.get(session.session_id)
    return None if state is None else state.fc


def data_renewals_at_least(fc: FlowControl) -> int:
    """How many WT_MAX_DATA updates we sent at least: each raises the limit by one window
    at most (``consumed + window``, and nothing is consumed beyond the old limit)."""
    return -(-(fc.local_max_data - fc.window) // fc.window)


def stream_renewals_at_least(fc: FlowControl, bidirectional: bool) -> int:
    """How many WT_MAX_STREAMS updates of a kind we sent at least (same bound, in streams)."""
    window = fc.window_streams[bidirectional]
    return -(-(fc.local_max_streams[bidirectional] - window) // window)


@dataclass
class Probe:
    """Futures our server's handlers resolve, keyed by name, for the tests to await."""

    futures: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    def _future(self, name: str) -> asyncio.Future[Any]:
        if name not in self.futures:
            self.futures[name] = asyncio.get_running_loop().create_future()
        return self.futures[name]

    def set(self, name: str, value: Any) -> None:
        """Record ``value`` under ``name`` (first value wins)."""
        future = self._future(name)
        if not future.done():
            future.set_result(value)

    async def wait(self, name: str) -> Any:
        """Wait for the value recorded under ``name``."""
        return await self._future(name)


def _options(session: WebTransportSession) -> dict[str, int]:
    return {key: int(value) for key, value in parse_qsl(urlsplit(session.path).query)}


def build_our_app(config: ServerConfig, probe: Probe) -> ServerApp:
    """Our server's routes for the peer tests (see the module docstring)."""
    app = ServerApp(config=config)

    @app.route("/echo")
    async def echo(session: WebTransportSession) -> None:
        probe.set("dialect", dialect_of(session))
        probe.set("protocol", session.protocol)
        probe.set("headers", dict(session.headers))
        fc = flow_control_of(session)
        if fc is not None:
            probe.set("credit_at_start", (fc.remote_max_data, dict(fc.remote_max_streams)))
        datagrams: list[tuple[int, int]] = []

        def on_datagram(event: Event) -> None:
            size = len(event.data["data"])
            datagrams.append((size, session.datagrams.max_datagram_size))

        session.on(EventType.DATAGRAM_RECEIVED, on_datagram)
        await echo_handler(session)  # until the session closes
        probe.set("credit", fc)
        probe.set("datagrams", datagrams)

    @app.route("/push")
    async def push(session: WebTransportSession) -> None:
        probe.set("dialect", dialect_of(session))
        options = _options(session)

        async def bidi(index: int) -> bool:
            stream = await session.create_bidirectional_stream()
            sent = f"server-bidi-{index}".encode()
            await stream.write_all(sent)
            return await stream.read_all() == b"reply:" + sent

        async def uni(index: int) -> None:
            stream = await session.create_unidirectional_stream()
            await stream.write_all(f"server-uni-{index}".encode())

        outcomes = await asyncio.gather(
            *(bidi(i) for i in range(options.get("bidi", 1))),
            *(uni(i) for i in range(options.get("uni", 1))),
            return_exceptions=True,
        )
        probe.set(
            "push",
            {
                "bidi_ok": sum(outcome is True for outcome in outcomes),
                "uni_sent": sum(outcome is None for outcome in outcomes),
                "errors": [repr(o) for o in outcomes if isinstance(o, BaseException)],
            },
        )
        # Returning closes the session (code 0): the client's cue that its answers arrived.

    @app.route("/close")
    async def close(session: WebTransportSession) -> None:
        probe.set("dialect", dialect_of(session))
        code, reason = SERVER_CLOSE
        await session.close(code=code, reason=reason)

    @app.route("/hold")
    async def hold(session: WebTransportSession) -> None:
        probe.set("dialect", dialect_of(session))
        await session.wait_closed()
        probe.set("closed", (session.close_code, session.close_reason))

    @app.route("/observe")
    async def observe(session: WebTransportSession) -> None:
        probe.set("dialect", dialect_of(session))
        first = await session.accept_bidirectional_stream(timeout=4 * T)
        await first.read(100)
        await first.write(b"got")
        try:
            data = await first.read_all()
        except StreamError as error:
            probe.set("reset", (error.error_code, error.h3_error_code))
        else:
            probe.set("reset", f"no reset, read {data!r}")
        second = await session.accept_bidirectional_stream(timeout=4 * T)
        block = pattern(65536)
        try:
            while True:  # until the peer's STOP_SENDING (or the session's end) fails a write
                await second.write(block)
        except StreamError as error:
            probe.set("stop", (error.error_code, error.h3_error_code))

    @app.route("/reset-probe")
    async def reset_probe(session: WebTransportSession) -> None:
        probe.set("dialect", dialect_of(session))
        stream = await session.accept_bidirectional_stream(timeout=4 * T)
        probe.set("reset_probe_read", await stream.read(100))
        await stream.abort(code=PROBE_RESET_CODE)
        await stream.stop(code=PROBE_STOP_CODE)
        await session.wait_closed()

    return app


@asynccontextmanager
async def our_server_instance(
    certificate: CertificateFiles, probe: Probe, **config: Any
) -> AsyncIterator[WebTransportServer]:
    """Our server with :func:`build_our_app` on 127.0.0.1 (ephemeral port) for the block.

    Yields the listening server (its ``stats``, its port); ``config`` adds to its ServerConfig.
    """
    server_config = ServerConfig(
        certfile=certificate.certfile,
        keyfile=certificate.keyfile,
        host="127.0.0.1",
        port=0,
        **config,
    )
    server = WebTransportServer(config=server_config, app=build_our_app(server_config, probe))
    await server.listen(host="127.0.0.1", port=0)
    try:
        yield server
    finally:
        async with asyncio.timeout(T):
            await server.close()


@asynccontextmanager
async def our_server(
    certificate: CertificateFiles, probe: Probe, **config: Any
) -> AsyncIterator[int]:
    """:func:`our_server_instance`, yielding only its port."""
    async with our_server_instance(certificate, probe, **config) as server:
        yield server.local_address[1]


async def run_peer_client(
    python: str,
    script: str,
    url: str,
    scenario: str,
    trust: tuple[str, ...],
    options: dict[str, Any],
    timeout: float = 4 * T,
) -> dict[str, Any]:
    """Run one client scenario of a peer script against ``url``; return its ``RESULT``.

    ``trust`` is the script's trust arguments (``--cert-hash HEX`` or ``--ca FILE``),
    ``options`` its ``--set`` options. A scenario that failed in the peer fails the test with
    the peer's output.
    """
    args = ["client", "--url", url, "--scenario", scenario, *trust]
    for name, value in options.items():
        args += ["--set", f"{name}={value}"]
    async with peer(python, script, *args) as handle:
        outcome = await handle.result(timeout=timeout)
        if "error" in outcome:
            raise handle.fail(f"scenario {scenario} failed: {outcome['error']}")
    return outcome


@dataclass
class OurServer:
    """Our server under test, what its handlers saw, and how a peer's client reaches it."""

    port: int
    probe: Probe
    python: str
    script: str
    trust: tuple[str, ...]

    async def run(self, path: str, scenario: str, **options: Any) -> dict[str, Any]:
        """Run the peer client's ``scenario`` against ``path``; return its ``RESULT``."""
        url = f"https://127.0.0.1:{self.port}{path}"
        return await run_peer_client(self.python, self.script, url, scenario, self.trust, options)


@dataclass
class PeerServer:
    """A peer script's server process and its port."""

    process: PeerProcess
    port: int

    def url(self, path: str) -> str:
        """The https URL of ``path`` on the peer."""
        return f"https://127.0.0.1:{self.port}{path}"

    async def next(self, event: str) -> dict[str, Any]:
        """The server's next ``RESULT`` of this ``event`` (those of other events before it are
        skipped: the ``session`` record repeats what they said)."""
        while True:
            outcome = await self.process.result()
            if outcome.get("event") == event:
                return outcome

    async def session_result(self) -> dict[str, Any]:
        """The ``RESULT`` of the next session that ended; the test fails if it has errors."""
        outcome = await self.next("session")
        if outcome.get("errors"):
            raise self.process.fail(f"the server reported errors: {outcome}")
        return outcome


@asynccontextmanager
async def peer_server(
    python: str, script: str, certificate: CertificateFiles, *options: str, port: int = 0
) -> AsyncIterator[PeerServer]:
    """A peer script's server on a loopback port (``port``, or an ephemeral one) for the block.

    ``options`` are its ``--set NAME=VALUE`` pairs, as ``NAME=VALUE`` strings.
    """
    args = ["server", "--cert", certificate.certfile, "--key", certificate.keyfile]
    args += ["--port", str(port)]
    for option in options:
        args += ["--set", option]
    async with peer(python, script, *args) as process:
        yield PeerServer(process, await process.ready())


async def echo_once(session: WebTransportSession, payload: bytes) -> bytes:
    """One bidirectional stream: ``payload`` out (then FIN) while its echo is read."""
    stream = await session.create_bidirectional_stream()
    writer = asyncio.create_task(stream.write(payload, end_stream=True))
    echoed = await stream.read_all()
    await writer
    return echoed


async def send_uni(session: WebTransportSession, data: bytes) -> None:
    """Open a unidirectional stream, send ``data`` and FIN (waiting for stream credit first)."""
    stream = await session.create_unidirectional_stream()
    await stream.write_all(data)


async def largest_datagram_echoed(session: WebTransportSession, seed: int = 6) -> bool:
    """Send one datagram of our largest size, then a marker until its echo comes back.

    Returns whether the large one's echo came back first: an echo server may receive a
    datagram larger than it may send.
    """
    datagrams = session.datagrams
    largest = pattern(datagrams.max_datagram_size, seed=seed)
    await datagrams.send(largest)
    echoed: list[bytes] = []

    async def receive_marker() -> bytes:
        while (data := await datagrams.receive()) == largest:
            echoed.append(data)
        return data

    marker = await datagram_roundtrip(datagrams.send, receive_marker, b"marker")
    assert marker == b"marker"
    return bool(echoed)


async def read_uni_streams(session: WebTransportSession, count: int) -> list[bytes]:
    """Accept ``count`` unidirectional streams and read them to their ends, each as soon as it
    is accepted: they share the session's receive credit, and one left unread could hold all
    of it while another is being read."""
    readers = [
        asyncio.create_task((await session.accept_unidirectional_stream()).read_all())
        for _ in range(count)
    ]
    return list(await asyncio.gather(*readers))


async def datagram_roundtrip(
    send: Callable[[bytes], Awaitable[None]],
    receive: Callable[[], Awaitable[bytes]],
    payload: bytes,
) -> bytes:
    """Send ``payload`` until an answer arrives (datagrams may be lost); return the answer."""
    for _ in range(DATAGRAM_TRIES):
        await send(payload)
        try:
            async with asyncio.timeout(DATAGRAM_WAIT):
                return await receive()
        except TimeoutError:
            continue
    raise AssertionError(f"no datagram came back after {DATAGRAM_TRIES} tries")


async def run_through_a_retry(
    python: str,
    script: str,
    certificate: CertificateFiles,
    trust: tuple[str, ...],
    scenario: str,
    **options: Any,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Run a peer client's ``scenario`` against ``/echo`` of our server with ``retry="always"``.

    Returns the scenario's ``RESULT`` and our server's stats once it ended: a Retry sent and a
    scenario that worked prove the client came back with the Retry's token.
    """
    probe = Probe()
    async with our_server_instance(certificate, probe, retry="always") as server:
        ours = OurServer(server.local_address[1], probe, python, script, trust)
        outcome = await ours.run("/echo", scenario, **options)
        return outcome, server.stats


#: Upper bound on starting one of our server processes (``tests/server_process.py``).
CHILD_TIMEOUT = 15.0


@dataclass
class Restarted:
    """What a peer client saw when our server was replaced under its session."""

    connected: dict[str, Any]
    ended: dict[str, Any]
    seconds: float
    """From the old server's death to the peer's report that its session ended."""


async def restart_under_peer_client(
    python: str,
    script: str,
    directory: Path,
    trust: Callable[[CertBundle], tuple[str, ...]],
    timeout: float,
    retry: str | None = None,
) -> Restarted:
    """A peer client's ``restart`` scenario on our server (a child process) that is replaced by
    a new one on the same port (SO_REUSEPORT: the port never lacks a listener) with the same
    key, hence the same stateless-reset key, once the peer reported ``connected``.

    ``trust`` gives the peer's trust arguments for the certificate made in ``directory``;
    ``timeout`` bounds the wait for the end of the session after the restart; ``retry`` is
    both servers' ``ServerConfig.retry`` (None: the default).
    """
    extra = () if retry is None else (retry,)
    first, line = await start_child(
        "tests.server_process", str(directory), "0", *extra, timeout=CHILD_TIMEOUT
    )
    children = [first]
    port = line.split()[1].decode()
    args = ["client", "--url", f"https://127.0.0.1:{port}/echo", "--scenario", "restart"]
    try:
        async with peer(python, script, *args, *trust(load_cert(directory))) as handle:
            connected = await handle.result()
            if "error" in connected:
                raise handle.fail(f"scenario restart failed: {connected['error']}")
            new, _ = await start_child(
                "tests.server_process", str(directory), port, *extra, timeout=CHILD_TIMEOUT
            )
            children.append(new)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            loop = asyncio.get_running_loop()
            killed = loop.time()
            ended = await handle.result(timeout=timeout)
            seconds = loop.time() - killed
    finally:
        for child in children:
            await stop_child(child, CHILD_TIMEOUT)
    return Restarted(connected, ended, seconds)


@dataclass
class PeerRestarted:
    """How our client's session ended when the peer's server was replaced under it."""

    echoed: bytes
    """The old server's echo of ``hello`` (the session worked before)."""
    seconds: float
    """From our first datagram to the new server to the end of our session."""
    since_kill: float
    """From the old server's death to the end of our session."""
    close: tuple[int | None, str | None]
    """Our session's close code and reason."""

    @property
    def by_idle_timeout(self) -> bool:
        """Whether the session ended for hearing nothing from the peer (code 0, "no packet
        from the peer": the liveness deadline's or the QUIC engine's idle timer's end)."""
        return self.close[0] == 0 and "no packet from the peer" in (self.close[1] or "")


async def restart_peer_server_under_our_client(
    python: str,
    script: str,
    certificate: CertificateFiles,
    path: str,
    client_config: ClientConfig,
    *options: str,
) -> PeerRestarted:
    """Our client's session on a peer script's server (``options``: its ``--set`` pairs) whose
    process is killed (SIGKILL: nothing is sent) and started again on the same port once the
    session echoed ``hello`` on ``path``; then one datagram goes to the new server, which
    answers it with a stateless reset if it can (our keep-alive PINGs follow). Returns when
    our session ended; ``client_config``'s ``idle_timeout`` bounds that.
    """
    async with WebTransportClient(config=client_config) as client:
        async with peer_server(python, script, certificate, *options) as first:
            session = await client.connect(url=first.url(path))
            echoed = await echo_once(session, b"hello")
            first.process.process.kill()
            await first.process.process.wait()
            killed = asyncio.get_running_loop().time()
        async with peer_server(python, script, certificate, *options, port=first.port) as second:
            assert second.port == first.port
            loop = asyncio.get_running_loop()
            sent = loop.time()
            await session.datagrams.send(pattern(1000))
            async with asyncio.timeout(client_config.idle_timeout + 2 * T):
                await session.wait_closed()
            ended = loop.time()
    close = (session.close_code, session.close_reason)
    return PeerRestarted(echoed, ended - sent, ended - killed, close)
