"""Benchmarks against a WebTransport echo endpoint: the runner of ``pywebtransport bench``.

The runner opens sessions through anything with a ``connect(url, *, timeout=...)`` method that
returns a :class:`~pywebtransport.session.WebTransportSession` (a
:class:`~pywebtransport.client.WebTransportClient` does) and runs the selected workloads one
after the other against a URL that echoes streams and datagrams, such as the ``/echo`` route of
``pywebtransport serve``:

- ``connect``: sequential session establishments, each on a fresh QUIC connection; the latency
  is the time until the session is open (QUIC and TLS handshakes plus the CONNECT exchange).
- ``stream-rtt``: round trips on fresh bidirectional streams: open a stream, write the payload
  with FIN while reading the echo to its end. Several run at once with ``concurrency`` above 1.
- ``datagram-rtt``: datagram round trips, one at a time; a datagram whose echo does not come
  back within ``datagram_timeout`` counts as lost (datagrams may be dropped on the way).
- ``throughput``: ``concurrency`` bidirectional streams each write 64 KiB chunks while reading
  the echo back and checking every byte of it, for ``duration`` seconds (then the streams are
  reset, and the chunks still on their way are not counted) or until ``total_bytes`` went
  through. The latency of an operation is the time from handing a chunk to its stream until
  its last byte came back: the round trip under load.

Each workload yields a :class:`WorkloadResult` (counts, latency percentiles, throughput); the
results form a :class:`BenchReport`, which renders as a table (with ``rich``) or as JSON. The
progress of a run goes to a :class:`ProgressSink`; :class:`BenchProgress` draws live bars on
stderr with ``rich``. ``rich`` is an optional dependency (``pip install 'pywebtransport[bench]'``)
and is imported only by the functions that draw.

The module also holds the round-trip helpers the ``connect`` command shares:
:func:`stream_round_trip`, :func:`datagram_round_trips`, :func:`payload`, :func:`percentile`
and :class:`RoundTrips`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import statistics
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from pywebtransport import exceptions as errors

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from pywebtransport.config import ClientConfig
    from pywebtransport.session import WebTransportSession
    from pywebtransport.stream import WebTransportStream

__all__ = [
    "INSTALL_HINT",
    "THROUGHPUT_CHUNK",
    "WORKLOADS",
    "BenchOptions",
    "BenchProgress",
    "BenchReport",
    "ProgressSink",
    "RoundTrips",
    "SessionFactory",
    "WorkloadResult",
    "datagram_round_trips",
    "parse_workloads",
    "payload",
    "percentile",
    "print_table",
    "render_table",
    "rich_available",
    "run_bench",
    "stream_round_trip",
]

logger = logging.getLogger(__name__)

WORKLOADS = ("connect", "stream-rtt", "datagram-rtt", "throughput")
"""The workload names, in the order a run takes them."""

THROUGHPUT_CHUNK = 64 * 1024
"""Bytes each ``throughput`` write hands to its stream (one operation of that workload)."""

INSTALL_HINT = "pip install 'pywebtransport[bench]'"
"""How to get the optional dependency (``rich``) that draws the table and the progress bars."""

_READ_SIZE = 65536
#: Bytes counting up from 0 (mod 256), long enough for a chunk or a read at any offset.
_PATTERN = bytes(range(256)) * ((max(THROUGHPUT_CHUNK, _READ_SIZE) + 511) // 256)
#: Width of the table when stdout is not a terminal (a file or a pipe): no wrapping.
_FILE_WIDTH = 160


# ------------------------------------------------------------------------------ shared helpers


@dataclass
class RoundTrips:
    """The round trips of one kind that a run measured.

    Attributes:
        rtts: The round-trip time of every operation that got its echo, in seconds.
        attempted: How many operations were tried.
        size: The payload size of each operation, in bytes.
    """

    rtts: list[float]
    attempted: int
    size: int

    def describe(self, name: str) -> str:
        """One line with the success count, the median and the 95th percentile.

        Args:
            name: What the round trips went through (``"datagrams"``), the line's start.

        Returns:
            For example ``"datagrams: 3/3 round trips of 100 bytes, median 0.381 ms, p95
            0.498 ms"``; without the figures when nothing came back.
        """
        line = f"{name}: {len(self.rtts)}/{self.attempted} round trips of {self.size} bytes"
        if not self.rtts:
            return line
        median = statistics.median(self.rtts)
        return f"{line}, median {median * 1e3:.3f} ms, p95 {percentile(self.rtts, 95) * 1e3:.3f} ms"


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of ``values``.

    Args:
        values: At least one value, in any order.
        percent: Between 0 and 100.

    Returns:
        The smallest value that is not below ``percent`` per cent of the values.
    """
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def payload(index: int, size: int) -> bytes:
    """``size`` bytes counting up from ``index`` (mod 256): a payload whose echo is checkable.

    Args:
        index: The operation's number; it shifts the pattern, so payloads differ.
        size: The payload length in bytes.

    Returns:
        The payload.
    """
    start = index & 0xFF
    pattern = bytes(range(256)) * (size // 256 + 2)
    return pattern[start : start + size]


async def stream_round_trip(
    session: WebTransportSession, index: int, data: bytes, timeout: float
) -> bytes:
    """Send ``data`` on a new bidirectional stream and return the echo.

    The payload is written while the echo is read: written first, a payload larger than the
    flow-control windows and send buffers of both sides would fill them all and stall.

    Args:
        session: An open session to an endpoint that echoes bidirectional streams.
        index: The round trip's number, counted from 0 (for the timeout message).
        data: The payload; the stream is finished after it.
        timeout: Seconds for the whole round trip, from opening the stream to the echo's end.

    Returns:
        Everything the stream brought back until its end, or as soon as that is longer than
        ``data`` (then it is not the echo).

    Raises:
        pywebtransport.TimeoutError: no complete echo within ``timeout`` seconds; the message
            says how many bytes were written and echoed by then.
        StreamError: the stream failed (reset or stopped by the server, or the session ended).
    """
    size = len(data)
    echoed = bytearray()
    stream: WebTransportStream | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(timeout):
            stream = await session.create_bidirectional_stream()
            tasks.append(asyncio.create_task(stream.write(data, end_stream=True)))
            tasks.append(asyncio.create_task(_read_echo(stream, size, echoed)))
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                error = task.exception() if task.done() else None
                if error is not None:
                    raise error
    except TimeoutError:
        written = 0 if stream is None else stream.bytes_written
        raise errors.TimeoutError(
            f"stream round trip {index + 1}: no complete echo of {size} bytes "
            f"({written} written, {len(echoed)} echoed)"
        ) from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return bytes(echoed)


async def _read_echo(stream: WebTransportStream, size: int, echoed: bytearray) -> None:
    """Append what ``stream`` brings to ``echoed`` until its end (or beyond ``size`` bytes)."""
    while chunk := await stream.read(_READ_SIZE):
        echoed += chunk
        if len(echoed) > size:
            return  # longer than the payload: not its echo


async def datagram_round_trips(
    session: WebTransportSession,
    count: int,
    size: int,
    *,
    wait: float = 1.0,
    on_result: Callable[[float | None], None] | None = None,
) -> RoundTrips:
    """Send ``count`` datagrams one at a time, each after the echo of the previous one.

    Each payload is ``max(4, min(size, max_datagram_size))`` bytes and starts with its 4-byte
    sequence number; datagrams that arrive but are not the awaited echo (late echoes, or the
    server's own datagrams) are skipped.

    Args:
        session: An open session to an endpoint that echoes datagrams.
        count: How many round trips to try.
        size: The payload size wanted, in bytes (cut to what the connection carries).
        wait: Seconds to wait for each echo; a datagram not echoed by then is lost.
        on_result: Called after each datagram with its round-trip time in seconds, or with
            None when it was lost.

    Returns:
        The round-trip times of the datagrams that came back.

    Raises:
        DatagramError: the session cannot send datagrams.
        SessionError: the session ended.
    """
    datagrams = session.datagrams
    length = max(4, min(size, datagrams.max_datagram_size))
    result = RoundTrips(rtts=[], attempted=count, size=length)
    for seq in range(count):
        data = struct.pack("!I", seq) + bytes((seq + i) & 0xFF for i in range(length - 4))
        started = time.perf_counter()
        await datagrams.send(data)
        try:
            async with asyncio.timeout(wait):
                while (answer := await datagrams.receive()) != data:
                    logger.debug("ignoring a late or foreign datagram of %d bytes", len(answer))
        except TimeoutError:
            logger.info("datagram %d was not echoed within %g s", seq, wait)
            if on_result is not None:
                on_result(None)
            continue
        rtt = time.perf_counter() - started
        result.rtts.append(rtt)
        if on_result is not None:
            on_result(rtt)
    return result


# ------------------------------------------------------------------------------ options, results


def parse_workloads(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list of workload names (``"all"`` selects every workload).

    Args:
        text: For example ``"connect,stream-rtt"``; spaces around the names are ignored.

    Returns:
        The names without repetitions, in the order of :data:`WORKLOADS`.

    Raises:
        ValueError: a name is unknown, or the list is empty.
    """
    names = {part.strip() for part in text.split(",") if part.strip()}
    if "all" in names:
        return WORKLOADS
    unknown = sorted(names.difference(WORKLOADS))
    if unknown:
        raise ValueError(
            f"unknown workload {', '.join(unknown)} (choose from {', '.join(WORKLOADS)}, all)"
        )
    if not names:
        raise ValueError("no workload named")
    return tuple(name for name in WORKLOADS if name in names)


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What a run does.

    Attributes:
        url: The ``https://host:port/path`` of an endpoint that echoes.
        workloads: The workloads to run, a subset of :data:`WORKLOADS`, run in that order.
        count: Operations of ``connect``, ``stream-rtt`` and ``datagram-rtt`` each.
        size: Payload bytes of a stream or datagram round trip (a datagram's is cut to what
            the connection carries).
        concurrency: Streams in flight at once in ``stream-rtt`` and ``throughput``.
        duration: Seconds ``throughput`` writes for (when ``total_bytes`` is None).
        total_bytes: Bytes ``throughput`` sends in all (shared among its streams), instead of
            writing for ``duration`` seconds.
        timeout: Seconds for each session establishment, each stream round trip and each
            ``throughput`` write or read.
        datagram_timeout: Seconds a datagram's echo may take before it counts as lost.
    """

    url: str
    workloads: tuple[str, ...] = WORKLOADS
    count: int = 100
    size: int = 1024
    concurrency: int = 1
    duration: float = 5.0
    total_bytes: int | None = None
    timeout: float = 10.0
    datagram_timeout: float = 1.0

    def __post_init__(self) -> None:
        unknown = set(self.workloads).difference(WORKLOADS)
        if unknown:
            raise ValueError(f"unknown workloads: {sorted(unknown)}")
        for name in ("count", "size", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.total_bytes is not None and self.total_bytes < 1:
            raise ValueError("total_bytes must be at least 1")
        for name in ("duration", "timeout", "datagram_timeout"):
            value = getattr(self, name)
            if not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a positive number")

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (``url`` and ``workloads`` aside)."""
        return {
            "count": self.count,
            "size": self.size,
            "concurrency": self.concurrency,
            "duration": None if self.total_bytes is not None else self.duration,
            "bytes": self.total_bytes,
            "timeout": self.timeout,
            "datagram_timeout": self.datagram_timeout,
        }


@dataclass
class WorkloadResult:
    """The figures of one workload.

    Every attempted operation ends one way: ``count == ok + errors + lost``.

    Attributes:
        name: The workload (one of :data:`WORKLOADS`).
        count: Operations attempted (``throughput``: chunks whose echo came back or failed;
            a stream that could not be opened counts as one).
        errors: Operations that failed: a handshake, stream or send error, a timeout, an echo
            that differs from the payload (``throughput``: the chunks of a failed stream that
            were not echoed back).
        lost: Datagrams whose echo did not come back in time (``datagram-rtt`` only).
        latencies: The latency of each operation that succeeded, in seconds.
        elapsed: Seconds the workload took, from its first operation to the end of its last.
        bytes: Payload bytes echoed back intact.
        first_error: What went wrong first, or None.
    """

    name: str
    count: int = 0
    errors: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    bytes: int = 0
    first_error: str | None = None

    @property
    def ok(self) -> int:
        """Operations that succeeded."""
        return len(self.latencies)

    @property
    def ops_per_second(self) -> float:
        """Successful operations per second of :attr:`elapsed`."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float | None:
        """Payload echoed back per second, in MB (10⁶ bytes); None for ``connect``."""
        if self.name == "connect":
            return None
        return self.bytes / self.elapsed / 1e6 if self.elapsed > 0 else 0.0

    def latency(self, which: str) -> float | None:
        """One latency figure in seconds, or None when no operation succeeded.

        Args:
            which: ``"median"``, ``"p95"``, ``"p99"``, ``"min"`` or ``"max"``.

        Returns:
            The figure over :attr:`latencies`.
        """
        if not self.latencies:
            return None
        if which == "median":
            return statistics.median(self.latencies)
        if which == "min":
            return min(self.latencies)
        if which == "max":
            return max(self.latencies)
        return percentile(self.latencies, float(which.removeprefix("p")))

    def fail(self, error: BaseException | str, operations: int = 1) -> None:
        """Count ``operations`` failed operations; keep the first error's text.

        Args:
            error: What went wrong (an exception or a sentence).
            operations: How many operations it ended.
        """
        self.errors += operations
        if self.first_error is None:
            if isinstance(error, errors.WebTransportError) and str(error):
                error = str(error)
            elif isinstance(error, BaseException):
                error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self.first_error = error

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values: latencies in ms, throughput in MB/s."""

        def ms(which: str) -> float | None:
            value = self.latency(which)
            return None if value is None else round(value * 1e3, 6)

        mbps = self.megabytes_per_second
        return {
            "count": self.count,
            "ok": self.ok,
            "errors": self.errors,
            "lost": self.lost,
            "median_ms": ms("median"),
            "p95_ms": ms("p95"),
            "p99_ms": ms("p99"),
            "min_ms": ms("min"),
            "max_ms": ms("max"),
            "mb_per_s": None if mbps is None else round(mbps, 6),
            "ops_per_s": round(self.ops_per_second, 3),
            "elapsed_s": round(self.elapsed, 6),
            "bytes": self.bytes,
            "first_error": self.first_error,
        }


@dataclass
class BenchReport:
    """The results of a run.

    Attributes:
        url: The endpoint.
        engine: The client's QUIC engine (``"aioquic"`` or ``"qh3"``).
        options: What the run did.
        results: One result per workload, in the order they ran.
    """

    url: str
    engine: str
    options: BenchOptions
    results: list[WorkloadResult]

    @property
    def failed(self) -> list[WorkloadResult]:
        """The workloads in which no operation succeeded."""
        return [result for result in self.results if result.ok == 0]

    def to_dict(self) -> dict[str, Any]:
        """The report as one JSON-ready object; ``workloads`` maps each name to its figures."""
        return {
            "url": self.url,
            "engine": self.engine,
            "options": self.options.to_dict(),
            "workloads": {result.name: result.to_dict() for result in self.results},
            "ok": not self.failed,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as one line of JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


# ------------------------------------------------------------------------------ the runner


class SessionFactory(Protocol):
    """What opens the sessions of a run: a :class:`~pywebtransport.client.WebTransportClient`."""

    @property
    def config(self) -> ClientConfig:
        """The client configuration (its ``engine`` is recorded in the report)."""
        ...

    async def connect(self, url: str, *, timeout: float | None = None) -> WebTransportSession:
        """Open a session to ``url`` within ``timeout`` seconds."""
        ...


class ProgressSink(Protocol):
    """Where a run reports its progress (:class:`BenchProgress` draws it)."""

    def start(self, workload: str, total: float) -> None:
        """A workload begins; it is done at ``total`` (operations, bytes or seconds)."""
        ...

    def update(self, workload: str, completed: float) -> None:
        """The workload got to ``completed`` out of its total."""
        ...

    def finish(self, workload: str) -> None:
        """The workload ended."""
        ...


class _NoProgress:
    def start(self, workload: str, total: float) -> None:
        pass

    def update(self, workload: str, completed: float) -> None:
        pass

    def finish(self, workload: str) -> None:
        pass


async def run_bench(
    client: SessionFactory, options: BenchOptions, *, progress: ProgressSink | None = None
) -> BenchReport:
    """Run the workloads of ``options`` one after the other.

    A first session checks that the URL answers before any workload starts. After that, a
    workload's failures are counted in its result rather than raised.

    Args:
        client: Opens the sessions (a fresh QUIC connection for each one).
        options: The URL, the workloads and their sizes.
        progress: Told how each workload advances; None: nobody is.

    Returns:
        The report, with one result per workload.

    Raises:
        pywebtransport.TimeoutError: the first session did not open within ``options.timeout``.
        HandshakeError: the server refused the session (its status is in the error).
        CertificateError: the server's certificate was not accepted.
        pywebtransport.ConnectionError: the server cannot be reached.
        ConfigurationError: the URL is not a valid ``https`` URL.
    """
    sink: ProgressSink = _NoProgress() if progress is None else progress
    session = await client.connect(options.url, timeout=options.timeout)
    await _close_quietly(session)
    results = []
    for name in options.workloads:
        sink.start(name, _progress_total(name, options))
        try:
            results.append(await _RUNNERS[name](client, options, sink))
        finally:
            sink.finish(name)
    return BenchReport(
        url=options.url, engine=client.config.engine, options=options, results=results
    )


def _progress_total(name: str, options: BenchOptions) -> float:
    if name != "throughput":
        return float(options.count)
    return float(options.total_bytes if options.total_bytes is not None else options.duration)


async def _close_quietly(session: WebTransportSession) -> None:
    try:
        await session.close()
    except errors.WebTransportError as error:
        logger.debug("closing a benchmark session: %s", error)


async def _open(
    client: SessionFactory, options: BenchOptions, result: WorkloadResult, operations: int
) -> WebTransportSession | None:
    """A session for one workload; on failure, ``operations`` are counted as failed."""
    try:
        return await client.connect(options.url, timeout=options.timeout)
    except (errors.WebTransportError, TimeoutError) as error:
        result.count += operations
        result.fail(error, operations)
        return None


async def _bench_connect(
    client: SessionFactory, options: BenchOptions, progress: ProgressSink
) -> WorkloadResult:
    result = WorkloadResult("connect")
    started = time.perf_counter()
    for index in range(options.count):
        result.count += 1
        begun = time.perf_counter()
        try:
            session = await client.connect(options.url, timeout=options.timeout)
        except (errors.WebTransportError, TimeoutError) as error:
            result.fail(error)
        else:
            result.latencies.append(time.perf_counter() - begun)
            await _close_quietly(session)
        progress.update("connect", index + 1)
    result.elapsed = time.perf_counter() - started
    return result


async def _bench_stream_rtt(
    client: SessionFactory, options: BenchOptions, progress: ProgressSink
) -> WorkloadResult:
    result = WorkloadResult("stream-rtt")
    session = await _open(client, options, result, options.count)
    if session is None:
        return result
    indexes = iter(range(options.count))
    done = 0

    async def worker() -> None:
        nonlocal done
        for index in indexes:  # shared by the workers: each index is taken once
            data = payload(index, options.size)
            result.count += 1
            begun = time.perf_counter()
            try:
                echoed = await stream_round_trip(session, index, data, options.timeout)
            except (errors.WebTransportError, TimeoutError) as error:
                result.fail(error)
            else:
                if echoed == data:
                    result.latencies.append(time.perf_counter() - begun)
                    result.bytes += len(data)
                else:
                    result.fail(f"stream round trip {index + 1} echoed {len(echoed)} other bytes")
            done += 1
            progress.update("stream-rtt", done)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(min(options.concurrency, options.count))))
    finally:
        result.elapsed = time.perf_counter() - started
        await _close_quietly(session)
    return result


async def _bench_datagram_rtt(
    client: SessionFactory, options: BenchOptions, progress: ProgressSink
) -> WorkloadResult:
    result = WorkloadResult("datagram-rtt")
    session = await _open(client, options, result, options.count)
    if session is None:
        return result
    length = max(4, min(options.size, session.datagrams.max_datagram_size))

    def on_result(rtt: float | None) -> None:
        result.count += 1
        if rtt is None:
            result.lost += 1
        else:
            result.latencies.append(rtt)
            result.bytes += length
        progress.update("datagram-rtt", result.count)

    started = time.perf_counter()
    try:
        await datagram_round_trips(
            session,
            options.count,
            options.size,
            wait=options.datagram_timeout,
            on_result=on_result,
        )
    except errors.WebTransportError as error:  # the rest cannot be sent
        remaining = options.count - result.count
        result.count += remaining
        result.fail(error, remaining)
    finally:
        result.elapsed = time.perf_counter() - started
        await _close_quietly(session)
    return result


class _EchoMismatch(Exception):
    """The echo of a throughput stream differs from what was written."""


async def _bench_throughput(
    client: SessionFactory, options: BenchOptions, progress: ProgressSink
) -> WorkloadResult:
    result = WorkloadResult("throughput")
    session = await _open(client, options, result, 1)
    if session is None:
        return result
    streams = options.concurrency
    shares: list[int | None] = [None] * streams
    if options.total_bytes is not None:
        total = options.total_bytes
        shares = [total // streams + (1 if i < total % streams else 0) for i in range(streams)]
        shares = [share for share in shares if share]
    started = time.perf_counter()
    deadline = started + options.duration

    def report() -> None:
        if options.total_bytes is not None:
            progress.update("throughput", result.bytes)
        else:
            progress.update("throughput", min(time.perf_counter() - started, options.duration))

    async def one_stream(share: int | None) -> None:
        """Write ``share`` bytes (None: until the deadline) on a new stream, check the echo."""
        pending: deque[tuple[int, float]] = deque()  # (end offset of a chunk, when written)
        sent = received = 0

        async def write_side(stream: WebTransportStream) -> None:
            nonlocal sent
            view = memoryview(_PATTERN)
            while share is None or sent < share:
                size = THROUGHPUT_CHUNK if share is None else min(THROUGHPUT_CHUNK, share - sent)
                offset = sent % 256
                pending.append((sent + size, time.perf_counter()))
                async with asyncio.timeout(options.timeout):
                    await stream.write(view[offset : offset + size])
                sent += size
            async with asyncio.timeout(options.timeout):
                await stream.close()

        async def read_side(stream: WebTransportStream) -> None:
            nonlocal received
            while True:
                async with asyncio.timeout(options.timeout):
                    chunk = await stream.read(_READ_SIZE)
                if not chunk:
                    break
                offset = received % 256
                if _PATTERN[offset : offset + len(chunk)] != chunk:
                    raise _EchoMismatch(f"the echo differs from the data after {received} bytes")
                received += len(chunk)
                result.bytes += len(chunk)
                now = time.perf_counter()
                while pending and pending[0][0] <= received:
                    result.latencies.append(now - pending.popleft()[1])
                report()
            if received != sent:
                raise _EchoMismatch(f"{received} bytes echoed of {sent} sent")

        stream: WebTransportStream | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(options.timeout):
                stream = await session.create_bidirectional_stream()
            tasks = [
                asyncio.create_task(write_side(stream)),
                asyncio.create_task(read_side(stream)),
            ]
            wait = None if share is not None else max(0.0, deadline - time.perf_counter())
            await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                error = task.exception() if task.done() else None
                if error is not None:
                    raise error
            if not all(task.done() for task in tasks):  # the time is up: the rest is dropped
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                pending.clear()
                await _end_stream(stream)
        except (errors.WebTransportError, TimeoutError, _EchoMismatch) as error:
            if isinstance(error, TimeoutError) and not str(error):
                error = errors.TimeoutError(
                    f"throughput stream stalled for {options.timeout:g} s "
                    f"({sent} bytes written, {received} echoed)"
                )
            result.fail(error, len(pending) if stream is not None else 1)
            if stream is not None:
                await _end_stream(stream)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        await asyncio.gather(*(one_stream(share) for share in shares))
    finally:
        result.elapsed = time.perf_counter() - started
        result.count = result.ok + result.errors
        await _close_quietly(session)
    report()
    return result


async def _end_stream(stream: WebTransportStream) -> None:
    """Reset both directions of ``stream``: nothing more is written or read on it."""
    for end in (stream.abort, stream.stop):
        try:
            await end()
        except errors.WebTransportError as error:
            logger.debug("ending a throughput stream: %s", error)


_RUNNERS = {
    "connect": _bench_connect,
    "stream-rtt": _bench_stream_rtt,
    "datagram-rtt": _bench_datagram_rtt,
    "throughput": _bench_throughput,
}


# ------------------------------------------------------------------------------ rendering (rich)


def rich_available() -> bool:
    """Whether ``rich``, which draws the table and the progress bars, can be imported."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class BenchProgress:
    """Live progress bars on stderr, one per workload, drawn by ``rich``.

    Use it as a context manager around the run; it is a :class:`ProgressSink`. The bars
    appear with the first workload and stay, complete, when the context ends. Nothing is
    written to stdout, so a table or JSON printed there stays intact. Disabled, it draws
    nothing (and does not import ``rich``).

    Args:
        enabled: Draw the bars.
        force_terminal: Draw them even when stderr is not a terminal (a file, a pipe).
        file: Where to draw instead of stderr.
    """

    def __init__(
        self, *, enabled: bool = True, force_terminal: bool = False, file: TextIO | None = None
    ) -> None:
        self._progress: Progress | None = None
        self._started = False
        self._tasks: dict[str, tuple[TaskID, float]] = {}
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(file=file, stderr=file is None, force_terminal=force_terminal or None)
        self._progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> BenchProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None and self._started:
            self._progress.stop()
            self._started = False

    def start(self, workload: str, total: float) -> None:
        """Add the bar of ``workload``, empty.

        Args:
            workload: The workload's name, the bar's label.
            total: Where the bar is full.
        """
        if self._progress is None:
            return
        if not self._started:
            self._progress.start()
            self._started = True
        self._tasks[workload] = (self._progress.add_task(workload, total=total), total)

    def update(self, workload: str, completed: float) -> None:
        """Move the bar of ``workload`` to ``completed``.

        Args:
            workload: The workload's name.
            completed: How far it got, in the unit of its total.
        """
        if self._progress is not None and workload in self._tasks:
            self._progress.update(self._tasks[workload][0], completed=completed)

    def finish(self, workload: str) -> None:
        """Fill the bar of ``workload`` (a workload may end short of its total, on errors).

        Args:
            workload: The workload's name.
        """
        if self._progress is not None and workload in self._tasks:
            task, total = self._tasks[workload]
            self._progress.update(task, completed=total, refresh=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.3f}"


def render_table(report: BenchReport) -> Table:
    """The summary table of ``report``: one row per workload.

    Args:
        report: The results of a run.

    Returns:
        A ``rich`` table: count, errors, lost, the latency figures in milliseconds (median,
        95th and 99th percentile, minimum, maximum), MB/s and operations per second.
    """
    from rich import box
    from rich.table import Table

    options = report.options
    table = Table(
        title=f"pywebtransport bench {report.url}",
        caption=(
            f"latencies in ms; engine {report.engine}, size {options.size} B, "
            f"concurrency {options.concurrency}"
        ),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("workload", no_wrap=True)
    for header in ("count", "errors", "lost", "median", "p95", "p99", "min", "max"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("MB/s", justify="right", no_wrap=True)
    table.add_column("ops/s", justify="right", no_wrap=True)
    for result in report.results:
        mbps = result.megabytes_per_second
        table.add_row(
            result.name,
            str(result.count),
            str(result.errors),
            str(result.lost),
            *(_ms(result.latency(which)) for which in ("median", "p95", "p99", "min", "max")),
            "-" if mbps is None else f"{mbps:.2f}",
            f"{result.ops_per_second:.1f}",
        )
    return table


def print_table(report: BenchReport, file: TextIO | None = None) -> None:
    """Print the summary table of ``report`` (:func:`render_table`) and any first errors.

    Args:
        report: The results of a run.
        file: Where to print (default: stdout). Not a terminal, the table is not wrapped.
    """
    from rich.console import Console

    out = sys.stdout if file is None else file
    console = Console(file=out)
    if not console.is_terminal:
        console = Console(file=out, width=_FILE_WIDTH)
    console.print(render_table(report))
    for result in report.results:
        if result.first_error is not None:
            console.print(f"{result.name}: first error: {result.first_error}", markup=False)
