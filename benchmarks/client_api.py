"""Figures for the high-level client API: the request benchmark and reconnect recovery.

Runs ``pywebtransport serve`` (the CLI echo server) as a child process on a fixed UDP port with a
certificate written here, and pins that certificate by its SHA-256 (what ``connect --cert-hash``
does), taking the hash from the server's ``READY udp=<port> http=<port> hash=<hex>`` line.

1. ``benchmark_client_performance`` against ``/echo``: N requests (connect, one stream round trip,
   close) with C in flight, then the same requests one at a time as the baseline of this run.
2. ``ReconnectingClient`` recovery: the server is killed (SIGKILL), the client notices
   (``connection_lost``), the server stays away ``--downtime`` seconds (so the backoff grows),
   then is started again on the same port, and the time from its
   READY line to the client's next ``connection_established`` is measured; repeated, median
   reported, with the backoff settings used. The recovery is bounded by the backoff step in force
   when the server came back (printed) plus one connect.

Usage::

    python benchmarks/client_api.py [--requests 200] [--concurrency 20] [--trials 5]
                                    [--retry-delay 0.1] [--retry-backoff 2] [--max-retry-delay 1]
                                    [--idle-timeout 2] [--downtime 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pywebtransport import ClientConfig
from pywebtransport.client.reconnecting import ReconnectingClient, backoff_delay
from pywebtransport.client.utils import benchmark_client_performance
from pywebtransport.events import Event, EventType
from pywebtransport.server.certificate import generate_self_signed_certificate, parse_hash

STEP_TIMEOUT = 60.0
"""Upper bound on any single wait (server start, a benchmark, one recovery)."""


def free_udp_port() -> int:
    """A UDP port that was free a moment ago (bound to 0, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class ServeProcess:
    """``pywebtransport serve`` on a fixed port with a fixed certificate; restartable."""

    def __init__(self, port: int, certfile: Path, keyfile: Path) -> None:
        self.port = port
        self.certfile = certfile
        self.keyfile = keyfile
        self.proc: asyncio.subprocess.Process | None = None
        self.digest = b""

    async def start(self) -> float:
        """Start the server; return the monotonic time its READY line was read."""
        argv = [sys.executable, "-m", "pywebtransport", "serve", "--port", str(self.port)]
        argv += ["--http-port", "0", "--cert", str(self.certfile), "--key", str(self.keyfile)]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        self.proc = proc
        assert proc.stdout is not None
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"serve exited with {await proc.wait()} before READY")
                if line.startswith("READY "):
                    ready_at = time.monotonic()
                    break
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        if int(fields["udp"]) != self.port:
            raise RuntimeError(f"serve listens on {fields['udp']}, not {self.port}")
        self.digest = parse_hash(fields["hash"])
        return ready_at

    def kill(self) -> None:
        """SIGKILL: the server disappears without a CONNECTION_CLOSE."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        if self.proc is not None:
            await self.proc.wait()


def next_event(client: ReconnectingClient, event_type: EventType) -> asyncio.Future[Event]:
    """A future for the next ``event_type`` event, registered before it can happen."""
    future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def handler(event: Event) -> None:
        if not future.done():
            future.set_result(event)

    client.once(event_type, handler)
    return future


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f} ms"


# --------------------------------------------------------------------------------- workloads


async def run_benchmark(url: str, config: ClientConfig, requests: int, concurrency: int) -> Any:
    results = {}
    for label, in_flight in (("concurrent", concurrency), ("sequential", 1)):
        result = await benchmark_client_performance(
            url=url, config=config, num_requests=requests, concurrent_requests=in_flight
        )
        del result["latencies"]
        results[label] = result
        lat = result["latency"]
        ok = result["successful_requests"]
        print(
            f"{label:>10} ({in_flight:>2} in flight): {ok}/{requests} ok,"
            f" errors {result['errors'] or '{}'}; p50 {ms(lat['p50'])}, p95 {ms(lat['p95'])},"
            f" p99 {ms(lat['p99'])}, mean {ms(lat['mean'])}, max {ms(lat['max'])};"
            f" {result['requests_per_second']:.0f} requests/s"
        )
    ratio = (
        results["concurrent"]["requests_per_second"] / results["sequential"]["requests_per_second"]
    )
    print(f"throughput ratio concurrent / sequential: {ratio:.2f}")
    return results


async def one_recovery(
    server: ServeProcess, client: ReconnectingClient, downtime: float
) -> dict[str, float]:
    lost = next_event(client, EventType.CONNECTION_LOST)
    failed_before = client.client.stats["connections_failed"]
    server.kill()
    killed_at = time.monotonic()
    await server.stop()
    lost_at = (await lost).timestamp
    established = next_event(client, EventType.CONNECTION_ESTABLISHED)
    await asyncio.sleep(downtime)  # the server stays away while the client backs off
    ready_at = await server.start()
    back_at = (await established).timestamp
    failures = client.client.stats["connections_failed"] - failed_before
    return {
        "detect_s": lost_at - killed_at,
        "recovery_s": back_at - ready_at,
        "failed_attempts": failures,
        "backoff_step_s": backoff_delay(client_config_of(client), failures),
    }


def client_config_of(client: ReconnectingClient) -> ClientConfig:
    return client.client.config


async def run_recovery(
    server: ServeProcess, config: ClientConfig, url: str, trials: int, downtime: float
) -> Any:
    print(
        f"ReconnectingClient: retry_delay={config.retry_delay} s, "
        f"retry_backoff={config.retry_backoff}, max_retry_delay={config.max_retry_delay} s, "
        f"jitter +-10 %, idle_timeout={config.idle_timeout} s, max_retries={config.max_retries};"
        f" server restarted {downtime} s after the loss was noticed"
    )
    rounds = []
    async with ReconnectingClient(url=url, config=config) as client:
        if await client.get_session(wait_timeout=STEP_TIMEOUT) is None:
            raise RuntimeError("no first session")
        for n in range(trials):
            async with asyncio.timeout(STEP_TIMEOUT):
                figures = await one_recovery(server, client, downtime)
            rounds.append(figures)
            print(
                f"  trial {n + 1}: loss detected after {ms(figures['detect_s'])}, "
                f"{figures['failed_attempts']:.0f} failed attempts while down, "
                f"backoff step then {ms(figures['backoff_step_s'])}; "
                f"ready session {ms(figures['recovery_s'])} after READY"
            )
    median = statistics.median(r["recovery_s"] for r in rounds)
    step = statistics.median(r["backoff_step_s"] for r in rounds)
    print(
        f"recovery after the server's return: median {ms(median)} over {trials} trials "
        f"(median backoff step in force {ms(step)}; ratio {median / step:.2f})"
    )
    return {"rounds": rounds, "median_recovery_s": median, "median_backoff_step_s": step}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pwt-client-bench-") as temp:
        certfile, keyfile = Path(temp) / "cert.pem", Path(temp) / "key.pem"
        bundle = generate_self_signed_certificate(hostnames=("localhost", "127.0.0.1", "::1"))
        bundle.write(certfile=certfile, keyfile=keyfile)
        server = ServeProcess(free_udp_port(), certfile, keyfile)
        try:
            await server.start()
            url = f"https://127.0.0.1:{server.port}/echo"
            pinned = ClientConfig(server_certificate_hashes=[server.digest])
            bench = await run_benchmark(url, pinned, args.requests, args.concurrency)
            reconnecting = pinned.update(
                auto_reconnect=True,
                max_retries=-1,
                retry_delay=args.retry_delay,
                retry_backoff=args.retry_backoff,
                max_retry_delay=args.max_retry_delay,
                idle_timeout=args.idle_timeout,
            )
            recovery = await run_recovery(server, reconnecting, url, args.trials, args.downtime)
        finally:
            await server.stop()
    return {"benchmark": bench, "recovery": recovery}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--retry-delay", type=float, default=0.1)
    parser.add_argument("--retry-backoff", type=float, default=2.0)
    parser.add_argument("--max-retry-delay", type=float, default=1.0)
    parser.add_argument("--idle-timeout", type=float, default=2.0)
    parser.add_argument(
        "--downtime", type=float, default=2.0, help="seconds the server stays away after the loss"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    figures = asyncio.run(main(arguments))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(figures, indent=2))
