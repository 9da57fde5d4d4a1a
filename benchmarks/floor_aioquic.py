"""Performance floor: a minimal WebTransport echo written directly on aioquic's H3Connection.

This is the lower bound of overhead for a WebTransport stack over aioquic: no abstraction beyond
aioquic's own ``H3Connection(enable_webtransport=True)`` and ``QuicConnectionProtocol``, default
``QuicConfiguration`` values apart from what WebTransport needs (``max_datagram_frame_size``).

Workloads (each printed):

a. connect: 10 sequential sessions, each on a fresh QUIC connection (handshake, CONNECT, 200
   received); the median in milliseconds.
b. stream: one bidirectional stream; the client writes 20 MiB in 64 KiB chunks then FIN while it
   reads the echo until FIN; MiB/s = 20 / elapsed.
c. datagrams: 2,000 datagrams of 1,000 bytes echoed with at most 64 in flight; datagrams/s = echoes
   received / elapsed. A datagram that does not come back within ``STALL_TIMEOUT`` of the last
   echo is counted lost (its slot is freed) and the whole run has a deadline, so loss never hangs.

The server runs in a separate process (it is spawned by ``bench``) so both ends get their own
core. Usage::

    python benchmarks/floor_aioquic.py            # bench: spawn the server, run the workloads
    python benchmarks/floor_aioquic.py --json     # the same, one JSON object on stdout
    python benchmarks/floor_aioquic.py server --cert C --key K [--port 0]   # prints READY <port>
    python benchmarks/floor_aioquic.py client --port P --cafile C

This module also holds the helpers the other benchmark scripts share (certificates, spawning a
server process, the result record).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import hashlib
import ipaddress
import json
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# Shared helpers (imported by run.py and baseline_071.py; they need only the standard library
# and cryptography, so baseline_071.py can use them from another virtualenv).
# ---------------------------------------------------------------------------------------------

CONNECTS = 10
STREAM_BYTES = 20 * 1024 * 1024
CHUNK = 64 * 1024
DATAGRAMS = 2000
DATAGRAM_SIZE = 1000
DATAGRAM_WINDOW = 64
STALL_TIMEOUT = 0.25
"""Seconds without any echo after which the datagrams in flight are counted lost."""
DATAGRAM_DEADLINE = 30.0
"""Upper bound on one datagram run, whatever happens."""
STEP_TIMEOUT = 60.0
"""Upper bound on any single workload step (connect, stream echo)."""
SERVER_START_TIMEOUT = 30.0
MAX_DATAGRAM_FRAME_SIZE = 65536
READ_BATCH = 64
"""Most datagrams the ``batched`` floor reads per socket readiness callback."""
WRITE_AHEAD = 2 * 1024 * 1024
"""The floor client keeps at most this many bytes written but not yet echoed."""


@dataclass
class Result:
    """The figures of one run of the three workloads.

    Attributes:
        connect_ms: Median time to a ready session over ``CONNECTS`` fresh connections.
        connect_cpu_ms: Median client-process CPU time spent per connect (steadier than wall
            time on a shared machine, where wake-up latency dominates a few-ms handshake).
        stream_mib_s: 20 MiB bidirectional echo throughput.
        datagrams_per_s: Echoed datagrams per second.
        datagrams_received: How many of the ``DATAGRAMS`` echoes came back.
        datagram_stalls: How often ``STALL_TIMEOUT`` passed without an echo (each costs time).
    """

    connect_ms: float
    connect_cpu_ms: float
    stream_mib_s: float
    datagrams_per_s: float
    datagrams_received: int
    datagram_stalls: int = 0

    def describe(self, label: str) -> str:
        """Return the human-readable lines for this result."""
        return (
            f"[{label}] (a) connect: median {self.connect_ms:.2f} ms over {CONNECTS} connects "
            f"(client CPU {self.connect_cpu_ms:.2f} ms)\n"
            f"[{label}] (b) stream: {self.stream_mib_s:.1f} MiB/s "
            f"({STREAM_BYTES >> 20} MiB echoed in {CHUNK >> 10} KiB chunks)\n"
            f"[{label}] (c) datagrams: {self.datagrams_per_s:.0f} datagrams/s "
            f"({self.datagrams_received}/{DATAGRAMS} echoed, {DATAGRAM_SIZE} B, "
            f"window {DATAGRAM_WINDOW}, {self.datagram_stalls} stalls)"
        )


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate on disk.

    Attributes:
        certfile: PEM certificate (also the client's trust anchor).
        keyfile: PEM private key.
        sha256: SHA-256 of the DER certificate.
    """

    certfile: str
    keyfile: str
    sha256: bytes


def make_certificate(directory: Path) -> Certificate:
    """Write a 10-day ECDSA P-256 certificate for localhost / 127.0.0.1 into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=10))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return Certificate(certfile=str(certfile), keyfile=str(keyfile), sha256=digest)


@contextlib.asynccontextmanager
async def spawn_server(argv: Sequence[str]) -> AsyncIterator[int]:
    """Start a server process that prints ``READY <port>``; yield the port; stop it after.

    Args:
        argv: The full command line of the server process.

    Yields:
        The UDP port the server announced. The server's stderr goes to a temporary file that is
        shown only when the server fails to start.
    """
    async with spawn_server_process(argv) as (port, _):
        yield port


@contextlib.asynccontextmanager
async def spawn_server_process(
    argv: Sequence[str],
) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    """:func:`spawn_server`, yielding the process too (for its pid)."""
    with tempfile.TemporaryFile() as log:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log
        )
        try:
            assert process.stdout is not None
            async with asyncio.timeout(SERVER_START_TIMEOUT):
                while True:
                    line = await process.stdout.readline()
                    if not line:
                        log.seek(0)
                        tail = log.read()[-4000:].decode(errors="replace")
                        raise RuntimeError(f"server exited before READY: {argv!r}\n{tail}")
                    words = line.decode(errors="replace").split()
                    if len(words) == 2 and words[0] == "READY":
                        break
            yield int(words[1]), process
        finally:
            await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Stop a server process started by :func:`spawn_server` (SIGTERM, then SIGKILL)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def announce_ready(port: int) -> None:
    """Print the ``READY <port>`` line a parent process waits for."""
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


async def wait_for_termination() -> None:
    """Return once SIGINT or SIGTERM arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def median_ms(samples: Sequence[float]) -> float:
    """Return the median of durations in seconds, as milliseconds."""
    return statistics.median(samples) * 1000.0


async def run_datagram_echo(
    send: Callable[[bytes], Awaitable[Any]], receive: Callable[[], Awaitable[Any]]
) -> tuple[int, float, int]:
    """:func:`run_datagram_window` over a stack whose datagram send and receive are awaitable:
    a task counts the echoes ``receive`` returns. Returns what the window returns."""
    counter = [0]
    wake = asyncio.Event()

    async def receiver() -> None:
        while True:
            await receive()
            counter[0] += 1
            wake.set()

    async def send_batch(data: bytes, count: int) -> None:
        for _ in range(count):
            await send(data)

    receiving = asyncio.create_task(receiver())
    try:
        return await run_datagram_window(send_batch, lambda: counter[0], wake)
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)


async def run_datagram_window(
    send_batch: Callable[[bytes, int], Awaitable[None]],
    arrived: Callable[[], int],
    wake: asyncio.Event,
) -> tuple[int, float, int]:
    """Drive the datagram workload: at most ``DATAGRAM_WINDOW`` in flight.

    Args:
        send_batch: Send ``count`` copies of the payload (and push them to the network).
        arrived: How many echoes arrived so far.
        wake: Set whenever an echo arrives (cleared here before waiting).

    Returns:
        ``(echoes received, elapsed seconds, stalls)``.
    """
    payload = b"\xa5" * DATAGRAM_SIZE
    sent = seen = in_flight = stalls = 0
    start = time.perf_counter()
    deadline = start + DATAGRAM_DEADLINE
    while time.perf_counter() < deadline:
        batch = min(DATAGRAM_WINDOW - in_flight, DATAGRAMS - sent)
        if batch > 0:
            await send_batch(payload, batch)
            sent += batch
            in_flight += batch
        if sent == DATAGRAMS and in_flight == 0:
            break
        wake.clear()
        if arrived() == seen:
            try:
                async with asyncio.timeout(STALL_TIMEOUT):
                    await wake.wait()
            except TimeoutError:
                in_flight = 0  # whatever is still out is lost
                stalls += 1
                continue
        now_seen = arrived()
        in_flight = max(0, in_flight - (now_seen - seen))
        seen = now_seen
    return arrived(), time.perf_counter() - start, stalls


def emit(result: Result, label: str, as_json: bool) -> None:
    """Print ``result`` either as one JSON line or as readable lines."""
    if as_json:
        sys.stdout.write(json.dumps(asdict(result)) + "\n")
    else:
        sys.stdout.write(result.describe(label) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# The floor itself: lean aioquic code, no pywebtransport.
# ---------------------------------------------------------------------------------------------


def _build() -> tuple[type[Any], type[Any]]:
    """Define the floor's server and client protocol classes on top of aioquic."""
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import QuicEvent, StreamDataReceived

    class FloorServer(QuicConnectionProtocol):
        """Accept CONNECT on /echo, echo bidirectional stream bytes and datagrams."""

        def __init__(self, quic: QuicConnection, stream_handler: Any = None) -> None:
            super().__init__(quic, stream_handler=stream_handler)
            self._h3 = H3Connection(quic, enable_webtransport=True)

        def quic_event_received(self, event: QuicEvent) -> None:
            for h3_event in self._h3.handle_event(event):
                if isinstance(h3_event, WebTransportStreamDataReceived):
                    if h3_event.stream_id & 2 == 0 and (h3_event.data or h3_event.stream_ended):
                        self._quic.send_stream_data(
                            h3_event.stream_id, h3_event.data, h3_event.stream_ended
                        )
                elif isinstance(h3_event, DatagramReceived):
                    self._h3.send_datagram(h3_event.stream_id, h3_event.data)
                elif isinstance(h3_event, HeadersReceived):
                    headers = dict(h3_event.headers)
                    ok = (
                        headers.get(b":method") == b"CONNECT"
                        and headers.get(b":protocol") == b"webtransport"
                        and headers.get(b":path") == b"/echo"
                    )
                    response = [(b":status", b"200" if ok else b"404")]
                    if ok:
                        response.append((b"sec-webtransport-http3-draft", b"draft02"))
                    self._h3.send_headers(h3_event.stream_id, response, end_stream=not ok)

    class FloorClient(QuicConnectionProtocol):
        """One session; counts echoed bytes of its own bidirectional stream and datagrams."""

        def __init__(self, quic: QuicConnection, stream_handler: Any = None) -> None:
            super().__init__(quic, stream_handler=stream_handler)
            self.h3 = H3Connection(quic, enable_webtransport=True)
            loop = asyncio.get_running_loop()
            self.session_id = -1
            self.status: asyncio.Future[bytes] = loop.create_future()
            self.echo_stream = -1
            self.echo_bytes = 0
            self.echo_done: asyncio.Future[int] = loop.create_future()
            self.echo_wake = asyncio.Event()
            self.datagrams = 0
            self.datagram_wake = asyncio.Event()

        def quic_event_received(self, event: QuicEvent) -> None:
            # aioquic quirk: replies on a bidi stream this side opened would be parsed as HTTP/3
            # frames, so that stream's bytes are taken before H3Connection sees them.
            if isinstance(event, StreamDataReceived) and event.stream_id == self.echo_stream:
                self.echo_bytes += len(event.data)
                self.echo_wake.set()
                if event.end_stream and not self.echo_done.done():
                    self.echo_done.set_result(self.echo_bytes)
                return
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, DatagramReceived):
                    self.datagrams += 1
                    self.datagram_wake.set()
                elif isinstance(h3_event, HeadersReceived) and not self.status.done():
                    self.status.set_result(dict(h3_event.headers).get(b":status", b""))

        def send_connect(self, authority: str) -> None:
            self.session_id = self._quic.get_next_available_stream_id()
            self.h3.send_headers(
                self.session_id,
                [
                    (b":method", b"CONNECT"),
                    (b":protocol", b"webtransport"),
                    (b":scheme", b"https"),
                    (b":authority", authority.encode()),
                    (b":path", b"/echo"),
                    (b"sec-webtransport-http3-draft02", b"1"),
                ],
            )
            self.transmit()

    return FloorServer, FloorClient


class BatchedUdp:
    """A UDP socket read in batches: the ``batched`` I/O mode of the floor.

    asyncio's datagram transport delivers one datagram per readiness callback, and aioquic's
    protocol transmits (at least an ACK) after each. Draining the socket first and transmitting
    once per batch saves packets and CPU on both ends; this is plain socket plumbing around the
    same aioquic objects, so the ``batched`` floor is still "aioquic, as fast as it goes".
    It stands in for the asyncio transport (``sendto``, ``get_extra_info``, ``close``).
    """

    def __init__(self, sock: socket.socket, on_batch: Callable[[list[tuple[bytes, Any]]], None]):
        """Start reading ``sock`` (non-blocking) and hand every batch to ``on_batch``."""
        self._sock = sock
        self._on_batch = on_batch
        self._loop = asyncio.get_running_loop()
        self._pending: collections.deque[tuple[bytes, Any]] = collections.deque()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        batch: list[tuple[bytes, Any]] = []
        for _ in range(READ_BATCH):
            try:
                batch.append(self._sock.recvfrom(65536))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. ICMP port unreachable; QUIC's timers handle it
        if batch:
            self._on_batch(batch)

    def sendto(self, data: bytes, addr: Any = None) -> None:
        """Send now, or queue until the socket is writable again."""
        if not self._pending:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._sock.fileno(), self._write_ready)
            except OSError:
                return
        self._pending.append((data, addr))

    def _write_ready(self) -> None:
        while self._pending:
            try:
                self._sock.sendto(*self._pending[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            self._pending.popleft()
        self._loop.remove_writer(self._sock.fileno())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Mimic the asyncio transport for ``sockname``."""
        return self._sock.getsockname() if name == "sockname" else default

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._loop.remove_reader(self._sock.fileno())
        if self._pending:
            self._loop.remove_writer(self._sock.fileno())
        self._sock.close()


def feed_batch(protocol: Any, batch: list[tuple[bytes, Any]]) -> None:
    """Give every datagram of ``batch`` to one aioquic protocol, then transmit once."""
    now = protocol._loop.time()
    for data, addr in batch:
        protocol._quic.receive_datagram(data, addr, now=now)
    protocol._process_events()
    protocol.transmit()


def _server_config(certfile: str, keyfile: str) -> Any:
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(
        is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE
    )
    config.load_cert_chain(certfile, keyfile)
    return config


async def serve_floor(host: str, port: int, certfile: str, keyfile: str, io: str) -> None:
    """Run the floor server until SIGINT/SIGTERM, after printing ``READY <port>``."""
    from aioquic.asyncio.server import serve

    server_cls, _ = _build_cached()
    config = _server_config(certfile, keyfile)
    if io == "batched":
        await _serve_batched(host, port, config, server_cls)
        return
    server = await serve(host, port, configuration=config, create_protocol=server_cls)
    assert server._transport is not None
    announce_ready(int(server._transport.get_extra_info("sockname")[1]))
    try:
        await wait_for_termination()
    finally:
        server.close()


async def _serve_batched(host: str, port: int, config: Any, server_cls: type[Any]) -> None:
    """The ``batched`` floor server: one socket, connections keyed by client address.

    Routing by address (not connection ID) is enough on loopback, where clients never migrate.
    """
    from aioquic.quic.connection import QuicConnection

    connections: dict[Any, Any] = {}

    def on_batch(batch: list[tuple[bytes, Any]]) -> None:
        by_peer: dict[Any, list[tuple[bytes, Any]]] = {}
        for data, addr in batch:
            by_peer.setdefault(addr, []).append((data, addr))
        for addr, datagrams in by_peer.items():
            protocol = connections.get(addr)
            if protocol is None or protocol._closed.is_set():
                first = datagrams[0][0]
                if not first or not first[0] & 0x80 or len(first) < 1200:
                    continue  # only a long-header Initial opens a connection
                quic = QuicConnection(
                    configuration=config,
                    original_destination_connection_id=first[6 : 6 + first[5]],
                )
                protocol = server_cls(quic)
                protocol.connection_made(udp)
                connections[addr] = protocol
            feed_batch(protocol, datagrams)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, port))
    udp = BatchedUdp(sock, on_batch)
    announce_ready(int(sock.getsockname()[1]))
    try:
        await wait_for_termination()
    finally:
        for protocol in connections.values():
            protocol.close()
        udp.close()


@contextlib.asynccontextmanager
async def _floor_session(host: str, port: int, cafile: str, io: str) -> AsyncIterator[Any]:
    """Open one fresh connection and a ready session on it."""
    from aioquic.asyncio.client import connect
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration

    _, client_cls = _build_cached()
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE,
        server_name="localhost",
    )
    config.load_verify_locations(cafile=cafile)
    if io == "batched":
        async with _batched_connect(host, port, config, client_cls) as client:
            await _ready(client, port)
            yield client
        return
    async with connect(host, port, configuration=config, create_protocol=client_cls) as protocol:
        await _ready(protocol, port)
        yield protocol


async def _ready(client: Any, port: int) -> None:
    """Send the CONNECT and wait for ``200``."""
    client.send_connect(f"localhost:{port}")
    status = await client.status
    if status != b"200":
        raise RuntimeError(f"CONNECT answered {status!r}")


@contextlib.asynccontextmanager
async def _batched_connect(
    host: str, port: int, config: Any, client_cls: type[Any]
) -> AsyncIterator[Any]:
    """The ``batched`` counterpart of ``aioquic.asyncio.client.connect``."""
    from aioquic.quic.connection import QuicConnection

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    protocol = client_cls(QuicConnection(configuration=config))
    udp = BatchedUdp(sock, lambda batch: feed_batch(protocol, batch))
    protocol.connection_made(udp)
    try:
        protocol.connect((host, port))
        await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        await protocol.wait_closed()
        udp.close()


_CLASSES: list[tuple[type[Any], type[Any]]] = []


def _build_cached() -> tuple[type[Any], type[Any]]:
    """Build the protocol classes once per process."""
    if not _CLASSES:
        _CLASSES.append(_build())
    return _CLASSES[0]


async def floor_workloads(host: str, port: int, cafile: str, io: str = "batched") -> Result:
    """Run the three workloads against a floor server (or any draft-02 /echo server)."""
    samples: list[float] = []
    cpu: list[float] = []
    for _ in range(CONNECTS):
        async with asyncio.timeout(STEP_TIMEOUT):
            start, start_cpu = time.perf_counter(), time.process_time()
            async with _floor_session(host, port, cafile, io):
                samples.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)

    async with asyncio.timeout(STEP_TIMEOUT), _floor_session(host, port, cafile, io) as client:
        chunk = b"\x5a" * CHUNK
        start = time.perf_counter()
        stream_id = client.h3.create_webtransport_stream(client.session_id)
        client.echo_stream = stream_id
        sent = 0
        while sent < STREAM_BYTES:
            # Keep at most WRITE_AHEAD bytes not yet echoed: aioquic's send buffer is unbounded,
            # and pacing the writes on the echo is a little faster than queueing 20 MiB at once.
            while sent - client.echo_bytes < WRITE_AHEAD and sent < STREAM_BYTES:
                sent += CHUNK
                client._quic.send_stream_data(stream_id, chunk, sent >= STREAM_BYTES)
            client.transmit()
            client.echo_wake.clear()
            if sent < STREAM_BYTES:
                await client.echo_wake.wait()
        echoed = await client.echo_done
        elapsed = time.perf_counter() - start
        if echoed != STREAM_BYTES:
            raise RuntimeError(f"echoed {echoed} bytes instead of {STREAM_BYTES}")
        mib_s = (STREAM_BYTES / (1 << 20)) / elapsed

    async with asyncio.timeout(STEP_TIMEOUT), _floor_session(host, port, cafile, io) as client:

        async def send_batch(data: bytes, count: int) -> None:
            for _ in range(count):
                client.h3.send_datagram(client.session_id, data)
            client.transmit()

        received, elapsed, stalls = await run_datagram_window(
            send_batch, lambda: client.datagrams, client.datagram_wake
        )
    return Result(
        connect_ms=median_ms(samples),
        connect_cpu_ms=median_ms(cpu),
        stream_mib_s=mib_s,
        datagrams_per_s=received / elapsed,
        datagrams_received=received,
        datagram_stalls=stalls,
    )


async def bench(host: str, as_json: bool, io: str) -> Result:
    """Spawn a floor server process, run the workloads against it, print and return them."""
    with tempfile.TemporaryDirectory(prefix="floor-bench-") as tmp:
        cert = make_certificate(Path(tmp))
        argv = [sys.executable, __file__, "--io", io, "server", "--host", host, "--port", "0"]
        argv += ["--cert", cert.certfile, "--key", cert.keyfile]
        async with spawn_server(argv) as port:
            result = await floor_workloads(host, port, cert.certfile, io)
    emit(result, f"floor aioquic, {io} I/O", as_json)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="WebTransport floor benchmark on raw aioquic")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--io",
        choices=("asyncio", "batched"),
        default="batched",
        help="batched (default): drain the socket, transmit per batch; "
        "asyncio: aioquic.asyncio's QuicConnectionProtocol transport as shipped",
    )
    commands = parser.add_subparsers(dest="command")
    server = commands.add_parser("server", help="run the floor echo server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0)
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    client = commands.add_parser("client", help="run the workloads against a running server")
    client.add_argument("--host", default="127.0.0.1")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--cafile", required=True)
    args = parser.parse_args(argv)
    if args.command == "server":
        asyncio.run(serve_floor(args.host, args.port, args.cert, args.key, args.io))
    elif args.command == "client":
        result = asyncio.run(floor_workloads(args.host, args.port, args.cafile, args.io))
        emit(result, "floor", args.json)
    else:
        asyncio.run(bench(args.host, args.json, args.io))
    return 0


if __name__ == "__main__":
    sys.exit(main())
