"""Messages and RPC calls: the message layer against hand-written framing on a plain stream.

Two implementations run the same workloads, each as a fresh client process that spawns its own
server process (``READY <port>``) on loopback, certificate verification on (a fresh ECDSA P-256
certificate trusted with ``ClientConfig(ca_certs=...)``):

- **channel**: ``pywebtransport.messaging``. The server wraps each session of ``/messaging`` in a
  ``Messenger`` with a route ``echo`` (``async for msg in channel: await channel.send(msg)``) and
  a route ``rpc`` (``RpcPeer`` with ``RpcMethods`` exposing ``add(a: int, b: int) -> int``); the
  client opens those two channels and uses ``Channel.send`` / ``Channel.receive`` and
  ``RpcPeer.call``.
- **raw** (the baseline): ``session.create_bidirectional_stream()`` with hand-written framing,
  ``struct.pack(">I", len(payload)) + payload`` with ``json.dumps`` / ``json.loads`` on both
  ends. The server (route ``/raw``) reads one selector byte (``e`` echo, ``r`` RPC), then frames
  with ``readexactly`` and answers each one inline; the client's RPC is JSON-RPC-shaped request
  and response objects matched by id through a dict of futures, written under a lock.

Workloads (each after a warm-up):

1. messages/s: ``--messages`` messages (a dict of ~100 bytes of JSON) echoed on one channel or
   stream, at most ``--window`` in flight; echoes received / elapsed.
2. round-trip latency: ``--round-trips`` messages one at a time; p50 and p99.
3. RPC calls/s: ``--calls`` calls of ``add`` with 1 and with 32 calls in flight.

Every round runs both implementations (their order alternates from round to round); the medians
over the rounds are printed with the ratios channel / raw (throughput) and raw / channel
(latency), so a ratio above 1 means the message layer is faster than the hand-written baseline.
The client and server CPU time per message (or call) is reported as well.

Usage::

    python benchmarks/messaging.py [--rounds 5] [--json PATH] [--messages 20000]
        [--window 64] [--round-trips 2000] [--calls 5000]

Hidden sub-commands used by the rounds::

    python benchmarks/messaging.py client --impl channel|raw [--json] [--phases ...]
        [--server-python-args "-m cProfile -o /tmp/server.prof"]
    python benchmarks/messaging.py server --cert C --key K       # prints READY <port>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import os
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from floor_aioquic import (
    announce_ready,
    make_certificate,
    spawn_server_process,
    wait_for_termination,
)

if TYPE_CHECKING:
    from pywebtransport import WebTransportSession, WebTransportStream
    from pywebtransport.messaging import Channel

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

IMPLEMENTATIONS = ("channel", "raw")
PHASES = ("messages", "latency", "rpc1", "rpc32")
MESSAGES = 20_000
WINDOW = 64
ROUND_TRIPS = 2_000
CALLS = 3_000
WIDE = 32
"""Calls in flight for the second RPC figure."""
WARMUP_MESSAGES = 1_000
WARMUP_ROUND_TRIPS = 200
WARMUP_CALLS = 500
STEP_TIMEOUT = 120.0
"""Upper bound on one phase (warm-up included), and on connecting."""
RUN_TIMEOUT = 900.0
"""Upper bound on one client process (server start and every phase included)."""

_LENGTH = struct.Struct(">I")
ECHO, RPC = b"e", b"r"
"""Selector byte opening each raw stream."""

METRICS = (
    # key, title, better, ratio as channel/raw ("higher") or raw/channel ("lower")
    ("messages_per_s", f"messages/s ({WINDOW} in flight)", "higher"),
    ("latency_p50_us", "round trip p50 (us)", "lower"),
    ("latency_p99_us", "round trip p99 (us)", "lower"),
    ("rpc1_per_s", "RPC calls/s, 1 in flight", "higher"),
    ("rpc32_per_s", f"RPC calls/s, {WIDE} in flight", "higher"),
    ("client_cpu_us_per_message", "client CPU / message (us)", "lower"),
    ("server_cpu_us_per_message", "server CPU / message (us)", "lower"),
    ("client_cpu_us_per_call32", f"client CPU / call, {WIDE} (us)", "lower"),
    ("server_cpu_us_per_call32", f"server CPU / call, {WIDE} (us)", "lower"),
)


def make_message(seq: int) -> dict[str, Any]:
    """The message of the echo workloads: 100 bytes of compact JSON for a 5-digit ``seq``."""
    return {
        "seq": seq,
        "kind": "update",
        "user": "alice",
        "room": "lobby",
        "values": [1, 2, 3, 4],
        "text": "hello, world",
    }


SEQ_BASE = 10_000
"""Sequence numbers start here, so they have 5 digits for the first 90,000 messages."""


@dataclass
class Figures:
    """The figures of one client run (None: the phase was not run)."""

    implementation: str
    message_bytes: int = 0
    messages_per_s: float | None = None
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    rpc1_per_s: float | None = None
    rpc32_per_s: float | None = None
    client_cpu_us_per_message: float | None = None
    server_cpu_us_per_message: float | None = None
    client_cpu_us_per_call32: float | None = None
    server_cpu_us_per_call32: float | None = None
    steal_pct: float | None = None  # CPU time the hypervisor gave to others during the run


# ---------------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------------


def add(a: int, b: int) -> int:
    """The RPC method of the workload."""
    return a + b


async def messaging_session(session: WebTransportSession) -> None:
    """``/messaging``: a Messenger with the routes ``echo`` and ``rpc``."""
    from pywebtransport.messaging import Messenger, RpcMethods, RpcPeer

    methods = RpcMethods()
    methods.add(add)
    messenger = Messenger(session)

    @messenger.route("echo")
    async def echo(channel: Channel) -> None:
        async for msg in channel:
            await channel.send(msg)

    @messenger.route("rpc")
    async def rpc(channel: Channel) -> None:
        async with RpcPeer(channel, methods=methods) as peer:
            await peer.wait_closed()

    await messenger.serve()


RAW_METHODS: dict[str, Callable[..., Any]] = {"add": add}


async def raw_session(session: WebTransportSession) -> None:
    """``/raw``: every bidirectional stream is an echo or RPC stream with hand-written framing."""
    from pywebtransport import WebTransportStream

    tasks: set[asyncio.Task[None]] = set()
    try:
        async for stream in session.incoming_streams():
            if isinstance(stream, WebTransportStream):
                task = asyncio.create_task(raw_stream(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def raw_stream(stream: WebTransportStream) -> None:
    """Answer each frame of a raw stream inline: echo it, or run the JSON-RPC call in it."""
    from pywebtransport.exceptions import WebTransportError

    pack, unpack = _LENGTH.pack, _LENGTH.unpack
    try:
        kind = await stream.readexactly(1)
        while True:
            (length,) = unpack(await stream.readexactly(4))
            message = json.loads(await stream.readexactly(length))
            if kind == RPC:
                func = RAW_METHODS.get(message["method"])
                if func is None:
                    error = {"code": -32601, "message": "Method not found"}
                    reply = {"jsonrpc": "2.0", "id": message["id"], "error": error}
                else:
                    result = func(*message["params"])
                    reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            else:
                reply = message
            payload = json.dumps(reply).encode()
            await stream.write(pack(len(payload)) + payload)
    except asyncio.IncompleteReadError:  # the client's FIN
        with contextlib.suppress(WebTransportError):
            await stream.close()
    except WebTransportError:
        pass


async def serve(host: str, certfile: str, keyfile: str) -> None:
    """Run the server (routes ``/messaging`` and ``/raw``) until SIGINT/SIGTERM."""
    from pywebtransport import ServerApp, ServerConfig, WebTransportServer

    config = ServerConfig(certfile=certfile, keyfile=keyfile, host=host, port=0)
    app = ServerApp(config=config)
    app.route("/messaging")(messaging_session)
    app.route("/raw")(raw_session)
    server = WebTransportServer(config=config, app=app)
    await server.listen(host=host, port=0)
    try:
        announce_ready(int(server.local_address[1]))
        await wait_for_termination()
    finally:
        await server.close()


# ---------------------------------------------------------------------------------------------
# Client side: the two implementations behind one small interface
# ---------------------------------------------------------------------------------------------


class EchoLink(Protocol):
    """Sends messages and receives their echoes."""

    async def send(self, message: Any) -> None: ...

    async def receive(self) -> Any: ...


class RawEcho:
    """The baseline's echo stream: length prefix + ``json.dumps`` / ``json.loads``."""

    def __init__(self, stream: WebTransportStream) -> None:
        self._stream = stream

    async def send(self, message: Any) -> None:
        payload = json.dumps(message).encode()
        await self._stream.write(_LENGTH.pack(len(payload)) + payload)

    async def receive(self) -> Any:
        stream = self._stream
        (length,) = _LENGTH.unpack(await stream.readexactly(4))
        return json.loads(await stream.readexactly(length))


class RawRpc:
    """The baseline's RPC client: JSON-RPC-shaped objects, matched by id with futures."""

    def __init__(self, stream: WebTransportStream) -> None:
        self._stream = stream
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._lock = asyncio.Lock()  # a frame is written whole even when flow control waits
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_loop())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def call(self, method: str, params: list[Any]) -> Any:
        call_id = next(self._ids)
        future = self._calls[call_id] = asyncio.get_running_loop().create_future()
        request = {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}
        payload = json.dumps(request).encode()
        try:
            async with self._lock:
                await self._stream.write(_LENGTH.pack(len(payload)) + payload)
            return await future
        finally:
            self._calls.pop(call_id, None)

    async def _read_loop(self) -> None:
        stream = self._stream
        unpack = _LENGTH.unpack
        error: BaseException = RuntimeError("the RPC stream ended")
        try:
            while True:
                (length,) = unpack(await stream.readexactly(4))
                response = json.loads(await stream.readexactly(length))
                future = self._calls.get(response.get("id"))
                if future is None or future.done():
                    continue
                if "error" in response:
                    future.set_exception(RuntimeError(f"RPC error {response['error']!r}"))
                else:
                    future.set_result(response["result"])
        except Exception as exc:
            error = exc
        finally:
            for future in self._calls.values():
                if not future.done():
                    future.set_exception(error)


# ---------------------------------------------------------------------------------------------
# Client side: the workloads
# ---------------------------------------------------------------------------------------------


class CpuClock:
    """CPU seconds used so far by this process and by the server process."""

    def __init__(self, server_pid: int | None) -> None:
        self._server_pid = server_pid
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def read(self) -> tuple[float, float | None]:
        return time.process_time(), self._server_cpu()

    def _server_cpu(self) -> float | None:
        if self._server_pid is None:
            return None
        try:
            text = Path(f"/proc/{self._server_pid}/stat").read_text()
        except OSError:
            return None
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime


def per_unit_us(
    before: tuple[float, float | None], after: tuple[float, float | None], units: int
) -> tuple[float, float | None]:
    """CPU microseconds per unit of work, for the client and (when known) the server."""
    client = (after[0] - before[0]) / units * 1e6
    if before[1] is None or after[1] is None:
        return client, None
    return client, (after[1] - before[1]) / units * 1e6


async def pipelined(link: EchoLink, count: int, window: int, first: int = SEQ_BASE) -> float:
    """Echo ``count`` messages with at most ``window`` in flight; return messages/s."""
    slots = asyncio.Semaphore(window)

    async def sender() -> None:
        for seq in range(first, first + count):
            await slots.acquire()
            await link.send(make_message(seq))

    async def receiver() -> None:
        for seq in range(first, first + count):
            echo = await link.receive()
            if echo["seq"] != seq:
                raise RuntimeError(f"echo {echo['seq']} arrived where {seq} was expected")
            slots.release()

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        group.create_task(sender())
        group.create_task(receiver())
    return count / (time.perf_counter() - start)


async def round_trips(link: EchoLink, count: int, first: int = SEQ_BASE) -> list[float]:
    """Echo ``count`` messages one at a time; return each round trip in seconds."""
    samples: list[float] = []
    clock = time.perf_counter
    for seq in range(first, first + count):
        message = make_message(seq)
        start = clock()
        await link.send(message)
        echo = await link.receive()
        samples.append(clock() - start)
        if echo["seq"] != seq:
            raise RuntimeError(f"echo {echo['seq']} arrived where {seq} was expected")
    return samples


async def call_rate(
    call: Callable[[int, int], Awaitable[Any]], concurrency: int, count: int
) -> float:
    """Make ``count`` calls of ``add`` with ``concurrency`` in flight; return calls/s."""
    left = count

    async def worker(index: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            a = left
            result = await call(a, index)
            if result != a + index:
                raise RuntimeError(f"add({a}, {index}) returned {result!r}")

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            group.create_task(worker(index))
    return count / (time.perf_counter() - start)


@dataclass
class Settings:
    """What one client run does."""

    messages: int = MESSAGES
    window: int = WINDOW
    round_trips: int = ROUND_TRIPS
    calls: int = CALLS
    phases: Sequence[str] = PHASES


async def echo_phases(link: EchoLink, settings: Settings, cpu: CpuClock, out: Figures) -> None:
    """Workloads 1 and 2 on one echo link."""
    if "messages" in settings.phases:
        async with asyncio.timeout(STEP_TIMEOUT):
            await pipelined(link, WARMUP_MESSAGES, settings.window)
            before = cpu.read()
            out.messages_per_s = await pipelined(link, settings.messages, settings.window)
            after = cpu.read()
        client, server = per_unit_us(before, after, settings.messages)
        out.client_cpu_us_per_message, out.server_cpu_us_per_message = client, server
    if "latency" in settings.phases:
        async with asyncio.timeout(STEP_TIMEOUT):
            await round_trips(link, WARMUP_ROUND_TRIPS)
            samples = await round_trips(link, settings.round_trips)
        out.latency_p50_us = statistics.median(samples) * 1e6
        out.latency_p99_us = statistics.quantiles(samples, n=100)[98] * 1e6


async def rpc_phases(
    call: Callable[[int, int], Awaitable[Any]], settings: Settings, cpu: CpuClock, out: Figures
) -> None:
    """Workload 3: calls with 1 and with ``WIDE`` in flight."""
    for phase, concurrency in (("rpc1", 1), ("rpc32", WIDE)):
        if phase not in settings.phases:
            continue
        async with asyncio.timeout(STEP_TIMEOUT):
            await call_rate(call, concurrency, WARMUP_CALLS)
            before = cpu.read()
            rate = await call_rate(call, concurrency, settings.calls)
            after = cpu.read()
        if concurrency == 1:
            out.rpc1_per_s = rate
        else:
            out.rpc32_per_s = rate
            client, server = per_unit_us(before, after, settings.calls)
            out.client_cpu_us_per_call32, out.server_cpu_us_per_call32 = client, server


async def run_channel(session: WebTransportSession, settings: Settings, cpu: CpuClock) -> Figures:
    """The workloads over the message layer."""
    from pywebtransport.messaging import Messenger, RpcPeer

    out = Figures("channel", message_bytes=len(_compact(make_message(SEQ_BASE))))
    async with Messenger(session) as messenger:
        channel = await messenger.open_channel("echo", timeout=STEP_TIMEOUT)
        await echo_phases(channel, settings, cpu, out)
        await channel.close()
        rpc_channel = await messenger.open_channel("rpc", timeout=STEP_TIMEOUT)
        async with RpcPeer(rpc_channel) as peer:

            async def call(a: int, b: int) -> Any:
                return await peer.call("add", [a, b])  # bounded by the phase's timeout

            await rpc_phases(call, settings, cpu, out)
    return out


async def run_raw(session: WebTransportSession, settings: Settings, cpu: CpuClock) -> Figures:
    """The workloads over plain streams with hand-written framing."""
    out = Figures("raw", message_bytes=len(json.dumps(make_message(SEQ_BASE))))
    async with asyncio.timeout(STEP_TIMEOUT):
        stream = await session.create_bidirectional_stream()
        await stream.write(ECHO)
    await echo_phases(RawEcho(stream), settings, cpu, out)
    await stream.close()
    async with asyncio.timeout(STEP_TIMEOUT):
        stream = await session.create_bidirectional_stream()
        await stream.write(RPC)
    client = RawRpc(stream)
    client.start()
    try:

        async def call(a: int, b: int) -> Any:
            return await client.call("add", [a, b])

        await rpc_phases(call, settings, cpu, out)
    finally:
        await client.stop()
        await stream.close()
    return out


def _compact(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


async def client_run(
    implementation: str, host: str, settings: Settings, server_python_args: Sequence[str]
) -> Figures:
    """Spawn a server process, run one implementation's workloads against it."""
    from pywebtransport import ClientConfig, WebTransportClient

    runner: Callable[[WebTransportSession, Settings, CpuClock], Coroutine[Any, Any, Figures]]
    runner, path = (run_channel, "/messaging") if implementation == "channel" else (run_raw, "/raw")
    with tempfile.TemporaryDirectory(prefix="messaging-bench-") as tmp:
        cert = make_certificate(Path(tmp))
        argv = [sys.executable, *server_python_args, __file__, "server", "--host", host]
        argv += ["--cert", cert.certfile, "--key", cert.keyfile]
        async with spawn_server_process(argv) as (port, server):
            pid = server.pid
            config = ClientConfig(ca_certs=cert.certfile, connect_timeout=STEP_TIMEOUT)
            async with WebTransportClient(config=config) as client:
                session = await client.connect(url=f"https://{host}:{port}{path}")
                try:
                    return await runner(session, settings, CpuClock(pid))
                finally:
                    await session.close()


# ---------------------------------------------------------------------------------------------
# The rounds and the table
# ---------------------------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    """The environment of the client and server processes: ``src`` first on PYTHONPATH."""
    env = dict(os.environ)
    parts = [str(SRC), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _ratio(channel: float | None, raw: float | None, better: str) -> float | None:
    if channel is None or raw is None or channel == 0 or raw == 0:
        return None
    return channel / raw if better == "higher" else raw / channel


def describe(figures: Figures) -> str:
    """One line with a run's main figures."""
    return (
        f"{figures.implementation:<8} msgs {_fmt(figures.messages_per_s):>7}/s  "
        f"p50 {_fmt(figures.latency_p50_us):>6} us  p99 {_fmt(figures.latency_p99_us):>6} us  "
        f"rpc1 {_fmt(figures.rpc1_per_s):>6}/s  rpc{WIDE} {_fmt(figures.rpc32_per_s):>6}/s  "
        f"cpu/msg c {_fmt(figures.client_cpu_us_per_message)} "
        f"s {_fmt(figures.server_cpu_us_per_message)} us  steal {_fmt(figures.steal_pct)}%"
    )


def _cpu_ticks() -> tuple[int, int] | None:
    """``(steal, total)`` ticks of all CPUs so far, from ``/proc/stat`` (None elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def run_client_process(implementation: str, args: argparse.Namespace) -> Figures | None:
    """Run one client process (which spawns its server); its figures, or None on failure."""
    argv = [sys.executable, __file__, "client", "--impl", implementation, "--json"]
    argv += ["--host", args.host, "--messages", str(args.messages), "--window", str(args.window)]
    argv += ["--round-trips", str(args.round_trips), "--calls", str(args.calls)]
    ticks = _cpu_ticks()
    try:
        completed = subprocess.run(
            argv,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        sys.stdout.write(f"  {implementation}: no result within {RUN_TIMEOUT:.0f} s\n")
        return None
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("{"):
            figures = Figures(**json.loads(line))
            after = _cpu_ticks()
            if ticks is not None and after is not None and after[1] > ticks[1]:
                figures.steal_pct = 100.0 * (after[0] - ticks[0]) / (after[1] - ticks[1])
            return figures
    tail = "\n".join(completed.stderr.strip().splitlines()[-20:])
    sys.stdout.write(f"  {implementation}: FAILED (exit {completed.returncode})\n{tail}\n")
    return None


def summarize(runs: dict[str, list[Figures | None]]) -> dict[str, Any]:
    """Print the table of medians, ratios and per-round ratio spread; return it as a dict."""
    medians: dict[str, dict[str, float | None]] = {}
    for name, figures in runs.items():
        done = [f for f in figures if f is not None]
        medians[name] = {}
        for key, _, _ in METRICS:
            values = [getattr(f, key) for f in done if getattr(f, key) is not None]
            medians[name][key] = statistics.median(values) if values else None
    ratios: dict[str, float | None] = {}
    spreads: dict[str, tuple[float, float] | None] = {}
    header = (
        f"{'figure':<30}{'channel':>10}{'raw':>10}{'ratio':>8}"
        f"{'round ratios':>16}{'channel min-max':>22}"
    )
    lines = [header, "-" * len(header)]
    for key, title, better in METRICS:
        channel, raw = medians["channel"][key], medians["raw"][key]
        ratio = _ratio(channel, raw, better)
        ratios[key] = ratio
        per_round = [
            r
            for c, b in zip(runs["channel"], runs["raw"], strict=True)
            if c is not None
            and b is not None
            and (r := _ratio(getattr(c, key), getattr(b, key), better)) is not None
        ]
        spreads[key] = (min(per_round), max(per_round)) if per_round else None
        values = [getattr(c, key) for c in runs["channel"] if c is not None]
        values = [v for v in values if v is not None]
        spread = f"{min(per_round):.2f}-{max(per_round):.2f}" if per_round else "-"
        channel_range = f"{_fmt(min(values))}-{_fmt(max(values))}" if values else "-"
        lines.append(
            f"{title:<30}{_fmt(channel):>10}{_fmt(raw):>10}"
            f"{'-' if ratio is None else f'{ratio:.2f}':>8}{spread:>16}{channel_range:>22}"
        )
    steals = [f.steal_pct for fs in runs.values() for f in fs if f and f.steal_pct is not None]
    if steals:
        lines.append(
            f"CPU steal during the runs: median {statistics.median(steals):.1f}%, "
            f"max {max(steals):.1f}% (above a few % the figures are not comparable)"
        )
    counts = ", ".join(
        f"{name}: {sum(f is not None for f in fs)}/{len(fs)}" for name, fs in runs.items()
    )
    lines.append(
        f"medians over rounds ({counts}); ratio = channel/raw for rates, raw/channel for "
        "latency and CPU: > 1 means the message layer is faster"
    )
    sys.stdout.write("\n" + "\n".join(lines) + "\n")
    return {"medians": medians, "ratios": ratios, "round_ratio_range": spreads}


def run_rounds(args: argparse.Namespace) -> int:
    """Run the interleaved rounds and print the summary."""
    runs: dict[str, list[Figures | None]] = {name: [] for name in IMPLEMENTATIONS}
    sys.stdout.write(
        f"messages {args.messages} (window {args.window}), round trips {args.round_trips}, "
        f"calls {args.calls} (1 and {WIDE} in flight), {args.rounds} rounds\n"
    )
    for round_no in range(1, args.rounds + 1):
        sys.stdout.write(f"round {round_no}/{args.rounds}\n")
        order = IMPLEMENTATIONS if round_no % 2 else tuple(reversed(IMPLEMENTATIONS))
        for name in order:
            figures = run_client_process(name, args)
            runs[name].append(figures)
            if figures is not None:
                sys.stdout.write(f"  {describe(figures)}\n")
            sys.stdout.flush()
    summary = summarize(runs)
    if args.json:
        record = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "settings": {
                "messages": args.messages,
                "window": args.window,
                "round_trips": args.round_trips,
                "calls": args.calls,
                "wide": WIDE,
                "rounds": args.rounds,
            },
            **summary,
            "runs": {n: [None if f is None else asdict(f) for f in fs] for n, fs in runs.items()},
        }
        Path(args.json).write_text(json.dumps(record, indent=2))
    return 0 if all(any(f is not None for f in fs) for fs in runs.values()) else 1


def _add_workload_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--messages", type=int, default=MESSAGES, help="messages echoed, pipelined")
    parser.add_argument("--window", type=int, default=WINDOW, help="messages in flight")
    parser.add_argument("--round-trips", type=int, default=ROUND_TRIPS, help="latency samples")
    parser.add_argument("--calls", type=int, default=CALLS, help="RPC calls per figure")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Message layer vs. hand-written framing")
    parser.add_argument("--rounds", type=int, default=5, help="rounds to run (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write medians and raw runs here")
    _add_workload_options(parser)
    commands = parser.add_subparsers(dest="command")
    client = commands.add_parser("client", help=argparse.SUPPRESS)
    client.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
    client.add_argument("--json", action="store_true")
    client.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset")
    client.add_argument(
        "--server-python-args",
        default="",
        help="arguments put before the script in the server's command line (a profiler)",
    )
    _add_workload_options(client)
    server = commands.add_parser("server", help=argparse.SUPPRESS)
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if args.command == "server":
        asyncio.run(serve(args.host, args.cert, args.key))
        return 0
    if args.command == "client":
        phases = [p for p in args.phases.split(",") if p]
        unknown = set(phases) - set(PHASES)
        if unknown:
            parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
        settings = Settings(args.messages, args.window, args.round_trips, args.calls, phases)
        wrap = shlex.split(args.server_python_args)
        figures = asyncio.run(client_run(args.impl, args.host, settings, wrap))
        if args.json:
            sys.stdout.write(json.dumps(asdict(figures)) + "\n")
        else:
            sys.stdout.write(describe(figures) + "\n")
            for key, title, _ in METRICS:
                sys.stdout.write(f"  {title:<30}{_fmt(getattr(figures, key)):>10}\n")
        return 0
    return run_rounds(args)


if __name__ == "__main__":
    sys.exit(main())
