"""Fan-out: one publisher, many subscribed sessions, publish rates stepped up until delivery fails.

Workload: ``--sessions`` subscribers (default 200) spread over ``--clients`` client processes
(default 2) and one publisher in a process of its own, all on loopback. The publisher sends
messages of about 100 bytes of JSON (``{"t": send time, "k": step, "i": sequence, "p":
padding}``) at each rate of ``--rates`` (messages/s; default 5, 7, 10, ... 160, steps of about
sqrt(2)) for ``--step-seconds`` (default 4) each; every subscriber should receive every message.
After a step the subscribers get up to ``DRAIN_MAX`` seconds to catch up (ending early once
nothing has arrived for ``DRAIN_IDLE`` s). Per step, from all subscribers together:

- deliveries/s: deliveries received / (last receipt - first publish);
- lost: deliveries expected (messages sent x sessions) minus received, next to the hub's and the
  clients' own drop counters where the implementation has them;
- p50/p99 publish-to-receive latency (wall clock, one machine);
- CPU of each process group (server, Redis, subscribers, publisher) as % of one core, and the
  server's and the subscribers' CPU microseconds per delivery.

A step *keeps up* when nothing was lost or dropped, its p99 is at most ``--max-p99-ms`` (default
250: a backlog growing for the length of a step shows up as a p99 of seconds) and the publisher
held its schedule. The first step that does not keep up ends the run (it gives the ceiling in
deliveries/s; higher rates would only measure queueing). The figure of an implementation is the
highest rate that kept up, in messages/s and deliveries/s (x sessions).

Implementations:

- **memory**: pywebtransport with the in-process hub (``Hub`` on its ``MemoryBackend``), one
  server process. The in-process backend cannot span processes, so this is one worker only.
- **redis**: pywebtransport with ``Hub.from_url("redis://...")`` in each of 2 worker processes
  (``WorkerGroup``, one UDP port shared with ``SO_REUSEPORT``) and one ``redis-server`` started by
  the benchmark (``--save '' --appendonly no``, a free loopback port). Every message goes to Redis
  and back to both workers, which each fan it out to their own sessions.
- **websockets** (the baseline): a ``websockets`` asyncio server (TLS, with the same certificate,
  no compression); subscribers are 200 ``wss://`` connections; every message the publisher's
  connection sends is forwarded with ``websockets.broadcast`` (which has no backpressure and
  never drops: a slow connection's buffer grows).

In both pywebtransport implementations each subscriber is a session on a QUIC connection of its
own (``WebTransportClient``) with a ``TopicClient`` joined to the topic in reliable mode, reading
with ``async for message in topics``. The publisher is a ``TopicClient`` too: it calls
``publish`` (a JSON-RPC call the hub's ``authorize`` hook allows on the benchmark's topic only),
with at most ``PUBLISH_WINDOW`` calls in flight, so what it measures is the whole path a member's
message takes: request, authorization, broker, fan-out. The hub has its defaults (a queue of
1,024 messages per member, ``drop_oldest``).

Rounds (``--rounds``, default 3) run every implementation in turn, the order alternating, each
with fresh processes; the table shows medians over rounds and ratios against websockets (> 1:
better than websockets).

Usage::

    python benchmarks/pubsub.py [--sessions 200] [--clients 2]
        [--rates 5,7,10,14,20,28,40,56,80,113,160] [--step-seconds 4] [--rounds 3]
        [--max-p99-ms 250] [--impls memory,redis,websockets] [--mode reliable|datagram]
        [--json PATH] [--profile DIR]

``--mode datagram`` joins the pywebtransport subscribers in datagram mode (each message a QUIC
datagram, no channel; a datagram lost counts as lost, so such a step does not keep up).

``--profile DIR`` runs the server workers and the subscriber processes under cProfile during the
measured steps and writes ``DIR/<implementation>-<round>/server-<pid>.prof`` and
``subscriber-<pid>.prof`` (slower: use it to see where the time goes, not for figures).

Hidden sub-commands used by the rounds::

    python benchmarks/pubsub.py server --impl I --cert C --key K [--broker URL] [--workers N]
    python benchmarks/pubsub.py subscriber --impl I --port P --cert C --sessions N
    python benchmarks/pubsub.py publisher --impl I --port P --cert C
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import datetime
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from floor_aioquic import make_certificate, wait_for_termination

if TYPE_CHECKING:
    from pywebtransport import ServerApp, ServerConfig, WebTransportSession
    from pywebtransport.pubsub import Hub

SCRIPT = Path(__file__).resolve()
SRC = SCRIPT.parent.parent / "src"

IMPLEMENTATIONS = ("memory", "redis", "websockets")
BASELINE = "websockets"
TOPIC = "fanout"
ROUTE = "/fanout"
SESSIONS = 200
CLIENTS = 2
RATES = (5, 7, 10, 14, 20, 28, 40, 56, 80, 113, 160)
STEP_SECONDS = 4.0
ROUNDS = 3
MAX_P99_MS = 250.0
REDIS_WORKERS = 2
MESSAGE_BYTES = 100
WARMUP_SECONDS = 1.0
"""A first step at the lowest rate, not reported: every session has joined and code is warm."""
DRAIN_IDLE = 1.0
"""Seconds without a new receipt that end the wait for a step's stragglers."""
DRAIN_MAX = 10.0
"""The longest wait for a step's stragglers after its last publish."""
CONNECT_CONCURRENCY = 16
PUBLISH_WINDOW = 64
"""Publish calls (pywebtransport) in flight at once."""
SETUP_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0
STATS_PERIOD = 0.2
"""How often each server worker writes its hub's counters to the stats directory."""
LATENCY_UNIT = 1e-5
"""Latencies travel from the subscribers to the driver as integers of 10 us."""
LINE_LIMIT = 64 * 1024 * 1024
"""Longest line a child process may print (a subscriber's report carries every latency)."""
STATS_ENV = "PUBSUB_BENCH_STATS"
PROFILE_ENV = "PUBSUB_BENCH_PROFILE"

logger = logging.getLogger("pubsub-bench")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


_PAD = "x" * (MESSAGE_BYTES - len(_compact({"t": 1767225600.123456, "k": 1, "i": 1000, "p": ""})))


def make_message(step: int, seq: int) -> dict[str, Any]:
    """A message of about ``MESSAGE_BYTES`` bytes of compact JSON, stamped with the send time."""
    return {"t": time.time(), "k": step, "i": seq, "p": _PAD}


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def install_profiler(tag: str) -> None:
    """With ``PUBSUB_BENCH_PROFILE`` set: profile from SIGUSR1 to SIGUSR2, then write the file."""
    directory = os.environ.get(PROFILE_ENV)
    if not directory:
        return
    profiler = cProfile.Profile()
    path = Path(directory) / f"{tag}-{os.getpid()}.prof"

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(path)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
    loop.add_signal_handler(signal.SIGUSR2, dump)


async def _stdin_lines() -> asyncio.StreamReader:
    """The process's stdin as a stream (commands from the driver; EOF: the driver is gone)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


def _authorize(session: WebTransportSession, action: str, topic: str) -> bool:
    return action != "publish" or topic == TOPIC


async def _write_hub_stats(hub: Hub, directory: Path) -> None:
    """Keep ``hub-<pid>.json`` in ``directory`` up to date with the hub's counters."""
    path = directory / f"hub-{os.getpid()}.json"
    scratch = directory / f".hub-{os.getpid()}.tmp"
    while True:
        scratch.write_text(json.dumps({"time": time.time(), **hub.stats}))
        os.replace(scratch, path)
        await asyncio.sleep(STATS_PERIOD)


def fanout_app(config: ServerConfig) -> ServerApp:
    """The pywebtransport server (a ``WorkerGroup`` app factory): a hub on ``config.broker_url``
    and the route ``/fanout``, where every session becomes a member."""
    from pywebtransport import ServerApp
    from pywebtransport.messaging import Messenger
    from pywebtransport.pubsub import Hub

    app = ServerApp(config=config)
    hub = Hub.from_url(config.broker_url, authorize=_authorize)
    tasks: list[asyncio.Task[None]] = []

    @app.on_startup
    async def start() -> None:
        await hub.start()
        stats_dir = os.environ.get(STATS_ENV)
        if stats_dir:
            tasks.append(
                asyncio.get_running_loop().create_task(_write_hub_stats(hub, Path(stats_dir)))
            )
        install_profiler("server")

    @app.on_shutdown
    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.close()

    @app.route(ROUTE)
    async def fanout(session: WebTransportSession) -> None:
        messenger = Messenger(session)
        hub.attach(messenger)
        await messenger.serve()

    return app


async def serve_pywebtransport(args: argparse.Namespace) -> None:
    """One in-process server (``--workers 1``) or a ``WorkerGroup``; prints ``READY port pids``."""
    from pywebtransport import ServerConfig, WebTransportServer
    from pywebtransport.server.workers import WorkerGroup

    config = ServerConfig(
        certfile=args.cert, keyfile=args.key, host=args.host, port=0, broker_url=args.broker
    )
    if args.workers == 1:
        server = WebTransportServer(config=config, app=fanout_app(config))
        try:
            await server.listen(host=args.host, port=0)
            _say(f"READY {server.local_address[1]} {os.getpid()}")
            await wait_for_termination()
        finally:
            await server.close()
        return
    group = WorkerGroup(fanout_app, config=config, workers=args.workers)
    try:
        port = await group.start()
        _say(f"READY {port} {','.join(str(w.pid) for w in group.workers)}")
        stop = asyncio.ensure_future(wait_for_termination())
        failed = asyncio.ensure_future(group.wait())
        await asyncio.wait((stop, failed), return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        failed.cancel()
    finally:
        await group.stop()


async def serve_websockets(args: argparse.Namespace) -> None:
    """The baseline: ``/pub`` messages are broadcast to every ``/sub`` connection."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    subscribers: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path == "/pub":
            async for message in connection:
                broadcast(subscribers, message)
            return
        subscribers.add(connection)
        try:
            await connection.wait_closed()
        finally:
            subscribers.discard(connection)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    async with serve(
        handler, args.host, 0, ssl=context, compression=None, ping_interval=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        install_profiler("server")
        _say(f"READY {port} {os.getpid()}")
        await wait_for_termination()


# ---------------------------------------------------------------------------------------------
# Subscribers
# ---------------------------------------------------------------------------------------------


class Recorder:
    """Receipts per step: each message's latency and the time of the last receipt."""

    def __init__(self) -> None:
        self.latencies: dict[int, list[float]] = {}
        self.last: dict[int, float] = {}

    def record(self, message: Any) -> None:
        now = time.time()
        step = message["k"]
        samples = self.latencies.get(step)
        if samples is None:
            samples = self.latencies[step] = []
        samples.append(now - message["t"])
        self.last[step] = now

    def count(self, step: int) -> int:
        return len(self.latencies.get(step, ()))

    def take(self, step: int) -> dict[str, Any]:
        samples = self.latencies.pop(step, [])
        return {
            "received": len(samples),
            "last": self.last.pop(step, None),
            "latencies": [round(s / LATENCY_UNIT) for s in samples],
        }


@dataclass
class Subscribers:
    """What a subscriber process holds: its sessions and their counters."""

    joined: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    dropped: Callable[[], int] = lambda: 0  # drops the clients were told about, so far
    ended: Callable[[], int] = lambda: 0  # subscriptions that ended early


async def _connect_all(count: int, open_one: Callable[[], Awaitable[None]]) -> int:
    """Run ``open_one`` ``count`` times, ``CONNECT_CONCURRENCY`` at a time; the successes."""
    slots = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> None:
        async with slots:
            await open_one()

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures[:3]:
        logger.warning("a subscriber failed to connect: %r", failure)
    return count - len(failures)


async def open_pywebtransport_subscribers(
    args: argparse.Namespace, recorder: Recorder, stack: contextlib.AsyncExitStack
) -> Subscribers:
    from pywebtransport import ClientConfig, WebTransportClient
    from pywebtransport.messaging import Messenger
    from pywebtransport.pubsub import TopicClient

    config = ClientConfig(ca_certs=args.cert, connect_timeout=SETUP_TIMEOUT)
    client = await stack.enter_async_context(WebTransportClient(config=config))
    url = f"https://{args.host}:{args.port}{ROUTE}"
    members: list[TopicClient] = []
    out = Subscribers()

    async def consume(topics: TopicClient) -> None:
        record = recorder.record
        async for message in topics:
            record(message.data)

    async def open_one() -> None:
        session = await client.connect(url=url)
        topics = await TopicClient.open(Messenger(session), timeout=SETUP_TIMEOUT)
        await topics.join(TOPIC, mode=args.mode, timeout=SETUP_TIMEOUT)
        members.append(topics)
        out.tasks.append(asyncio.get_running_loop().create_task(consume(topics)))

    out.joined = await _connect_all(args.sessions, open_one)
    out.dropped = lambda: sum(m.stats["dropped"] for m in members)
    out.ended = lambda: sum(task.done() for task in out.tasks)
    return out


async def open_websocket_subscribers(
    args: argparse.Namespace, recorder: Recorder, stack: contextlib.AsyncExitStack
) -> Subscribers:
    from websockets.asyncio.client import ClientConnection, connect

    context = ssl.create_default_context(cafile=args.cert)
    uri = f"wss://{args.host}:{args.port}/sub"
    connections: list[ClientConnection] = []
    out = Subscribers()

    async def consume(connection: ClientConnection) -> None:
        record, loads = recorder.record, json.loads
        async for text in connection:
            record(loads(text))

    async def open_one() -> None:
        connection = await connect(uri, ssl=context, compression=None, ping_interval=None)
        connections.append(connection)
        out.tasks.append(asyncio.get_running_loop().create_task(consume(connection)))

    async def close_all() -> None:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)

    stack.push_async_callback(close_all)
    out.joined = await _connect_all(args.sessions, open_one)
    out.ended = lambda: sum(task.done() for task in out.tasks)
    return out


async def subscriber_main(args: argparse.Namespace) -> None:
    """Open the subscriptions, print ``READY <joined>``, then answer ``COUNT k`` / ``REPORT k``
    until stdin ends."""
    recorder = Recorder()
    opener = (
        open_websocket_subscribers if args.impl == "websockets" else open_pywebtransport_subscribers
    )
    async with contextlib.AsyncExitStack() as stack:
        subscribers = await opener(args, recorder, stack)
        reader = await _stdin_lines()
        install_profiler("subscriber")
        _say(f"READY {subscribers.joined}")
        reported_drops = 0
        try:
            while line := await reader.readline():
                command, _, rest = line.decode().strip().partition(" ")
                if command == "COUNT":
                    _say(f"COUNT {recorder.count(int(rest))}")
                elif command == "REPORT":
                    report = recorder.take(int(rest))
                    dropped = subscribers.dropped()
                    report["dropped"], reported_drops = dropped - reported_drops, dropped
                    report["ended"] = subscribers.ended()
                    _say("REPORT " + json.dumps(report, separators=(",", ":")))
        finally:
            for task in subscribers.tasks:
                task.cancel()
            await asyncio.gather(*subscribers.tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Publisher
# ---------------------------------------------------------------------------------------------


@dataclass
class Sender:
    """How the publisher sends one message, and waits until everything sent was taken."""

    send: Callable[[dict[str, Any]], Awaitable[None]]
    flush: Callable[[], Awaitable[None]]
    errors: list[str] = field(default_factory=list)


async def open_pywebtransport_publisher(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack
) -> Sender:
    from pywebtransport import ClientConfig, WebTransportClient
    from pywebtransport.messaging import Messenger
    from pywebtransport.pubsub import TopicClient

    config = ClientConfig(ca_certs=args.cert, connect_timeout=SETUP_TIMEOUT)
    client = await stack.enter_async_context(WebTransportClient(config=config))
    session = await client.connect(url=f"https://{args.host}:{args.port}{ROUTE}")
    topics = await TopicClient.open(Messenger(session), timeout=SETUP_TIMEOUT)
    window = asyncio.Semaphore(PUBLISH_WINDOW)
    pending: set[asyncio.Task[None]] = set()
    errors: list[str] = []

    async def publish(message: dict[str, Any]) -> None:
        try:
            await topics.publish(TOPIC, message, timeout=SETUP_TIMEOUT)
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            window.release()

    async def send(message: dict[str, Any]) -> None:
        await window.acquire()
        task = asyncio.get_running_loop().create_task(publish(message))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def flush() -> None:
        await asyncio.gather(*pending, return_exceptions=True)

    return Sender(send, flush, errors)


async def open_websocket_publisher(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack
) -> Sender:
    from websockets.asyncio.client import connect

    context = ssl.create_default_context(cafile=args.cert)
    uri = f"wss://{args.host}:{args.port}/pub"
    connection = await connect(uri, ssl=context, compression=None, ping_interval=None)
    stack.push_async_callback(connection.close)

    async def send(message: dict[str, Any]) -> None:
        await connection.send(_compact(message))

    async def flush() -> None:
        return None

    return Sender(send, flush)


async def publish_step(sender: Sender, step: int, rate: float, seconds: float) -> dict[str, Any]:
    """Publish ``rate * seconds`` messages on a fixed schedule (late ones go at once)."""
    count = max(1, round(rate * seconds))
    interval = 1.0 / rate
    clock = time.monotonic
    start = clock() + 0.01
    first = last = 0.0
    max_lag = 0.0
    errors_before = len(sender.errors)
    for seq in range(count):
        delay = start + seq * interval - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        message = make_message(step, seq)
        if seq == 0:
            first = message["t"]
        last = message["t"]
        await sender.send(message)
    await sender.flush()
    errors = sender.errors[errors_before:]
    return {
        "sent": count,
        "first": first,
        "last": last,
        "span": (count - 1) * interval,
        "max_lag_ms": max_lag * 1e3,
        "errors": len(errors),
        "error": errors[0] if errors else None,
    }


async def publisher_main(args: argparse.Namespace) -> None:
    """Connect, print ``READY 1``, then run ``RUN step rate seconds`` commands (``DONE {...}``)
    until stdin ends."""
    opener = (
        open_websocket_publisher if args.impl == "websockets" else open_pywebtransport_publisher
    )
    async with contextlib.AsyncExitStack() as stack:
        sender = await opener(args, stack)
        reader = await _stdin_lines()
        _say("READY 1")
        while line := await reader.readline():
            command, *words = line.decode().split()
            if command == "RUN":
                step, rate, seconds = int(words[0]), float(words[1]), float(words[2])
                done = await publish_step(sender, step, rate, seconds)
                _say("DONE " + json.dumps(done))


# ---------------------------------------------------------------------------------------------
# The driver: child processes
# ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the driver dies (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


class Child:
    """A child process: commands on its stdin, lines on its stdout, stderr kept in a file."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.name, self.process, self.log = name, process, log

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,  # a terminal's ^C reaches the driver only, which cleans up
            preexec_fn=_die_with_parent,
            limit=LINE_LIMIT,
        )
        return cls(name, process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:])

    async def expect(self, word: str, timeout: float) -> str:
        """The rest of the next line that starts with ``word`` (other lines are skipped)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
                    raise RuntimeError(
                        f"{self.name} exited ({self.process.returncode}):\n{self.tail()}"
                    )
                text = line.decode(errors="replace").rstrip("\n")
                if text == word or text.startswith(word + " "):
                    return text[len(word) + 1 :]

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    async def ask(self, line: str, word: str, timeout: float = SETUP_TIMEOUT) -> str:
        self.send(line)
        return await self.expect(word, timeout)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)

    async def stop(self, *, gently: bool = True) -> None:
        """Close stdin (the clients exit on their own), then SIGTERM, then SIGKILL."""
        process = self.process
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        if gently and process.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
        if process.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await process.wait()
        self.log.close()


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_redis(workdir: Path, env: dict[str, str]) -> tuple[Child, str]:
    """``redis-server`` on a free loopback port, without persistence; the child and its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_tcp_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(workdir), "--loglevel", "warning"]
    child = await Child.start("redis-server", argv, env)
    deadline = time.monotonic() + 10.0
    while True:
        if child.process.returncode is not None:
            raise RuntimeError(f"redis-server exited:\n{child.tail()}")
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            answer = await reader.readline()
            writer.close()
            if answer.startswith(b"+PONG"):
                return child, f"redis://127.0.0.1:{port}/0"
        if time.monotonic() > deadline:
            await child.stop(gently=False)
            raise RuntimeError(f"redis-server did not answer on port {port}")
        await asyncio.sleep(0.02)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (0 for a process that is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def steal_ticks() -> tuple[int, int] | None:
    """``(steal, total)`` ticks of all CPUs so far, from ``/proc/stat``."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used so far (user, nice, system; not the
    interrupts, where the kernel handles loopback packets), from ``/proc/stat``."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:3]) / os.sysconf("SC_CLK_TCK")


def _steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def hub_counters(directory: Path) -> dict[str, int] | None:
    """The counters of every hub of the server, summed (None: no hub wrote any)."""
    total: dict[str, int] = {}
    for path in directory.glob("hub-*.json"):
        with contextlib.suppress(OSError, ValueError):
            for key, value in json.loads(path.read_text()).items():
                if isinstance(value, int) and key != "time":
                    total[key] = total.get(key, 0) + value
    return total or None


# ---------------------------------------------------------------------------------------------
# The driver: one implementation, one round
# ---------------------------------------------------------------------------------------------


@dataclass
class Step:
    """The figures of one rate step."""

    rate: float
    sent: int
    expected: int
    received: int
    lost: int
    deliveries_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    hub_dropped: int | None  # the hubs' drop counters (pywebtransport)
    hub_missed: int | None  # messages the hubs saw missing (Redis lost them)
    client_dropped: int | None  # drops the clients were told about (pywebtransport)
    ended: int  # subscriptions that ended (should be 0)
    publish_span_s: float
    publish_max_lag_ms: float
    publish_errors: int
    cpu_pct: dict[str, float]  # process group -> % of one core during the step
    other_cpu_pct: float | None  # % of one core used by processes not of this benchmark
    server_us_per_delivery: float | None  # server workers (and Redis, for redis)
    subscriber_us_per_delivery: float | None
    kept_up: bool
    why: str


@dataclass
class Run:
    """One implementation in one round."""

    implementation: str
    round: int
    sessions: int = 0
    steps: list[Step] = field(default_factory=list)
    steal_pct: float | None = None
    error: str | None = None

    @property
    def highest_rate(self) -> float:
        kept = [s.rate for s in self.steps if s.kept_up]
        return max(kept) if kept else 0.0

    @property
    def most_deliveries_per_s(self) -> float | None:
        rates = [s.deliveries_per_s for s in self.steps if s.deliveries_per_s is not None]
        return max(rates) if rates else None


def _percentile(ordered: Sequence[int], fraction: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index] * LATENCY_UNIT * 1e3


class Bench:
    """The processes of one run, and the steps run against them."""

    def __init__(
        self, implementation: str, args: argparse.Namespace, workdir: Path, round_no: int
    ) -> None:
        self.implementation = implementation
        self.args = args
        self.workdir = workdir
        self.stats_dir = workdir / "stats"
        self.stats_dir.mkdir()
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(SRC), os.environ.get("PYTHONPATH")])
        )
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env[STATS_ENV] = str(self.stats_dir)
        if args.profile:
            profile_dir = Path(args.profile).resolve() / f"{implementation}-{round_no}"
            profile_dir.mkdir(parents=True, exist_ok=True)
            self.env[PROFILE_ENV] = str(profile_dir)
        self.children: list[Child] = []
        self.redis: Child | None = None
        self.server: Child | None = None
        self.worker_pids: list[int] = []  # the processes that run the application
        self.server_pids: list[int] = []  # those and the WorkerGroup supervisor
        self.subscribers: list[Child] = []
        self.publisher: Child | None = None
        self.joined = 0

    async def _child(self, name: str, argv: Sequence[str]) -> Child:
        child = await Child.start(name, argv, self.env)
        self.children.append(child)
        return child

    async def start(self) -> None:
        args = self.args
        cert = make_certificate(self.workdir)
        me = [sys.executable, str(SCRIPT)]
        server_argv = [*me, "server", "--impl", self.implementation, "--host", args.host]
        server_argv += ["--cert", cert.certfile, "--key", cert.keyfile]
        if self.implementation == "redis":
            self.redis, url = await start_redis(self.workdir, self.env)
            self.children.append(self.redis)
            server_argv += ["--broker", url, "--workers", str(REDIS_WORKERS)]
        self.server = await self._child("server", server_argv)
        port, pids = (await self.server.expect("READY", SETUP_TIMEOUT)).split()
        self.worker_pids = [int(p) for p in pids.split(",")]
        self.server_pids = sorted({*self.worker_pids, self.server.pid})
        client_argv = ["--impl", self.implementation, "--host", args.host, "--port", port]
        client_argv += ["--cert", cert.certfile]
        for index in range(args.clients):
            count = args.sessions // args.clients + (index < args.sessions % args.clients)
            argv = [*me, "subscriber", *client_argv, "--sessions", str(count), "--mode", args.mode]
            self.subscribers.append(await self._child(f"subscriber-{index}", argv))
        for child in self.subscribers:
            self.joined += int(await child.expect("READY", SETUP_TIMEOUT))
        self.publisher = await self._child("publisher", [*me, "publisher", *client_argv])
        await self.publisher.expect("READY", SETUP_TIMEOUT)

    async def stop(self) -> None:
        """Stop the clients, then the server, then Redis; whatever happened before."""
        clients = [c for c in self.children if c is not self.server and c is not self.redis]
        await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)
        for child in (self.server, self.redis):
            if child is not None:
                with contextlib.suppress(Exception):
                    await child.stop(gently=False)

    def profile(self, signum: int) -> None:
        if self.args.profile:
            for pid in self.worker_pids:  # not the supervisor: SIGUSR1 would end it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
            for child in self.subscribers:
                child.signal(signum)

    def _cpu(self) -> dict[str, float]:
        groups = {
            "server": self.server_pids,
            "subscribers": [c.pid for c in self.subscribers],
            "publisher": [self.publisher.pid] if self.publisher else [],
        }
        if self.redis is not None:
            groups["redis"] = [self.redis.pid]
        return {name: cpu_seconds(pids) for name, pids in groups.items()}

    async def _received(self, step: int) -> int:
        counts = [int(await c.ask(f"COUNT {step}", "COUNT")) for c in self.subscribers]
        return sum(counts)

    async def step(self, index: int, rate: float, seconds: float) -> Step:
        """Publish at ``rate`` for ``seconds``, wait for the stragglers, gather the figures."""
        assert self.publisher is not None
        hubs_before = hub_counters(self.stats_dir)
        cpu_before, wall_before = self._cpu(), time.monotonic()
        busy_before, own_before = busy_seconds(), time.process_time()
        done = json.loads(
            await self.publisher.ask(f"RUN {index} {rate} {seconds}", "DONE", seconds * 3 + 60)
        )
        expected = done["sent"] * self.joined
        drain_end = time.monotonic() + DRAIN_MAX
        received, progress = -1, time.monotonic()
        while True:
            now_received = await self._received(index)
            now = time.monotonic()
            if now_received >= expected or now >= drain_end:
                break
            if now_received != received:
                received, progress = now_received, now
            elif now - progress >= DRAIN_IDLE:
                break
            await asyncio.sleep(0.05)
        cpu_after, wall_after = self._cpu(), time.monotonic()
        busy_after, own_after = busy_seconds(), time.process_time()
        reports = [json.loads(await c.ask(f"REPORT {index}", "REPORT")) for c in self.subscribers]
        await asyncio.sleep(2 * STATS_PERIOD)  # the hubs write their counters
        hubs_after = hub_counters(self.stats_dir)

        received = sum(r["received"] for r in reports)
        latencies = sorted(v for r in reports for v in r["latencies"])
        lasts = [r["last"] for r in reports if r["last"] is not None]
        span = max(lasts) - done["first"] if lasts else 0.0
        wall = wall_after - wall_before
        cpu = {name: max(0.0, cpu_after[name] - cpu_before[name]) for name in cpu_before}
        server_cpu = cpu["server"] + cpu.get("redis", 0.0)

        def delta(key: str) -> int | None:
            if hubs_before is None or hubs_after is None:
                return None
            return hubs_after.get(key, 0) - hubs_before.get(key, 0)

        pywebtransport = self.implementation != "websockets"
        step = Step(
            rate=rate,
            sent=done["sent"],
            expected=expected,
            received=received,
            lost=expected - received,
            deliveries_per_s=received / span if received and span > 0 else None,
            p50_ms=_percentile(latencies, 0.50),
            p99_ms=_percentile(latencies, 0.99),
            max_ms=_percentile(latencies, 1.0),
            hub_dropped=delta("dropped"),
            hub_missed=delta("missed"),
            client_dropped=sum(r["dropped"] for r in reports) if pywebtransport else None,
            ended=max(r["ended"] for r in reports),
            publish_span_s=done["last"] - done["first"],
            publish_max_lag_ms=done["max_lag_ms"],
            publish_errors=done["errors"],
            cpu_pct={name: 100.0 * value / wall for name, value in cpu.items()},
            other_cpu_pct=(
                None
                if busy_before is None or busy_after is None
                else max(
                    0.0,
                    100.0
                    * (busy_after - busy_before - sum(cpu.values()) - (own_after - own_before))
                    / wall,
                )
            ),
            server_us_per_delivery=server_cpu / received * 1e6 if received else None,
            subscriber_us_per_delivery=cpu["subscribers"] / received * 1e6 if received else None,
            kept_up=False,
            why="",
        )
        reasons = []
        if step.lost:
            reasons.append(f"lost {step.lost:,}")
        if step.hub_dropped:
            reasons.append(f"hub dropped {step.hub_dropped:,}")
        if step.hub_missed:
            reasons.append(f"hub missed {step.hub_missed:,}")
        if step.client_dropped:
            reasons.append(f"clients told of {step.client_dropped:,} drops")
        if step.p99_ms is None or step.p99_ms > self.args.max_p99_ms:
            reasons.append(f"p99 over {self.args.max_p99_ms:g} ms")
        if step.publish_span_s > done["span"] * 1.1 + 0.1:
            reasons.append(f"publisher late ({step.publish_span_s:.2f} s for {done['span']:.2f})")
        if step.publish_errors:
            reasons.append(f"{step.publish_errors} publish errors ({done['error']})")
        if step.ended:
            reasons.append(f"{step.ended} subscriptions ended")
        step.kept_up = not reasons
        step.why = "; ".join(reasons)
        return step


def describe_step(implementation: str, step: Step) -> str:
    cpu = " ".join(f"{name} {pct:.0f}" for name, pct in step.cpu_pct.items())
    cpu += f" others {_fmt(step.other_cpu_pct)}"
    drops = "" if step.hub_dropped is None else f" (hub dropped {step.hub_dropped:,})"
    per = f"server {_fmt(step.server_us_per_delivery)} subs {_fmt(step.subscriber_us_per_delivery)}"
    return (
        f"  {implementation:<10} {step.rate:>5g}/s: {_fmt(step.deliveries_per_s):>7} deliveries/s"
        f"  p50 {_fmt(step.p50_ms):>6} p99 {_fmt(step.p99_ms):>6} ms  lost {step.lost:,}{drops}"
        f"  cpu% {cpu}  us/delivery {per}  {'kept up' if step.kept_up else step.why}"
    )


async def run_implementation(implementation: str, round_no: int, args: argparse.Namespace) -> Run:
    """Fresh processes, a warm-up step, then the rates until one does not keep up."""
    run = Run(implementation, round_no)
    steal_before = steal_ticks()
    with tempfile.TemporaryDirectory(prefix="pubsub-bench-") as tmp:
        bench = Bench(implementation, args, Path(tmp), round_no)
        try:
            await bench.start()
            run.sessions = bench.joined
            if bench.joined < args.sessions:
                _say(f"  {implementation}: only {bench.joined}/{args.sessions} sessions joined")
            await bench.step(0, args.rates[0], WARMUP_SECONDS)
            bench.profile(signal.SIGUSR1)
            for index, rate in enumerate(args.rates, 1):
                step = await bench.step(index, rate, args.step_seconds)
                run.steps.append(step)
                _say(describe_step(implementation, step))
                if not step.kept_up:
                    break
            bench.profile(signal.SIGUSR2)
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
            _say(f"  {implementation}: FAILED: {run.error}")
        finally:
            await bench.stop()
    run.steal_pct = _steal_pct(steal_before, steal_ticks())
    return run


# ---------------------------------------------------------------------------------------------
# The rounds and the table
# ---------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _step_at(run: Run, rate: float) -> Step | None:
    return next((s for s in run.steps if s.rate == rate), None)


def _ratio(mine: float | None, base: float | None, better: str) -> float | None:
    if not mine or not base:
        return None
    return mine / base if better == "higher" else base / mine


def _at_highest(run: Run) -> Step | None:
    """The step at the highest rate the run kept up with (where per-delivery CPU is lowest)."""
    kept = [s for s in run.steps if s.kept_up]
    return max(kept, key=lambda s: s.rate) if kept else None


def summarize(runs: dict[str, list[Run]], args: argparse.Namespace) -> dict[str, Any]:
    """Print the tables of medians (with ratios against websockets); return them for ``--json``."""
    names = [n for n in runs if runs[n]]
    ok = {n: [r for r in runs[n] if r.error is None] for n in names}
    first = args.rates[0]

    def at_first(attr: str) -> dict[str, list[float | None]]:
        return {
            n: [getattr(s, attr) if (s := _step_at(r, first)) else None for r in ok[n]]
            for n in names
        }

    def at_top(attr: str) -> dict[str, list[float | None]]:
        return {
            n: [getattr(s, attr) if (s := _at_highest(r)) else None for r in ok[n]] for n in names
        }

    server_us = at_top("server_us_per_delivery")
    figures: list[tuple[str, str, dict[str, list[float | None]]]] = [
        (
            "highest rate kept up (msg/s)",
            "higher",
            {n: [r.highest_rate for r in ok[n]] for n in names},
        ),
        (
            "  = deliveries/s",
            "higher",
            {n: [r.highest_rate * r.sessions for r in ok[n]] for n in names},
        ),
        (
            "most deliveries/s measured",
            "higher",
            {n: [r.most_deliveries_per_s for r in ok[n]] for n in names},
        ),
        (f"p50 latency at {first:g} msg/s (ms)", "lower", at_first("p50_ms")),
        (f"p99 latency at {first:g} msg/s (ms)", "lower", at_first("p99_ms")),
        (
            f"server CPU/delivery at {first:g} msg/s (us)",
            "lower",
            at_first("server_us_per_delivery"),
        ),
        ("server CPU/delivery, top rate (us) *", "lower", server_us),
        (
            f"subscr. CPU/delivery at {first:g} msg/s (us)",
            "lower",
            at_first("subscriber_us_per_delivery"),
        ),
        ("subscr. CPU/delivery, top rate (us) *", "lower", at_top("subscriber_us_per_delivery")),
        (
            "deliveries/s one server core serves *",
            "higher",
            {n: [1e6 / v if v else None for v in server_us[n]] for n in names},
        ),
    ]
    others = [n for n in names if n != BASELINE] if BASELINE in names else []
    width = 38
    header = f"{'figure':<{width}}" + "".join(f"{n:>12}" for n in names)
    header += "".join(f"{n + '/ws':>12}" for n in others)
    lines = [header, "-" * len(header)]
    medians: dict[str, dict[str, float | None]] = {}
    ratios: dict[str, dict[str, float | None]] = {}
    for title, better, values in figures:
        medians[title] = {n: _median(values[n]) for n in names}
        ratios[title] = {
            n: _ratio(medians[title][n], medians[title][BASELINE], better) for n in others
        }
        line = f"{title:<{width}}"
        for n in names:
            cell = _fmt(medians[title][n])
            if title.startswith("highest") and any(r.steps and r.steps[-1].kept_up for r in ok[n]):
                cell += "+"
            line += f"{cell:>12}"
        for n in others:
            ratio = ratios[title][n]
            line += f"{'-' if ratio is None else f'{ratio:.2f}':>12}"
        lines.append(line)

    # Per step: medians over the rounds that reached it.
    cell_width = 32
    lines += ["", f"{'msg/s':>7}" + "".join(f"{n:>{cell_width}}" for n in names)]
    lines.append(f"{'':>7}" + f"{'deliv/s  p50 ms  p99 ms  kept':>{cell_width}}" * len(names))
    steps_out: dict[str, dict[str, dict[str, float | None]]] = {}
    for rate in args.rates:
        line = f"{rate:>7g}"
        reached_any = False
        for n in names:
            steps = [s for r in ok[n] if (s := _step_at(r, rate)) is not None]
            if not steps:
                line += f"{'-':>{cell_width}}"
                continue
            reached_any = True
            row = {
                "deliveries_per_s": _median([s.deliveries_per_s for s in steps]),
                "p50_ms": _median([s.p50_ms for s in steps]),
                "p99_ms": _median([s.p99_ms for s in steps]),
                "lost": _median([float(s.lost) for s in steps]),
                "kept_up": float(sum(s.kept_up for s in steps)),
                "rounds": float(len(steps)),
            }
            steps_out.setdefault(n, {})[f"{rate:g}"] = row
            kept = f"{sum(s.kept_up for s in steps)}/{len(steps)}"
            cell = (
                f"{_fmt(row['deliveries_per_s']):>7} {_fmt(row['p50_ms']):>7} "
                f"{_fmt(row['p99_ms']):>7} {kept:>5}"
            )
            line += f"{cell:>{cell_width}}"
        if reached_any:
            lines.append(line)

    steals = [r.steal_pct for n in names for r in runs[n] if r.steal_pct is not None]
    if steals:
        lines.append(
            f"CPU steal during the runs: median {statistics.median(steals):.1f}%, max "
            f"{max(steals):.1f}% (above a few % the figures are not comparable)"
        )
    others_cpu = [
        s.other_cpu_pct
        for n in names
        for r in runs[n]
        for s in r.steps
        if s.other_cpu_pct is not None
    ]
    if others_cpu:
        lines.append(
            f"CPU of processes outside the benchmark during the steps: median "
            f"{statistics.median(others_cpu):.0f}%, max {max(others_cpu):.0f}% of one core"
        )
    counts = ", ".join(f"{n}: {len(ok[n])}/{len(runs[n])}" for n in names)
    lines += [
        f"medians over rounds ({counts}); ratios vs. websockets: impl/ws for rates, ws/impl for "
        "latency and CPU (> 1: better than websockets); +: some round kept up with every rate",
        f"* at the highest rate each round kept up; server = the worker processes (and "
        "redis-server); one core serves 1 s / server CPU per delivery; "
        f"kept: rounds that kept up / rounds that reached the rate (nothing lost, p99 <= "
        f"{args.max_p99_ms:g} ms, publisher on time)",
        f"{args.sessions} sessions in {args.clients} client processes; memory: 1 server process "
        f"(the in-process hub cannot span workers); redis: {REDIS_WORKERS} workers sharing one "
        "port and one redis-server",
    ]
    _say("\n" + "\n".join(lines))
    return {"medians": medians, "ratios_vs_websockets": ratios, "steps": steps_out}


def _redis_available() -> str | None:
    """Why the redis implementation cannot run, or None."""
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        return "redis-server is not installed"
    if not (SRC / "pywebtransport" / "pubsub" / "redis.py").exists():
        return "pywebtransport.pubsub.redis does not exist in this tree"
    return None


async def run_rounds(args: argparse.Namespace) -> int:
    implementations = list(args.impls)
    if "redis" in implementations and (why := _redis_available()):
        _say(f"redis: skipped ({why})")
        implementations.remove("redis")
    runs: dict[str, list[Run]] = {name: [] for name in implementations}
    rates = ",".join(f"{r:g}" for r in args.rates)
    _say(
        f"fan-out: {args.sessions} sessions in {args.clients} client processes, 1 publisher, "
        f"~{MESSAGE_BYTES}-byte JSON messages, rates {rates} msg/s x {args.step_seconds:g} s, "
        f"{args.rounds} rounds, {os.cpu_count()} CPUs"
        + ("" if args.mode == "reliable" else f", pywebtransport members in {args.mode} mode")
    )
    for round_no in range(1, args.rounds + 1):
        _say(f"round {round_no}/{args.rounds}")
        order = implementations if round_no % 2 else list(reversed(implementations))
        for name in order:
            run = await run_implementation(name, round_no, args)
            runs[name].append(run)
            _say(
                f"  {name:<10} highest rate kept up {run.highest_rate:g} msg/s "
                f"({run.highest_rate * run.sessions:,.0f} deliveries/s), steal "
                f"{_fmt(run.steal_pct)}%"
            )
    summary = summarize(runs, args)
    if args.json:
        record = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "settings": {
                "sessions": args.sessions,
                "clients": args.clients,
                "rates": list(args.rates),
                "step_seconds": args.step_seconds,
                "rounds": args.rounds,
                "max_p99_ms": args.max_p99_ms,
                "message_bytes": MESSAGE_BYTES,
                "redis_workers": REDIS_WORKERS,
                "mode": args.mode,
            },
            **summary,
            "runs": {n: [asdict(r) for r in rs] for n, rs in runs.items()},
        }
        _write_json(args.json, record)
    return 0 if all(any(r.error is None for r in rs) for rs in runs.values()) else 1


def _write_json(path: str, record: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(record, indent=1))


async def _main_guarded(args: argparse.Namespace) -> int:
    """``run_rounds`` that SIGTERM cancels like ^C does (the children are stopped either way)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_rounds(args)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates are positive numbers, comma-separated")
    return rates


def _impls(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(names) - set(IMPLEMENTATIONS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"implementations are among {', '.join(IMPLEMENTATIONS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Fan-out: pywebtransport pub/sub vs. websockets")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--sessions", type=int, default=SESSIONS, help="subscribed sessions")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="subscriber processes")
    parser.add_argument("--rates", type=_rates, default=list(RATES), help="msg/s, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=STEP_SECONDS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--max-p99-ms", type=float, default=MAX_P99_MS)
    parser.add_argument("--impls", type=_impls, default=list(IMPLEMENTATIONS))
    parser.add_argument("--json", metavar="PATH", help="also write medians and every step here")
    parser.add_argument("--profile", metavar="DIR", help="cProfile servers and subscribers")
    parser.add_argument(
        "--mode",
        choices=("reliable", "datagram"),
        default="reliable",
        help="how the pywebtransport subscribers join (default reliable: the channel)",
    )
    commands = parser.add_subparsers(dest="command")
    server = commands.add_parser("server", help=argparse.SUPPRESS)
    server.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    server.add_argument("--broker")
    server.add_argument("--workers", type=int, default=1)
    for name in ("subscriber", "publisher"):
        client = commands.add_parser(name, help=argparse.SUPPRESS)
        client.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
        client.add_argument("--host", default="127.0.0.1")
        client.add_argument("--port", type=int, required=True)
        client.add_argument("--cert", required=True)
        client.add_argument("--sessions", type=int, default=1)
        client.add_argument("--mode", choices=("reliable", "datagram"), default="reliable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.command == "server":
        serve = serve_websockets if args.impl == "websockets" else serve_pywebtransport
        asyncio.run(serve(args))
        return 0
    if args.command == "subscriber":
        asyncio.run(subscriber_main(args))
        return 0
    if args.command == "publisher":
        asyncio.run(publisher_main(args))
        return 0
    if args.clients < 1 or args.sessions < args.clients or args.rounds < 1:
        parser.error("need --clients >= 1, --sessions >= --clients and --rounds >= 1")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_main_guarded(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _say("interrupted; every child process was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
