"""Latency of PooledClient.get_session: an idle pooled session vs. a fresh connect.

The client process spawns a server process (``ServerApp`` with the library's ``echo_handler`` on
``/echo``, a fresh self-signed certificate pinned by hash) on loopback, then measures, with one
``PooledClient``:

- fresh: ``get_session`` on an empty pool (a new QUIC connection, TLS, extended CONNECT), the
  session then closed and returned (so the next call connects again);
- pooled: ``get_session`` that finds the returned session idle, then ``return_session``.

Both are measured ``--samples`` times (default 100) after a short warm-up; the medians and their
ratio (fresh / pooled) are printed.

Usage::

    .venv/bin/python benchmarks/pooled_latency.py [--samples 100]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pywebtransport import ClientConfig, ServerApp, ServerConfig, WebTransportServer
from pywebtransport.client.pooled import PooledClient
from pywebtransport.server.certificate import generate_self_signed_certificate
from pywebtransport.server.echo import echo_handler

WARMUP = 5
STEP_TIMEOUT = 60.0


async def serve(certfile: str, keyfile: str) -> None:
    """Run the echo server on 127.0.0.1 until SIGTERM/SIGINT; print ``READY <port>``."""
    config = ServerConfig(certfile=certfile, keyfile=keyfile, host="127.0.0.1", port=0)
    app = ServerApp(config=config)
    app.route("/echo")(echo_handler)
    server = WebTransportServer(config=config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sys.stdout.write(f"READY {server.local_address[1]}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.close()


async def measure(url: str, pin: bytes, samples: int) -> tuple[list[float], list[float]]:
    """Return (fresh, pooled) get_session latencies in seconds."""
    config = ClientConfig(server_certificate_hashes=[pin], connect_timeout=STEP_TIMEOUT)
    fresh: list[float] = []
    pooled: list[float] = []
    async with PooledClient(config=config, pool_size=1) as client:
        for index in range(WARMUP + samples):
            start = time.perf_counter()
            session = await client.get_session(url=url)
            elapsed = time.perf_counter() - start
            await session.close()
            await client.return_session(session=session)  # closed: dropped, pool empty again
            if index >= WARMUP:
                fresh.append(elapsed)
        session = await client.get_session(url=url)
        await client.return_session(session=session)
        for index in range(WARMUP + samples):
            start = time.perf_counter()
            again = await client.get_session(url=url)
            elapsed = time.perf_counter() - start
            if again is not session:
                raise RuntimeError("the pooled session was not reused")
            await client.return_session(session=again)
            if index >= WARMUP:
                pooled.append(elapsed)
    return fresh, pooled


async def main(samples: int) -> None:
    """Spawn the server, measure, print the medians and the ratio."""
    with tempfile.TemporaryDirectory(prefix="pooled-bench-") as tmp:
        bundle = generate_self_signed_certificate(hostnames=("localhost", "127.0.0.1"))
        certfile, keyfile = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        bundle.write(certfile=certfile, keyfile=keyfile)
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(certfile), str(keyfile),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            async with asyncio.timeout(STEP_TIMEOUT):
                line = await process.stdout.readline()
            if not line.startswith(b"READY"):
                raise RuntimeError(f"server did not start: {line!r}")
            url = f"https://127.0.0.1:{int(line.split()[1])}/echo"
            fresh, pooled = await measure(url, bundle.sha256, samples)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()
    fresh_ms = statistics.median(fresh) * 1000
    pooled_ms = statistics.median(pooled) * 1000
    print(f"PooledClient.get_session, median of {samples} each (server in another process):")
    print(f"  fresh connect : {fresh_ms:8.3f} ms")
    print(f"  pooled (idle) : {pooled_ms:8.3f} ms")
    print(f"  ratio fresh / pooled: {fresh_ms / pooled_ms:,.0f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
    else:
        asyncio.run(main(args.samples))
