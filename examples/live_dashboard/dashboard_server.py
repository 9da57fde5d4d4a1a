"""Live dashboard server: pushes a sample of its own metrics to every connected page.

Every ``--interval`` seconds (0.2 by default) the server takes one sample of itself and sends
it to each viewer as one JSON line on a unidirectional stream that the server opened when the
viewer connected (route ``/metrics``). A sample holds:

* ``seq`` (0, 1, 2, ... for the whole server) and ``uptime_s`` (seconds since the start, from
  a monotonic clock): the x axis;
* ``cpu_percent`` (CPU time used over the last interval, user and system, as a share of one
  core) and ``cpu_seconds`` (in total), both from ``resource.getrusage``;
* ``rss_bytes`` (resident memory now, from ``/proc/self/statm`` where there is one, else
  ``None``) and ``max_rss_bytes`` (the peak, from ``resource.getrusage``);
* ``sessions``: the number of viewers connected;
* ``you``: the receiving viewer's own session statistics (``session.get_stats()``): the
  smoothed round-trip time ``rtt_ms`` and the connection's ``bytes_sent`` and
  ``bytes_received`` as the server counts them.

It also serves the page that draws these (``dashboard.html``) over HTTP on TCP: on the same
port number when it is free, else on any free port; the ``PAGE`` line says where.

    python dashboard_server.py --host 127.0.0.1 --port 4433

prints ``READY https://HOST:PORT/metrics CERT_SHA256`` and ``PAGE http://HOST:TCP_PORT/``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pywebtransport import (
    ServerApp,
    ServerConfig,
    WebTransportSendStream,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.exceptions import WebTransportError
from pywebtransport.server.certificate import generate_self_signed_certificate
from pywebtransport.web import PageServer

PAGE = Path(__file__).with_name("dashboard.html")
METRICS_PATH = "/metrics"
SEND_TIMEOUT = 1.0  # seconds one viewer may take to accept a sample before it is dropped
# ru_maxrss counts kibibytes on Linux and bytes on macOS.
MAX_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def current_rss() -> int | None:
    """Resident memory in bytes now (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass(eq=False)
class Viewer:
    """One connected page: its session and the stream its samples go to."""

    number: int
    session: WebTransportSession
    stream: WebTransportSendStream
    samples: int = 0

    def own_stats(self) -> dict[str, Any]:
        stats = self.session.get_stats()
        rtt = stats.smoothed_rtt
        return {
            "session": self.number,
            "rtt_ms": None if rtt is None else round(rtt * 1000, 3),
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
        }


class Dashboard:
    """The viewers, and the loop that samples the process and sends to all of them."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.viewers: set[Viewer] = set()
        self.numbers = itertools.count(1)
        self.seq = 0
        self.started = time.monotonic()
        self.last_cpu = self.cpu_seconds()
        self.last_time = self.started

    @staticmethod
    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def sample(self) -> dict[str, Any]:
        """The part of a sample that is the same for every viewer."""
        now, cpu = time.monotonic(), self.cpu_seconds()
        elapsed = now - self.last_time
        cpu_percent = 100 * (cpu - self.last_cpu) / elapsed if elapsed > 0 else 0.0
        self.last_time, self.last_cpu = now, cpu
        self.seq += 1
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAX_RSS_UNIT
        return {
            "seq": self.seq,
            "uptime_s": round(now - self.started, 3),
            "cpu_percent": round(cpu_percent, 2),
            "cpu_seconds": round(cpu, 3),
            "rss_bytes": current_rss(),
            "max_rss_bytes": max_rss,
            "sessions": len(self.viewers),
        }

    async def send(self, viewer: Viewer, common: dict[str, Any]) -> None:
        line = json.dumps({**common, "you": viewer.own_stats()}, separators=(",", ":")) + "\n"
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await viewer.stream.write(line.encode())
            viewer.samples += 1
        except (TimeoutError, WebTransportError):
            # Gone, or too slow to keep up: its handler sees the session end and cleans up.
            viewer.session.close_nowait(code=1, reason="not keeping up")

    async def run(self) -> None:
        """Send one sample every ``interval`` seconds on the loop's clock, never in bursts."""
        loop = asyncio.get_running_loop()
        next_time = loop.time()
        while True:
            common = self.sample()
            ready = [viewer for viewer in self.viewers if viewer.session.is_ready]
            await asyncio.gather(*(self.send(viewer, common) for viewer in ready))
            next_time += self.interval
            now = loop.time()
            if next_time < now:  # fell behind: skip the missed samples
                next_time = now
            await asyncio.sleep(next_time - now)


def make_app(config: ServerConfig, dashboard: Dashboard) -> ServerApp:
    app = ServerApp(config=config)

    @app.route(METRICS_PATH)
    async def metrics(session: WebTransportSession) -> None:
        stream = await session.create_unidirectional_stream()
        viewer = Viewer(number=next(dashboard.numbers), session=session, stream=stream)
        dashboard.viewers.add(viewer)
        say(f"JOIN session={viewer.number}")
        try:
            await session.wait_closed()  # the samples are sent by Dashboard.run
        finally:
            dashboard.viewers.discard(viewer)
            say(f"LEAVE session={viewer.number} samples={viewer.samples}")

    return app


def make_pages(udp_port: int, cert_hash: str, interval: float) -> PageServer:
    """The HTTP side: the page, its settings, and ``/report``."""
    settings = {
        "port": udp_port,
        "path": METRICS_PATH,
        "certificateHash": cert_hash,
        "intervalMs": round(interval * 1000),
    }
    pages = PageServer()
    pages.add_get("/", PAGE.read_bytes)  # read at each request: edit the page, reload it
    pages.add_get("/config.json", json.dumps(settings).encode(), content_type="application/json")

    async def on_report(report: Any) -> None:
        # A page opened with ?test=1 posts what it drew here (the automated test reads it).
        say(f"REPORT {json.dumps(report, separators=(',', ':'))}")

    pages.add_post("/report", on_report)
    return pages


async def start_pages(pages: PageServer, host: str, port: int) -> None:
    """Listen on TCP ``port`` (the UDP port's number) if it is free, else on any port."""
    try:
        await pages.start(host=host, port=port)
    except OSError:
        await pages.start(host=host, port=0)


async def serve(host: str, port: int, interval: float) -> None:
    bundle = generate_self_signed_certificate()
    config = ServerConfig(certificate=bundle)
    dashboard = Dashboard(interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with WebTransportServer(config=config, app=make_app(config, dashboard)) as server:
        await server.listen(host=host, port=port)
        bound_host, bound_port = server.local_address[:2]
        pages = make_pages(bound_port, bundle.sha256.hex(), interval)
        await start_pages(pages, host, bound_port)
        sampler = asyncio.create_task(dashboard.run())
        try:
            url_host = host_in_url(bound_host)
            say(f"READY https://{url_host}:{bound_port}{METRICS_PATH} {bundle.sha256.hex()}")
            say(f"PAGE http://{url_host}:{pages.port}/")
            await stop.wait()
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await pages.close()
            await server.close(grace=1.0)
    say("STOPPED")


def main() -> None:
    parser = argparse.ArgumentParser(description="Push live server metrics to browser pages.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433, help="0 picks a free port")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    args = parser.parse_args()
    if args.interval <= 0:
        parser.error("--interval must be more than 0")
    asyncio.run(serve(args.host, args.port, args.interval))


if __name__ == "__main__":
    main()
