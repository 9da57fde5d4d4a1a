"""Command-line interface: ``python -m pywebtransport {serve,connect,bench,cert}``.

- ``serve`` runs the echo server (route ``/echo``) with the chat and RPC demo (route ``/chat``),
  the live statistics demo (route ``/live``: the echo, plus the session's statistics pushed
  four times a second) and the topics demo (route ``/room``; with ``--broker redis://...`` its
  hub meets the other workers' and servers' through Redis), and, over plain HTTP on the same
  machine, the demo page that talks to them from a browser (it loads
  ``/pywebtransport/messaging.js``, served from the package). Once both listen it prints one line
  ``READY udp=<port> http=<port> hash=<hex>``, and one ``REPORT <json>`` line for every summary
  the demo page posts.
  With ``--workers N`` the UDP port is served by N worker processes (``SO_REUSEPORT``), each
  announced by a ``WORKER`` line and summed up by a ``WORKER-EXIT`` line when serve stops. A
  certificate serve generated itself is replaced every 12 days (it is valid for 13); each
  rotation prints ``ROTATED hash=<hex>`` and the demo page's ``/config.json`` follows it.
  ``--engine qh3`` runs the QUIC connections on qh3 instead of aioquic (``ServerConfig.engine``).
- ``connect`` opens a session to a URL, measures stream and datagram round trips and exits 0 on
  success; failures exit with a distinct status and a one-line explanation.
- ``bench`` runs benchmark workloads (handshakes, stream and datagram round trips, throughput)
  against an echo URL, with progress bars on stderr and a summary table or JSON on stdout
  (:mod:`pywebtransport.bench`; needs the ``bench`` extra).
- ``cert generate`` writes a browser-compatible self-signed certificate and prints its hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    __version__,
)
from pywebtransport import exceptions as errors
from pywebtransport._engine import ENGINES
from pywebtransport.bench import (
    INSTALL_HINT,
    BenchOptions,
    BenchProgress,
    RoundTrips,
    datagram_round_trips,
    parse_workloads,
    payload,
    print_table,
    rich_available,
    run_bench,
    stream_round_trip,
)
from pywebtransport.metrics import register_server
from pywebtransport.server.certificate import (
    certificate_sha256,
    check_certificate_pair,
    format_hash,
    generate_self_signed_certificate,
    parse_hash,
)
from pywebtransport.server.echo import echo_handler
from pywebtransport.server.workers import WorkerGroup
from pywebtransport.web import PageServer, demo_page, messaging_module
from pywebtransport.web.demo_chat import ChatRoom
from pywebtransport.web.demo_live import live_handler
from pywebtransport.web.demo_room import add_room

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_REJECTED = 4
EXIT_CERTIFICATE = 5
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool its pipe reader left

ECHO_PATH = "/echo"
CHAT_PATH = "/chat"
ROOM_PATH = "/room"
LIVE_PATH = "/live"
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_DEFAULT_CERT_NAMES = ("localhost", "127.0.0.1", "::1")


class _UsageError(Exception):
    """A command-line value that parsed but makes no sense."""


# ------------------------------------------------------------------------------------- parser


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pywebtransport", description="WebTransport over HTTP/3: demo server and client."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the echo server and the browser demo page")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=4433, help="UDP port (default 4433, 0 = any)")
    serve.add_argument(
        "--http-port", type=_port, default=None, help="TCP port of the demo page (default: --port)"
    )
    serve.add_argument("--cert", help="PEM certificate (default: a fresh self-signed one)")
    serve.add_argument("--key", help="PEM private key for --cert")
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="worker processes sharing the UDP port with SO_REUSEPORT (default 1)",
    )
    serve.add_argument(
        "--broker",
        metavar="URL",
        help="where the workers' topics meet for the /room demo: redis://host:port/db "
        "(default: each process on its own)",
    )
    serve.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="QUIC engine: aioquic (the default) or qh3 (faster; pip install "
        "pywebtransport[fast]; see docs/architecture.md)",
    )
    serve.add_argument(
        "--qlog-dir",
        metavar="DIR",
        help="write one qlog file per QUIC connection into DIR (created if missing)",
    )
    serve.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on http://METRICS_HOST:PORT/metrics (pip install "
        "pywebtransport[metrics]; not with --workers above 1)",
    )
    serve.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address of the metrics endpoint (default 127.0.0.1)",
    )
    # Hidden, for tests: when to replace a generated certificate, and its validity.
    serve.add_argument(
        "--rotate-after", type=_positive_float, default=12 * 86400.0, help=argparse.SUPPRESS
    )
    serve.add_argument("--cert-days", type=_positive_float, default=13.0, help=argparse.SUPPRESS)
    serve.set_defaults(handler=_run_serve)

    connect = commands.add_parser("connect", help="measure round trips against an echo server")
    connect.add_argument("url", help="https://host:port/path of a WebTransport echo endpoint")
    trust = connect.add_mutually_exclusive_group()
    trust.add_argument("--cert-hash", help="SHA-256 of the server certificate (hex)")
    trust.add_argument("--ca", help="PEM file of trusted certificate authorities")
    trust.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    connect.add_argument("--count", type=_positive_int, default=10, help="round trips of each kind")
    connect.add_argument("--size", type=_positive_int, default=1024, help="payload bytes")
    connect.add_argument(
        "--timeout", type=_positive_float, default=10.0, help="seconds for connect and each step"
    )
    connect.add_argument(
        "--qlog-dir",
        metavar="DIR",
        help="write one qlog file per QUIC connection into DIR (created if missing)",
    )
    connect.set_defaults(handler=_run_connect)

    bench = commands.add_parser(
        "bench", help="benchmark handshakes, round trips and throughput against an echo server"
    )
    bench.add_argument("url", help="https://host:port/path of a WebTransport echo endpoint")
    trust = bench.add_mutually_exclusive_group()
    trust.add_argument("--cert-hash", help="SHA-256 of the server certificate (hex)")
    trust.add_argument("--ca", help="PEM file of trusted certificate authorities")
    trust.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    bench.add_argument(
        "--workload",
        type=_workloads,
        default=parse_workloads("all"),
        metavar="LIST",
        help="comma-separated: connect, stream-rtt, datagram-rtt, throughput, or all (default)",
    )
    bench.add_argument(
        "--count",
        type=_positive_int,
        default=100,
        metavar="N",
        help="operations of connect, stream-rtt and datagram-rtt each (default 100)",
    )
    bench.add_argument(
        "--size",
        type=_positive_int,
        default=1024,
        metavar="N",
        help="payload bytes of a round trip (default 1024)",
    )
    bench.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        metavar="C",
        help="streams in flight in stream-rtt and throughput (default 1)",
    )
    volume = bench.add_mutually_exclusive_group()
    volume.add_argument(
        "--duration",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="seconds throughput writes for (default 5)",
    )
    volume.add_argument(
        "--bytes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="bytes throughput sends in all, instead of --duration",
    )
    bench.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds for each handshake, stream round trip and throughput write or read "
        "(default 10)",
    )
    bench.add_argument(
        "--datagram-timeout",
        type=_positive_float,
        default=1.0,
        metavar="S",
        help="seconds a datagram echo may take before it counts as lost (default 1)",
    )
    bench.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="QUIC engine of the client: aioquic (the default) or qh3 (pip install "
        "pywebtransport[fast])",
    )
    bench.add_argument(
        "--json", action="store_true", help="print the results as one JSON object, not a table"
    )
    bench.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bars on stderr: auto (the default: when stderr is a terminal), always "
        "or never",
    )
    bench.set_defaults(handler=_run_bench)

    cert = commands.add_parser("cert", help="certificate tools")
    cert_commands = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    generate = cert_commands.add_parser("generate", help="write cert.pem and key.pem")
    generate.add_argument("--out-dir", default=".", help="directory to write into (default .)")
    generate.add_argument(
        "--days", type=_positive_float, default=13.0, help="validity, below 14 (default 13)"
    )
    generate.add_argument("--force", action="store_true", help="overwrite existing files")
    generate.set_defaults(handler=_run_cert_generate)
    return parser


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 on success; 1 failure, 2 usage, 3 timeout, 4 session rejected, 5 certificate problem,
        141 when stdout was closed by its reader (a pipe to ``head``).
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader of stdout went away (``| head -1``): stop quietly, like other tools. Output
        # still buffered would fail again at exit, so stdout now points to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else level)
    try:
        status: int = args.handler(args)
    except _UsageError as error:
        parser.error(str(error))  # exits with status 2
    except KeyboardInterrupt:
        return 130
    return status


def _say(text: str) -> None:
    print(text, flush=True)


def _fail(text: str, status: int = EXIT_FAILURE) -> int:
    print(f"error: {text}", file=sys.stderr, flush=True)
    return status


# ------------------------------------------------------------------------------------- serve


@dataclass
class _Certificate:
    """The certificate being served; ``directory`` is set when serve generated it (rotation)."""

    certfile: str
    keyfile: str
    digest: bytes
    directory: Path | None = None
    generation: int = 0


def _run_serve(args: argparse.Namespace) -> int:
    if (args.cert is None) != (args.key is None):
        raise _UsageError("--cert and --key go together")
    if args.metrics_port is not None:
        if args.workers > 1:
            raise _UsageError("--metrics-port works with one process only (not with --workers)")
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise _UsageError(
                "--metrics-port needs prometheus_client: pip install 'pywebtransport[metrics]'"
            ) from None
    if args.engine is not None:
        try:
            ServerConfig(engine=args.engine)
        except errors.ConfigurationError as error:
            raise _UsageError(f"--engine: {error}") from None
    with tempfile.TemporaryDirectory(prefix="pywebtransport-") as temp_dir:
        if args.cert is not None:
            try:
                check_certificate_pair(args.cert, args.key)
                digest = certificate_sha256(Path(args.cert).read_bytes())
            except OSError as error:
                return _fail(f"cannot read {error.filename or args.cert}: {error.strerror}")
            except ValueError as error:  # the message names the file and the problem
                return _fail(str(error))
            cert = _Certificate(args.cert, args.key, digest)
        else:
            cert = _Certificate("", "", b"", directory=Path(temp_dir))
            _generate_certificate(cert, args)
        return asyncio.run(_serve(args, cert))


def _generate_certificate(cert: _Certificate, args: argparse.Namespace) -> None:
    """Write a fresh self-signed certificate into ``cert.directory`` and point ``cert`` at it."""
    assert cert.directory is not None
    bundle = generate_self_signed_certificate(
        hostnames=_certificate_names(args.host), validity_days=args.cert_days
    )
    suffix = f"-{cert.generation}" if cert.generation else ""
    certfile = str(cert.directory / f"cert{suffix}.pem")
    keyfile = str(cert.directory / f"key{suffix}.pem")
    bundle.write(certfile=certfile, keyfile=keyfile)
    cert.certfile, cert.keyfile, cert.digest = certfile, keyfile, bundle.sha256


def _certificate_names(host: str) -> tuple[str, ...]:
    if host in _WILDCARD_HOSTS or host in _DEFAULT_CERT_NAMES:
        return _DEFAULT_CERT_NAMES
    return (host, *_DEFAULT_CERT_NAMES)


def echo_app(config: ServerConfig) -> ServerApp:
    """The application ``serve`` runs (a worker app factory): the echo handler on ``/echo``, the
    chat and RPC demo (one room per application) on ``/chat``, the topics demo on ``/room`` (one
    hub per application, meeting the other workers' through the broker), and on ``/live`` the
    echo that also pushes the session's statistics to the page's live panel."""
    app = ServerApp(config=config)
    app.route(ECHO_PATH)(echo_handler)
    app.route(CHAT_PATH)(ChatRoom().handle)
    add_room(app, ROOM_PATH, config)
    app.route(LIVE_PATH)(live_handler)
    return app


class _Backend:
    """What serves the UDP port: one in-process server, or a group of worker processes."""

    def __init__(self, server: WebTransportServer | None, group: WorkerGroup | None) -> None:
        self.server, self.group = server, group

    @classmethod
    async def start(cls, args: argparse.Namespace, config: ServerConfig) -> _Backend:
        if args.workers > 1:
            group = WorkerGroup(echo_app, config=config, workers=args.workers)
            await group.start()
            return cls(None, group)
        server = WebTransportServer(config=config, app=echo_app(config))
        try:
            await server.listen(host=args.host, port=args.port)
        except BaseException:
            await server.close()
            raise
        return cls(server, None)

    @property
    def port(self) -> int:
        if self.group is not None:
            assert self.group.port is not None
            return self.group.port
        assert self.server is not None
        return int(self.server.local_address[1])

    async def reload(self, cert: _Certificate) -> None:
        if self.group is not None:
            await self.group.reload_certificate(certfile=cert.certfile, keyfile=cert.keyfile)
        elif self.server is not None:
            self.server.reload_certificate(certfile=cert.certfile, keyfile=cert.keyfile)

    async def failed(self) -> None:
        """Return when a worker exited on its own (never for the in-process server)."""
        if self.group is None or not await self.group.wait():
            await asyncio.Future()  # waits until cancelled

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        if self.group is not None:
            await self.group.stop()
            for info in self.group.workers:
                stats = info.stats
                _say(
                    f"WORKER-EXIT index={info.index} pid={info.pid} code={info.exitcode} "
                    f"connections={stats.get('connections_accepted', 0)} "
                    f"sessions={stats.get('sessions_accepted', 0)}"
                )


async def _serve(args: argparse.Namespace, cert: _Certificate) -> int:
    config = ServerConfig(
        certfile=cert.certfile,
        keyfile=cert.keyfile,
        host=args.host,
        port=args.port,
        broker_url=args.broker,
        qlog_dir=args.qlog_dir,
        **({} if args.engine is None else {"engine": args.engine}),
    )
    try:
        backend = await _Backend.start(args, config)
    except (OSError, errors.ServerError) as error:
        return _fail(f"cannot listen on UDP {args.host}:{args.port}: {error}")
    pages = PageServer()
    metrics_server: WSGIServer | None = None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        udp_port = backend.port
        _add_demo_routes(pages, args.host, udp_port, cert)
        http_port = args.port if args.http_port is None else args.http_port
        try:
            await pages.start(host=args.host, port=http_port)
        except OSError as error:
            return _fail(f"cannot listen on TCP {args.host}:{http_port}: {error}")
        if args.metrics_port is not None:
            assert backend.server is not None  # --workers above 1 was refused
            try:
                metrics_server = _start_metrics(args, backend.server)
            except OSError as error:
                return _fail(
                    f"cannot listen on TCP {args.metrics_host}:{args.metrics_port}: {error}"
                )
        _announce(args, backend, pages.port, format_hash(cert.digest))
        return await _serve_until_stopped(args, backend, cert, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        await pages.close()
        await backend.close()


def _start_metrics(args: argparse.Namespace, server: WebTransportServer) -> WSGIServer:
    """Serve ``server.stats`` for Prometheus (on a thread of prometheus_client); say where."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    register_server(server, registry)
    http_server, _thread = start_http_server(
        args.metrics_port, addr=args.metrics_host, registry=registry
    )
    port = http_server.server_address[1]
    _say(f"METRICS http://{_display_host(args.metrics_host)}:{port}/metrics")
    return http_server


def _announce(args: argparse.Namespace, backend: _Backend, http_port: int, hex_hash: str) -> None:
    host = _display_host(args.host)
    _say(f"WebTransport echo server on https://{host}:{backend.port}{ECHO_PATH}")
    if backend.group is not None:
        for info in backend.group.workers:
            _say(f"WORKER index={info.index} pid={info.pid} udp={info.port}")
    _say(f"Certificate SHA-256: {hex_hash}")
    _say(f"Open http://{host}:{http_port}/ in a browser")
    _say(f"READY udp={backend.port} http={http_port} hash={hex_hash}")


async def _serve_until_stopped(
    args: argparse.Namespace, backend: _Backend, cert: _Certificate, stop: asyncio.Event
) -> int:
    tasks = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(backend.failed())}
    if cert.directory is not None:
        tasks.add(asyncio.ensure_future(_rotate_forever(args, backend, cert)))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            return _fail(f"serving failed: {task.exception()}")
    if not stop.is_set():
        return _fail("a worker exited; stopping the others")
    _say("stopping")
    return EXIT_OK


async def _rotate_forever(args: argparse.Namespace, backend: _Backend, cert: _Certificate) -> None:
    """Replace the generated certificate every ``--rotate-after`` seconds (before it expires)."""
    while True:
        await asyncio.sleep(args.rotate_after)  # a timer, not a wait for an event
        previous = (cert.certfile, cert.keyfile)
        cert.generation += 1
        _generate_certificate(cert, args)
        await backend.reload(cert)
        _remove_files(previous)  # loaded already; open connections keep what they negotiated
        logger.info("rotated the certificate to %s", cert.certfile)
        _say(f"ROTATED hash={format_hash(cert.digest)}")


def _remove_files(paths: Sequence[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


def _display_host(host: str) -> str:
    if host in _WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _add_demo_routes(pages: PageServer, host: str, udp_port: int, cert: _Certificate) -> None:
    base = None if host in _WILDCARD_HOSTS else f"https://{_display_host(host)}:{udp_port}"

    def config_json() -> bytes:  # the hash of the certificate in use now (it rotates)
        config = {
            "url": None if base is None else base + ECHO_PATH,
            "chatUrl": None if base is None else base + CHAT_PATH,
            "port": udp_port,
            "path": ECHO_PATH,
            "chatPath": CHAT_PATH,
            "roomUrl": None if base is None else base + ROOM_PATH,
            "roomPath": ROOM_PATH,
            "liveUrl": None if base is None else base + LIVE_PATH,
            "livePath": LIVE_PATH,
            "certificateHash": cert.digest.hex(),
        }
        return json.dumps(config).encode()

    pages.add_get("/", demo_page())
    pages.add_get("/config.json", config_json, content_type="application/json")
    pages.add_get(
        "/pywebtransport/messaging.js", messaging_module(), content_type="text/javascript"
    )

    async def on_report(report: Any) -> None:
        _say(f"REPORT {json.dumps(report, separators=(',', ':'))}")

    pages.add_post("/report", on_report)


# ------------------------------------------------------------------------------------- connect


def _run_connect(args: argparse.Namespace) -> int:
    config = _client_config(args)
    config.qlog_dir = args.qlog_dir
    return asyncio.run(_connect(args, config))


def _client_config(args: argparse.Namespace) -> ClientConfig:
    if args.cert_hash is not None:
        try:
            digest = parse_hash(args.cert_hash)
        except ValueError as error:
            raise _UsageError(f"--cert-hash: {error}") from None
        return ClientConfig(connect_timeout=args.timeout, server_certificate_hashes=[digest])
    if args.ca is not None:
        if not os.path.isfile(args.ca):
            raise _UsageError(f"--ca file not found: {args.ca}")
        return ClientConfig(connect_timeout=args.timeout, ca_certs=args.ca)
    if args.insecure:
        return ClientConfig(connect_timeout=args.timeout, verify_mode=ssl.CERT_NONE)
    return ClientConfig(connect_timeout=args.timeout)


async def _connect(args: argparse.Namespace, config: ClientConfig) -> int:
    try:
        async with WebTransportClient(config=config) as client:
            started = time.perf_counter()
            session = await client.connect(url=args.url, timeout=args.timeout)
            _say(f"connected to {args.url} in {(time.perf_counter() - started) * 1e3:.3f} ms")
            try:
                streams = await _stream_round_trips(session, args.count, args.size, args.timeout)
                _say(streams.describe("bidirectional streams"))
                datagrams = await datagram_round_trips(session, args.count, args.size)
                _say(datagrams.describe("datagrams"))
            finally:
                await session.close()
    except errors.CertificateError as error:
        hint = "pass --cert-hash, --ca or --insecure"
        return _fail(
            f"certificate verification failed for {args.url}: {error} ({hint})", EXIT_CERTIFICATE
        )
    except errors.HandshakeError as error:
        return _fail(f"the server rejected the session: {_status_text(error)}", EXIT_REJECTED)
    except TimeoutError as error:  # also pywebtransport's TimeoutError, a subclass
        detail = f": {error}" if str(error) else ""
        return _fail(f"timed out after {args.timeout:g} s{detail}", EXIT_TIMEOUT)
    except errors.ConfigurationError as error:
        return _fail(f"invalid URL or settings: {error}", EXIT_USAGE)
    except errors.ConnectionError as error:
        return _fail(f"could not connect to {args.url}: {error}")
    except errors.WebTransportError as error:
        return _fail(f"{type(error).__name__}: {error}")
    if len(streams.rtts) < streams.attempted:
        return _fail("some stream round trips did not echo the payload")
    if not datagrams.rtts:
        return _fail("no datagram came back")
    return EXIT_OK


def _status_text(error: errors.HandshakeError) -> str:
    if error.status:
        return f"HTTP status {error.status}"
    return f"the request was reset ({error})"


async def _stream_round_trips(
    session: WebTransportSession, count: int, size: int, timeout: float
) -> RoundTrips:
    result = RoundTrips(rtts=[], attempted=count, size=size)
    for index in range(count):
        sent = payload(index, size)
        started = time.perf_counter()
        echoed = await stream_round_trip(session, index, sent, timeout)
        if echoed == sent:
            result.rtts.append(time.perf_counter() - started)
        else:
            logger.warning("stream %d echoed %d bytes, not the payload", index, len(echoed))
    return result


# ------------------------------------------------------------------------------------- bench


def _workloads(text: str) -> tuple[str, ...]:
    try:
        return parse_workloads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run_bench(args: argparse.Namespace) -> int:
    if not rich_available():
        return _fail(f"the bench command needs rich: {INSTALL_HINT}", EXIT_USAGE)
    config = _client_config(args)
    if args.engine is not None:
        try:
            config = replace(config, engine=args.engine)
        except errors.ConfigurationError as error:
            raise _UsageError(f"--engine: {error}") from None
    options = BenchOptions(
        url=args.url,
        workloads=args.workload,
        count=args.count,
        size=args.size,
        concurrency=args.concurrency,
        duration=args.duration,
        total_bytes=args.bytes,
        timeout=args.timeout,
        datagram_timeout=args.datagram_timeout,
    )
    return asyncio.run(_bench(args, config, options))


async def _bench(args: argparse.Namespace, config: ClientConfig, options: BenchOptions) -> int:
    """Run the benchmark; print the table or the JSON on stdout (bars go to stderr only)."""
    shown = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    unreachable = f"cannot reach {args.url}"
    try:
        async with WebTransportClient(config=config) as client:
            with BenchProgress(enabled=shown, force_terminal=args.progress == "always") as bars:
                report = await run_bench(client, options, progress=bars)
    except errors.CertificateError as error:
        hint = "pass --cert-hash, --ca or --insecure"
        return _fail(f"{unreachable}: certificate verification failed: {error} ({hint})")
    except errors.HandshakeError as error:
        return _fail(f"{unreachable}: the server rejected the session: {_status_text(error)}")
    except TimeoutError:  # also pywebtransport's TimeoutError, a subclass
        return _fail(f"{unreachable}: no session within {args.timeout:g} s")
    except errors.ConfigurationError as error:
        return _fail(f"invalid URL or settings: {error}", EXIT_USAGE)
    except errors.WebTransportError as error:  # ConnectionError and the rest
        return _fail(f"{unreachable}: {error}")
    if args.json:
        _say(report.to_json())
    else:
        print_table(report)
        sys.stdout.flush()
    for result in report.failed:
        detail = f": {result.first_error}" if result.first_error else ""
        _fail(
            f"{result.name}: no operation succeeded ({result.errors} errors, "
            f"{result.lost} lost){detail}"
        )
    return EXIT_FAILURE if report.failed else EXIT_OK


# ------------------------------------------------------------------------------------- cert


def _run_cert_generate(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    certfile, keyfile = out_dir / "cert.pem", out_dir / "key.pem"
    existing = [str(path) for path in (certfile, keyfile) if path.exists()]
    if existing and not args.force:
        return _fail(f"refusing to overwrite {', '.join(existing)} (use --force)")
    try:
        bundle = generate_self_signed_certificate(validity_days=args.days)
    except ValueError as error:
        raise _UsageError(f"--days: {error}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle.write(certfile=certfile, keyfile=keyfile)
    _say(f"wrote {certfile} and {keyfile} (valid until {bundle.not_after:%Y-%m-%d %H:%M} UTC)")
    _say(f"SHA-256: {format_hash(bundle.sha256)}")
    return EXIT_OK
