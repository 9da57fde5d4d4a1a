"""The three benchmark workloads on the earlier PyPI release ``pywebtransport==0.7.1``.

Run it with the Python of a separate virtualenv that has 0.7.1 installed (its API differs from the
current one and it would shadow the package under development)::

    python3 -m venv /tmp/pwt071-venv && /tmp/pwt071-venv/bin/pip install pywebtransport==0.7.1
    /tmp/pwt071-venv/bin/python benchmarks/baseline_071.py [--json]

It spawns its own 0.7.1 server (``ServerApp`` with an ``/echo`` route) in a subprocess and runs
the 0.7.1 ``WebTransportClient`` against it; the workloads and the measurement are those of
``floor_aioquic.py`` (whose standard-library helpers it imports).

0.7.1 speaks draft-13 with session flow control: both ends must grant initial credit
(``initial_max_data``, ``initial_max_streams_*``) or no stream is ever opened. The values below
are the ones its README uses, with the data window raised for a 20 MiB stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from floor_aioquic import (
    CHUNK,
    CONNECTS,
    STEP_TIMEOUT,
    STREAM_BYTES,
    Result,
    announce_ready,
    emit,
    make_certificate,
    median_ms,
    run_datagram_echo,
    spawn_server,
    wait_for_termination,
)

FLOW_CONTROL: dict[str, Any] = {
    "initial_max_data": 16 * 1024 * 1024,
    "initial_max_streams_bidi": 100,
    "initial_max_streams_uni": 100,
}


def _pwt() -> Any:
    """Import pywebtransport 0.7.1 (typed as ``Any``: its API is not the current one)."""
    module = importlib.import_module("pywebtransport")
    version = getattr(module, "__version__", "?")
    if version != "0.7.1":
        raise SystemExit(f"baseline_071.py needs pywebtransport 0.7.1, found {version}")
    return module


def _free_udp_port(host: str) -> int:
    """Return a UDP port that is free right now (0.7.1 rejects port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _echo_stream(stream: Any) -> None:
    """Echo one bidirectional stream chunk by chunk, then FIN."""
    with contextlib.suppress(Exception):
        while data := await stream.read(size=CHUNK):
            await stream.write(data=data)
        await stream.close()


async def _echo_datagrams(session: Any) -> None:
    """Echo datagrams until the session ends."""
    with contextlib.suppress(Exception):
        transport = await session.datagrams
        while True:
            data = await transport.receive()
            await transport.send(data=data)


async def _echo_handler(session: Any) -> None:
    """0.7.1 route handler: echo every bidirectional stream and every datagram."""
    pwt = _pwt()
    tasks = {asyncio.create_task(_echo_datagrams(session))}
    try:
        async for stream in session.incoming_streams():
            if isinstance(stream, pwt.WebTransportStream):
                tasks.add(asyncio.create_task(_echo_stream(stream)))
    except Exception:  # the session ended under the iterator
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve_071(host: str, certfile: str, keyfile: str) -> None:
    """Run the 0.7.1 echo server until SIGINT/SIGTERM, after printing ``READY <port>``."""
    pwt = _pwt()
    port = _free_udp_port(host)
    config = pwt.ServerConfig.create(
        certfile=certfile, keyfile=keyfile, bind_host=host, bind_port=port, **FLOW_CONTROL
    )
    app = pwt.ServerApp(config=config)
    app.route(path="/echo")(_echo_handler)
    async with app:
        await app.server.listen(host=host, port=port)
        announce_ready(int(app.server.local_address[1]))
        await wait_for_termination()


def _client_config(cafile: str) -> Any:
    """The 0.7.1 client configuration: verify against ``cafile``, same flow-control credit."""
    return _pwt().ClientConfig.create(
        ca_certs=cafile, verify_mode=ssl.CERT_REQUIRED, connect_timeout=STEP_TIMEOUT, **FLOW_CONTROL
    )


async def workloads_071(host: str, port: int, cafile: str) -> Result:
    """Run the three workloads with the 0.7.1 client."""
    pwt = _pwt()
    url = f"https://{host}:{port}/echo"
    config = _client_config(cafile)
    samples: list[float] = []
    cpu: list[float] = []
    for _ in range(CONNECTS):
        async with asyncio.timeout(STEP_TIMEOUT), pwt.WebTransportClient(config=config) as client:
            start, start_cpu = time.perf_counter(), time.process_time()
            session = await client.connect(url=url)
            samples.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            await session.close()

    async with asyncio.timeout(STEP_TIMEOUT), pwt.WebTransportClient(config=config) as client:
        session = await client.connect(url=url)
        chunk = b"\x5a" * CHUNK
        start = time.perf_counter()
        stream = await session.create_bidirectional_stream()

        async def writer() -> None:
            for _ in range(STREAM_BYTES // CHUNK):
                await stream.write(data=chunk)
            await stream.close()

        async def reader() -> int:
            total = 0
            while data := await stream.read(size=CHUNK):
                total += len(data)
            return total

        _, echoed = await asyncio.gather(writer(), reader())
        elapsed = time.perf_counter() - start
        if echoed != STREAM_BYTES:
            raise RuntimeError(f"echoed {echoed} bytes instead of {STREAM_BYTES}")
        await session.close()

    async with asyncio.timeout(STEP_TIMEOUT), pwt.WebTransportClient(config=config) as client:
        session = await client.connect(url=url)
        transport = await session.datagrams
        received, dg_elapsed, stalls = await run_datagram_echo(
            lambda data: transport.send(data=data), transport.receive
        )
        await session.close()

    return Result(
        connect_ms=median_ms(samples),
        connect_cpu_ms=median_ms(cpu),
        stream_mib_s=(STREAM_BYTES / (1 << 20)) / elapsed,
        datagrams_per_s=received / dg_elapsed,
        datagrams_received=received,
        datagram_stalls=stalls,
    )


async def bench(host: str, as_json: bool) -> Result:
    """Spawn a 0.7.1 server process, run the workloads against it, print and return them."""
    with tempfile.TemporaryDirectory(prefix="pwt071-bench-") as tmp:
        cert = make_certificate(Path(tmp))
        argv = [sys.executable, __file__, "server", "--host", host]
        argv += ["--cert", cert.certfile, "--key", cert.keyfile]
        async with spawn_server(argv) as port:
            result = await workloads_071(host, port, cert.certfile)
    emit(result, "pywebtransport 0.7.1", as_json)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``[--json]`` (bench) or ``server --cert C --key K``."""
    parser = argparse.ArgumentParser(description="Benchmark workloads on pywebtransport 0.7.1")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--host", default="127.0.0.1")
    commands = parser.add_subparsers(dest="command")
    server = commands.add_parser("server", help="run the 0.7.1 echo server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if args.command == "server":
        asyncio.run(serve_071(args.host, args.cert, args.key))
    else:
        asyncio.run(bench(args.host, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
